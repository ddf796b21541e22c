"""The API server's object verbs: get, list (paged), create (dry runs and self reviews included),
update, patch and delete of stored objects, with request bodies in JSON, YAML or protobuf."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

import yaml
from aiohttp import web

from druid_k8s_provider.testing.api_errors import ApiError, bad_request, expired
from druid_k8s_provider.testing.field_validation import prune_unknown_fields
from druid_k8s_provider.testing.patch import apply_patch, check_media_type
from druid_k8s_provider.testing.protobuf import decode_protobuf_object
from druid_k8s_provider.testing.rbac import User, rules_review
from druid_k8s_provider.testing.resources import ResourceType, list_key
from druid_k8s_provider.testing.server_base import (
    PROTOBUF,
    UNKNOWN_FORMAT,
    HandlerBase,
    dumps,
    optional_int,
    wants_table,
)
from druid_k8s_provider.testing.server_routing import ResourceRequest
from druid_k8s_provider.testing.store import ObjectStore
from druid_k8s_provider.testing.tables import table


class ObjectHandlers(HandlerBase):
    """The handlers of the object verbs (all but watch and the pod log)."""

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
        if wants_table(request) and not parsed.subresource:
            return self._json(table(parsed.rt, [obj], obj["metadata"]["resourceVersion"]))
        return self._json(obj)

    async def _list(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.Response:
        rt = parsed.rt
        query = request.query
        limit = optional_int(query.get("limit"), "limit") or 0
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
        if wants_table(request):
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
        raw = dumps({"v": "meta.k8s.io/v1", "rv": int(version), "start": last_key})
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


def _dry_run(request: web.Request) -> bool:
    """``?dryRun=All``: validate and answer, store nothing (kubectl ``--dry-run=server``)."""
    return request.query.get("dryRun") == "All"
