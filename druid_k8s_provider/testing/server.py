"""The HTTP side of the emulator: Kubernetes REST paths, verbs, watches and logs over aiohttp.

Requests go through the same stages as on a real API server: authentication, (scripted) faults,
authorization, then the resource handler; each is recorded in the request metrics. Bodies and errors are
what a real server sends, because kubectl and the official clients parse them.

This module holds the listener and the request pipeline; routing is in ``server_routing``, the object verbs
in ``server_objects``, watches in ``server_watch`` and pod logs in ``server_logs``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from druid_k8s_provider.testing import openapi
from druid_k8s_provider.testing.api_errors import ApiError
from druid_k8s_provider.testing.certificates import self_signed_certificate
from druid_k8s_provider.testing.faults import FaultInjector
from druid_k8s_provider.testing.logs import LogStore
from druid_k8s_provider.testing.metrics import RequestMetrics, RequestRecord
from druid_k8s_provider.testing.rbac import (
    SELF_REVIEW_RESOURCES,
    Authorizer,
    Unauthorized,
    User,
    forbidden_message,
)
from druid_k8s_provider.testing.server_logs import PodLogs
from druid_k8s_provider.testing.server_objects import ObjectHandlers
from druid_k8s_provider.testing.server_routing import ResourceRequest, parse_resource_request
from druid_k8s_provider.testing.server_watch import WatchStreams
from druid_k8s_provider.testing.store import ObjectStore

log = logging.getLogger(__name__)


class ApiServer(ObjectHandlers, WatchStreams, PodLogs):
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
        self._watchers = {}  # the types of the watch state are declared by WatchStreams
        self._named_watchers = {}
        self._encoded_lines = OrderedDict()
        self._watch_responses = set()
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
            parsed = parse_resource_request(request)
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
