"""Deletion in the emulator's object store, as the API server does it: preconditions, graceful pod
deletion, finalizers, ``deletionTimestamp``, and the propagation policy (Background, Foreground, Orphan)."""

from __future__ import annotations

import pendulum

from druid_k8s_provider.testing.api_errors import ApiError, bad_request, conflict, error_details, not_found
from druid_k8s_provider.testing.garbage_collector import GarbageCollector
from druid_k8s_provider.testing.resources import (
    PROTECTED_NAMESPACES,
    Obj,
    ResourceType,
    copy_object,
    now_timestamp,
    resource_type,
)
from druid_k8s_provider.testing.store_reads import StoreReads


class StoreDeletion(StoreReads):
    """DELETE of stored objects; the garbage collector finishes what a propagation policy starts."""

    _collector: GarbageCollector

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
                error_details(rt, name),
            )
        if precondition_resource_version and precondition_resource_version != old_metadata["resourceVersion"]:
            raise conflict(rt, name)
        if plural == "namespaces" and name in PROTECTED_NAMESPACES:
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                error_details(rt, name),
            )
        grace = self._grace_period(rt, old, grace_period_seconds)
        result = copy_object(old)
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
                return copy_object(old)
            metadata["deletionTimestamp"] = now_timestamp()
            metadata["deletionGracePeriodSeconds"] = 0
            result.setdefault("status", {})["phase"] = "Terminating"
            return self._commit_modified(rt, key, result)
        if grace > 0:
            current_grace = old_metadata.get("deletionGracePeriodSeconds")
            if already_deleting and current_grace is not None and current_grace <= grace:
                return copy_object(old) if result == old else self._commit_modified(rt, key, result)
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
                return copy_object(old)
            return self._commit_modified(rt, key, result)
        metadata["resourceVersion"] = self._next_version()
        del objects[key]
        self._record("DELETED", plural, result)
        if rt.returns_deleted_object:
            return copy_object(result)
        details = error_details(rt, name)
        details["uid"] = result["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _commit_modified(self, rt: ResourceType, key: tuple[str, str], result: Obj) -> Obj:
        """Store ``result`` as a MODIFIED object (caller holds the lock and schedules the dispatch)."""
        result["metadata"]["resourceVersion"] = self._next_version()
        self._objects[rt.plural][key] = result
        self._record("MODIFIED", rt.plural, result)
        return copy_object(result)

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
