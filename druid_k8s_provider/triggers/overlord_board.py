"""Wait on the Overlord for many tasks at once: a few requests per interval for the whole process.

A triggerer serves thousands of deferred tasks; asking the Overlord about each one every few seconds would
load it as Druid's own per-task polling loads the Kubernetes API. One :class:`OverlordBoard` per
(``druid_ingest_conn_id``, running event loop) serves every waiter of the process instead:

- **Handed to the runner** (:meth:`OverlordBoard.wait_handed_to_runner`, the release of a suspended Job in
  ``launch_mode="airflow"``): one *release round* = ``GET /druid/indexer/v1/tasks?state=pending`` and
  ``?state=running``, every ``release_interval`` seconds, for all such waiters. A task listed there has been
  handed to the Overlord's runner, so its locks are taken. The batched status cannot tell this (a WAITING
  and a PENDING task both read RUNNING there) and absence from ``state=waiting`` is no signal either. A lone
  waiter (a worker's) reads ``GET /druid/indexer/v1/task/{id}/status`` instead: one request, whose
  ``runnerStatusCode`` is the same runner state the lists are made of (PENDING or RUNNING: handed).
- **Complete** (:meth:`OverlordBoard.wait_complete`): one *status round* = one batched
  ``POST /druid/indexer/v1/taskStatus`` with every id waited on (by either kind of waiter), every
  ``status_interval`` seconds; :meth:`OverlordBoard.check_soon` brings the next one forward to
  :data:`FOLLOW_UP_SECONDS` from now (a Job finished or vanished: the outcome should not wait a full
  interval), then follows up after 1, 2, 4 ... seconds up to the interval. Not at once: the Overlord records
  the outcome a moment after the Job ends (its runner first sees the Job finish, pushes the log, then reads
  the peon's ``status.json``), so a round at once would most often find the task still RUNNING. Rounds
  start at least :data:`FOLLOW_UP_SECONDS` apart, counted from the previous round's start, so a steady
  stream of completions costs one request a second and, while answers take under a second, each is seen
  within about a second plus an answer. While only releases are awaited, the first status round waits an
  interval (the release rounds tell the release; a status round only catches a task completing before it).

No request is sent while nobody waits. An id the batched status leaves out :data:`UNKNOWN_ROUNDS` rounds in
a row fails its waits with :class:`OverlordTaskUnknown`. The hook retries 429, 5xx and connection errors;
when it gives up the board keeps going with a growing pause (an Overlord restart or leader election), and
logs the outage once and its end once. Any other error (401, 403, a bad connection) fails the waits that
depend on the request. Cancelling a wait ends it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from druid_k8s_provider.errors import DruidK8sConfigError, OverlordApiError, OverlordTaskUnknown
from druid_k8s_provider.hooks.overlord import DEFAULT_CONN_ID, DruidOverlordAsyncHook
from druid_k8s_provider.hooks.overlord_api import INDEXER, OverlordTaskStatus
from druid_k8s_provider.hooks.overlord_transport import OverlordRetryPolicy

log = logging.getLogger(__name__)

#: Successful batched status rounds in a row that must leave a task id out before its waits fail. A task
#: is known from its submission on; more than one round rides out an answer from a stale Overlord.
UNKNOWN_ROUNDS = 3
#: The shortest time between the starts of two status rounds, how long after the first
#: :meth:`OverlordBoard.check_soon` since the last round started the next one comes, and the first follow-up
#: after that (seconds).
FOLLOW_UP_SECONDS = 1.0
#: Longest pause between rounds while the Overlord keeps failing, in seconds.
MAX_BACKOFF_SECONDS = 60.0
#: The task lists whose entries the Overlord's runner holds.
HANDED_STATES = ("pending", "running")

_StatusFuture = asyncio.Future[OverlordTaskStatus]
T = TypeVar("T")


class _Waiters:
    """The futures of the waits of one kind, by task id."""

    def __init__(self) -> None:
        self.by_id: dict[str, set[_StatusFuture]] = {}

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def ids(self) -> list[str]:
        return list(self.by_id)

    def add(self, task_id: str) -> _StatusFuture:
        future: _StatusFuture = asyncio.get_running_loop().create_future()
        self.by_id.setdefault(task_id, set()).add(future)
        return future

    def discard(self, task_id: str, future: _StatusFuture) -> None:
        futures = self.by_id.get(task_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self.by_id[task_id]

    def resolve(self, task_id: str, status: OverlordTaskStatus) -> None:
        for future in self.by_id.get(task_id, ()):
            if not future.done():
                future.set_result(status)

    def fail(self, task_id: str, error: BaseException) -> None:
        for future in self.by_id.get(task_id, ()):
            if not future.done():
                future.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        for task_id in self.ids():
            self.fail(task_id, error)


def _heals(error: BaseException) -> bool:
    """Whether an error the hook gave up on may heal by itself: the Overlord unreachable, 429 or 5xx (a
    restart, a leader election). A refusal (401, 403, 404) or a bad connection does not."""
    if not isinstance(error, OverlordApiError):
        return False
    return error.status is None or error.status == 429 or error.status >= 500


class OverlordBoard:
    """The Overlord's view of every task a process waits on, kept by shared polling rounds.

    :param conn_id: the Overlord connection (``druid_ingest_conn_id``).
    :param status_interval: seconds between batched status rounds (> 0).
    :param release_interval: seconds between release rounds (> 0); short, because once the runner has the
        task Druid looks for its pod with a bounded retry (about four minutes) and fails it without one.
    :param unknown_rounds: status rounds in a row an id may be missing before its waits fail.
    :param retry_policy: how the hook retries one request (the hook's default when None).

    Raises :class:`DruidK8sConfigError` for an interval or round count that is not positive. Use
    :meth:`shared` to get the board of the running loop; ``status_rounds`` and ``release_rounds`` count the
    rounds that got an answer.
    """

    def __init__(
        self,
        conn_id: str = DEFAULT_CONN_ID,
        *,
        status_interval: float = 5.0,
        release_interval: float = 2.0,
        unknown_rounds: int = UNKNOWN_ROUNDS,
        retry_policy: OverlordRetryPolicy | None = None,
    ) -> None:
        _check_positive(
            ("status_interval", status_interval),
            ("release_interval", release_interval),
            ("unknown_rounds", unknown_rounds),
        )
        self.conn_id = conn_id
        self.status_interval = float(status_interval)
        self.release_interval = float(release_interval)
        self.unknown_rounds = unknown_rounds
        self.retry_policy = retry_policy
        self.status_rounds = 0
        self.release_rounds = 0
        self._hook = self._new_hook()
        self._handed = _Waiters()
        self._complete = _Waiters()
        self._missing: dict[str, int] = {}
        self._soon = asyncio.Event()
        self._follow_up: float | None = None
        self._soon_at = float("-inf")
        self._last_status_round = float("-inf")
        self._status_task: asyncio.Task[None] | None = None
        self._release_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def shared(
        cls, conn_id: str = DEFAULT_CONN_ID, *, status_interval: float = 5.0, release_interval: float = 2.0
    ) -> OverlordBoard:
        """The board of ``conn_id`` on the running event loop, made on first use. Its intervals are the
        shortest any caller asked for: a round serves every waiter at the cost of one, so a sensor with a long
        ``poke_interval`` must not slow the operators' waits sharing its board. Must be called from a
        coroutine. Raises :class:`DruidK8sConfigError` for an interval that is not positive."""
        boards = _BOARDS.setdefault(asyncio.get_running_loop(), {})
        board = boards.get(conn_id)
        if board is None:
            board = cls(conn_id, status_interval=status_interval, release_interval=release_interval)
            boards[conn_id] = board
        else:
            board._shorten_intervals(status_interval, release_interval)
        return board

    def _shorten_intervals(self, status_interval: float, release_interval: float) -> None:
        """Take these intervals where shorter; a status round sleeping out the longer one ends now."""
        _check_positive(("status_interval", status_interval), ("release_interval", release_interval))
        self.release_interval = min(self.release_interval, float(release_interval))
        if status_interval < self.status_interval:
            self.status_interval = float(status_interval)
            self._soon.set()

    # ------------------------------------------------------------------ waits

    async def wait_handed_to_runner(self, task_id: str) -> OverlordTaskStatus:
        """Wait until the Overlord has handed ``task_id`` to its runner, or the task is complete.

        Returns the task's entry of ``GET /tasks?state=pending|running``, or a lone waiter's own status
        (``runner_status_code`` PENDING or RUNNING: its locks are taken, a suspended Job may be released), or
        its status once it is complete (``status_code`` SUCCESS or FAILED, ``active`` False: do NOT release
        its Job). Raises :class:`OverlordTaskUnknown` when the Overlord does not know the id,
        :class:`OverlordApiError` / :class:`DruidK8sConfigError` for an error retrying cannot fix.
        """
        return await self._wait(self._handed, task_id)

    async def wait_complete(self, task_id: str) -> OverlordTaskStatus:
        """Wait until ``task_id`` is complete; its batched status (SUCCESS or FAILED, ``error_msg``,
        ``duration_ms``). Errors as :meth:`wait_handed_to_runner`."""
        return await self._wait(self._complete, task_id)

    def check_soon(self) -> None:
        """Bring the next batched status round forward to :data:`FOLLOW_UP_SECONDS` after the first call
        since the last round started (from now, for a lone call) instead of the end of the interval, and
        follow it up after 1, 2, 4 ... seconds (up to the interval): the Overlord records the outcome a
        moment after the Job ends. Must be called from the board's loop."""
        self._follow_up = FOLLOW_UP_SECONDS
        # The first call since the last round started sets the clock: under a stream of completions a
        # later call must not push the round back, or rounds would come once per second plus an answer.
        if self._soon_at <= self._last_status_round:
            self._soon_at = asyncio.get_running_loop().time()
        self._soon.set()

    async def _wait(self, waiters: _Waiters, task_id: str) -> OverlordTaskStatus:
        future = waiters.add(task_id)
        self._start_rounds()
        try:
            return await future
        finally:
            waiters.discard(task_id, future)
            self._stop_idle_rounds()

    # ------------------------------------------------------------------ rounds

    def _new_hook(self) -> DruidOverlordAsyncHook:
        return DruidOverlordAsyncHook(self.conn_id, retry_policy=self.retry_policy)

    def _start_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        if self._status_task is None or self._status_task.done():
            self._status_task = loop.create_task(
                self._status_rounds(), name=f"druid-overlord-status {self.conn_id}"
            )
        if self._handed and (self._release_task is None or self._release_task.done()):
            self._release_task = loop.create_task(
                self._release_rounds(), name=f"druid-overlord-release {self.conn_id}"
            )

    def _stop_idle_rounds(self) -> None:
        """Cancel the rounds nobody waits for any more (a request in flight or its retries included)."""
        if not self._handed and self._release_task is not None:
            self._release_task.cancel()
            self._release_task = None
        if not self._handed and not self._complete and self._status_task is not None:
            self._status_task.cancel()
            self._status_task = None
            # A check_soon for nobody is spent: the next waiters' rounds keep their own schedule.
            self._follow_up, self._soon_at = None, float("-inf")
            self._soon.clear()
            # The next waiter gets a fresh HTTP client; this one is closed once its requests are gone.
            idle, self._hook = self._hook, self._new_hook()
            closing = asyncio.get_running_loop().create_task(idle.aclose(), name="druid-overlord-close")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _status_rounds(self) -> None:
        outage = _Outage(self.conn_id, f"POST {INDEXER}/taskStatus")
        if self._follow_up is not None or not self._complete:
            # check_soon asked for a round a moment from now, or only releases are awaited (see the module).
            await self._pause(0.0 if self._follow_up is not None else self.status_interval)
        while self._handed or self._complete:
            ids = sorted({*self._handed.ids(), *self._complete.ids()})
            self._last_status_round = asyncio.get_running_loop().time()
            statuses = await outage.ask(self._hook.task_statuses(ids), self._fail_everyone)
            if statuses is None:
                await self._pause(outage.backoff(self.status_interval))
                continue
            self.status_rounds += 1
            self._missing = {task_id: self._missing.get(task_id, 0) for task_id in ids}
            for task_id in ids:
                status = statuses.get(task_id)
                if status is None:
                    self._missing[task_id] += 1
                    if self._missing[task_id] >= self.unknown_rounds:
                        self._fail_unknown(task_id)
                    continue
                self._missing[task_id] = 0
                if not status.active:
                    self._handed.resolve(task_id, status)
                    self._complete.resolve(task_id, status)
            await self._pause(self._next_status_pause())

    def _next_status_pause(self) -> float:
        """The interval, or the next follow-up after :meth:`check_soon` (doubling until the interval)."""
        follow_up = self._follow_up
        if follow_up is None or follow_up >= self.status_interval:
            self._follow_up = None
            return self.status_interval
        self._follow_up = follow_up * 2
        return follow_up

    async def _release_rounds(self) -> None:
        outage = _Outage(self.conn_id, f"GET {INDEXER}/tasks?state=pending|running or /task/{{id}}/status")
        while self._handed:
            listed = await outage.ask(self._handed_tasks(), self._handed.fail_all)
            if listed is None:
                await asyncio.sleep(outage.backoff(self.release_interval))
                continue
            self.release_rounds += 1
            for status in listed:
                self._handed.resolve(status.task_id, status)
            await asyncio.sleep(self.release_interval)

    async def _handed_tasks(self) -> list[OverlordTaskStatus]:
        ids = self._handed.ids()
        if len(ids) == 1:  # a lone waiter (a worker's): its own status tells it in one request, not two
            status = await self._hook.task_status(ids[0])
            return [status] if status is not None and (status.handed_to_runner or not status.active) else []
        listed: list[OverlordTaskStatus] = []
        for state in HANDED_STATES:
            listed.extend(await self._hook.tasks(state))
        return listed

    async def _pause(self, seconds: float) -> None:
        """Sleep until the next status round; :meth:`check_soon` shortens the sleep to
        :data:`FOLLOW_UP_SECONDS` after its first call since the last round started, and round starts stay
        at least that far apart (many Jobs ending together cost one request, not one each; a steady stream
        of them, one round a second)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._soon.wait()
        self._soon.clear()
        loop = asyncio.get_running_loop()
        earliest = max(self._last_status_round, self._soon_at) + FOLLOW_UP_SECONDS
        if earliest > loop.time():
            await asyncio.sleep(earliest - loop.time())

    def _fail_everyone(self, error: BaseException) -> None:
        self._handed.fail_all(error)
        self._complete.fail_all(error)

    def _fail_unknown(self, task_id: str) -> None:
        rounds = self._missing.pop(task_id)
        error = OverlordTaskUnknown(
            f"the Overlord of Airflow connection {self.conn_id!r} does not know the task: POST "
            f"{INDEXER}/taskStatus left it out {rounds} times in a row. Fix: check that the connection "
            "points at the Overlord (or Router) of the cluster the task was submitted to, and that the "
            "Overlord's metadata store was not reset; then clear the Airflow task to submit it again",
            conn_id=self.conn_id,
            path=f"{INDEXER}/taskStatus",
            status=200,
            task_id=task_id,
        )
        self._handed.fail(task_id, error)
        self._complete.fail(task_id, error)


class _Outage:
    """One kind of round's failures in a row: logged once when they start and once when they end."""

    def __init__(self, conn_id: str, request: str) -> None:
        self.conn_id = conn_id
        self.request = request
        self.failures = 0

    async def ask(self, request: Awaitable[T], fail: Callable[[BaseException], None]) -> T | None:
        """The answer to ``request``, or None after a failure: one that may heal is counted (and logged
        when an outage starts); any other is handed to ``fail`` (the waits depending on it end with it)."""
        try:
            answer = await request
        except Exception as error:  # every wait depending on the request must learn of it, not hang
            if not _heals(error):
                if not isinstance(error, OverlordApiError | DruidK8sConfigError):
                    log.exception("%s (connection %r) failed unexpectedly", self.request, self.conn_id)
                fail(error)
                return None
            self.failures += 1
            if self.failures == 1:
                log.warning(
                    "%s (connection %r) failed after its retries; the waiting tasks keep waiting, asking "
                    "again with back-off: %s",
                    self.request,
                    self.conn_id,
                    error,
                )
            else:
                log.debug(
                    "%s (connection %r) failed again (%d in a row)", self.request, self.conn_id, self.failures
                )
            return None
        if self.failures:
            log.info(
                "%s (connection %r) answers again after %d failed rounds",
                self.request,
                self.conn_id,
                self.failures,
            )
            self.failures = 0
        return answer

    def backoff(self, interval: float) -> float:
        """Seconds to pause after the latest failure: the interval doubling per failure, capped at
        :data:`MAX_BACKOFF_SECONDS` (never below the interval itself)."""
        return max(interval, min(interval * 2.0 ** min(self.failures, 16), MAX_BACKOFF_SECONDS))


_BOARDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, OverlordBoard]] = (
    weakref.WeakKeyDictionary()
)


def _check_positive(*named: tuple[str, float]) -> None:
    for name, value in named:
        if not value > 0:
            raise DruidK8sConfigError(name, f"{value!r} is not positive", f"set {name} above 0")
