"""The waiting logic of one peon Job, shared by the triggerer and the worker: :class:`JobFollower`.

It waits until the Job finished (or, with ``wait_for="started"``, its pod started), failing fast on launch
problems waiting will not cure (``K8sjobLaunchTimeout``, hopeless pod reasons, a refused pod create:
:mod:`.launch_checks`),
letting go of a pod a sidecar holds, and streaming the peon's log (:mod:`.peon_log`). It reads everything
from the shared watches (:mod:`.watch`) and keeps waiting through API outages until its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity

from druid_k8s_provider import metrics
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s_async import AsyncKubeSession, DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import JOB_NAME_LABEL, jobs_path, newest, pods_path
from druid_k8s_provider.hooks.k8s_retry import worth_logging
from druid_k8s_provider.hooks.log_cursor import LogCursor
from druid_k8s_provider.triggers.launch_checks import POD_CREATE_GRACE_SECONDS, LaunchChecks
from druid_k8s_provider.triggers.peon_log import PeonLogStream, _main_terminated
from druid_k8s_provider.triggers.watch import (
    OwnJob,
    SharedWatch,
    _live,
    _wait_at_most,
    shared_watch,
)

log = logging.getLogger(__name__)

#: How long a pod may keep running after its main container ended before the main container's end decides
#: (a sidecar nothing stops: kubexit missing, a native sidecar ignoring SIGTERM, a service-mesh proxy).
SIDECAR_GRACE_SECONDS = 30.0

# Event statuses (the ``status`` key of every event payload).
FINISHED = "finished"
STARTED = "started"
LAUNCH_FAILED = "launch_failed"
TIMED_OUT = "timed_out"
MISSING = "missing"
ERROR = "error"


async def _cancel_and_settle(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel helper tasks and wait until they ended; their errors are theirs (already logged or moot), but
    a cancellation of the caller meanwhile still propagates."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the log stream's end no longer matters


@dataclass
class JobFollower(PeonLogStream, LaunchChecks):
    """Wait for one peon Job: launch (with timeout and fail-fast), completion, and its log.

    ``run()`` returns an event payload (a dict with ``status`` and details) instead of raising, so the
    trigger can hand it to the operator and the operator decides (delete, fail, report).
    """

    job_name: str
    namespace: str
    druid_task_id: str | None
    hook: DruidK8sAsyncHook
    wait_for: str = FINISHED
    launch_deadline: float | None = None
    completion_deadline: float | None = None
    image_pull_grace_seconds: float = 60.0
    poll_interval: float = 60.0
    stream_logs: bool = True
    log_cursor: LogCursor = field(default_factory=LogCursor)
    sidecar_grace_seconds: float = SIDECAR_GRACE_SECONDS
    emit_line: Callable[[str], None] = print
    #: Set by a wait in a worker: watch only this Job and its pods (see :func:`shared_watch`).
    own_job: OwnJob | None = None
    #: Shown every look at the Job and its pod, to time the peon's start (a metric), when set.
    startup: metrics.PeonStartup | None = None
    _pull_problem_since: float | None = field(default=None, init=False)
    # Lets go of the pods watch (set by run(); see _let_go_of_pods).
    _release_pods: Callable[[], Awaitable[None]] | None = field(default=None, init=False, repr=False)

    async def run(self) -> dict[str, Any]:
        """Wait until the awaited state (or a failure) and describe it.

        The pods watch is held only until the pod started (launch failures, the pod to stream the log of);
        after that the Jobs watch alone tells completion, so with every pod running a namespace needs one
        watch stream. The pod's final state is read once, when its log stream ends.
        """
        async with (
            self.hook.session() as session,
            shared_watch(self.hook, self.namespace, "jobs", self.own_job) as jobs,
            contextlib.AsyncExitStack() as pods_lease,
        ):
            pods = await pods_lease.enter_async_context(
                shared_watch(self.hook, self.namespace, "pods", self.own_job)
            )
            wake = self._wake
            jobs.subscribe(self.job_name, wake)
            pods.subscribe(self.job_name, wake)
            self._release_pods = pods_lease.aclose
            try:
                return await self._wait(session, jobs, pods, wake)
            finally:
                jobs.unsubscribe(self.job_name, wake)
                pods.unsubscribe(self.job_name, wake)
                await _cancel_and_settle(self._log_tasks)

    def __post_init__(self) -> None:
        self._log_tasks: list[asyncio.Task[None]] = []
        # Set when the log stream ended because the main container did: everything was shown, and the
        # operator need not read the log again when it resumes.
        self._log_complete = False
        # The pod as last known once the pods watch was let go (after the start), and its end state as read
        # when the log stream ended.
        self._pods_released = False
        self._started = False  # whether the pod had started when last seen
        self._known_pod: dict[str, Any] | None = None
        self._final_pod: dict[str, Any] | None = None
        # Set whenever there is something new to look at (the watches, the log stream's end).
        self._wake = asyncio.Event()
        # When the main container was first seen ended while the Job ran on (a sidecar holding the pod).
        self._main_ended_at: float | None = None
        # A Job seen without a pod: since when, and when its events are read next (a refused pod create).
        self._podless_since: float | None = None
        self._next_events_look: float | None = None
        self._events_interval = POD_CREATE_GRACE_SECONDS

    async def outcome(self) -> dict[str, Any]:
        """:meth:`run`, with a failure to wait turned into an ``error`` payload (the Job is left as it is)."""
        try:
            return await self.run()
        except Exception as exc:
            log.exception("Waiting for Job %s failed", self.job_name)
            return self._payload(ERROR, error=f"{type(exc).__name__}: {exc}")

    def _cache_ready(self, jobs: SharedWatch, pods: SharedWatch) -> bool:
        """Whether the watches can answer a look: the Jobs watch synced, and the pods watch too while held."""
        return jobs.synced.is_set() and (self._pods_released or _live(pods))

    async def _read_state(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, poll: bool
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
        """(the Job, its newest pod) from the watches' caches, or read directly with ``poll``; None when the
        caches cannot tell yet (a watch is listing) and no poll is due: the watch's list wakes every waiter.
        """
        if poll:
            job = await session.get(jobs_path(self.namespace, self.job_name))
            items, _ = await session.list_objects(
                pods_path(self.namespace), f"{JOB_NAME_LABEL}={self.job_name}"
            )
            return job, newest(items)
        if not self._cache_ready(jobs, pods):
            return None
        cached = jobs.objects.get(self.job_name)
        if self._pods_released and not _live(pods):
            return cached, self._final_pod or self._known_pod
        return cached, newest(pods.by_job(self.job_name))

    def _deadlines(self) -> list[float]:
        """When something of this task is due whatever the watches say (time.time() seconds)."""
        started, deadlines = self._started, []
        if not started and self.launch_deadline is not None:
            deadlines.append(self.launch_deadline)
        if not started and self._pull_problem_since is not None:
            deadlines.append(self._pull_problem_since + self.image_pull_grace_seconds)
        if not started and self._next_events_look is not None:
            deadlines.append(self._next_events_look)
        if self._main_ended_at is not None:
            deadlines.append(self._main_ended_at + self.sidecar_grace_seconds)
        if self.completion_deadline is not None:
            deadlines.append(self.completion_deadline)
        return deadlines

    async def _wait(
        self,
        session: AsyncKubeSession,
        jobs: SharedWatch,
        pods: SharedWatch,
        wake: asyncio.Event,
    ) -> dict[str, Any]:
        """Look whenever the watches wake this waiter, a deadline of the task is due or a poll is.

        While a watch (re)lists (thousands of waiters at a triggerer's start, or after a 410), a waiter does
        not read for itself: the list wakes every waiter once it is in, and N direct reads would only slow
        the list down on a loaded API server. It reads directly only for its fallback poll, when the watch
        has not been heard of (no page, event or bookmark) for two poll intervals, or when one of its own
        deadlines (launch, completion...) is due while the watch cannot tell.
        """
        next_poll = time.time() + self.poll_interval
        while True:
            wake.clear()
            now = time.time()
            poll = False
            if now >= next_poll:
                next_poll = now + self.poll_interval
                # The fallback poll is for a watch that went quiet (events and bookmarks stopped).
                heard = jobs.last_heard if self._pods_released else min(jobs.last_heard, pods.last_heard)
                poll = time.monotonic() - heard > 2 * self.poll_interval
            if not self._cache_ready(jobs, pods) and any(due <= now for due in self._deadlines()):
                poll = True
            payload, _ = await self._look_through_outages(session, jobs, pods, wake, poll)
            if payload is not None:
                return payload
            deadlines = [next_poll, *self._deadlines()]
            await _wait_at_most(max(0.05, min(deadlines) - time.time()), wake.wait())

    async def _look_through_outages(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, wake: asyncio.Event, poll: bool
    ) -> tuple[dict[str, Any] | None, bool]:
        """:meth:`_look`, retried while the API server fails transiently, until the completion deadline.

        An outage (a control-plane upgrade, an etcd election) changes nothing about the task, so the wait
        goes on. A pause between attempts ends early when a watch relists (that wakes every waiter), so the
        look after an outage reads the fresh cache as soon as there is one, and otherwise reads for itself
        within the policy's longest pause.
        """
        retrying = self.hook.retry_policy.until(self.completion_deadline).asynchronous(
            f"waiting for Job {self.job_name}",
            sleep=lambda seconds: _wait_at_most(seconds, wake.wait()),
            before_sleep=self._warn_still_waiting,
        )
        async for attempt in retrying:
            with attempt:
                wake.clear()  # what set it is about to be looked at; a pause ends only for something new
                return await self._look(session, jobs, pods, poll, time.time())
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _warn_still_waiting(self, state: tenacity.RetryCallState) -> None:
        if worth_logging(state, None):
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "Kubernetes API unavailable while waiting for Job %s (%s); still waiting", self.job_name, exc
            )

    async def _look(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, poll: bool, now: float
    ) -> tuple[dict[str, Any] | None, bool]:
        """One look at the Job and its pod: (the event payload when waiting is over, whether it started; as
        last seen while the watches cannot tell)."""
        state = await self._read_state(session, jobs, pods, poll)
        if state is None:
            return None, self._started
        job, pod = state
        if job is None and not poll:
            # Not in a synced cache: deleted, or created after the list and its event not yet in.
            job, pod = await self._read_state(session, jobs, pods, True) or (None, None)
        if job is None:
            # Deleted at completion (the Overlord does): the pod as last seen may still say how it ended.
            pod = pod or self._final_pod or self._departed_pod(pods) or self._known_pod
            if self.startup is not None:
                self.startup.observe(None, pod)
            return self._payload(MISSING, pod=pod), False
        if self.startup is not None:
            self.startup.observe(job, pod)
        started = self._started = pod is not None and job_state.has_started(pod)
        if pod is not None and started:
            self._start_logs(session, jobs, pods, pod["metadata"]["name"], job)
            await self._let_go_of_pods(pods, pod)
        if job_state.is_finished(job):
            await self._drain_logs()
            for ended in (self._final_pod, self._departed_pod(pods)):
                if ended is not None and _main_terminated(ended):
                    pod = ended
                    break
            if pod is None or not (job_state.succeeded(job) or _main_terminated(pod)):
                # The pods watch may lag behind the Jobs watch (a peon done in a moment), or be closed: read
                # the pod itself when its name (the log to catch up) or, for a failure, its exit code,
                # OOMKilled or eviction is missing. A success needs no more of the pod than its name.
                items, _ = await session.list_objects(
                    pods_path(self.namespace), f"{JOB_NAME_LABEL}={self.job_name}"
                )
                pod = newest(items) or pod
            return self._payload(FINISHED, job=job, pod=pod), started
        if started and self.wait_for == STARTED:
            return self._payload(STARTED, job=job, pod=pod), started
        if started:
            held = await self._held_by_sidecars(session, job, pod, now)
            if held is not None:
                return held, started
        if not started:
            failure = self._launch_failure(pod, now)
            events = None
            if pod is None and failure is None:
                events = await self._events_of_podless_job(session, now)
                refusal = job_state.pod_create_refusal(events or ())
                if refusal is not None:
                    failure = f"the Job cannot create its pod ({refusal[0]}): {refusal[1]}"
            elif pod is not None:
                self._podless_since = self._next_events_look = None
            if failure is not None:
                if events is None:
                    events = await session.list_events(
                        self.namespace, [self.job_name] + ([pod["metadata"]["name"]] if pod else [])
                    )
                reason, listed = failure, job_state.format_events(events)
                return self._payload(LAUNCH_FAILED, job=job, pod=pod, reason=reason, events=listed), started
        if self.completion_deadline is not None and now >= self.completion_deadline:
            await self._drain_logs()
            return self._payload(TIMED_OUT, job=job, pod=pod), started
        return None, started

    async def _let_go_of_pods(self, pods: SharedWatch, pod: dict[str, Any]) -> None:
        """Once the pod started, stop holding the pods watch (the last holder leaves it to expire).

        While it still runs (other waiters, or its keep-alive) its cache keeps answering for this pod.
        """
        self._known_pod = pod
        # A worker's private pods watch costs no more requests held to the end (one stream, resumed every
        # WATCH_TIMEOUT_SECONDS), and it sees how the pod ended before the Overlord deletes the Job.
        private = self.own_job is not None
        if self._pods_released or self.wait_for == STARTED or self._release_pods is None or private:
            return
        self._pods_released = True
        await self._release_pods()

    def _departed_pod(self, pods: SharedWatch) -> dict[str, Any] | None:
        """The newest pod of this Job deleted while it was watched, as the ``DELETED`` event showed it."""
        return newest(list(pods.departed.get(self.job_name, {}).values()))

    async def _held_by_sidecars(
        self, session: AsyncKubeSession, job: dict[str, Any], pod: dict[str, Any] | None, now: float
    ) -> dict[str, Any] | None:
        """The FINISHED payload for a pod whose main container ended :attr:`sidecar_grace_seconds` ago while
        other containers keep it (and the Job) running, else None.

        Kubernetes completes the Job only once every container of its pod ended; a sidecar nothing stops
        would hold the task until ``maxTaskDuration``. The pod is read once more then, to name the containers
        still running (``held_by`` in the payload) and to have the main container's final state.
        """
        if pod is None or not _main_terminated(pod):
            self._main_ended_at = None
            return None
        if self._main_ended_at is None:
            self._main_ended_at = now
        if now < self._main_ended_at + self.sidecar_grace_seconds:
            return None
        current = await session.get(pods_path(self.namespace, pod["metadata"]["name"])) or pod
        holders = job_state.running_containers(current)
        log.warning(
            "Job %s: the main container ended %.0fs ago but %s kept pod %s running; the main container's end "
            "decides the outcome and the Job is deleted",
            self.job_name,
            now - self._main_ended_at,
            ", ".join(repr(name) for name in holders) or "no container named in its status",
            current["metadata"]["name"],
        )
        await self._drain_logs()
        return self._payload(FINISHED, job=job, pod=current, held_by=holders)

    def _payload(self, status: str, **details: Any) -> dict[str, Any]:
        for kind in ("job", "pod"):
            if kind in details:
                details[kind] = job_state.summary(details[kind])
        return {
            "status": status,
            "job_name": self.job_name,
            "namespace": self.namespace,
            "druid_task_id": self.druid_task_id,
            "kubernetes_conn_id": self.hook.kubernetes_conn_id,
            "disable_client_proxy": self.hook.disable_client_proxy,
            "log_cursor": self.log_cursor.to_dict(),
            "log_complete": self._log_complete,
            **details,
        }
