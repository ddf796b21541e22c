"""``DruidTaskStatusTrigger``: the deferrable sensor's wait for a Druid task to complete, in the triggerer.

The Overlord decides when the task is complete. The trigger never asks it on its own: it waits on the
process's :class:`~druid_k8s_provider.triggers.overlord_board.OverlordBoard`, which sends ONE batched
``POST /druid/indexer/v1/taskStatus`` per interval for every task waited on in the triggerer, however many
sensors wait. The task's Job only speeds things up: when the shared Kubernetes watch sees it finish or
vanish, the board is asked to look now instead of at the end of its interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from druid_k8s_provider.errors import DruidK8sConfigError, DruidK8sTaskError
from druid_k8s_provider.hooks.druid_k8s_async import DruidK8sAsyncHook
from druid_k8s_provider.hooks.job_state import is_finished
from druid_k8s_provider.hooks.k8s_api import task_id_of
from druid_k8s_provider.triggers.job import shared_watch
from druid_k8s_provider.triggers.overlord_board import OverlordBoard

#: Event status: the task completed; the event's ``overlord`` holds its status's fields.
COMPLETE = "complete"
#: Event status: the wait failed; the event's ``error`` says why (an id the Overlord lost or never had, a
#: refused request, a bad connection).
ERROR = "error"


class DruidTaskStatusTrigger(BaseTrigger):
    """Fires once the Overlord reports ``druid_task_id`` complete (SUCCESS or FAILED), or the wait failed.

    :param druid_task_id: the Druid task id.
    :param druid_ingest_conn_id: the Overlord connection.
    :param kubernetes_conn_id: the Kubernetes connection (to watch the task's Job).
    :param namespace: the Job's namespace.
    :param job_name: the Job's name (``peon_job_name`` of the task).
    :param status_interval: seconds between the board's batched status requests (the first waiter of a
        process sets it).
    """

    def __init__(
        self,
        *,
        druid_task_id: str,
        druid_ingest_conn_id: str,
        kubernetes_conn_id: str,
        namespace: str,
        job_name: str,
        status_interval: float = 5.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.druid_task_id = druid_task_id
        self.druid_ingest_conn_id = druid_ingest_conn_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.namespace = namespace
        self.job_name = job_name
        self.status_interval = status_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: enough for another triggerer to resume the wait."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "druid_task_id": self.druid_task_id,
                "druid_ingest_conn_id": self.druid_ingest_conn_id,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "namespace": self.namespace,
                "job_name": self.job_name,
                "status_interval": self.status_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait on the board, nudged by the Job's end; yield exactly one event."""
        board = OverlordBoard.shared(self.druid_ingest_conn_id, status_interval=self.status_interval)
        nudger = asyncio.get_running_loop().create_task(self._nudge_when_job_ends(board))
        try:
            status = await board.wait_complete(self.druid_task_id)
        except (DruidK8sTaskError, DruidK8sConfigError) as exc:
            yield TriggerEvent({"status": ERROR, "error": str(exc)})  # type: ignore[no-untyped-call]
            return
        finally:
            nudger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await nudger
        yield TriggerEvent({"status": COMPLETE, "overlord": asdict(status)})  # type: ignore[no-untyped-call]

    async def _nudge_when_job_ends(self, board: OverlordBoard) -> None:
        """Ask the board to look now when the task's Job finished, or vanished after being seen.

        Only a speed-up: a Kubernetes problem is logged once and the wait goes on at the board's pace.
        """
        wake = asyncio.Event()
        try:
            async with shared_watch(
                DruidK8sAsyncHook(self.kubernetes_conn_id), self.namespace, "jobs"
            ) as jobs:
                jobs.subscribe(self.job_name, wake)
                try:
                    seen = False
                    while True:
                        await wake.wait()
                        wake.clear()
                        job = next(iter(jobs.by_job(self.job_name)), None)
                        if job is not None and task_id_of(job) != self.druid_task_id:
                            continue  # a Job of another task under the same name
                        if (job is None and seen) or (job is not None and is_finished(job)):
                            board.check_soon()
                        seen = seen or job is not None
                finally:
                    jobs.unsubscribe(self.job_name, wake)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.warning(
                "Not watching the Job of Druid task %s (%s); waiting on the Overlord alone",
                self.druid_task_id,
                exc,
            )
