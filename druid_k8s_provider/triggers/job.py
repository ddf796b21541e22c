"""Wait for a peon Job without polling per task: one shared watch per namespace, many waiters.

Druid's runner polls the API once per task, which is what loads large clusters. Here every waiter in a
process (all triggers of a triggerer, or the one operator waiting in a worker) shares one list+watch of the
peon Jobs and one of the peon pods per (connection, namespace): a registry keyed by the running event loop
hands out :class:`SharedWatch` objects by reference count. A watch resumes from its last resourceVersion
when the server ends the stream, relists on ``410 Expired`` or a dropped connection, and each waiter keeps
a slow fallback poll of its own Job in case the watch is silently stuck.

:class:`JobFollower` is the waiting logic (launch timeout, fail-fast, completion, log streaming) used by both
:class:`DruidK8sJobTrigger` (deferrable) and the operator's in-process wait (non-deferrable), so both modes
behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk.log import mask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s import (
    CONNECTION_ERRORS,
    JOB_NAME_LABEL,
    PEON_SELECTOR,
    ApiCallFailed,
    AsyncKubeSession,
    DruidK8sAsyncHook,
    is_transient,
    jobs_path,
    newest,
    pods_path,
)
from druid_k8s_provider.hooks.log_cursor import LogCursor, split_line
from druid_k8s_provider.hooks.secrets import job_task_secrets

log = logging.getLogger(__name__)

#: Server-side watch timeout; the watch then resumes from its resourceVersion (cheap, no relist).
WATCH_TIMEOUT_SECONDS = 300
#: Longest pause between relist attempts while the API server keeps failing.
MAX_RELIST_BACKOFF_SECONDS = 30.0
#: How long a new waiter waits for the shared watches' first list before reading directly.
SYNC_WAIT_SECONDS = 5.0
#: How long a finished Job waits for the log stream to drain before the event fires anyway.
LOG_DRAIN_SECONDS = 2.0
#: How long a shared watch outlives its last user (a real API server's relist of every peon costs more than
#: an idle stream).
WATCH_KEEP_ALIVE_SECONDS = 30.0
#: How long a log stream's end waits for the watches to report the container's (or the Job's) end before
#: reading the pod itself (the kubelet reports a termination within about a second, the Job controller soon
#: after).
CACHE_SETTLE_SECONDS = 3.0
#: How long a Job may be without a pod before its events are read for a refused pod create (the Job
#: controller makes the pod within moments; a refusal is recorded as a FailedCreate event on the Job). Later
#: looks back off, doubling up to :data:`MAX_EVENTS_LOOK_SECONDS`, until the pod appears.
POD_CREATE_GRACE_SECONDS = 2.0
MAX_EVENTS_LOOK_SECONDS = 30.0
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


def job_name_of_pod(pod: dict[str, Any]) -> str | None:
    """The Job a pod belongs to, from the label the API server puts on Job pods."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(JOB_NAME_LABEL) or labels.get("batch.kubernetes.io/job-name")


def _live(watch: SharedWatch) -> bool:
    """Whether a shared watch's cache is current: synced, and its loop still running."""
    return watch.synced.is_set() and watch.task is not None and not watch.task.done()


async def _wait_at_most(timeout: float, waiting: Awaitable[Any]) -> None:
    """Await ``waiting`` for at most ``timeout`` seconds; running out of time is not an error.

    Not ``asyncio.wait_for``: on Python 3.11 it drops a cancellation that arrives as the awaited event is set
    (a user stopping the task just as a watch event came in), and the wait would go on.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await waiting


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


def _main_terminated(pod: dict[str, Any] | None) -> bool:
    state = (job_state.main_container_status(pod or {}) or {}).get("state") or {}
    return "terminated" in state


@dataclass(frozen=True)
class OwnJob:
    """The Job a worker's wait is about, as the worker created (``created``) or read it."""

    job: dict[str, Any]
    created: bool


