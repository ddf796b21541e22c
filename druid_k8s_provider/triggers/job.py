"""Wait for a peon Job without polling per task: one shared watch per namespace, many waiters.

Druid's runner polls the API once per task, which is what loads large clusters. Here every waiter in a
process (all triggers of a triggerer, or the one operator waiting in a worker) shares one list+watch of the
peon Jobs and one of the peon pods per (connection, namespace): a registry keyed by the running event loop
hands out :class:`SharedWatch` objects by reference count. A watch resumes from its last resourceVersion
when the server ends the stream, relists on ``410 Expired`` or a dropped connection, and each waiter keeps
a slow fallback poll of its own Job in case the watch is silently stuck.

While the API server is down (a control-plane upgrade or restart keeps it away for tens of seconds), every
read of a waiting task (the watches' relists, the log stream, a waiter's own reads) is retried with the
hook's exponential back-off, capped at a couple of seconds and without an attempt limit, so the outcome of a
peon that ended meanwhile arrives within about that cap once the server answers, not at the fallback poll.
Only the task's deadline or its cancellation (a user stopping it) ends that retrying.

:class:`JobFollower` is the waiting logic (launch timeout, fail-fast, completion, log streaming) used by both
:class:`DruidK8sJobTrigger` (deferrable) and the operator's in-process wait (non-deferrable), so both modes
behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.hooks.druid_k8s_async import DruidK8sAsyncHook
from druid_k8s_provider.hooks.log_cursor import LogCursor
from druid_k8s_provider.triggers.follower import (
    ERROR,
    FINISHED,
    LAUNCH_FAILED,
    MISSING,
    SIDECAR_GRACE_SECONDS,
    STARTED,
    TIMED_OUT,
    JobFollower,
)
from druid_k8s_provider.triggers.watch import OwnJob, _keep_trying, shared_watch, shared_watches

__all__ = [
    "ERROR",
    "FINISHED",
    "LAUNCH_FAILED",
    "MISSING",
    "SIDECAR_GRACE_SECONDS",
    "STARTED",
    "TIMED_OUT",
    "DruidK8sJobTrigger",
    "JobFollower",
    "OwnJob",
    "_keep_trying",
    "shared_watch",
    "shared_watches",
]


class DruidK8sJobTrigger(BaseTrigger):
    """Fires when a peon Job finished (or, with ``wait_for="started"``, when its pod started), or when it
    cannot launch, timed out or vanished. Streams the peon's log into the task log while it waits.

    Everything it needs is in its kwargs, so a triggerer restart rebuilds it and resumes from the same
    deadlines and log cursor.

    :param job_name: the peon Job.
    :param namespace: its namespace.
    :param druid_task_id: the Druid task id (for messages).
    :param kubernetes_conn_id: Airflow connection to Kubernetes.
    :param wait_for: ``"finished"`` or ``"started"``.
    :param launch_deadline: epoch seconds by which the pod must have started (K8sjobLaunchTimeout).
    :param completion_deadline: epoch seconds after which waiting stops (maxTaskDuration plus slack).
    :param image_pull_grace_seconds: how long ErrImagePull/ImagePullBackOff may persist before failing.
    :param poll_interval: seconds between fallback polls of the Job, in case the watch is stuck.
    :param stream_logs: log the peon's ``main`` container output while waiting.
    :param log_cursor: where the log was already shown up to (:class:`LogCursor` as a dict).
    :param disable_client_proxy: ignore ``HTTP(S)_PROXY``.
    :param sidecar_grace_seconds: how long the pod may run on after its main container ended before that end
        decides (a sidecar nothing stops).
    """

    def __init__(
        self,
        *,
        job_name: str,
        namespace: str,
        druid_task_id: str | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        wait_for: str = FINISHED,
        launch_deadline: float | None = None,
        completion_deadline: float | None = None,
        image_pull_grace_seconds: float = 60.0,
        poll_interval: float = 60.0,
        stream_logs: bool = True,
        log_cursor: dict[str, Any] | None = None,
        disable_client_proxy: bool = False,
        sidecar_grace_seconds: float = SIDECAR_GRACE_SECONDS,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not poll_interval > 0:
            raise DruidK8sConfigError(
                "poll_interval",
                f"{poll_interval!r} would poll the API server in a tight loop",
                "give seconds between fallback polls, e.g. 60 (the watch does the real work)",
            )
        if not image_pull_grace_seconds >= 0:
            raise DruidK8sConfigError(
                "image_pull_grace_seconds",
                f"{image_pull_grace_seconds!r} is negative",
                "give 0 (fail on the first pull error) or more seconds",
            )
        self.job_name = job_name
        self.namespace = namespace
        self.druid_task_id = druid_task_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.wait_for = wait_for
        self.launch_deadline = launch_deadline
        self.completion_deadline = completion_deadline
        self.image_pull_grace_seconds = image_pull_grace_seconds
        self.poll_interval = poll_interval
        self.stream_logs = stream_logs
        self.log_cursor = log_cursor
        self.disable_client_proxy = disable_client_proxy
        self.sidecar_grace_seconds = sidecar_grace_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and kwargs: enough for another triggerer to resume the wait."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "namespace": self.namespace,
                "druid_task_id": self.druid_task_id,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "wait_for": self.wait_for,
                "launch_deadline": self.launch_deadline,
                "completion_deadline": self.completion_deadline,
                "image_pull_grace_seconds": self.image_pull_grace_seconds,
                "poll_interval": self.poll_interval,
                "stream_logs": self.stream_logs,
                "log_cursor": self.log_cursor,
                "disable_client_proxy": self.disable_client_proxy,
                "sidecar_grace_seconds": self.sidecar_grace_seconds,
            },
        )

    def follower(self) -> JobFollower:
        """The waiting logic, configured from this trigger's kwargs."""
        return JobFollower(
            job_name=self.job_name,
            namespace=self.namespace,
            druid_task_id=self.druid_task_id,
            hook=DruidK8sAsyncHook(self.kubernetes_conn_id, disable_client_proxy=self.disable_client_proxy),
            wait_for=self.wait_for,
            launch_deadline=self.launch_deadline,
            completion_deadline=self.completion_deadline,
            image_pull_grace_seconds=self.image_pull_grace_seconds,
            poll_interval=self.poll_interval,
            stream_logs=self.stream_logs,
            log_cursor=LogCursor.from_dict(self.log_cursor),
            emit_line=self._emit_line,
            sidecar_grace_seconds=self.sidecar_grace_seconds,
        )

    async def on_kill(self) -> None:
        """A user stopped the deferred task (mark failed/success, clear): delete the Job, as Druid's
        shutdown does. Not called when the triggerer merely restarts."""
        hook = DruidK8sAsyncHook(self.kubernetes_conn_id, disable_client_proxy=self.disable_client_proxy)
        async with hook.session() as session:
            deleted = await session.delete_job(self.job_name, self.namespace)
        self.log.info(
            "Task stopped by a user: Job %s %s", self.job_name, "deleted" if deleted else "already gone"
        )

    def _emit_line(self, line: str) -> None:
        self.log.info("%s", line)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait, then yield exactly one event describing what happened."""
        yield TriggerEvent(await self.follower().outcome())  # type: ignore[no-untyped-call]
