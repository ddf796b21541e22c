"""Container logs of the emulated cluster, as the kubelet keeps them and ``pods/{name}/log`` serves them.

Lines are timestamped when appended (that is what ``timestamps=true`` and ``sinceSeconds`` use), each
container instance keeps its own log so ``previous=true`` can read the one before a restart, and followers
are woken on every append and released when the container ends, like ``kubectl logs -f``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pendulum


@dataclass(frozen=True)
class LogLine:
    """One line of output and when it was written (nanoseconds since the epoch)."""

    timestamp_ns: int
    text: str

    def rfc3339nano(self) -> str:
        """The timestamp as the kubelet prefixes it with ``timestamps=true``."""
        seconds, nanos = divmod(self.timestamp_ns, 1_000_000_000)
        moment = pendulum.from_timestamp(seconds, tz="UTC")
        return moment.format("YYYY-MM-DDTHH:mm:ss") + f".{nanos:09d}Z"


@dataclass
class _ContainerLog:
    lines: list[LogLine] = field(default_factory=list)
    closed: bool = False


@dataclass
class _Container:
    current: _ContainerLog = field(default_factory=_ContainerLog)
    previous: _ContainerLog | None = None
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)


Key = tuple[str, str, str]


class LogStore:
    """Logs by (namespace, pod, container); safe to write from any thread and to follow from any loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._containers: dict[Key, _Container] = {}
        self._containers_of: dict[tuple[str, str], list[str]] = {}  # (namespace, pod) -> its containers

    def _container(self, namespace: str, pod: str, container: str) -> _Container:
        """The container's state, made on first use (caller holds the lock)."""
        state = self._containers.get((namespace, pod, container))
        if state is None:
            state = self._containers[(namespace, pod, container)] = _Container()
            self._containers_of.setdefault((namespace, pod), []).append(container)
        return state

    def mark_started(self, namespace: str, pod: str, container: str) -> None:
        """A container instance started; a restart moves the ended instance's log to ``previous``."""
        with self._lock:
            state = self._container(namespace, pod, container)
            if state.current.closed:
                state.previous = state.current
                state.current = _ContainerLog()
            waiters = list(state.waiters)
        self._wake(waiters)

    def append(self, namespace: str, pod: str, container: str, line: str) -> None:
        """Add one line (trailing newline optional) to the running instance, timestamped now."""
        text = line[:-1] if line.endswith("\n") else line
        with self._lock:
            state = self._container(namespace, pod, container)
            state.current.lines.append(LogLine(time.time_ns(), text))
            waiters = list(state.waiters)
        self._wake(waiters)

    def close(self, namespace: str, pod: str, container: str) -> None:
        """The container instance ended: followers get the rest of the log and stop."""
        with self._lock:
            state = self._container(namespace, pod, container)
            state.current.closed = True
            waiters = list(state.waiters)
        self._wake(waiters)

    def forget_pod(self, namespace: str, pod: str) -> None:
        """Drop every log of a pod (its containers are gone for good); followers stop."""
        with self._lock:
            waiters = []
            for container in self._containers_of.pop((namespace, pod), ()):
                state = self._containers.pop((namespace, pod, container))
                state.current.closed = True
                waiters.extend(state.waiters)
        self._wake(waiters)

    def has_started(self, namespace: str, pod: str, container: str) -> bool:
        """Whether any instance of the container has started or written output."""
        with self._lock:
            return (namespace, pod, container) in self._containers

    def has_previous(self, namespace: str, pod: str, container: str) -> bool:
        """Whether a previous (restarted) instance exists."""
        with self._lock:
            state = self._containers.get((namespace, pod, container))
            return state is not None and state.previous is not None

    def lines(self, namespace: str, pod: str, container: str, previous: bool = False) -> list[LogLine]:
        """A snapshot of the instance's lines."""
        with self._lock:
            state = self._containers.get((namespace, pod, container))
            if state is None:
                return []
            log = state.previous if previous else state.current
            return list(log.lines) if log is not None else []

    def text(self, namespace: str, pod: str, container: str) -> str:
        """The current instance's output as one string (one ``\\n`` after each line)."""
        return "".join(line.text + "\n" for line in self.lines(namespace, pod, container))

    async def follow(
        self, namespace: str, pod: str, container: str, start: int = 0
    ) -> AsyncIterator[LogLine]:
        """Yield lines from index ``start`` of the current instance, then new ones until it ends."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        registration = (loop, wake)
        with self._lock:
            state = self._container(namespace, pod, container)
            state.waiters.append(registration)
            log = state.current
        position = start
        try:
            while True:
                with self._lock:
                    fresh = log.lines[position:]
                    closed = log.closed
                    wake.clear()
                for line in fresh:
                    yield line
                position += len(fresh)
                if closed:
                    return
                await wake.wait()
        finally:
            with self._lock:
                if registration in state.waiters:
                    state.waiters.remove(registration)

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in waiters:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                event.set()
            else:
                loop.call_soon_threadsafe(event.set)