@dataclass(eq=False)
class SharedWatch:
    """A cache of one kind of peon object in a namespace, kept current by a list+watch.

    Waiters register an :class:`asyncio.Event` per Job name; it is set whenever the Job or one of its pods
    changes (or the cache was rebuilt), so a waiter wakes exactly when there is something to look at.
    """

    hook: DruidK8sAsyncHook
    path: str
    key_of: Callable[[dict[str, Any]], str | None]
    label_selector: str = PEON_SELECTOR
    field_selector: str | None = None
    #: (objects, resourceVersion) known to be current, used instead of the first list (see
    #: :func:`shared_watch`); a later relist lists for real.
    seed: tuple[list[dict[str, Any]], str] | None = None
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: dict[str, set[asyncio.Event]] = field(default_factory=dict)
    users: int = 0
    relists: int = 0
    last_heard: float = 0.0  # time.monotonic() of the last list, event or bookmark
    task: asyncio.Task[None] | None = None
    retiring: asyncio.Task[None] | None = None  # the keep-alive countdown once the last user left

    def start(self) -> None:
        """Start the list+watch loop on the running loop."""
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"druid-k8s-watch {self.path}")

    async def stop(self) -> None:
        """Stop the loop (last user gone).

        Waits for the loop's end without taking on its cancellation, so a caller that is itself cancelled
        meanwhile (a user stopping the task) still is.
        """
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])

    def subscribe(self, job_name: str, wake: asyncio.Event) -> None:
        """Wake ``wake`` whenever something about ``job_name`` changes."""
        self.waiters.setdefault(job_name, set()).add(wake)

    def unsubscribe(self, job_name: str, wake: asyncio.Event) -> None:
        """Undo :meth:`subscribe`."""
        events = self.waiters.get(job_name)
        if events is not None:
            events.discard(wake)
            if not events:
                del self.waiters[job_name]

    def _notify(self, job_name: str | None) -> None:
        for wake in self.waiters.get(job_name or "", ()):
            wake.set()

    def _notify_all(self) -> None:
        for events in self.waiters.values():
            for wake in events:
                wake.set()

    def by_job(self, job_name: str) -> list[dict[str, Any]]:
        """Cached objects belonging to a Job (the Job itself, or its pods)."""
        return [obj for obj in self.objects.values() if self.key_of(obj) == job_name]

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            relists_before = self.relists
            try:
                async with self.hook.session() as session:
                    await self._list_and_watch(session)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.relists > relists_before:  # it was healthy since the last failure: a new outage
                    backoff = 0.5
                if not (isinstance(exc, ApiCallFailed | _Expired) or is_transient(exc)):
                    log.exception("Watch of %s failed unexpectedly; relisting", self.path)
                else:
                    log.warning("Watch of %s interrupted (%s); relisting in %.1fs", self.path, exc, backoff)
                self.synced.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RELIST_BACKOFF_SECONDS)
                continue

    async def _list_and_watch(self, session: AsyncKubeSession) -> None:
        if self.seed is not None:
            (items, resource_version), self.seed = self.seed, None
        else:
            items, resource_version = await session.list_objects(
                self.path, self.label_selector, self.field_selector
            )
        self.relists += 1
        self.last_heard = time.monotonic()
        self.objects = {obj["metadata"]["name"]: obj for obj in items}
        self.synced.set()
        self._notify_all()
        while True:
            async for event in session.watch(
                self.path, self.label_selector, resource_version, WATCH_TIMEOUT_SECONDS, self.field_selector
            ):
                kind, obj = event.get("type"), event.get("object") or {}
                self.last_heard = time.monotonic()
                if kind == "ERROR":
                    raise _Expired(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
                resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                if kind == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                if kind == "DELETED":
                    self.objects.pop(name, None)
                else:
                    self.objects[name] = obj
                self._notify(self.key_of(obj))
            # The server ended the stream (timeoutSeconds): resume from where we are, no relist.


class _Expired(Exception):
    """The watch's resourceVersion is too old (410) or the server sent an error: relist."""


_REGISTRY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], SharedWatch]] = (
    weakref.WeakKeyDictionary()
)


def shared_watches() -> dict[tuple[Any, ...], SharedWatch]:
    """The shared watches of the running loop (one triggerer or one ``asyncio.run``)."""
    return _REGISTRY.setdefault(asyncio.get_running_loop(), {})


async def _retire(
    watches: dict[tuple[Any, ...], SharedWatch], key: tuple[Any, ...], watch: SharedWatch
) -> None:
    """Stop an unused watch after the keep-alive, unless a new user came in the meantime."""
    await asyncio.sleep(WATCH_KEEP_ALIVE_SECONDS)
    if watch.users == 0 and watches.get(key) is watch:
        del watches[key]
        await watch.stop()


def _new_watch(hook: DruidK8sAsyncHook, namespace: str, plural: str, own_job: OwnJob | None) -> SharedWatch:
    """A watch of every peon ``plural`` in the namespace, or only of ``own_job`` and its pods."""
    if plural == "jobs":
        watch = SharedWatch(hook, jobs_path(namespace), lambda obj: obj["metadata"]["name"])
    else:
        watch = SharedWatch(hook, pods_path(namespace), job_name_of_pod)
    if own_job is not None:
        name = own_job.job["metadata"]["name"]
        version = str(own_job.job["metadata"].get("resourceVersion") or "")
        if plural == "jobs":
            watch.field_selector = f"metadata.name={name}"
            watch.seed = ([own_job.job], version) if version else None
        else:
            watch.label_selector = f"{JOB_NAME_LABEL}={name}"
            # The Job controller makes the pods after the Job: none can predate the create's version.
            watch.seed = ([], version) if own_job.created and version else None
    return watch


