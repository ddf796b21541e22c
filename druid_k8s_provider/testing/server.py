"""The HTTP side of the emulator: Kubernetes REST paths, verbs, watches and logs over aiohttp.

Requests go through the same stages as on a real API server: authentication, (scripted) faults,
authorization, then the resource handler; each is recorded in the request metrics. Bodies and errors are
what a real server sends, because kubectl and the official clients parse them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import functools
import ipaddress
import json
import logging
import ssl
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pendulum
import yaml
from aiohttp import web

from druid_k8s_provider.testing import openapi
from druid_k8s_provider.testing.faults import FaultInjector
from druid_k8s_provider.testing.logs import LogLine, LogStore
from druid_k8s_provider.testing.metrics import RequestMetrics, RequestRecord
from druid_k8s_provider.testing.patch import apply_patch, check_media_type
from druid_k8s_provider.testing.rbac import (
    SELF_REVIEW_RESOURCES,
    Authorizer,
    Unauthorized,
    User,
    forbidden_message,
    rules_review,
)
from druid_k8s_provider.testing.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from druid_k8s_provider.testing.store import (
    RESOURCES,
    ApiError,
    ObjectStore,
    ResourceType,
    WatchEvent,
    bad_request,
    expired,
    list_key,
)
from druid_k8s_provider.testing.validation import prune_unknown_fields

log = logging.getLogger(__name__)

JSON = "application/json"
PROTOBUF = "application/vnd.kubernetes.protobuf"
UNKNOWN_FORMAT = (
    "the body of the request was in an unknown format - accepted media types include: application/json"
)
DEFAULT_WATCH_TIMEOUT_SECONDS = 1800


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class ResourceRequest:
    """A parsed resource path: which resource, where, which object and subresource, and the verb."""

    rt: ResourceType
    namespace: str
    name: str
    subresource: str
    verb: str


@dataclass(eq=False)
class _Watcher:
    """One open watch stream: its filter and the queue the store's fan-out feeds."""

    plural: str
    namespace: str
    labels: LabelSelector
    fields: FieldSelector
    name: str | None = None  # an exact metadata.name from the field selector: indexed for fan-out
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    matched: set[tuple[str, str]] = field(default_factory=set)
    track_membership: bool = False


