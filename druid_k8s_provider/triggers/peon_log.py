"""Streaming a peon's ``main`` container log into the task log, each line once, through drops and outages.

:class:`PeonLogStream` is the log half of :class:`~druid_k8s_provider.triggers.follower.JobFollower`: it
follows the log from the :class:`~druid_k8s_provider.hooks.log_cursor.LogCursor` (so a reconnect or a resume
in another process shows no line twice), and decides, when a stream ends, whether the container did (then
the log is complete) with the shared watches rather than a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import tenacity
from airflow.sdk.log import mask_secret

from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s_async import AsyncKubeSession, DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import pods_path
from druid_k8s_provider.hooks.k8s_errors import CONNECTION_ERRORS, ApiCallFailed, is_transient
from druid_k8s_provider.hooks.log_cursor import LogCursor, split_line
from druid_k8s_provider.hooks.secrets import job_task_secrets
from druid_k8s_provider.triggers.watch import SharedWatch, _keep_trying, _live, _wait_at_most

log = logging.getLogger(__name__)

#: How long a finished Job waits for the log stream to drain before the event fires anyway.
LOG_DRAIN_SECONDS = 2.0
#: How long a log stream's end waits for the watches to report the container's (or the Job's) end before
#: reading the pod itself (the kubelet reports a termination within about a second, the Job controller soon
#: after).
CACHE_SETTLE_SECONDS = 3.0


def _main_terminated(pod: dict[str, Any] | None) -> bool:
    state = (job_state.main_container_status(pod or {}) or {}).get("state") or {}
    return "terminated" in state


class PeonLogStream:
    """The log streaming of a Job's waiter (mixed into :class:`~druid_k8s_provider.triggers.follower.\
JobFollower`, whose fields these are)."""

    job_name: str
    namespace: str
    hook: DruidK8sAsyncHook
    stream_logs: bool
    log_cursor: LogCursor
    emit_line: Callable[[str], None]
    _log_tasks: list[asyncio.Task[None]]
    _log_complete: bool
    _final_pod: dict[str, Any] | None
    _wake: asyncio.Event

    def _start_logs(
        self,
        session: AsyncKubeSession,
        jobs: SharedWatch,
        pods: SharedWatch,
        pod_name: str,
        job: dict[str, Any],
    ) -> None:
        if self.stream_logs and not self._log_tasks:
            # This may be a triggerer that never saw the task spec: teach its masker the task's credentials
            # before the first peon line is logged.
            for secret in job_task_secrets(job):
                mask_secret(secret)
            self._log_tasks.append(
                asyncio.get_running_loop().create_task(self._stream_log(session, jobs, pods, pod_name))
            )

    async def _drain_logs(self) -> None:
        """Give the log stream a moment to deliver the last lines; the operator reads any remainder."""
        if self._log_tasks:
            await asyncio.wait(self._log_tasks, timeout=LOG_DRAIN_SECONDS)

    async def _container_ended(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, pod_name: str
    ) -> bool:
        """Whether the main container terminated (or its pod is gone), after a log stream ended.

        The watches usually tell within a moment of the stream's end, without a request: the pods watch (while
        it runs) reports the termination, the Jobs watch the Job's end (a finished Job's pod has ended). Only
        when both stay silent for a while is the pod read directly.
        """
        changed = asyncio.Event()
        for watch in (jobs, pods):
            watch.subscribe(self.job_name, changed)
        try:
            give_up = time.monotonic() + CACHE_SETTLE_SECONDS
            while (_live(jobs) or _live(pods)) and (remaining := give_up - time.monotonic()) > 0:
                # The pod first: its end comes before the Job's, and a pods watch still running keeps it
                # (even once deleted) where a read after the Job's failure may come too late.
                cached = pods.last_state(self.job_name, pod_name) if _live(pods) else None
                if cached is not None and _main_terminated(cached):
                    self._final_pod = cached
                    return True
                job = jobs.objects.get(self.job_name) if _live(jobs) else None
                if job is not None and job_state.is_finished(job):
                    if not job_state.succeeded(job):
                        # How the peon died (eviction, OOMKilled) is on the pod, which the Overlord's
                        # delete of the Job at completion takes away soon: read it while it is there.
                        self._final_pod = await session.get(pods_path(self.namespace, pod_name))
                    return True
                changed.clear()
                await _wait_at_most(remaining, changed.wait())
        finally:
            for watch in (jobs, pods):
                watch.unsubscribe(self.job_name, changed)
        pod = await session.get(pods_path(self.namespace, pod_name))
        if pod is not None:
            self._final_pod = pod
        return pod is None or _main_terminated(pod)

    async def _stream_log(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, pod_name: str
    ) -> None:
        """Follow the main container's log; reconnect from the cursor if the stream drops early (retried as
        :func:`_keep_trying` says, so the rest of the log flows again within moments of an outage's end)."""

        async def follow() -> bool:
            """True once everything was read; False after lines, then a drop; raises otherwise."""
            self.log_cursor.begin_read()
            shown = False
            try:
                async for raw in session.follow_log(
                    pod_name, self.namespace, job_state.MAIN_CONTAINER, self.log_cursor.since_time()
                ):
                    timestamp, text = split_line(raw)
                    if self.log_cursor.admit(timestamp):
                        self.emit_line(text)
                        shown = True
                # The stream ended; complete if because the container did (it delivered everything).
                self._log_complete = await self._container_ended(session, jobs, pods, pod_name)
                if self._log_complete:
                    self._wake.set()  # the Job may not end with the container (a sidecar): look now
            except ApiCallFailed as exc:
                if exc.status == 404:
                    return True  # pod gone: nothing more to read
                raise
            except CONNECTION_ERRORS:
                if not shown:
                    raise
            return self._log_complete

        await _keep_trying(
            self.hook.retry_policy,
            f"following the log of pod {pod_name}",
            follow,
            retry_on=_log_stream_resumable,
            before_sleep=_quiet_retry,
        )


def _log_stream_resumable(exc: BaseException) -> bool:
    """A log stream is followed again after a transient failure, or a ``400`` (the container is still
    being created); other refusals end it."""
    return is_transient(exc) or (isinstance(exc, ApiCallFailed) and exc.status == 400)


def _quiet_retry(state: tenacity.RetryCallState) -> None:
    """Reconnecting a log stream is routine (the watches warn about an outage): leave it to debug logs."""
    log.debug(
        "Log stream interrupted (%s); reconnecting", state.outcome.exception() if state.outcome else None
    )