@contextlib.asynccontextmanager
async def shared_watch(
    hook: DruidK8sAsyncHook, namespace: str, plural: str, own_job: OwnJob | None = None
) -> AsyncIterator[SharedWatch]:
    """Use the loop's watch of ``plural`` ("jobs" or "pods") of peons in ``namespace``; start it if needed.

    The last user leaving does not stop it at once: it lingers :data:`WATCH_KEEP_ALIVE_SECONDS`, so a
    steady trickle of tasks (and the pods watch, reopened whenever a new task waits for its pod to start)
    reuses the synced cache instead of listing every peon in the namespace again.

    With ``own_job`` (a wait in a worker, the only waiter of its loop) the watch covers only that Job and its
    pods and starts from the Job as the worker created or read it: one request per watch instead of a list of
    every peon in the namespace and a watch, and it stops as soon as its user leaves.
    """
    private = own_job is not None
    key: tuple[Any, ...] = (hook.kubernetes_conn_id, hook.disable_client_proxy, namespace, plural)
    if own_job is not None:
        key += (own_job.job["metadata"]["name"],)
    watches = shared_watches()
    watch = watches.get(key)
    if watch is None:
        watch = _new_watch(hook, namespace, plural, own_job)
        watches[key] = watch
        watch.start()
    if watch.retiring is not None:
        watch.retiring.cancel()
        watch.retiring = None
    watch.users += 1
    try:
        yield watch
    finally:
        watch.users -= 1
        if watch.users == 0 and watches.get(key) is watch:
            if WATCH_KEEP_ALIVE_SECONDS > 0 and not private:
                watch.retiring = asyncio.get_running_loop().create_task(_retire(watches, key, watch))
            else:
                del watches[key]
                await watch.stop()


