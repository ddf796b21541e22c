"""The Overlord itself: task queue, lockbox and Kubernetes runner, with leadership.

The queue hands an active task to the runner only once the task's ``isReady`` holds: its time-chunk locks
(:func:`~.lockbox.task_intervals`) are taken; until then it is WAITING and has no Job. When it completes
(the runner's outcome or a shutdown) it leaves the lockbox, which releases its locks and lets the next one
go.

Leadership (spec section 5): :meth:`Overlord.step_down` makes every Druid API answer 503 and forgets the
runner's tasks without touching their Jobs; :meth:`Overlord.become_leader` joins the labelled Jobs (restore)
and ``start_delay`` seconds later shuts down, deleting its Job, every joined task that is not active. Active
tasks whose Job was joined are adopted as they are, without taking their locks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.actions import perform
from druid_k8s_provider.testing.overlord.lockbox import Lockbox, task_intervals
from druid_k8s_provider.testing.overlord.queue import WAITING, TaskEntry, TaskQueue
from druid_k8s_provider.testing.overlord.runner import KubernetesRunner
from druid_k8s_provider.testing.overlord.submission import check_submission

log = logging.getLogger(__name__)

SHUTDOWN_BY_USER = "Shutdown request from user"
NOT_READY_FAILURE = (
    "Failed while waiting for the task to be ready to run. See overlord logs for more details."
)
_MANAGE_PERIOD_SECONDS = 1.0


class Overlord:
    """One Overlord process (leader or not) over an emulated cluster.

    ``runner_factory`` makes a fresh :class:`KubernetesRunner` each time the Overlord becomes leader.
    """

    def __init__(
        self,
        *,
        config: RunnerConfig,
        runner_factory: Callable[[], KubernetesRunner],
        task_log_dir: Path,
        start_delay: float,
    ) -> None:
        self.config = config
        self.queue = TaskQueue()
        self.lockbox = Lockbox()
        self.task_log_dir = task_log_dir
        self.start_delay = start_delay
        self.log_lines: list[str] = []
        self.runner: KubernetesRunner | None = None
        self._runner_factory = runner_factory
        self._wake = asyncio.Event()
        # The manage loop's work list: the active tasks it has not handed to the runner (new or blocked by
        # a lock), in submission order, so a pass costs the waiting tasks, not every active one. A runner
        # lets go of a task only as it completes, so the list misses none; still, a new leader's first pass
        # and one pass a period look at every active task, as Druid's manage loop does.
        self._unhanded: dict[str, TaskEntry] = {}
        self._look_at_all = True
        self._background: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ log

    def log(self, line: str) -> None:
        """One line of the Overlord's log (kept in :attr:`log_lines`, also sent to Python logging)."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S,%f")[:-3]
        self.log_lines.append(f"{stamp} {line}")
        log.info("Overlord emulator: %s", line)

    # ------------------------------------------------------------------ leadership

    @property
    def leader(self) -> bool:
        return self.runner is not None

    async def become_leader(self) -> None:
        """Start the runner, join the labelled Jobs, start managing the queue."""
        if self.runner is not None:
            return
        runner = self._runner_factory()
        await runner.open()
        joined = []
        for task, job_name in await runner.restore():
            runner.join(task, job_name)
            joined.append(task.id)
            self.log(f"INFO Joined Job of task[{task.id}] at startup")
        self.runner = runner
        self._look_at_all = True
        self._background = [
            asyncio.create_task(self._manage(), name="overlord-manage"),
            asyncio.create_task(self._shutdown_unknown_after_start_delay(joined), name="overlord-start"),
            asyncio.create_task(self._cleanup_loop(), name="overlord-cleanup"),
        ]
        self._wake.set()
        self.log("INFO Became leader")

    async def step_down(self) -> None:
        """Stop leading: the API answers 503; the runner forgets its tasks, their Jobs stay."""
        runner, self.runner = self.runner, None
        background, self._background = self._background, []
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.close()
            self.log("INFO No longer leader")

    async def _shutdown_unknown_after_start_delay(self, joined: list[str]) -> None:
        await asyncio.sleep(self.start_delay)
        runner = self.runner
        if runner is None:
            return
        for task_id in joined:
            entry = self.queue.get(task_id)
            if task_id in runner.items and (entry is None or not entry.active):
                self.log(f"INFO Shutting down task[{task_id}]: it is not in the task queue")
                await runner.shutdown(task_id)

    # ------------------------------------------------------------------ queue

    def submit(self, task: DruidTask) -> None:
        """``POST /task``: store the task and make it active (EntryAlreadyExists for a known id;
        :class:`~.submission.SubmissionRefused` for a task Druid would not construct or store)."""
        check_submission(task)
        entry = self.queue.add(task)
        self._unhanded[task.id] = entry
        self.lockbox.add(task)
        self.log(f"INFO Adding task[{task.id}] to activeTasks")
        self._wake.set()

    async def shutdown(self, task_id: str, reason: str = SHUTDOWN_BY_USER) -> None:
        """End an active task as FAILED with ``reason`` and delete its Job; no change otherwise."""
        self._unhanded.pop(task_id, None)
        if not self.queue.complete(task_id, "FAILED", -1, reason):
            return
        self.lockbox.remove(task_id)
        self.log(f"INFO Shutdown [{task_id}] because: [{reason}]")
        if self.runner is not None:
            await self.runner.shutdown(task_id)
        self._wake.set()

    async def on_outcome(self, task_id: str, status_code: str, duration: int, error_msg: str | None) -> None:
        """The runner's outcome: complete the task (if still active) and release its locks."""
        self._unhanded.pop(task_id, None)
        if self.queue.complete(task_id, status_code, duration, error_msg):
            self.lockbox.remove(task_id)
            self.log(f"INFO Task[{task_id}] completed with status[{status_code}]")
        self._wake.set()

    def refreshed(self, entry: TaskEntry) -> TaskEntry:
        """The entry with the runner's current view (state and location) of an active task."""
        item = self.runner.items.get(entry.id) if self.runner is not None else None
        if entry.active:
            entry.runner_state = item.state if item is not None else WAITING
            if item is not None:
                entry.location = dict(item.location)
        return entry

    def refresh_all(self) -> None:
        for entry in self.queue.active():
            self.refreshed(entry)

    def action(self, task: DruidTask, action: dict[str, Any]) -> Any:
        """``POST /action``: see :func:`.actions.perform`."""

        def update_location(task_id: str, location: dict[str, Any]) -> None:
            item = self.runner.items.get(task_id) if self.runner is not None else None
            if item is not None and location.get("host"):
                item.location = {**item.location, **location}

        return perform(self.lockbox, task, action, update_location)

    async def _manage(self) -> None:
        """``TaskQueue.manage``: hand every ready WAITING task to the runner, in submission order."""
        last_full_pass = -math.inf
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _MANAGE_PERIOD_SECONDS)
            self._wake.clear()
            runner = self.runner
            if runner is None:
                return
            if self._look_at_all or time.monotonic() - last_full_pass >= _MANAGE_PERIOD_SECONDS:
                self._look_at_all, last_full_pass = False, time.monotonic()
                candidates = self.queue.active()
            else:
                candidates = list(self._unhanded.values())
            self._unhanded = {}
            still_waiting: dict[str, TaskEntry] = {}
            for entry in candidates:
                if entry.id in runner.items or not entry.active:  # handed, or completed during the pass
                    continue
                try:
                    intervals = task_intervals(entry.task)
                except ValueError as error:
                    self.log(f"ERROR Task[{entry.id}] is not ready: {error}")
                    await self.on_outcome(entry.id, "FAILED", -1, NOT_READY_FAILURE)
                    continue
                if self.lockbox.lock_all(entry.task, intervals):
                    self.log(f"INFO Asking taskRunner to run task[{entry.id}]")
                    runner.run(entry.task)
                else:
                    still_waiting[entry.id] = entry
            # Tasks submitted during the pass are newer than every task it looked at.
            self._unhanded = {**still_waiting, **self._unhanded}

    async def _cleanup_loop(self) -> None:
        """Delete finished labelled Jobs older than ``taskCleanupDelay``, every ``taskCleanupInterval``."""
        while True:
            await asyncio.sleep(self.config.task_cleanup_interval.total_seconds())
            if self.runner is not None:
                deleted = await self.runner.delete_finished_jobs_older_than(
                    self.config.task_cleanup_delay.total_seconds(), time.time()
                )
                for name in deleted:
                    self.log(f"INFO Deleted finished Job[{name}] (older than taskCleanupDelay)")
