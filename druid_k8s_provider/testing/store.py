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
"""

from __future__ import annotations

import asyncio
import copy
import logging
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pendulum

from druid_k8s_provider.testing.quota import quota_refusal
from druid_k8s_provider.testing.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from druid_k8s_provider.testing.validation import (
    Cause,
    apply_create_defaults,
    job_update_causes,
    label_causes,
    metadata_causes,
    spec_causes,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Listener = Callable[[str, str, Obj], None]
Objects = list[Obj]  # named so the ObjectStore.list method does not shadow it in annotations


@dataclass(frozen=True)
class ResourceType:
    """How the API server registers a resource: its group/version/kind, scope and subresources."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Objects whose spec changes bump metadata.generation (pods did not, in the releases we mirror).
    tracks_generation: bool = False
    # Pods and namespaces answer DELETE with the object; other resources with a Success Status.
    returns_deleted_object: bool = False
    # Only ever created (SelfSubjectAccessReview): no storage, no list/watch.
    create_only: bool = False
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``jobs.batch`` / ``pods``: the name used in the server's error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Job.batch`` / ``Pod``: the name used in 422 Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def singular(self) -> str:
        """Lower-case kind, as discovery reports it."""
        return self.kind.lower()


RESOURCES: dict[str, ResourceType] = {
    rt.plural: rt
    for rt in (
        ResourceType(
            "namespaces",
            "Namespace",
            "",
            "v1",
            False,
            ("ns",),
            ("status",),
            returns_deleted_object=True,
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        ),
        ResourceType("pods", "Pod", "", "v1", True, ("po",), ("status", "log"), returns_deleted_object=True),
        ResourceType("events", "Event", "", "v1", True, ("ev",)),
        ResourceType("configmaps", "ConfigMap", "", "v1", True, ("cm",)),
        ResourceType("resourcequotas", "ResourceQuota", "", "v1", True, ("quota",), ("status",)),
        ResourceType("secrets", "Secret", "", "v1", True),
        ResourceType("jobs", "Job", "batch", "v1", True, (), ("status",), tracks_generation=True),
        ResourceType(
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "v1",
            False,
            create_only=True,
            verbs=("create",),
        ),
        ResourceType(
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            "authorization.k8s.io",
            "v1",
            False,
            create_only=True,
            verbs=("create",),
        ),
    )
}

STORED_RESOURCES = tuple(plural for plural, rt in RESOURCES.items() if not rt.create_only)
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


def resource_type(plural: str) -> ResourceType:
    """The registered resource ``plural``, or a 404 as the server gives for unknown paths."""
    try:
        return RESOURCES[plural]
    except KeyError:
        raise ApiError(404, "NotFound", "the server could not find the requested resource") from None


def list_key(obj: Obj) -> str:
    """``namespace/name``: the order lists are returned in and what continue tokens point at."""
    metadata = obj["metadata"]
    return f"{metadata.get('namespace', '')}/{metadata['name']}"


def now_timestamp() -> str:
    """The current time as Kubernetes serialises ``metav1.Time`` (seconds, UTC, ``Z``)."""
    return pendulum.now("UTC").format("YYYY-MM-DDTHH:mm:ss[Z]")


class ApiError(Exception):
    """A failed API call, carrying what the server puts in its ``Status`` body."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def to_status(self) -> Obj:
        """The ``kind: Status`` body a real API server sends for this error."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details:
            body["details"] = self.details
        body["code"] = self.status
        return body