class ApiServer:
    """The aiohttp application serving the store; start/stop may be repeated on the same port."""

    def __init__(
        self,
        store: ObjectStore,
        logs: LogStore,
        metrics: RequestMetrics,
        faults: FaultInjector,
        authorizer: Authorizer,
        *,
        bookmark_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.logs = logs
        self.metrics = metrics
        self.faults = faults
        self.authorizer = authorizer
        self.bookmark_interval = bookmark_interval
        self.host = "127.0.0.1"
        self.port = 0
        self.tls = False
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: dict[str, set[_Watcher]] = {}
        self._named_watchers: dict[tuple[str, str], set[_Watcher]] = {}
        self._encoded_lines: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._watch_responses: set[web.StreamResponse] = set()
        self._serving = 0  # requests whose handler runs (streams included); what a drain waits for
        # Set from the moment stop() begins until start(): a request then is not served but cut, also one
        # on a connection accepted as the listener closed (else it would hang until its client gives up).
        self._stopping = False
        store.add_event_listener(self._fan_out)
        faults.on_drop_watches(self.drop_watches)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, tls: bool | None = None) -> None:
        """Listen on ``host:port`` (0: an ephemeral port, remembered for restarts), over TLS if asked."""
        if tls is not None:
            self.tls = tls
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=self._ssl_context())
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        certificate, key = self_signed_certificate()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="druid-k8s-emulator-tls-") as directory:
            certificate_file, key_file = Path(directory, "tls.crt"), Path(directory, "tls.key")
            certificate_file.write_bytes(certificate)
            key_file.write_bytes(key)
            context.load_cert_chain(certificate_file, key_file)
        return context

    async def stop(self, drain: float = 0.0) -> None:
        """Stop listening (new connections are refused), take no new request on the connections already
        open (they are closed, as a real server's GOAWAY does), then close every open connection: watch and
        log streams end abruptly.

        With ``drain`` seconds the requests being served, watch and log streams included, first go on until
        they end or ``drain`` runs out, as a real API server drains on SIGTERM.
        """
        self._stopping = True
        if self._runner is not None:
            await self._close_listeners(self._runner)
        deadline = time.monotonic() + drain
        while self._serving and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    async def _close_listeners(runner: web.AppRunner) -> None:
        """Stop listening without stranding a connection accepted in that very moment.

        asyncio (3.11) sets up an accepted connection on a later turn of the loop and, if its server was
        closed meanwhile, leaves the socket open and unserved: its client hangs until its own timeout. So
        stop accepting first, let the connections already accepted be set up (a request on them is then
        cut, see ``_stopping``), and only then close the listening sockets.
        """
        loop = asyncio.get_running_loop()
        for site in runner.sites:
            for sock in getattr(site._server, "sockets", None) or ():
                loop.remove_reader(sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        for site in list(runner.sites):
            await site.stop()

    async def restart(self, drain: float = 0.0) -> None:
        """Stop (draining for ``drain`` seconds, see :meth:`stop`) and start the listener on the same port;
        the store is untouched."""
        await self.stop(drain)
        await self.start(self.host, self.port)

    @property
    def url(self) -> str:
        """Base URL clients use."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def drop_watches(self) -> int:
        """Abort every open watch connection (from any thread); returns how many were cut."""
        count = len(self._watch_responses)
        loop = self._loop
        if loop is None or loop.is_closed():
            return 0
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._abort_watches()
        else:
            loop.call_soon_threadsafe(self._abort_watches)
        return count

    def _abort_watches(self) -> None:
        for response in list(self._watch_responses):
            request = getattr(response, "_req", None)
            transport = request.transport if request is not None else None
            if transport is not None:
                transport.abort()
        for registry in (*self._watchers.values(), *self._named_watchers.values()):
            for watcher in registry:
                watcher.queue.put_nowait(None)

    # ------------------------------------------------------------------ request pipeline

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:  # shutting down: no new work, not even on a connection that is still open
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        self.metrics.request_started()
        self._serving += 1
        try:
            return await self._serve_and_record(request)
        finally:
            self._serving -= 1
            self.metrics.request_ended()

    async def _serve_and_record(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        verb, resource, subresource, namespace = request.method.lower(), request.path, "", ""
        parsed: ResourceRequest | None = None
        response: web.StreamResponse
        try:
            user = self._authenticate(request)
            parsed = self._parse(request)
            if parsed is not None:
                verb, resource, subresource, namespace = (
                    parsed.verb,
                    parsed.rt.plural,
                    parsed.subresource,
                    parsed.namespace,
                )
            decision = self.faults.decide(
                verb, f"{resource}/{subresource}" if subresource else resource, namespace
            )
            if decision is not None:
                if decision.latency > 0:
                    await asyncio.sleep(decision.latency)
                if decision.reset_connection:
                    if request.transport is not None:
                        request.transport.abort()
                    raise ConnectionResetError("injected connection reset")
                if decision.status is not None:
                    headers = (
                        {"Retry-After": str(decision.retry_after)} if decision.retry_after is not None else {}
                    )
                    raise ApiError(decision.status, decision.reason, decision.message, headers=headers)
            if parsed is None:
                response = await self._non_resource(request)
            else:
                self._authorize(user, parsed)
                response = await self._dispatch(request, parsed, user)
        except ApiError as error:
            response = self._error(error)
        except Unauthorized:
            response = self._error(ApiError(401, "Unauthorized", "Unauthorized"))
        except ConnectionResetError:
            response = web.Response(status=499)
        except Exception as error:  # a bug in the emulator must still answer like a server would
            log.exception("emulator request %s %s failed", request.method, request.path_qs)
            response = self._error(ApiError(500, "InternalError", f"Internal error occurred: {error}"))
        body = getattr(response, "body", None)
        sent = len(body) if isinstance(body, bytes) else response.body_length
        self.metrics.record(
            RequestRecord(
                verb=verb,
                resource=resource,
                subresource=subresource,
                namespace=namespace,
                user_agent=request.headers.get("User-Agent", ""),
                status=response.status,
                latency_seconds=time.perf_counter() - started,
                bytes_sent=sent,
            )
        )
        return response

    def _authenticate(self, request: web.Request) -> User:
        return self.authorizer.authenticate(request.headers.get("Authorization"))

    def _authorize(self, user: User, parsed: ResourceRequest) -> None:
        rt = parsed.rt
        if rt.plural in SELF_REVIEW_RESOURCES:
            return  # every authenticated user may ask what it may do (the system:basic-user role)
        if self.authorizer.allows(user, parsed.verb, rt.group, rt.plural, parsed.subresource, parsed.name):
            return
        message = forbidden_message(
            user.name, parsed.verb, rt.group, rt.plural, parsed.subresource, parsed.namespace, parsed.name
        )
        details: dict[str, Any] = {}
        if parsed.name:
            details["name"] = parsed.name
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        raise ApiError(403, "Forbidden", message, details)

    @staticmethod
    def _error(error: ApiError) -> web.Response:
        return web.Response(
            status=error.status, body=_dumps(error.to_status()), content_type=JSON, headers=error.headers
        )

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=_dumps(obj), content_type=JSON, headers=headers)

    # ------------------------------------------------------------------ paths

    def _parse(self, request: web.Request) -> ResourceRequest | None:
        """Turn a REST path into a ResourceRequest; None for discovery and other non-resource paths."""
        parts = [unquote(part) for part in request.path.strip("/").split("/") if part]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace = ""
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = RESOURCES.get(rest[0])
        if rt is None or rt.group != group or rt.version != version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and subresource not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace and not rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method = request.method
        watching = watch_path or request.query.get("watch", "").lower() in ("true", "1")
        if method == "GET":
            verb = "watch" if watch_path or (watching and not name) else ("get" if name else "list")
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if rt.create_only and verb != "create":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if verb == "create" and name and not (rt.plural == "pods" and subresource):
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        return ResourceRequest(rt, namespace, name, subresource, verb)

    async def _non_resource(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/") or "/"
        if path in ("/metrics", "/emulator/metrics"):
            return self._json(self.metrics.snapshot())
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok", content_type="text/plain")
        if path.startswith("/openapi/v3"):
            document = openapi.openapi_v3(path)
            if document is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._json(document)
        document = openapi.discovery(path, f"{self.host}:{self.port}")
        if document is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self._json(document)

    # ------------------------------------------------------------------ resource verbs

    async def _dispatch(
        self, request: web.Request, parsed: ResourceRequest, user: User
    ) -> web.StreamResponse:
        if parsed.subresource == "log":
            if parsed.verb != "get":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return await self._pod_log(request, parsed)
        handlers: dict[str, Callable[[web.Request, ResourceRequest, User], Awaitable[web.StreamResponse]]] = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        return await handlers[parsed.verb](request, parsed, user)

    async def _body(self, request: web.Request, rt: ResourceType | None = None) -> Any:
        raw = await request.read()
        if not raw:
            raise bad_request(UNKNOWN_FORMAT)
        if request.headers.get("Content-Type", "").startswith(PROTOBUF):
            # kubectl's typed clients (create job/namespace/configmap, run, auth can-i) send protobuf.
            if rt is None:
                raise ApiError(415, "UnsupportedMediaType", UNKNOWN_FORMAT)
            return decode_protobuf_object(raw, rt)
        try:
            return json.loads(raw)
        except ValueError as error:
            try:
                loaded = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise bad_request(f"couldn't get version/kind; json parse error: {error}") from None
            if not isinstance(loaded, (dict, list)):
                raise bad_request(f"couldn't get version/kind; json parse error: {error}") from None
            return loaded

    def _validate_fields(self, request: web.Request, rt: ResourceType, obj: Any) -> dict[str, str]:
        """Apply ``fieldValidation`` (Strict: 400, Warn: Warning header, Ignore) and drop unknown fields."""
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", "Warn"'
            )
        if not isinstance(obj, dict):
            return {}
        unknown = prune_unknown_fields(rt.plural, obj)
        if not unknown:
            return {}
        described = ", ".join(f'unknown field "{path}"' for path in unknown)
        if mode == "Strict":
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {described}"
            )
        if mode == "Warn":
            return {"Warning": ", ".join(f'299 - "unknown field \\"{path}\\""' for path in unknown)}
        return {}

    def _check_type(self, rt: ResourceType, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise bad_request(UNKNOWN_FORMAT)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")

    async def _get(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        obj = self.store.get_shared(parsed.rt.plural, parsed.namespace, parsed.name)
        if _wants_table(request) and not parsed.subresource:
            return self._json(table(parsed.rt, [obj], obj["metadata"]["resourceVersion"]))
        return self._json(obj)

    async def _list(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        rt = parsed.rt
        query = request.query
        limit = _optional_int(query.get("limit"), "limit") or 0
        after_key = ""
        continued_version = ""
        continue_token = query.get("continue", "")
        if continue_token:
            continued_version, after_key = self._decode_continue(continue_token)
        items, version, remaining = self.store.shared_page(
            rt.plural,
            parsed.namespace or None,
            query.get("labelSelector", ""),
            query.get("fieldSelector", ""),
            limit=limit,
            after_key=after_key,
        )
        metadata: dict[str, Any] = {"resourceVersion": continued_version or version}
        if remaining:
            metadata["continue"] = self._encode_continue(metadata["resourceVersion"], list_key(items[-1]))
            metadata["remainingItemCount"] = remaining
        if _wants_table(request):
            printed = table(rt, items, metadata["resourceVersion"])
            printed["metadata"].update({k: v for k, v in metadata.items() if k != "resourceVersion"})
            return self._json(printed)
        # List items carry no apiVersion/kind on the wire, as from a real server.
        listed = [
            {key: value for key, value in item.items() if key not in ("apiVersion", "kind")} for item in items
        ]
        return self._json(
            {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata, "items": listed}
        )

    @staticmethod
    def _encode_continue(version: str, last_key: str) -> str:
        raw = _dumps({"v": "meta.k8s.io/v1", "rv": int(version), "start": last_key})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode_continue(self, token: str) -> tuple[str, str]:
        try:
            padded = token + "=" * (-len(token) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded))
            version, start = str(decoded["rv"]), str(decoded["start"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise bad_request(f"continue key is not valid: {token!r}") from None
        try:
            self.store.check_resource_version(int(version))
        except ApiError:
            raise expired(
                "The provided continue parameter is too old to display a consistent list result. You can "
                "start a new list without the continue parameter, or use the continue token in this response "
                "to retrieve the remainder of the results. Continuing with the provided token results in an "
                "inconsistent list - objects that were created, modified, or deleted between the time the "
                "first chunk was returned and now may show up in the list."
            ) from None
        return version, start

    async def _create(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        rt = parsed.rt
        body = await self._body(request, rt)
        self._check_type(rt, body)
        headers = self._validate_fields(request, rt, body)
        if rt.plural == "selfsubjectaccessreviews":
            return self._json(self._access_review(user, body), status=201, headers=headers)
        if rt.plural == "selfsubjectrulesreviews":
            return self._json(rules_review(user, body), status=201, headers=headers)
        if _dry_run(request):
            return self._json(self._dry_run_create(rt, parsed.namespace, body), status=201, headers=headers)
        created = self.store.create(rt.plural, parsed.namespace or None, body)
        return self._json(created, status=201, headers=headers)

    def _dry_run_create(self, rt: ResourceType, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Validate and default a create without storing it, on a throwaway copy of the namespace."""
        scratch = ObjectStore(history_window=1)
        if rt.namespaced and namespace and namespace not in ("default", "kube-system", "kube-public"):
            self.store.get("namespaces", None, namespace)
            scratch.create("namespaces", None, {"metadata": {"name": namespace}})
        existing = body.get("metadata", {}).get("name")
        if existing:
            with contextlib.suppress(ApiError):
                self.store.get(rt.plural, namespace or None, existing)
                raise ApiError(409, "AlreadyExists", f'{rt.qualified} "{existing}" already exists')
        return scratch.create(rt.plural, namespace or None, body)

    def _access_review(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        attributes = spec.get("resourceAttributes")
        if attributes:
            allowed = self.authorizer.allows(
                user,
                str(attributes.get("verb", "")),
                str(attributes.get("group", "")),
                str(attributes.get("resource", "")),
                str(attributes.get("subresource", "")),
                str(attributes.get("name", "")),
            )
        else:
            allowed = user.rules is None
        status: dict[str, Any] = {"allowed": allowed}
        if allowed and user.rules is not None:
            status["reason"] = f'RBAC: allowed by the rules of token user "{user.name}"'
        metadata = dict(body.get("metadata") or {})
        metadata.setdefault("creationTimestamp", None)
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": metadata,
            "spec": spec,
            "status": status,
        }

    async def _update(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        rt = parsed.rt
        body = await self._body(request, rt)
        self._check_type(rt, body)
        headers = self._validate_fields(request, rt, body)
        updated = self.store.replace(
            rt.plural,
            parsed.namespace or None,
            parsed.name,
            body,
            subresource=parsed.subresource or None,
            dry_run=_dry_run(request),
        )
        return self._json(updated, headers=headers)

    async def _patch(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        rt = parsed.rt
        content_type = request.headers.get("Content-Type", "")
        check_media_type(content_type)
        patch_body = await self._body(request)
        pinned_version = isinstance(patch_body, dict) and bool(
            (patch_body.get("metadata") or {}).get("resourceVersion")
        )
        for _attempt in range(10):
            current = self.store.get(rt.plural, parsed.namespace or None, parsed.name)
            patched = apply_patch(content_type, current, patch_body)
            if not isinstance(patched, dict):
                raise bad_request("the patch does not produce an object")
            headers = self._validate_fields(request, rt, patched)
            if not pinned_version:
                patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                updated = self.store.replace(
                    rt.plural,
                    parsed.namespace or None,
                    parsed.name,
                    patched,
                    subresource=parsed.subresource or None,
                    dry_run=_dry_run(request),
                )
            except ApiError as error:
                if error.reason == "Conflict" and not pinned_version:
                    continue  # another writer won the race: re-apply the patch on the new version
                raise
            return self._json(updated, headers=headers)
        raise ApiError(409, "Conflict", "the patch could not be applied after repeated conflicts")

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        raw = await request.read()
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError as error:
                raise bad_request(f"couldn't get version/kind; json parse error: {error}") from None
            if isinstance(parsed, dict):
                options.update(parsed)
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            try:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            except ValueError:
                raise bad_request("gracePeriodSeconds must be an integer") from None
        if "orphanDependents" in query:
            options["orphanDependents"] = query["orphanDependents"].lower() == "true"
        if options.get("orphanDependents") is not None and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan" if options["orphanDependents"] else "Background"
        return options

    async def _delete(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        options = await self._delete_options(request)
        if _dry_run(request) or options.get("dryRun") == ["All"]:
            # A dry run checks the object exists and shows it; nothing is deleted.
            return self._json(self.store.get_shared(parsed.rt.plural, parsed.namespace or None, parsed.name))
        preconditions = options.get("preconditions") or {}
        result = self.store.delete(
            parsed.rt.plural,
            parsed.namespace or None,
            parsed.name,
            propagation_policy=options.get("propagationPolicy"),
            grace_period_seconds=options.get("gracePeriodSeconds"),
            precondition_uid=preconditions.get("uid"),
            precondition_resource_version=preconditions.get("resourceVersion"),
        )
        return self._json(result)

    async def _delete_collection(
        self, request: web.Request, parsed: ResourceRequest, user: User
    ) -> web.Response:
        rt = parsed.rt
        options = await self._delete_options(request)
        items = self.store.list(
            rt.plural,
            parsed.namespace or None,
            request.query.get("labelSelector", ""),
            request.query.get("fieldSelector", ""),
        )
        deleted = []
        for item in items:
            with contextlib.suppress(ApiError):
                self.store.delete(
                    rt.plural,
                    item["metadata"].get("namespace"),
                    item["metadata"]["name"],
                    propagation_policy=options.get("propagationPolicy"),
                    grace_period_seconds=options.get("gracePeriodSeconds"),
                )
                deleted.append(item)
        return self._json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": deleted,
            }
        )

    # ------------------------------------------------------------------ watch

    def _fan_out(self, event: WatchEvent) -> None:
        for watcher in self._watchers.get(event.plural, ()):
            watcher.queue.put_nowait(event)
        name_key = (event.plural, event.obj["metadata"]["name"])
        for watcher in self._named_watchers.get(name_key, ()):
            watcher.queue.put_nowait(event)

    def _register(self, watcher: _Watcher) -> None:
        if watcher.name is None:
            self._watchers.setdefault(watcher.plural, set()).add(watcher)
        else:
            self._named_watchers.setdefault((watcher.plural, watcher.name), set()).add(watcher)

    def _unregister(self, watcher: _Watcher) -> None:
        if watcher.name is None:
            registry = self._watchers.get(watcher.plural)
        else:
            registry = self._named_watchers.get((watcher.plural, watcher.name))
        if registry is not None:
            registry.discard(watcher)
            if not registry:
                key: Any = watcher.plural if watcher.name is None else (watcher.plural, watcher.name)
                (self._watchers if watcher.name is None else self._named_watchers).pop(key, None)

    def _encoded(self, event: WatchEvent, event_type: str) -> bytes:
        """The JSON line of an event, encoded once however many watches send it."""
        key = (event.resource_version, event_type)
        line = self._encoded_lines.get(key)
        if line is None:
            line = _dumps({"type": event_type, "object": event.obj}) + b"\n"
            self._encoded_lines[key] = line
            if len(self._encoded_lines) > 4096:
                self._encoded_lines.popitem(last=False)
        return line

    async def _watch(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.StreamResponse:
        rt = parsed.rt
        query = request.query
        field_selector = query.get("fieldSelector", "")
        if parsed.name:  # the legacy /watch/.../NAME path watches one object
            field_selector = ",".join(filter(None, (field_selector, f"metadata.name={parsed.name}")))
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(field_selector, rt.plural)
        except SelectorError as error:
            raise bad_request(str(error)) from None
        timeout = float(
            _optional_int(query.get("timeoutSeconds"), "timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_SECONDS
        )
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        requested = query.get("resourceVersion", "")
        if requested not in ("", "0"):
            _optional_int(requested, "resourceVersion")
        watcher = _Watcher(rt.plural, parsed.namespace, labels, fields, fields.name())
        initial: list[dict[str, Any]] = []
        error_event: dict[str, Any] | None = None
        since = 0
        # Registered before the snapshot, with no await in between: no event can fall in a gap.
        self._register(watcher)
        try:
            if self.faults.take_watch_expiry():
                error_event = expired(f"too old resource version: {requested or 0} (injected)").to_status()
            elif requested in ("", "0"):
                items, version, _ = self.store.shared_page(
                    rt.plural,
                    parsed.namespace or None,
                    query.get("labelSelector", ""),
                    field_selector,
                )
                since = int(version)
                watcher.track_membership = True
                initial = items
                watcher.matched.update(_object_key(item) for item in items)
            else:
                since = int(requested)
                for replayed in self.store.events_since(since, rt.plural):
                    watcher.queue.put_nowait(replayed)
        except ApiError as error:
            error_event = error.to_status()
        if error_event is not None:
            self._unregister(watcher)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
        except BaseException:
            self._unregister(watcher)
            raise
        if error_event is not None:
            with contextlib.suppress(ConnectionError):
                await response.write(_dumps({"type": "ERROR", "object": error_event}) + b"\n")
                await response.write_eof()
            return response
        self._watch_responses.add(response)
        self.metrics.watch_opened()
        last_sent = since
        try:
            as_table = _wants_table(request)  # kubectl get -w prints each event as a table row

            def encode(event_type: str, obj: dict[str, Any]) -> bytes:
                printed = table(rt, [obj], obj["metadata"]["resourceVersion"]) if as_table else obj
                return _dumps({"type": event_type, "object": printed}) + b"\n"

            for item in initial:
                await response.write(encode("ADDED", item))
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    event: WatchEvent | None
                    if watcher.queue.empty():
                        async with asyncio.timeout(wait):
                            event = await watcher.queue.get()
                    else:
                        event = watcher.queue.get_nowait()
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        bookmark = {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {
                                "resourceVersion": str(max(last_sent, int(self.store.resource_version)))
                            },
                        }
                        await response.write(_dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n")
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                # A burst (a thousand Jobs finishing at once) goes out in one write: one trip through the
                # event loop per event would leave the stream that far behind the store.
                batch = [event]
                while not watcher.queue.empty():
                    batch.append(watcher.queue.get_nowait())
                lines = []
                dropped = False
                for queued in batch:
                    if queued is None:
                        dropped = True  # by a fault or shutdown
                        break
                    if queued.resource_version <= last_sent:
                        continue
                    last_sent = queued.resource_version
                    outgoing = self._filter(watcher, queued)
                    if outgoing is not None:
                        lines.append(
                            encode(outgoing, queued.obj) if as_table else self._encoded(queued, outgoing)
                        )
                if lines:
                    await response.write(b"".join(lines))
                if dropped:
                    break
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # headers are sent: the only honest signal left is cutting the stream
            log.exception("emulator watch stream %s failed", request.path_qs)
            if request.transport is not None:
                request.transport.abort()
        finally:
            self._unregister(watcher)
            self._watch_responses.discard(response)
            self.metrics.watch_closed()
        return response

    @staticmethod
    def _filter(watcher: _Watcher, event: WatchEvent) -> str | None:
        """The event type this watcher sees (objects entering/leaving a selector become ADDED/DELETED)."""
        obj = event.obj
        metadata = obj["metadata"]
        if watcher.namespace and metadata.get("namespace") != watcher.namespace:
            return None
        matches = watcher.labels.matches(metadata.get("labels")) and watcher.fields.matches(obj)
        key = _object_key(obj)
        was = key in watcher.matched
        if matches and event.type != "DELETED":
            watcher.matched.add(key)
        else:
            watcher.matched.discard(key)
        if event.type == "ADDED":
            return "ADDED" if matches else None
        if event.type == "DELETED":
            return "DELETED" if (matches or was) else None
        if not watcher.track_membership:
            return "MODIFIED" if matches else None
        if matches:
            return "MODIFIED" if was else "ADDED"
        return "DELETED" if was else None

    # ------------------------------------------------------------------ logs

    async def _pod_log(self, request: web.Request, parsed: ResourceRequest) -> web.StreamResponse:
        pod = self.store.get("pods", parsed.namespace, parsed.name)
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in spec.get("containers") or []]
        init_containers = [c["name"] for c in spec.get("initContainers") or []]
        query = request.query
        container = query.get("container", "")
        if not container:
            if len(containers) != 1:
                message = (
                    f"a container name must be specified for pod {parsed.name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
                if init_containers:
                    message += f" or one of the init containers: [{' '.join(init_containers)}]"
                raise bad_request(message)
            container = containers[0]
        if container not in containers and container not in init_containers:
            raise bad_request(f"container {container} is not valid for pod {parsed.name}")
        previous = query.get("previous", "").lower() in ("true", "1")
        self._check_log_readable(pod, container, previous)
        timestamps = query.get("timestamps", "").lower() in ("true", "1")
        follow = query.get("follow", "").lower() in ("true", "1") and not previous
        tail = _optional_int(query.get("tailLines"), "tailLines")
        limit_bytes = _optional_int(query.get("limitBytes"), "limitBytes")
        since_seconds = _optional_int(query.get("sinceSeconds"), "sinceSeconds")
        since_ns = 0
        if since_seconds is not None:
            since_ns = time.time_ns() - since_seconds * 1_000_000_000
        elif query.get("sinceTime"):
            since_ns = int(_parse_time(query["sinceTime"]).timestamp() * 1_000_000_000)
        lines = [
            line
            for line in self.logs.lines(parsed.namespace, parsed.name, container, previous)
            if line.timestamp_ns >= since_ns
        ]
        consumed = len(self.logs.lines(parsed.namespace, parsed.name, container, previous))
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []

        def render(text_line: LogLine) -> bytes:
            prefix = text_line.rfc3339nano() + " " if timestamps else ""
            return (prefix + text_line.text + "\n").encode()

        if not follow:
            body = b"".join(render(line) for line in lines)
            if limit_bytes is not None:
                body = body[:limit_bytes]
            return web.Response(body=body, content_type="text/plain")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        budget = limit_bytes if limit_bytes is not None else None
        try:
            for line in lines:
                budget = await self._write_limited(response, render(line), budget)
                if budget == 0:
                    return response
            async for line in self.logs.follow(parsed.namespace, parsed.name, container, start=consumed):
                budget = await self._write_limited(response, render(line), budget)
                if budget == 0:
                    return response
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # headers are sent: the only honest signal left is cutting the stream
            log.exception("emulator log stream %s failed", request.path_qs)
            if request.transport is not None:
                request.transport.abort()
        return response

    @staticmethod
    async def _write_limited(response: web.StreamResponse, data: bytes, budget: int | None) -> int | None:
        if budget is not None:
            data = data[:budget]
            budget -= len(data)
        await response.write(data)
        return budget

    def _check_log_readable(self, pod: dict[str, Any], container: str, previous: bool) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if previous:
            if not self.logs.has_previous(namespace, name, container):
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            return
        if self.logs.has_started(namespace, name, container):
            return
        status = pod.get("status") or {}
        statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
        reason = "ContainerCreating"
        for container_status in statuses:
            if container_status.get("name") != container:
                continue
            state = container_status.get("state") or {}
            if "running" in state or "terminated" in state:
                return
            reason = (state.get("waiting") or {}).get("reason") or reason
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')


@functools.cache
def self_signed_certificate() -> tuple[bytes, bytes]:
    """A throwaway certificate for 127.0.0.1/localhost (PEM certificate, PEM key), made once per process.

    It is its own CA, so a kubeconfig can carry it as ``certificate-authority-data``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "druid-k8s-emulator")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _dry_run(request: web.Request) -> bool:
    """``?dryRun=All``: validate and answer, store nothing (kubectl ``--dry-run=server``)."""
    return request.query.get("dryRun") == "All"


def _wants_table(request: web.Request) -> bool:
    """kubectl's human output asks for server-side printing: ``Accept: application/json;as=Table;...``."""
    return "as=Table" in request.headers.get("Accept", "")


# ---------------------------------------------------------------------------------------------- tables
# Server-side printing, so ``kubectl get`` shows the columns users know (STATUS, READY, COMPLETIONS...).


def human_duration(seconds: float) -> str:
    """A duration as kubectl prints ages (``45s``, ``3m20s``, ``5h``, ``2d3h``)."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def _parse_time(timestamp: str) -> pendulum.DateTime:
    moment = pendulum.parse(timestamp)
    if not isinstance(moment, pendulum.DateTime):
        raise bad_request(f"not a timestamp: {timestamp!r}")
    return moment


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    return human_duration((pendulum.now("UTC") - _parse_time(timestamp)).total_seconds())


def _pod_status(pod: dict[str, Any]) -> tuple[str, str, int]:
    """READY, STATUS and RESTARTS as kubectl computes them from a pod's status."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    restarts = 0
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for index, container in enumerate(init_statuses):
        restarts += int(container.get("restartCount", 0))
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            detail = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
            reason = f"Init:{detail}"
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    ready = 0
    has_running = False
    container_statuses = status.get("containerStatuses") or []
    if not initializing:
        for container in reversed(container_statuses):
            restarts += int(container.get("restartCount", 0))
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated:
                reason = f"ExitCode:{terminated.get('exitCode')}"
            elif state.get("running") and container.get("ready"):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return f"{ready}/{len(spec.get('containers') or [])}", reason, restarts


def _job_columns(job: dict[str, Any]) -> list[Any]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if job["metadata"].get("deletionTimestamp"):
        state = "Terminating"
    elif conditions.get("Complete") == "True":
        state = "Complete"
    elif conditions.get("Failed") == "True":
        state = "Failed"
    elif conditions.get("FailureTarget") == "True":
        state = "FailureTarget"
    elif spec.get("suspend"):
        state = "Suspended"
    else:
        state = "Running"
    completions = spec.get("completions")
    succeeded = int(status.get("succeeded", 0))
    shown = (
        f"{succeeded}/{completions}"
        if completions is not None
        else f"{succeeded}/1 of {spec.get('parallelism', 1)}"
    )
    duration = ""
    if status.get("startTime"):
        start = _parse_time(status["startTime"])
        end = _parse_time(status["completionTime"]) if status.get("completionTime") else pendulum.now("UTC")
        duration = human_duration((end - start).total_seconds())
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = ",".join(
        f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()
    )
    return [
        job["metadata"]["name"],
        state,
        shown,
        duration,
        _age(job["metadata"].get("creationTimestamp")),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        selector,
    ]


_Column = tuple[str, str, int]  # name, type, priority (1: only with -o wide)
_TABLE_COLUMNS: dict[str, tuple[_Column, ...]] = {
    "pods": (
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        ("Age", "string", 0),
        ("IP", "string", 1),
        ("Node", "string", 1),
    ),
    "jobs": (
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Completions", "string", 0),
        ("Duration", "string", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ),
    "namespaces": (("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)),
    "configmaps": (("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)),
    "secrets": (("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)),
    "events": (
        ("Last Seen", "string", 0),
        ("Type", "string", 0),
        ("Reason", "string", 0),
        ("Object", "string", 0),
        ("Message", "string", 0),
    ),
    "selfsubjectaccessreviews": (("Name", "string", 0),),
    "selfsubjectrulesreviews": (("Name", "string", 0),),
}


def _cells(rt: ResourceType, obj: dict[str, Any]) -> list[Any]:
    metadata = obj["metadata"]
    age = _age(metadata.get("creationTimestamp"))
    if rt.plural == "pods":
        ready, status, restarts = _pod_status(obj)
        pod_status = obj.get("status") or {}
        node = (obj.get("spec") or {}).get("nodeName") or "<none>"
        return [
            metadata["name"],
            ready,
            status,
            str(restarts),
            age,
            pod_status.get("podIP") or "<none>",
            node,
        ]
    if rt.plural == "jobs":
        return _job_columns(obj)
    if rt.plural == "namespaces":
        return [metadata["name"], (obj.get("status") or {}).get("phase", "Active"), age]
    if rt.plural == "configmaps":
        return [metadata["name"], len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age]
    if rt.plural == "secrets":
        return [metadata["name"], obj.get("type", "Opaque"), len(obj.get("data") or {}), age]
    if rt.plural == "events":
        involved = obj.get("involvedObject") or {}
        seen = obj.get("lastTimestamp") or obj.get("eventTime") or metadata.get("creationTimestamp")
        return [
            _age(seen),
            obj.get("type", ""),
            obj.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
            obj.get("message", ""),
        ]
    return [metadata.get("name", "")]


def table(rt: ResourceType, items: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``items`` with the resource's kubectl columns."""
    columns = _TABLE_COLUMNS[rt.plural]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": f"{name} of the {rt.singular}",
                "priority": priority,
            }
            for name, kind, priority in columns
        ],
        "rows": [
            {
                "cells": _cells(rt, item),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }


def _optional_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{value}": must be an integer') from None


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj["metadata"]
    return metadata.get("namespace", ""), metadata["name"]


def _protobuf_fields(data: bytes) -> dict[int, list[Any]]:
    """Split one protobuf message into its fields (varints as int, length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    position = 0

    def varint() -> int:
        nonlocal position
        value, shift = 0, 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    while position < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields.setdefault(number, []).append(varint())
        elif wire_type == 2:
            length = varint()
            fields.setdefault(number, []).append(data[position : position + length])
            position += length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            fields.setdefault(number, []).append(data[position : position + size])
            position += size
        else:
            raise bad_request("unable to decode the protobuf request body")
    return fields


@functools.cache
def _protobuf_schema() -> dict[str, dict[str, list[str]]]:
    """Field numbers of the Kubernetes protobuf encoding for the kinds the emulator serves.

    Generated from the k8s.io/api ``generated.proto`` descriptors (as embedded in kubectl 1.32): message
    name -> field number -> [json name, type, (message name | map value type), ("repeated")].
    """
    document = json.loads(Path(__file__).with_name("protobuf_schema.json").read_text())
    messages: dict[str, dict[str, list[str]]] = document["messages"]
    return messages


_PROTOBUF_PACKAGES = {"": "k8s.io.api.core.v1", "batch": "k8s.io.api.batch.v1"}
_MAP_SCALARS = ("string", "bytes", "bool", "int", "quantity", "time", "intorstring", "raw")


def _signed(value: Any) -> int:
    number = int(value) if not isinstance(value, bytes) else int.from_bytes(value, "little", signed=True)
    return number - (1 << 64) if number >= 1 << 63 else number


def _protobuf_timestamp(fields: dict[int, list[Any]], micro: bool) -> str | None:
    seconds = _signed(fields.get(1, [0])[-1])
    nanos = _signed(fields.get(2, [0])[-1])
    if not seconds and not nanos:
        return None
    text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{nanos // 1000:06d}Z" if micro else f"{text}Z"


def _protobuf_value(kind: str, target: str | None, value: Any) -> Any:
    """One decoded field value (``value`` is an int for varints, bytes otherwise)."""
    if kind == "string":
        return bytes(value).decode()
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return _signed(value)
    if kind in ("double", "float"):
        return struct.unpack("<d" if len(value) == 8 else "<f", bytes(value))[0]
    if kind == "message":
        return _protobuf_message(str(target), bytes(value))
    nested = _protobuf_fields(bytes(value))
    if kind in ("time", "microtime"):
        return _protobuf_timestamp(nested, micro=kind == "microtime")
    if kind == "quantity":
        return bytes(nested.get(1, [b""])[-1]).decode()
    if kind == "intorstring":
        if _signed(nested.get(1, [0])[-1]) == 1:
            return bytes(nested.get(3, [b""])[-1]).decode()
        return _signed(nested.get(2, [0])[-1])
    if kind == "raw":
        raw = bytes(nested.get(1, [b""])[-1])
        return json.loads(raw) if raw else None
    if kind == "duration":
        return f"{_signed(nested.get(1, [0])[-1]) / 1e9:g}s"
    raise bad_request(f"unable to decode a protobuf field of type {kind}")


def _is_zero(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and value in ("", 0, {})) or value is False


def _protobuf_message(name: str, data: bytes) -> dict[str, Any]:
    """A protobuf message in its JSON form; zero values are left out, as Go's omitempty does."""
    schema = _protobuf_schema().get(name)
    if schema is None:
        raise bad_request(f"unable to decode a protobuf {name}")
    decoded: dict[str, Any] = {}
    for number, values in _protobuf_fields(data).items():
        field_schema = schema.get(str(number))
        if field_schema is None:
            continue  # a field newer than the schema: dropped, as an older server does
        json_name, kind = field_schema[0], field_schema[1]
        if kind == "map":
            value_kind = field_schema[2]
            entries: dict[str, Any] = {}
            for entry in values:
                pair = _protobuf_fields(bytes(entry))
                key = bytes(pair.get(1, [b""])[-1]).decode()
                default: Any = 0 if value_kind in ("bool", "int") else b""
                raw_value = pair.get(2, [default])[-1]
                if value_kind in _MAP_SCALARS:
                    entries[key] = _protobuf_value(value_kind, None, raw_value)
                else:
                    entries[key] = _protobuf_value("message", value_kind.lstrip("."), raw_value)
            if entries:
                decoded[json_name] = entries
            continue
        target = field_schema[2] if kind == "message" else None
        if field_schema[-1] == "repeated":
            if kind in ("int", "bool") and values and isinstance(values[0], bytes):
                values = _packed_varints(b"".join(values))
            decoded[json_name] = [_protobuf_value(kind, target, value) for value in values]
            continue
        converted = _protobuf_value(kind, target, values[-1])
        if not _is_zero(converted):
            decoded[json_name] = converted
    return decoded


def _packed_varints(data: bytes) -> list[int]:
    values: list[int] = []
    value, shift = 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value, shift = 0, 0
    return values


def decode_protobuf_object(raw: bytes, rt: ResourceType) -> dict[str, Any]:
    """A protobuf request body (the ``k8s\\0`` envelope around runtime.Unknown) in its JSON form.

    kubectl's typed clients send protobuf: ``kubectl create job/namespace/configmap``, ``kubectl run``,
    ``kubectl auth can-i``.
    """
    if not raw.startswith(b"k8s\x00"):
        raise bad_request("the protobuf request body lacks the Kubernetes envelope")
    try:
        unknown = _protobuf_fields(raw[4:])
        type_meta = _protobuf_fields(bytes(unknown[1][0])) if 1 in unknown else {}
        kind = bytes(type_meta.get(2, [b""])[-1]).decode() or rt.kind
        package = _PROTOBUF_PACKAGES.get(rt.group, f"k8s.io.api.{rt.group.split('.')[0]}.{rt.version}")
        body = _protobuf_message(f"{package}.{kind}", bytes(unknown[2][0]))
    except (IndexError, KeyError, UnicodeDecodeError, struct.error):
        raise bad_request("unable to decode the protobuf request body") from None
    return {"apiVersion": rt.api_version, "kind": kind, **body}
