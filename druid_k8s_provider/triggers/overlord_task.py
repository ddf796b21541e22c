"""``DruidOverlordTaskTrigger``: the deferred wait for a Druid task launched through the Overlord.

Everything it needs is in its kwargs (:class:`~druid_k8s_provider.launch.follow.FollowSpec`: the launch mode,
the Druid task id, the Job, the connection ids, whether a release is still pending, the log position), so a
triggerer restart rebuilds it and goes on: a release already done is found done, the Job is found again by
its ``task.id``. The triggerer asks the Overlord only through the shared
:class:`~druid_k8s_provider.triggers.overlord_board.OverlordBoard` (one batched status request per interval
for all its tasks), and Kubernetes only through the shared watches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from druid_k8s_provider.launch.follow import FollowSpec, follow_task
from druid_k8s_provider.launch.stop import stop_task


class DruidOverlordTaskTrigger(BaseTrigger):
    """Fires once the Druid task completed in the Overlord (or waiting for it failed); streams the peon's log
    into the task log meanwhile. Its kwargs are the fields of :class:`FollowSpec`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.spec = FollowSpec(**kwargs)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: enough for another triggerer to resume the wait."""
        return f"{type(self).__module__}.{type(self).__qualname__}", self.spec.to_kwargs()

    def _say(self, line: str) -> None:
        self.log.info("%s", line)

    def _emit_line(self, line: str) -> None:
        """A line of the peon's log."""
        self.log.info("%s", line)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait, then yield exactly one event describing what happened."""
        event = await follow_task(self.spec, emit_line=self._emit_line, say=self._say)
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """A user stopped the deferred task: shut it down in the Overlord, then clear our own Jobs. Not called
        when the triggerer merely restarts."""
        spec = self.spec
        await stop_task(
            druid_ingest_conn_id=spec.druid_ingest_conn_id,
            kube=spec.kube_hook(),
            namespace=spec.namespace,
            task_id=spec.druid_task_id,
            own_job_name=spec.job_name if spec.mode == "airflow" else None,
            say=self._say,
        )
