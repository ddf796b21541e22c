"""The emulated TTL-after-finished controller."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from druid_k8s_provider.testing.controllers.common import (
    Obj,
    find_condition,
    is_not_found,
    object_key,
    parse_rfc3339,
)

if TYPE_CHECKING:
    from druid_k8s_provider.testing.cluster import Cluster

log = logging.getLogger(__name__)


class TTLController:
    """Deletes finished Jobs ``ttlSecondsAfterFinished`` after they finished (background propagation)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def track(self, job: Obj, finished_at: float | None) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        uid = str(job["metadata"]["uid"])
        if ttl is None or uid in self._timers or job["metadata"].get("deletionTimestamp"):
            return
        if finished_at is None:
            status = job.get("status")
            final = find_condition(status, "Complete") or find_condition(status, "Failed") or {}
            stamp = final.get("lastTransitionTime") or (status or {}).get("completionTime")
            finished_at = parse_rfc3339(stamp) if stamp else time.time()
        delay = max(0.0, finished_at + int(ttl) - time.time())
        namespace, name = object_key(job)
        self._timers[uid] = asyncio.get_running_loop().call_later(delay, self._expire, namespace, name, uid)

    def forget(self, uid: str) -> None:
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, namespace: str, name: str, uid: str) -> None:
        self._timers.pop(uid, None)
        try:
            self.cluster.store.delete(
                "jobs", namespace, name, propagation_policy="Background", precondition_uid=uid
            )
        except Exception as error:
            if not is_not_found(error) and getattr(error, "status", None) != 409:
                log.exception("TTL controller could not delete job %s/%s", namespace, name)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