@dataclass
class JobFollower:
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

    async def _read_state(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, poll: bool
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        pods_synced = self._pods_released or _live(pods)
        if poll or not (jobs.synced.is_set() and pods_synced):
            job = await session.get(jobs_path(self.namespace, self.job_name))
            items, _ = await session.list_objects(
                pods_path(self.namespace), f"{JOB_NAME_LABEL}={self.job_name}"
            )
            return job, newest(items)
        cached = jobs.objects.get(self.job_name)
        if self._pods_released and not _live(pods):
            return cached, self._final_pod or self._known_pod
        return cached, newest(pods.by_job(self.job_name))

    async def _wait(
        self,
        session: AsyncKubeSession,
        jobs: SharedWatch,
        pods: SharedWatch,
        wake: asyncio.Event,
    ) -> dict[str, Any]:
        # Many waiters start at once after a triggerer restart: let the shared list answer them all.
        async def both_synced() -> None:
            await jobs.synced.wait()
            if not self._pods_released:
                await pods.synced.wait()

        await _wait_at_most(SYNC_WAIT_SECONDS, both_synced())
        next_poll = time.time() + self.poll_interval
        outage_backoff = 0.5
        while True:
            wake.clear()
            now = time.time()
            poll = False
            if now >= next_poll:
                next_poll = now + self.poll_interval
                # The fallback poll is for a watch that went quiet (events and bookmarks stopped).
                heard = jobs.last_heard if self._pods_released else min(jobs.last_heard, pods.last_heard)
                poll = time.monotonic() - heard > 2 * self.poll_interval
            try:
                payload, started = await self._look(session, jobs, pods, poll, now)
            except Exception as exc:
                # An API outage (control-plane upgrade, etcd election) changes nothing about the task: keep
                # waiting until a deadline; the watches relist by themselves when the server is back.
                past_deadline = self.completion_deadline is not None and now >= self.completion_deadline
                if not is_transient(exc) or past_deadline:
                    raise
                log.warning(
                    "Kubernetes API unavailable while waiting for Job %s (%s); still waiting",
                    self.job_name,
                    exc,
                )
                await asyncio.sleep(outage_backoff)
                outage_backoff = min(outage_backoff * 2, MAX_RELIST_BACKOFF_SECONDS)
                next_poll = 0.0  # look directly as soon as the server answers again
                continue
            outage_backoff = 0.5
            if payload is not None:
                return payload
            deadlines = [next_poll]
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
            await _wait_at_most(max(0.05, min(deadlines) - time.time()), wake.wait())

    async def _look(
        self, session: AsyncKubeSession, jobs: SharedWatch, pods: SharedWatch, poll: bool, now: float
    ) -> tuple[dict[str, Any] | None, bool]:
        """One look at the Job and its pod: (the event payload when waiting is over, whether it started)."""
        job, pod = await self._read_state(session, jobs, pods, poll)
        if job is None and not poll:
            job, pod = await self._read_state(session, jobs, pods, True)
        if job is None:
            # Deleted at completion (the Overlord does): the pod as last seen may still say how it ended.
            return self._payload(MISSING, pod=pod or self._final_pod or self._known_pod), False
        started = pod is not None and job_state.has_started(pod)
        if pod is not None and started:
            self._start_logs(session, jobs, pods, pod["metadata"]["name"], job)
            await self._let_go_of_pods(pods, pod)
        if job_state.is_finished(job):
            await self._drain_logs()
            if self._final_pod is not None and _main_terminated(self._final_pod):
                pod = self._final_pod
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
        if self._pods_released or self.wait_for == STARTED or self._release_pods is None:
            return
        self._pods_released = True
        await self._release_pods()

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

    async def _events_of_podless_job(
        self, session: AsyncKubeSession, now: float
    ) -> list[dict[str, Any]] | None:
        """The Job's events once its pod is overdue (then again with back-off), else None.

        No request while the pod comes as it should: only a Job still without a pod
        :data:`POD_CREATE_GRACE_SECONDS` after it was first seen so has its events read.
        """
        if self._podless_since is None or self._next_events_look is None:
            self._podless_since = now
            self._events_interval = POD_CREATE_GRACE_SECONDS
            self._next_events_look = now + POD_CREATE_GRACE_SECONDS
        if now < self._next_events_look:
            return None
        self._events_interval = min(self._events_interval * 2, MAX_EVENTS_LOOK_SECONDS)
        self._next_events_look = now + self._events_interval
        return await session.list_events(self.namespace, [self.job_name])

    def _launch_failure(self, pod: dict[str, Any] | None, now: float) -> str | None:
        problem = job_state.waiting_problem(pod) if pod is not None else None
        if problem is not None and problem[0] in job_state.HOPELESS_WAITING_REASONS:
            return f"the peon pod cannot start: {problem[0]}: {problem[1]}"
        if problem is not None:  # image pull trouble: fatal once it persists past the grace
            if self._pull_problem_since is None:
                self._pull_problem_since = now
            if now - self._pull_problem_since >= self.image_pull_grace_seconds:
                return (
                    f"the peon image cannot be pulled ({problem[0]} for over "
                    f"{self.image_pull_grace_seconds:g}s): {problem[1]}"
                )
        else:
            self._pull_problem_since = None
        if self.launch_deadline is not None and now >= self.launch_deadline:
            return (
                "the peon pod did not start within K8sjobLaunchTimeout; it is waiting: "
                + job_state.pending_reason(pod)
            )
        return None

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
                job = jobs.objects.get(self.job_name) if _live(jobs) else None
                if job is not None and job_state.is_finished(job):
                    if not job_state.succeeded(job):
                        # How the peon died (eviction, OOMKilled) is on the pod, which the Overlord's
                        # delete of the Job at completion takes away soon: read it while it is there.
                        self._final_pod = await session.get(pods_path(self.namespace, pod_name))
                    return True
                cached = pods.objects.get(pod_name) if _live(pods) else None
                if cached is not None and _main_terminated(cached):
                    self._final_pod = cached
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
        """Follow the main container's log; reconnect from the cursor if the stream drops early."""
        backoff = 0.2
        while True:
            self.log_cursor.begin_read()
            try:
                async for raw in session.follow_log(
                    pod_name, self.namespace, job_state.MAIN_CONTAINER, self.log_cursor.since_time()
                ):
                    timestamp, text = split_line(raw)
                    if self.log_cursor.admit(timestamp):
                        self.emit_line(text)
                    backoff = 0.2
                if await self._container_ended(session, jobs, pods, pod_name):
                    # The stream ended because the container did: it delivered everything.
                    self._log_complete = True
                    self._wake.set()  # the Job may not end with it (a sidecar): look now
                    return
            except ApiCallFailed as exc:
                if exc.status == 404:
                    return  # pod gone: nothing more to read
                if exc.status != 400 and not is_transient(exc):
                    raise
            except CONNECTION_ERRORS:
                pass  # dropped stream or API server restart: resume from the cursor
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


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
