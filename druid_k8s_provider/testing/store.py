"""The emulator's object store: what etcd plus the API server's registry do on a real cluster.

Objects are plain dicts in API form (camelCase), keyed by resource plural, namespace and name. Every write
gets a cluster-wide, monotonically increasing ``resourceVersion`` and produces a watch event; a bounded
history of events lets watches resume from a version and answer ``410 Expired`` beyond it, exactly the
contract clients are written against. Deletion follows Kubernetes: graceful pod deletion, finalizers,
``deletionTimestamp``, and ownerReference garbage collection with Background, Foreground and Orphan
propagation.

Thread-safety: all methods may be called from any thread. Listeners run on the emulator's event loop (or
synchronously in the caller's thread when no loop is bound), one event at a time, in resourceVersion order;
a listener that writes to the store sees its own events delivered after the current one.

This module holds creation and updates; versions, history and event delivery are in ``store_events``,
reads in ``store_reads``, deletion in ``store_deletion`` and owner-based collection in
``garbage_collector``; the registered resources in ``resources`` and the API errors in ``api_errors``.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from druid_k8s_provider.testing.api_errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    error_details,
    invalid,
    not_found,
)
from druid_k8s_provider.testing.defaults import apply_create_defaults
from druid_k8s_provider.testing.garbage_collector import GarbageCollector
from druid_k8s_provider.testing.quota import quota_refusal
from druid_k8s_provider.testing.resources import (
    PROTECTED_NAMESPACES,
    STORED_RESOURCES,
    Obj,
    ResourceType,
    copy_object,
    now_timestamp,
    resource_type,
)
from druid_k8s_provider.testing.store_deletion import StoreDeletion
from druid_k8s_provider.testing.validation import (
    Cause,
    job_update_causes,
    label_causes,
    metadata_causes,
    spec_causes,
)

_GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class ObjectStore(StoreDeletion):
    """All objects of the emulated cluster, with resourceVersions, watch history and garbage collection."""

    def __init__(self, history_window: int = 5000) -> None:
        if history_window < 1:
            raise ValueError("history_window must be at least 1 event")
        self.history_window = history_window
        self.loop = None  # the types of the store's state are declared by StoreEvents
        self._lock = threading.RLock()
        self._objects = {plural: {} for plural in STORED_RESOURCES}
        self._resource_version = 0
        self._history = deque()
        self._evicted_up_to = 0
        self._pending = deque()
        self._listeners = []
        self._event_listeners = []
        self._dispatch_lock = threading.Lock()
        self._by_uid = {}
        self._dependents_of = {}
        self._owner_uids = {}
        self._dispatching = False
        self._collector = GarbageCollector(self)
        self._event_listeners.append(self._collector.on_event)
        for namespace in PROTECTED_NAMESPACES:
            self.create("namespaces", None, {"metadata": {"name": namespace}})

    # ------------------------------------------------------------------ writes

    def create(self, plural: str, namespace: str | None, obj: Obj) -> Obj:
        """Store a new object with server-filled fields and defaults; 409 AlreadyExists, 422 Invalid."""
        rt = resource_type(plural)
        new = copy_object(obj)
        if not isinstance(new, dict):
            raise bad_request("the body of the request was in an unknown format")
        metadata = new.get("metadata")
        if metadata is None:
            metadata = new["metadata"] = {}
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            body_namespace = metadata.get("namespace")
            if body_namespace and namespace and body_namespace != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or body_namespace or "default"
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        for server_owned in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "selfLink"):
            metadata.pop(server_owned, None)
        metadata.pop("deletionGracePeriodSeconds", None)
        with self._lock:
            objects = self._stored(rt)
            if not metadata.get("name") and metadata.get("generateName"):
                metadata["name"] = self._generated_name(objects, rt, namespace, str(metadata["generateName"]))
            name = str(metadata.get("name") or "")
            causes = metadata_causes(plural, new)
            if causes:
                raise invalid(rt, name, causes)
            if rt.namespaced:
                self._check_namespace_accepts(rt, str(namespace), name)
            key = self._key(rt, namespace, name)
            if key in objects:
                raise already_exists(rt, name)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = now_timestamp()
            if rt.tracks_generation:
                metadata["generation"] = 1
            apply_create_defaults(plural, new)
            causes = spec_causes(plural, new)
            if causes:
                raise invalid(rt, name, causes)
            if plural == "pods":
                self._admit_within_quota(rt, str(namespace), name, new)
            metadata["resourceVersion"] = self._next_version()
            objects[key] = new
            self._record("ADDED", plural, new)
            result = copy_object(new)
        self._schedule_dispatch()
        return result

    def _generated_name(
        self, objects: dict[tuple[str, str], Obj], rt: ResourceType, namespace: str | None, prefix: str
    ) -> str:
        prefix = prefix[: 63 - 5] if rt.plural != "namespaces" else prefix[:58]
        while True:
            candidate = prefix + "".join(secrets.choice(_GENERATE_NAME_ALPHABET) for _ in range(5))
            if self._key(rt, namespace, candidate) not in objects:
                return candidate

    def _admit_within_quota(self, rt: ResourceType, namespace: str, name: str, pod: Obj) -> None:
        """The ResourceQuota admission plugin: 403 Forbidden when a quota has no room for the pod."""
        quotas = [obj for (ns, _), obj in self._objects["resourcequotas"].items() if ns == namespace]
        if not quotas:
            return
        pods = [obj for (ns, _), obj in self._objects["pods"].items() if ns == namespace]
        refusal = quota_refusal(pod, quotas, pods)
        if refusal is not None:
            message = f'{rt.plural} "{name}" is forbidden: {refusal}'
            raise ApiError(403, "Forbidden", message, error_details(rt, name))

    def _check_namespace_accepts(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self._objects["namespaces"].get(("", namespace))
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f'{rt.qualified} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                error_details(rt, name),
            )

    def replace(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        """PUT semantics: 409 Conflict on a stale resourceVersion; status and spec updated separately.

        ``dry_run`` validates and returns the would-be object without storing it (``?dryRun=All``).
        """
        rt = resource_type(plural)
        new = copy_object(obj)
        metadata = new.setdefault("metadata", {})
        if metadata.get("name") and metadata["name"] != name:
            raise bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and metadata.get("namespace") and namespace and metadata["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        with self._lock:
            objects = self._stored(rt)
            key = self._key(rt, namespace, name)
            old = objects.get(key)
            if old is None:
                raise not_found(rt, name)
            wanted_version = metadata.get("resourceVersion")
            if wanted_version and wanted_version != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            result = self._update_locked(rt, key, old, new, subresource, api_update=True, dry_run=dry_run)
        self._schedule_dispatch()
        return result

    def mutate(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        fn: Callable[[Obj], Any],
        subresource: str | None = None,
    ) -> Obj:
        """Atomic read-modify-write for controllers: ``fn`` edits a copy in place.

        Without ``subresource`` every change fn makes is kept (controllers bind pods and set status in one
        go); with ``subresource="status"`` only ``status`` changes are kept, as on the API.
        """
        rt = resource_type(plural)
        with self._lock:
            objects = self._stored(rt)
            key = self._key(rt, namespace, name)
            old = objects.get(key)
            if old is None:
                raise not_found(rt, name)
            new = copy_object(old)
            fn(new)
            result = self._update_locked(rt, key, old, new, subresource, api_update=False)
        self._schedule_dispatch()
        return result

    def _update_locked(
        self,
        rt: ResourceType,
        key: tuple[str, str],
        old: Obj,
        new: Obj,
        subresource: str | None,
        *,
        api_update: bool,
        dry_run: bool = False,
    ) -> Obj:
        old_metadata = old["metadata"]
        name = old_metadata["name"]
        if subresource == "status":
            result = copy_object(old)
            result["status"] = new.get("status") or {}
        elif subresource is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            result = new
            result["apiVersion"] = rt.api_version
            result["kind"] = rt.kind
            metadata = result.setdefault("metadata", {})
            if api_update and "status" in rt.subresources:
                # The main resource ignores status changes; the status subresource owns them.
                if "status" in old:
                    result["status"] = copy_object(old["status"])
                else:
                    result.pop("status", None)
            for immutable in (
                "name",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if immutable in old_metadata:
                    metadata[immutable] = old_metadata[immutable]
                else:
                    metadata.pop(immutable, None)
            if rt.namespaced:
                metadata["namespace"] = old_metadata["namespace"]
            if "generation" in old_metadata:
                metadata["generation"] = old_metadata["generation"]
            causes = label_causes(metadata.get("labels"), "metadata.labels")
            if api_update and rt.plural == "jobs":
                causes.extend(job_update_causes(old, result))
            if api_update and rt.plural == "pods":
                causes.extend(_pod_update_causes(old, result))
            if causes:
                raise invalid(rt, name, causes)
            if rt.tracks_generation and result.get("spec") != old.get("spec"):
                metadata["generation"] = int(old_metadata.get("generation", 1)) + 1
        result["metadata"]["resourceVersion"] = old_metadata["resourceVersion"]
        if result == old or dry_run:
            # A no-op write changes nothing, not even the resourceVersion; a dry run only shows the result.
            return copy_object(result)
        result["metadata"]["resourceVersion"] = self._next_version()
        if (
            result["metadata"].get("deletionTimestamp")
            and not result["metadata"].get("finalizers")
            and not (rt.plural == "pods" and result["metadata"].get("deletionGracePeriodSeconds", 0) > 0)
        ):
            # The last finalizer is gone from an object being deleted: it disappears now.
            del self._objects[rt.plural][key]
            self._record("DELETED", rt.plural, result)
            return copy_object(result)
        self._objects[rt.plural][key] = result
        self._record("MODIFIED", rt.plural, result)
        return copy_object(result)


def _pod_update_causes(old: Obj, new: Obj) -> list[Cause]:
    """Pod specs are immutable on the API except container images, activeDeadlineSeconds and tolerations."""

    def masked(spec: Any) -> Any:
        spec = copy_object(spec or {})
        for group in ("initContainers", "containers"):
            for container in spec.get(group) or []:
                container.pop("image", None)
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
        return spec

    if masked(old.get("spec")) != masked(new.get("spec")):
        return [
            Cause(
                "FieldValueForbidden",
                "spec",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
                "to 1 if it was previously negative)",
            )
        ]
    return []
