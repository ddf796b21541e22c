"""The garbage collector and namespace controller of the emulated cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from druid_k8s_provider.testing.api_errors import ApiError
from druid_k8s_provider.testing.resources import Obj, copy_object
from druid_k8s_provider.testing.store_events import WatchEvent

if TYPE_CHECKING:
    from druid_k8s_provider.testing.store import ObjectStore


class GarbageCollector:
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
            final = copy_object(ns)
            final["metadata"]["resourceVersion"] = store._next_version()
            del store._objects["namespaces"][("", namespace)]
            store._record("DELETED", "namespaces", final)
        store._schedule_dispatch()
