"""Task actions (``POST /druid/indexer/v1/action``): what a peon asks the Overlord, and what it is answered.

The body is Druid's ``TaskActionHolder``: ``{"task": <task JSON>, "action": {"type": ..., ...}}``; the answer
``{"result": ...}``. A refused action raises :class:`ActionRefused` whose message the API returns as
``{"error": <message>}`` with HTTP 500, as ``OverlordResource.doAction`` does for every exception.

Handled action types (apache/druid ``common/actions``): ``timeChunkLockTryAcquire`` / ``timeChunkLockAcquire``
(and their older names ``lockTryAcquire`` / ``lockAcquire``), ``segmentAllocate``,
``segmentTransactionalInsert`` / ``segmentTransactionalReplace`` / ``segmentTransactionalAppend`` /
``segmentInsert``, ``lockList``, ``lockRelease``, ``updateStatus``, ``updateLocation``. Another type is
refused with :class:`UnknownAction` (HTTP 400, as Jackson refuses an unknown type id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.lockbox import (
    InactiveTask,
    Interval,
    Lockbox,
    LocksDoNotCover,
    bucket,
)

_LOCK_ACTIONS = frozenset(
    {"timeChunkLockTryAcquire", "timeChunkLockAcquire", "lockTryAcquire", "lockAcquire"}
)
_PUBLISH_ACTIONS = frozenset(
    {
        "segmentTransactionalInsert",
        "segmentTransactionalReplace",
        "segmentTransactionalAppend",
        "segmentInsert",
    }
)


class ActionRefused(Exception):
    """The Overlord refused the action (HTTP 500 ``{"error": message}``)."""


class UnknownAction(Exception):
    """The action's type is not one Druid knows (HTTP 400)."""


def perform(
    lockbox: Lockbox,
    task: DruidTask,
    action: Mapping[str, Any],
    update_location: Callable[[str, dict[str, Any]], None],
) -> Any:
    """Run one action for ``task``; returns the ``result`` value, raises ActionRefused / UnknownAction."""
    kind = str(action.get("type", ""))
    try:
        if kind in _LOCK_ACTIONS:
            interval = Interval.parse(str(action.get("interval", "")))
            lock = lockbox.try_lock(task, interval, str(action.get("lockType") or "EXCLUSIVE"))
            return None if lock is None else lock.to_json()
        if kind == "segmentAllocate":
            data_source = str(action.get("dataSource") or task.data_source or "")
            interval = bucket(str(action.get("timestamp", "")), action.get("preferredSegmentGranularity"))
            return lockbox.allocate(task, data_source, interval)
        if kind in _PUBLISH_ACTIONS:
            segments = list(action.get("segments") or [])
            lockbox.check_covered(task, segments)
            return {"segments": segments, "success": True, "errorMsg": None}
        if kind == "lockList":
            return [lock.to_json() for lock in lockbox.locks_of(task.id)]
        if kind == "lockRelease":
            lockbox.release(task.id, Interval.parse(str(action.get("interval", ""))))
            return None
        if kind == "updateLocation":
            update_location(task.id, dict(action.get("location") or {}))
            return None
        if kind == "updateStatus":
            return None  # only notifies listeners: it never completes the task
    except (InactiveTask, LocksDoNotCover) as error:
        raise ActionRefused(str(error)) from error
    except ValueError as error:
        raise ActionRefused(f"Invalid action[{kind}]: {error}") from error
    raise UnknownAction(
        f"Could not resolve type id '{kind}' as a subtype of `org.apache.druid.indexing.common.actions."
        "TaskAction`"
    )
