"""One shared list+watch per (connection, namespace, kind) of peon objects, for every waiter of a process.

Druid's runner polls the API once per task, which is what loads large clusters. Here every waiter in a
process (all triggers of a triggerer, or the one operator waiting in a worker) shares one list+watch of the
peon Jobs and one of the peon pods per (connection, namespace): a registry keyed by the running event loop
hands out :class:`SharedWatch` objects by reference count. A watch lists in pages (``limit``/``continue``,
see :meth:`AsyncKubeSession.list_objects`) and watches from the list's resourceVersion, resumes from its
last resourceVersion when the server ends the stream, relists on ``410 Expired`` or a dropped connection,
and keeps retrying through an API outage (:func:`_keep_trying`). While it (re)lists, its waiters wait for
it instead of reading for themselves (see :class:`~druid_k8s_provider.triggers.follower.JobFollower`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import tenacity

from druid_k8s_provider.adapters.common import TASK_ANNOTATION
from druid_k8s_provider.hooks.druid_k8s_async import AsyncKubeSession, DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import JOB_NAME_LABEL, PEON_SELECTOR, jobs_path, pods_path
from druid_k8s_provider.hooks.k8s_errors import CONNECTION_ERRORS, ApiCallFailed, is_transient
from druid_k8s_provider.hooks.k8s_retry import BeforeSleep, RetryPolicy, worth_logging
from druid_k8s_provider.hooks.secrets import task_payload_template

log = logging.getLogger(__name__)

#: Server-side watch timeout; the watch then resumes from its resourceVersion (cheap, no relist).
WATCH_TIMEOUT_SECONDS = 300
#: How long a shared watch outlives its last user (a real API server's relist of every peon costs more than
#: an idle stream).
WATCH_KEEP_ALIVE_SECONDS = 30.0


def job_name_of_pod(pod: dict[str, Any]) -> str | None:
    """The Job a pod belongs to, from the label the API server puts on Job pods."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(JOB_NAME_LABEL) or labels.get("batch.kubernetes.io/job-name")


