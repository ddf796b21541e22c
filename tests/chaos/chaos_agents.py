"""What breaks while the chaos run (``test_chaos_lifecycle.py``) goes on, beside the scripted API faults.

- :class:`ChaosMonkey`: cuts watches, forces ``410 Expired`` and runs timed events (API server restarts,
  Overlord failovers, the triggerer's restart).
- :class:`Triggerer`: one event loop for every deferred task, which can restart: its triggers are cancelled
  and rebuilt from their serialized form on a new loop, as another triggerer would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from airflow.sdk.exceptions import TaskDeferred

from druid_k8s_provider.testing import KubeEmulator


class ChaosMonkey:
    """Drops watches and forces 410s on a period, and runs the timed ``events`` ``(seconds, name, action)``
    until stopped: an action is run once its time has come, and again every tenth of a second while it
    answers False (not yet: what it breaks is not there); ``done`` counts the events run by name."""

    def __init__(
        self,
        kube: KubeEmulator,
        events: list[tuple[float, str, Callable[[], bool | None]]],
        *,
        watch_drop_every: float,
        watch_expiry_every: float,
    ) -> None:
        self.kube = kube
        self.events = sorted(events, key=lambda event: event[0])
        self.watch_drop_every, self.watch_expiry_every = watch_drop_every, watch_expiry_every
        self.stop = threading.Event()
        self.watch_drops = 0
        self.streams_cut = 0
        self.forced_expiries = 0
        self.done: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="chaos-monkey", daemon=True)

    def __enter__(self) -> ChaosMonkey:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        started = time.monotonic()
        next_drop, next_expiry = self.watch_drop_every, self.watch_expiry_every
        events = list(self.events)
        while not self.stop.wait(0.1):
            elapsed = time.monotonic() - started
            if elapsed >= next_drop:
                self.streams_cut += self.kube.faults.drop_watches()
                self.watch_drops += 1
                next_drop += self.watch_drop_every
            if elapsed >= next_expiry:
                self.kube.faults.expire_next_watch(2)
                self.forced_expiries += 2
                next_expiry += self.watch_expiry_every
            for event in [event for event in events if elapsed >= event[0]]:
                _, name, action = event
                if action() is not False:
                    events.remove(event)
                    self.done[name] += 1


class Triggerer:
    """One event loop running every deferred task's trigger, as Airflow's triggerer does.

    :meth:`restart` plays the triggerer going away and another taking over: every running trigger is
    cancelled (``on_kill`` is not called: nobody stopped the task), the loop ends, and each trigger is built
    again from its serialized form on a new loop. The peon lines a cancelled trigger had shown are kept in
    :attr:`shown_before_restart`: a new trigger starts from the kwargs of the deferral, so shows them again.
    ``position()`` says where the run's captured log is (to tell which try a cancelled trigger served).
    """

    def __init__(self, position: Callable[[], int]) -> None:
        self._position = position
        self._lock = threading.Condition()
        self.generation = 0
        self.restarts = 0
        self.triggers_restarted = 0
        self.running = 0
        #: ``(log position of the restart, line)``: the peon lines and the trigger's own lines (``said``)
        #: of the triggers a restart cancelled.
        self.shown_before_restart: list[tuple[int, str]] = []
        self.said_before_restart: list[tuple[int, str]] = []
        self._restarted_at = 0
        self.loop, self._thread = self._start_loop()

    @staticmethod
    def _start_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="triggerer", daemon=True)
        thread.start()
        return loop, thread

    def __enter__(self) -> Triggerer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def restart_when_busy(self, triggers: int) -> bool:
        """:meth:`restart` once at least ``triggers`` triggers run; False (nothing done) before."""
        if self.running < triggers:
            return False
        self.restart()
        return True

    def restart(self) -> None:
        """Cancel every trigger and end the loop; go on with a new loop (the triggers are resubmitted)."""
        with self._lock:
            self._restarted_at = self._position()
            old_loop, old_thread = self.loop, self._thread
            asyncio.run_coroutine_threadsafe(_cancel_everything(), old_loop).result(timeout=30)
            old_loop.call_soon_threadsafe(old_loop.stop)
            old_thread.join(timeout=10)
            self.loop, self._thread = self._start_loop()
            self.generation += 1
            self.restarts += 1
            self._lock.notify_all()

    def run_trigger(self, deferred: TaskDeferred) -> dict[str, Any]:
        """Rebuild the trigger from its serialized form and wait for its event, across restarts."""
        classpath, kwargs = deferred.trigger.serialize()
        assert classpath.endswith(".DruidOverlordTaskTrigger")
        while True:
            shown: list[str] = []
            said: list[str] = []
            trigger = type(deferred.trigger)(**json.loads(json.dumps(kwargs)))
            trigger._emit_line = _recording(trigger._emit_line, shown)  # type: ignore[method-assign]
            trigger._say = _recording(trigger._say, said)  # type: ignore[method-assign]

            async def first_event(trigger: Any = trigger) -> dict[str, Any]:
                event = await anext(trigger.run())
                return dict(event.payload)

            with self._lock:
                generation = self.generation
                future = asyncio.run_coroutine_threadsafe(first_event(), self.loop)
                self.running += 1
            try:
                return future.result(timeout=240)
            except concurrent.futures.CancelledError:
                with self._lock:
                    self.triggers_restarted += 1
                    self.shown_before_restart.extend((self._restarted_at, line) for line in shown)
                    self.said_before_restart.extend((self._restarted_at, line) for line in said)
                    self._lock.wait_for(lambda seen=generation: self.generation != seen, timeout=60)
            finally:
                with self._lock:
                    self.running -= 1


def _recording(emit: Callable[[str], None], lines: list[str]) -> Callable[[str], None]:
    def recording(line: str) -> None:
        lines.append(line)
        emit(line)

    return recording


async def _cancel_everything() -> None:
    current = asyncio.current_task()
    running = [task for task in asyncio.all_tasks() if task is not current]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=10)