def _details(rt: ResourceType, name: str, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind or rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    """404 NotFound for ``name``: ``jobs.batch "x" not found``."""
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    """409 AlreadyExists: ``jobs.batch "x" already exists``."""
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    """409 Conflict for a stale resourceVersion, worded as the server words it."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid with one cause per field problem."""
    described = [cause.describe() for cause in causes]
    summary = described[0] if len(described) == 1 else "[" + ", ".join(described) + "]"
    details = _details(rt, name, kind=rt.kind)
    details["causes"] = [cause.to_api() for cause in causes]
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    """410 Expired: the requested resourceVersion is older than the retained history."""
    return ApiError(410, "Expired", message)


@dataclass(frozen=True)
class WatchEvent:
    """One change, as the history keeps it and watches replay it."""

    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    obj: Obj = field(repr=False)


_GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class ObjectStore:
    """All objects of the emulated cluster, with resourceVersions, watch history and garbage collection."""

    def __init__(self, history_window: int = 5000) -> None:
        if history_window < 1:
            raise ValueError("history_window must be at least 1 event")
        self.history_window = history_window
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {plural: {} for plural in STORED_RESOURCES}
        self._resource_version = 0
        self._history: deque[WatchEvent] = deque()
        self._evicted_up_to = 0
        self._pending: deque[WatchEvent] = deque()
        self._listeners: list[Listener] = []
        self._event_listeners: list[Callable[[WatchEvent], None]] = []
        self._dispatch_lock = threading.Lock()
        self._by_uid: dict[str, tuple[str, tuple[str, str]]] = {}
        self._dependents_of: dict[str, set[tuple[str, tuple[str, str]]]] = {}
        self._owner_uids: dict[tuple[str, tuple[str, str]], tuple[str, ...]] = {}
        self._dispatching = False
        self._collector = _GarbageCollector(self)
        self._event_listeners.append(self._collector.on_event)
        for namespace in PROTECTED_NAMESPACES:
            self.create("namespaces", None, {"metadata": {"name": namespace}})

    # ------------------------------------------------------------------ listeners and dispatch

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Deliver events on ``loop`` from now on (None: synchronously in the writer's thread)."""
        self.loop = loop

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event_type, plural, obj)`` after every change (``obj`` is the listener's copy)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_event_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        """Internal fan-out hook (the watch server): gets the shared WatchEvent; must not mutate it."""
        self._event_listeners.append(listener)

    def _schedule_dispatch(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            self._dispatch()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._dispatch()
        else:
            try:
                loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:  # loop closed between the check and the call
                self._dispatch()

    def _dispatch(self) -> None:
        with self._dispatch_lock:
            if self._dispatching:
                return  # the outer dispatch loop delivers events queued by listeners, in order
            self._dispatching = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        break
                    event = self._pending.popleft()
                for internal in list(self._event_listeners):
                    try:
                        internal(event)
                    except Exception:
                        log.exception("emulator event listener failed on %s %s", event.type, event.plural)
                for listener in list(self._listeners):
                    try:
                        listener(event.type, event.plural, copy.deepcopy(event.obj))
                    except Exception:
                        log.exception("emulator store listener failed on %s %s", event.type, event.plural)
        finally:
            with self._dispatch_lock:
                self._dispatching = False
        with self._lock:
            leftover = bool(self._pending)
        if leftover:
            self._schedule_dispatch()

    def _index(self, event_type: str, plural: str, obj: Obj) -> None:
        """Keep the uid and owner indexes the garbage collector looks dependents up in."""
        metadata = obj["metadata"]
        location = (plural, (metadata.get("namespace", ""), metadata["name"]))
        for owner_uid in self._owner_uids.pop(location, ()):
            dependents = self._dependents_of.get(owner_uid)
            if dependents is not None:
                dependents.discard(location)
                if not dependents:
                    del self._dependents_of[owner_uid]
        if event_type == "DELETED":
            self._by_uid.pop(metadata["uid"], None)
            return
        self._by_uid[metadata["uid"]] = location
        owners = tuple(ref["uid"] for ref in metadata.get("ownerReferences") or [] if ref.get("uid"))
        if owners:
            self._owner_uids[location] = owners
            for owner_uid in owners:
                self._dependents_of.setdefault(owner_uid, set()).add(location)

    def dependents(self, owner_uid: str) -> list[tuple[str, Obj]]:
        """(plural, object) of every stored object naming ``owner_uid`` in its ownerReferences (shared)."""
        with self._lock:
            found = []
            for plural, key in self._dependents_of.get(owner_uid, ()):
                obj = self._objects[plural].get(key)
                if obj is not None:
                    found.append((plural, obj))
            return found

    def find_uid(self, uid: str) -> tuple[str, Obj] | None:
        """(plural, object) of the stored object with ``uid`` (shared), if it exists."""
        with self._lock:
            location = self._by_uid.get(uid)
            if location is None:
                return None
            obj = self._objects[location[0]].get(location[1])
            return (location[0], obj) if obj is not None else None

    def _record(self, event_type: str, plural: str, obj: Obj) -> None:
        """Append an event (caller holds the lock and has already bumped the resourceVersion)."""
        self._index(event_type, plural, obj)
        event = WatchEvent(int(obj["metadata"]["resourceVersion"]), event_type, plural, obj)
        self._history.append(event)
        while len(self._history) > self.history_window:
            self._evicted_up_to = self._history.popleft().resource_version
        self._pending.append(event)

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    # ------------------------------------------------------------------ versions and history

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion handed out (what a list returns as ``metadata.resourceVersion``)."""
        with self._lock:
            return str(self._resource_version)

    def events_since(self, resource_version: int, plural: str | None = None) -> list[WatchEvent]:
        """Retained events newer than ``resource_version``; 410 Expired when some were already dropped."""
        with self._lock:
            if resource_version < self._evicted_up_to:
                oldest = self._history[0].resource_version if self._history else self._resource_version
                raise expired(f"too old resource version: {resource_version} ({oldest - 1})")
            return [
                event
                for event in self._history
                if event.resource_version > resource_version and (plural is None or event.plural == plural)
            ]

    def check_resource_version(self, resource_version: int) -> None:
        """Raise 410 Expired if a watch from ``resource_version`` could not be served."""
        self.events_since(resource_version, plural="")

    def compact(self) -> None:
        """Forget all history, so every watch from an older version gets 410 (what etcd compaction does)."""
        with self._lock:
            self._history.clear()
            self._evicted_up_to = self._resource_version

    # ------------------------------------------------------------------ reads

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "") if rt.namespaced else "", name

    def _stored(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        if rt.create_only:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        return self._objects[rt.plural]

    def get(self, plural: str, namespace: str | None, name: str) -> Obj:
        """A copy of the object, or 404 NotFound."""
        with self._lock:
            return copy.deepcopy(self.get_shared(plural, namespace, name))

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Objects:
        """Copies of matching objects, sorted by namespace then name (the order the API server lists in)."""
        return self.list_with_version(plural, namespace, label_selector, field_selector)[0]

    def list_with_version(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[Objects, str]:
        """Matching objects (copies) plus the resourceVersion the list is consistent with."""
        items, version, _ = self.shared_page(plural, namespace, label_selector, field_selector)
        return copy.deepcopy(items), version

    def shared_page(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        *,
        limit: int = 0,
        after_key: str = "",
    ) -> tuple[Objects, str, int]:
        """A page of matching objects, the list's resourceVersion and how many matches follow the page.

        For the HTTP server, which only serialises: the objects are the stored ones, shared and read-only
        (the store never changes a stored dict, it replaces it). ``after_key`` is ``namespace/name`` of the
        last object of the previous page; ``limit`` 0 means everything.
        """
        rt = resource_type(plural)
        try:
            labels = parse_label_selector(label_selector)
            fields = parse_field_selector(field_selector, plural)
        except SelectorError as error:
            raise bad_request(str(error)) from None
        wanted_name = fields.name()
        with self._lock:
            objects = self._stored(rt)
            if wanted_name is not None and (namespace or not rt.namespaced):
                found = objects.get(self._key(rt, namespace, wanted_name))
                candidates = [found] if found is not None else []
            else:
                candidates = [
                    obj
                    for (obj_namespace, _), obj in objects.items()
                    if not namespace or not rt.namespaced or obj_namespace == namespace
                ]
            items = [
                obj
                for obj in candidates
                if labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)
            ]
            version = str(self._resource_version)
        items.sort(key=list_key)
        if after_key:
            items = [obj for obj in items if list_key(obj) > after_key]
        remaining = 0
        if 0 < limit < len(items):
            remaining = len(items) - limit
            items = items[:limit]
        return items, version, remaining

    def get_shared(self, plural: str, namespace: str | None, name: str) -> Obj:
        """The stored object itself, read-only (for serialising), or 404 NotFound."""
        rt = resource_type(plural)
        with self._lock:
            obj = self._stored(rt).get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    # ------------------------------------------------------------------ writes

    def create(self, plural: str, namespace: str | None, obj: Obj) -> Obj:
        """Store a new object with server-filled fields and defaults; 409 AlreadyExists, 422 Invalid."""
        rt = resource_type(plural)
        new = copy.deepcopy(obj)
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
            result = copy.deepcopy(new)
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
            raise ApiError(403, "Forbidden", message, _details(rt, name))

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
                _details(rt, name),
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
        new = copy.deepcopy(obj)
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
            new = copy.deepcopy(old)
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
            result = copy.deepcopy(old)
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
                    result["status"] = copy.deepcopy(old["status"])
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
            return copy.deepcopy(result)
        result["metadata"]["resourceVersion"] = self._next_version()
        if (
            result["metadata"].get("deletionTimestamp")
            and not result["metadata"].get("finalizers")
            and not (rt.plural == "pods" and result["metadata"].get("deletionGracePeriodSeconds", 0) > 0)
        ):
            # The last finalizer is gone from an object being deleted: it disappears now.
            del self._objects[rt.plural][key]
            self._record("DELETED", rt.plural, result)
            return copy.deepcopy(result)
        self._objects[rt.plural][key] = result
        self._record("MODIFIED", rt.plural, result)
        return copy.deepcopy(result)

    def delete(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        propagation_policy: str | None = "Background",
        grace_period_seconds: int | None = None,
        *,
        precondition_uid: str | None = None,
        precondition_resource_version: str | None = None,
    ) -> Obj:
        """Delete as the API server does; returns the object (still present or final) or a Success Status.

        ``propagation_policy=None`` means the resource's default (Orphan for batch/v1 Jobs, a classic
        trap: their pods stay). Pods on a node with a grace period only get ``deletionTimestamp``; the
        kubelet removes them with ``grace_period_seconds=0`` once the containers stopped.
        """
        rt = resource_type(plural)
        if propagation_policy is None:
            propagation_policy = "Orphan" if plural == "jobs" else "Background"
        if propagation_policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy: Unsupported value: {propagation_policy!r}")
        if grace_period_seconds is not None and grace_period_seconds < 0:
            grace_period_seconds = 1
        with self._lock:
            result = self._delete_locked(
                rt,
                namespace,
                name,
                propagation_policy,
                grace_period_seconds,
                precondition_uid,
                precondition_resource_version,
            )
        self._schedule_dispatch()
        return result

    def _delete_locked(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        propagation_policy: str,
        grace_period_seconds: int | None,
        precondition_uid: str | None,
        precondition_resource_version: str | None,
    ) -> Obj:
        plural = rt.plural
        objects = self._stored(rt)
        key = self._key(rt, namespace, name)
        old = objects.get(key)
        if old is None:
            raise not_found(rt, name)
        old_metadata = old["metadata"]
        if precondition_uid and precondition_uid != old_metadata["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {precondition_uid}, UID in object meta: "
                f"{old_metadata['uid']}",
                _details(rt, name),
            )
        if precondition_resource_version and precondition_resource_version != old_metadata["resourceVersion"]:
            raise conflict(rt, name)
        if plural == "namespaces" and name in PROTECTED_NAMESPACES:
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                _details(rt, name),
            )
        grace = self._grace_period(rt, old, grace_period_seconds)
        result = copy.deepcopy(old)
        metadata = result["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        already_deleting = bool(old_metadata.get("deletionTimestamp"))
        if not already_deleting or finalizers:
            if propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if (
                propagation_policy == "Orphan"
                and "orphan" not in finalizers
                and plural != "namespaces"
                and self._collector.has_dependents(old_metadata["uid"])
            ):
                finalizers.append("orphan")
        if finalizers:
            metadata["finalizers"] = finalizers
        if plural == "namespaces":
            if already_deleting:
                return copy.deepcopy(old)
            metadata["deletionTimestamp"] = now_timestamp()
            metadata["deletionGracePeriodSeconds"] = 0
            result.setdefault("status", {})["phase"] = "Terminating"
            return self._commit_modified(rt, key, result)
        if grace > 0:
            current_grace = old_metadata.get("deletionGracePeriodSeconds")
            if already_deleting and current_grace is not None and current_grace <= grace:
                return copy.deepcopy(old) if result == old else self._commit_modified(rt, key, result)
            metadata["deletionTimestamp"] = (
                pendulum.now("UTC").add(seconds=grace).format("YYYY-MM-DDTHH:mm:ss[Z]")
            )
            metadata["deletionGracePeriodSeconds"] = grace
            return self._commit_modified(rt, key, result)
        if finalizers:
            if not already_deleting:
                metadata["deletionTimestamp"] = now_timestamp()
                metadata["deletionGracePeriodSeconds"] = 0
            elif plural == "pods":
                metadata["deletionGracePeriodSeconds"] = 0
            if result == old:
                return copy.deepcopy(old)
            return self._commit_modified(rt, key, result)
        metadata["resourceVersion"] = self._next_version()
        del objects[key]
        self._record("DELETED", plural, result)
        if rt.returns_deleted_object:
            return copy.deepcopy(result)
        details = _details(rt, name)
        details["uid"] = result["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _commit_modified(self, rt: ResourceType, key: tuple[str, str], result: Obj) -> Obj:
        """Store ``result`` as a MODIFIED object (caller holds the lock and schedules the dispatch)."""
        result["metadata"]["resourceVersion"] = self._next_version()
        self._objects[rt.plural][key] = result
        self._record("MODIFIED", rt.plural, result)
        return copy.deepcopy(result)

    @staticmethod
    def _grace_period(rt: ResourceType, obj: Obj, requested: int | None) -> int:
        if rt.plural != "pods":
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return 0
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return requested
        return int(spec.get("terminationGracePeriodSeconds", 30))


def _pod_update_causes(old: Obj, new: Obj) -> list[Cause]:
    """Pod specs are immutable on the API except container images, activeDeadlineSeconds and tolerations."""

    def masked(spec: Any) -> Any:
        spec = copy.deepcopy(spec or {})
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


class _GarbageCollector:
    """The garbage collector and namespace controller of a real cluster, driven by the store's events.

    - Background: when an owner disappears, dependents with no other live owner are deleted.
    - Foreground: an owner with the ``foregroundDeletion`` finalizer has its dependents deleted and keeps
      existing until no dependent with ``blockOwnerDeletion: true`` is left.
    - Orphan: an owner with the ``orphan`` finalizer has its ownerReferences removed from the dependents.
    - A terminating namespace is emptied, then removed.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def _all_objects(self) -> list[tuple[str, Obj]]:
        with self._store._lock:
            return [
                (plural, obj) for plural, objects in self._store._objects.items() for obj in objects.values()
            ]

    def _dependents(self, owner_uid: str) -> list[tuple[str, Obj]]:
        return self._store.dependents(owner_uid)

    def has_dependents(self, owner_uid: str) -> bool:
        """Whether any stored object names ``owner_uid`` as an owner."""
        return bool(self._dependents(owner_uid))

    def on_event(self, event: WatchEvent) -> None:
        """React to one change; runs inside the store's dispatch, so its own writes queue behind it."""
        metadata = event.obj["metadata"]
        if event.type == "DELETED":
            self._collect_orphaned_dependents(metadata["uid"])
            for ref in metadata.get("ownerReferences") or []:
                self._maybe_finish_foreground(ref.get("uid", ""))
            if metadata.get("namespace"):
                self._maybe_finish_namespace(metadata["namespace"])
            return
        if not metadata.get("deletionTimestamp"):
            return
        finalizers = metadata.get("finalizers") or []
        if event.plural == "namespaces":
            self._empty_namespace(metadata["name"])
        elif "orphan" in finalizers:
            self._orphan_dependents(event.plural, event.obj)
        elif "foregroundDeletion" in finalizers:
            for plural, dependent in self._dependents(metadata["uid"]):
                self._delete_quietly(plural, dependent, "Background")
            self._maybe_finish_foreground(metadata["uid"])

    def _delete_quietly(self, plural: str, obj: Obj, policy: str) -> None:
        metadata = obj["metadata"]
        if metadata.get("deletionTimestamp"):
            return
        try:
            self._store.delete(plural, metadata.get("namespace"), metadata["name"], propagation_policy=policy)
        except ApiError as error:
            if error.status != 404:
                raise

    def _collect_orphaned_dependents(self, owner_uid: str) -> None:
        for plural, dependent in self._dependents(owner_uid):
            owners = dependent["metadata"].get("ownerReferences") or []
            if not any(self._store.find_uid(ref.get("uid", "")) for ref in owners):
                self._delete_quietly(plural, dependent, "Background")

    def _maybe_finish_foreground(self, owner_uid: str) -> None:
        found = self._store.find_uid(owner_uid)
        if found is None:
            return
        plural, owner = found
        metadata = owner["metadata"]
        if not metadata.get("deletionTimestamp") or "foregroundDeletion" not in (
            metadata.get("finalizers") or []
        ):
            return
        blocking = [
            dependent
            for _, dependent in self._dependents(owner_uid)
            if any(
                ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion")
                for ref in dependent["metadata"].get("ownerReferences") or []
            )
        ]
        if blocking:
            return
        self._remove_finalizer(plural, owner, "foregroundDeletion")

    def _remove_finalizer(self, plural: str, obj: Obj, finalizer: str) -> None:
        def drop(current: Obj) -> None:
            current["metadata"]["finalizers"] = [
                f for f in current["metadata"].get("finalizers") or [] if f != finalizer
            ]
            if not current["metadata"]["finalizers"]:
                del current["metadata"]["finalizers"]

        try:
            self._store.mutate(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"], drop)
        except ApiError as error:
            if error.status != 404:
                raise

    def _orphan_dependents(self, plural: str, owner: Obj) -> None:
        owner_uid = owner["metadata"]["uid"]
        for dependent_plural, dependent in self._dependents(owner_uid):

            def unlink(current: Obj) -> None:
                remaining = [
                    ref
                    for ref in current["metadata"].get("ownerReferences") or []
                    if ref.get("uid") != owner_uid
                ]
                if remaining:
                    current["metadata"]["ownerReferences"] = remaining
                else:
                    current["metadata"].pop("ownerReferences", None)

            try:
                self._store.mutate(
                    dependent_plural,
                    dependent["metadata"].get("namespace"),
                    dependent["metadata"]["name"],
                    unlink,
                )
            except ApiError as error:
                if error.status != 404:
                    raise
        self._remove_finalizer(plural, owner, "orphan")

    def _empty_namespace(self, namespace: str) -> None:
        for plural, obj in self._all_objects():
            if plural != "namespaces" and obj["metadata"].get("namespace") == namespace:
                self._delete_quietly(plural, obj, "Background")
        self._maybe_finish_namespace(namespace)

    def _maybe_finish_namespace(self, namespace: str) -> None:
        store = self._store
        with store._lock:
            ns = store._objects["namespaces"].get(("", namespace))
            if ns is None or not ns["metadata"].get("deletionTimestamp"):
                return
            if any(obj["metadata"].get("namespace") == namespace for _, obj in self._all_objects()):
                return
            if ns["metadata"].get("finalizers"):
                return
            final = copy.deepcopy(ns)
            final["metadata"]["resourceVersion"] = store._next_version()
            del store._objects["namespaces"][("", namespace)]
            store._record("DELETED", "namespaces", final)
        store._schedule_dispatch()