def cached_view(obj: dict[str, Any]) -> dict[str, Any]:
    """What a shared watch keeps of a Job or pod: its metadata (without ``managedFields`` and the ``task``
    annotation), its status and the scalar settings of its spec (``activeDeadlineSeconds``, ``suspend``,
    ``nodeName``...).

    Not the pod template nor the containers: they carry the runner's whole pod spec, several KiB per peon
    that no waiter reads, and a triggerer caches a Job per deferred task. Of a Job's template only the task
    itself is kept (main's ``TASK_JSON``, or the template's ``task`` annotation with Druid's custom template
    adapter), where it was: the triggerer following the Job masks the task's credentials before it logs the
    peon's lines (:func:`~druid_k8s_provider.hooks.secrets.job_task_secrets`). A pod's copy of it is left out.
    """
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    view = {key: value for key, value in obj.items() if key not in ("metadata", "spec")}
    view["metadata"] = {key: value for key, value in metadata.items() if key != "managedFields"}
    annotations = metadata.get("annotations") or {}
    if TASK_ANNOTATION in annotations:
        view["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != TASK_ANNOTATION}
    view["spec"] = {key: value for key, value in spec.items() if not isinstance(value, dict | list)}
    if isinstance(spec.get("template"), dict):
        view["spec"]["template"] = task_payload_template(spec["template"])
    return view


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


async def _keep_trying(
    policy: RetryPolicy,
    what: str,
    attempt: Callable[[], Awaitable[bool]],
    *,
    retry_on: Callable[[BaseException], bool],
    before_sleep: BeforeSleep | None = None,
) -> None:
    """Run ``attempt`` until it returns True, however long the API server keeps failing.

    ``attempt`` raises when it failed: it is retried (``retry_on`` says which failures) with the policy's
    capped back-off and no attempt limit, so it resumes within about ``policy.max_wait`` seconds once the
    server answers again; only cancelling the caller ends it. It returns False when it got somewhere before
    it was interrupted (a watch that had listed, a log stream that delivered lines): it runs again at once,
    and a later failure backs off from the shortest pause, as a new outage.
    """
    while True:
        retrying = policy.until(None).asynchronous(what, retry_on=retry_on, before_sleep=before_sleep)
        async for retry in retrying:
            with retry:
                if await attempt():
                    return


def _any_failure(exc: BaseException) -> bool:
    """A watch retries whatever ended it (not a cancellation): it serves every waiter of the loop."""
    return isinstance(exc, Exception)


@dataclass(frozen=True)
class OwnJob:
    """The Job a worker's wait is about, as the worker created (``created``) or read it."""

    job: dict[str, Any]
    created: bool


@dataclass(eq=False)
class SharedWatch:
    """A cache of one kind of peon object in a namespace (as :func:`cached_view` keeps them), kept current by
    a list+watch.

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
    #: ``objects`` by the Job they belong to (:attr:`key_of`), so a waiter's look costs the same whatever the
    #: number of peons in the namespace.
    by_key: dict[str | None, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: The last state of objects deleted while a waiter was subscribed to their Job, by Job then name:
    #: the ``DELETED`` event carries how a pod ended (OOMKilled, an exit code), which a look after the
    #: Overlord's delete of a failed peon's Job could no longer read. Dropped when the Job's last waiter
    #: leaves.
    departed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: dict[str, set[asyncio.Event]] = field(default_factory=dict)
    users: int = 0
    relists: int = 0
    last_heard: float = 0.0  # time.monotonic() of the start, the last list page, event or bookmark
    task: asyncio.Task[None] | None = None
    retiring: asyncio.Task[None] | None = None  # the keep-alive countdown once the last user left

    def start(self) -> None:
        """Start the list+watch loop on the running loop."""
        self.last_heard = time.monotonic()  # a first list is on its way: not yet a silent watch
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
                self.departed.pop(job_name, None)

    def _notify(self, job_name: str | None) -> None:
        for wake in self.waiters.get(job_name or "", ()):
            wake.set()

    def _notify_all(self) -> None:
        for events in self.waiters.values():
            for wake in events:
                wake.set()

    def by_job(self, job_name: str) -> list[dict[str, Any]]:
        """Cached objects belonging to a Job (the Job itself, or its pods)."""
        return list(self.by_key.get(job_name, {}).values())

    def last_state(self, job_name: str, name: str) -> dict[str, Any] | None:
        """Object ``name`` of ``job_name`` as cached, or as it was when deleted (see :attr:`departed`)."""
        return self.objects.get(name) or self.departed.get(job_name, {}).get(name)

    def _store(self, name: str, obj: dict[str, Any] | None) -> None:
        """Put ``obj`` in the cache under ``name`` (None: remove it), keeping :attr:`by_key` in step."""
        old = self.objects.pop(name, None)
        if old is not None:
            keyed = self.by_key.get(self.key_of(old))
            if keyed is not None:
                keyed.pop(name, None)
                if not keyed:
                    del self.by_key[self.key_of(old)]
        if obj is not None:
            self.objects[name] = obj
            self.by_key.setdefault(self.key_of(obj), {})[name] = obj

    async def _run(self) -> None:
        """List and watch until stopped; relist after an interruption (retried as in :func:`_keep_trying`)."""
        await _keep_trying(
            self.hook.retry_policy,
            f"list+watch {self.path}",
            self._session,
            retry_on=_any_failure,
            before_sleep=self._warn_relisting,
        )

    async def _session(self) -> bool:
        """One list (or the seed) and watch, until something ends it.

        Returns False (relist at once) when the cache had been rebuilt and then the stream dropped or
        expired; raises (back off) when the list failed, the server refused the watch, or anything else
        went wrong, so a server that keeps refusing is not asked again in a tight loop.
        """
        relists_before = self.relists
        try:
            # One attempt per list: the loop around retries it, logging sparingly through a long outage.
            async with self.hook.session(replace(self.hook.retry_policy, attempts=1)) as session:
                await self._list_and_watch(session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.synced.clear()
            if self.relists == relists_before or not isinstance(exc, (_Expired, *CONNECTION_ERRORS)):
                raise
            log.warning("Watch of %s interrupted (%s); relisting", self.path, exc)
        return False

    def _warn_relisting(self, state: tenacity.RetryCallState) -> None:
        """Before a pause of the relist loop: warn (sparingly), with the traceback of a surprise."""
        if not worth_logging(state, None):
            return
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        expected = isinstance(exc, ApiCallFailed | _Expired) or (exc is not None and is_transient(exc))
        log.warning(
            "Watch of %s failed (%s); relisting in %.1fs",
            self.path,
            exc,
            wait,
            exc_info=None if expected else exc,
        )

    def _heard(self) -> None:
        """The server answered (a page of the list): the watch is alive, if not yet synced."""
        self.last_heard = time.monotonic()

    async def _list_and_watch(self, session: AsyncKubeSession) -> None:
        if self.seed is not None:
            (seeded, resource_version), self.seed = self.seed, None
            items = [cached_view(obj) for obj in seeded]
        else:
            items, resource_version = await session.list_objects(
                self.path, self.label_selector, self.field_selector, on_page=self._heard, view=cached_view
            )
        self.relists += 1
        self.last_heard = time.monotonic()
        self.objects, self.by_key = {}, {}
        for obj in items:
            self._store(obj["metadata"]["name"], obj)
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
                key, view = self.key_of(obj), cached_view(obj)
                if kind == "DELETED" and key is not None and key in self.waiters:
                    self.departed.setdefault(key, {})[obj["metadata"]["name"]] = view
                self._store(obj["metadata"]["name"], None if kind == "DELETED" else view)
                self._notify(key)
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
