"""Worker processes for the chaos tests: a client of ``worker.py --serve`` (the fork server).

Each try of a task runs in its own forked process, so a test can SIGKILL it by pid at an exact lifecycle
point (the worker reports ``PHASE`` lines and freezes where told) and then run the retry.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER = Path(__file__).resolve().parent / "worker.py"


class ForkServer:
    """``worker.py --serve``: forks a worker process per try (Airflow imported once); routes its reports."""

    def __init__(self, workdir: Path) -> None:
        self._stderr = open(workdir / "fork-server.stderr", "w")  # noqa: SIM115 (closed in __exit__)
        self._transcript = open(workdir / "fork-server.stdout", "w")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "AIRFLOW__CORE__UNIT_TEST_MODE": "True"},
        )
        self._lock = threading.Lock()
        self._events: dict[str, queue.Queue[tuple[str, str]]] = {}
        self._pids: dict[str, queue.Queue[tuple[str, str]]] = {}
        #: Workers started and not reported EXITED: the fork server has not reaped them, so their pids
        #: cannot have been reused, and killing them on the way out is safe.
        self._running: dict[str, int] = {}
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)

    def __enter__(self) -> ForkServer:
        self._reader.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Kill the workers a failed test left frozen, then stop the fork server."""
        with self._lock:
            leftovers = list(self._running.values())
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                self.kill(pid)
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        self._stderr.close()
        self._transcript.close()

    def _queue(self, spec_path: str, kind: str = "PHASE") -> queue.Queue[tuple[str, str]]:
        """Where reports of a try go: its pid apart (a forked worker may report a PHASE before the fork
        server reports STARTED), its PHASE and EXITED reports in order."""
        queues = self._pids if kind == "STARTED" else self._events
        with self._lock:
            return queues.setdefault(spec_path, queue.Queue())

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._transcript.write(line)
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("STARTED", "PHASE", "EXITED"):
                kind, spec_path, value = parts
                with self._lock:
                    if kind == "STARTED":
                        self._running[spec_path] = int(value)
                    elif kind == "EXITED":
                        self._running.pop(spec_path, None)
                self._queue(spec_path, kind).put((kind, value))

    def start(self, spec_path: Path) -> tuple[int, queue.Queue[tuple[str, str]]]:
        """Fork a worker for one try: (its pid, the stream of its PHASE and EXITED reports)."""
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(f"{spec_path}\n")
            self.process.stdin.flush()
        _, pid = self._queue(str(spec_path), "STARTED").get(timeout=30)
        return int(pid), self._queue(str(spec_path))

    @staticmethod
    def kill(pid: int) -> None:
        """SIGKILL one forked worker: no cleanup runs, as when the kernel or a node drain kills it."""
        os.kill(pid, signal.SIGKILL)


def wait_for(events: queue.Queue[tuple[str, str]], wanted: str, timeout: float) -> str:
    """The value of the next report of kind ``wanted`` (PHASE reports before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        kind, value = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if kind == wanted:
            return value
        if kind == "EXITED":
            raise AssertionError(f"the worker exited ({value}) before reporting {wanted}")
