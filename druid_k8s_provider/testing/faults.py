"""Scriptable failures of the emulated API server, so tests see what production clusters do to clients.

A fault matches requests by verb, resource and namespace and fires either with a probability (``rate``,
drawn from a seeded generator so a failing test replays identically) or for the next ``count`` matching
requests. It can answer an error Status (500, 503, 429 with ``Retry-After``...), reset the connection, or
only add latency. Watches can be dropped all at once or the next one answered with ``410 Expired``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

_REASONS = {
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
    409: "Conflict",
    403: "Forbidden",
    404: "NotFound",
}


class Scheduled(Protocol):
    """What a scripted fault of either emulator has for :func:`fires` to decide."""

    rate: float | None
    remaining: int | None
    fired: int


def check_schedule(where: str, rate: float | None, count: int | None) -> None:
    """Raise ValueError for ``rate`` and ``count`` both given, or a rate outside 0..1."""
    if rate is not None and count is not None:
        raise ValueError(f"{where}: give either rate= or count=, not both")
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ValueError(f"{where}: rate must be between 0 and 1, got {rate}")


def fires(fault: Scheduled, draw: random.Random) -> bool:
    """Whether a matching fault fires on this request: a count-based one while it has any left (using one),
    a rate-based one by a seeded draw, any other always. Counts the firing."""
    if fault.remaining is not None:
        if fault.remaining <= 0:
            return False
        fault.remaining -= 1
    elif fault.rate is not None and draw.random() >= fault.rate:
        return False
    fault.fired += 1
    return True


@dataclass
class Fault:
    """One scripted fault; ``remaining`` counts down for count-based faults (None: rate-based)."""

    verb: str | None
    resource: str | None
    namespace: str | None
    status: int | None
    retry_after: int | None
    rate: float | None
    remaining: int | None
    reset_connection: bool
    latency: float
    message: str
    fired: int = 0

    def matches(self, verb: str, resource: str, namespace: str) -> bool:
        """Whether the request is in scope (``resource`` may name a subresource, ``pods/log``)."""
        return (
            (self.verb is None or self.verb == verb)
            and (
                self.resource is None or self.resource == resource or self.resource == resource.split("/")[0]
            )
            and (self.namespace is None or self.namespace == namespace)
        )

    @property
    def reason(self) -> str:
        """The Status reason matching ``status``."""
        return _REASONS.get(self.status or 500, "InternalError")


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: wait ``latency`` seconds, then fail (status/reset) or proceed."""

    latency: float = 0.0
    status: int | None = None
    reason: str = ""
    message: str = ""
    retry_after: int | None = None
    reset_connection: bool = False


@dataclass
class FaultInjector:
    """The fault script of one emulator; thread-safe, reproducible for a given ``seed``."""

    seed: int = 0
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _expire_next_watch: int = 0
    _watch_droppers: list[Callable[[], int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        rate: float | None = None,
        count: int | None = None,
        reset_connection: bool = False,
        latency: float = 0.0,
        message: str | None = None,
    ) -> Fault:
        """Script a fault; give ``rate`` (0..1) or ``count`` (next N matches), default: every match."""
        check_schedule("faults.add", rate, count)
        if status is None and not reset_connection and latency <= 0:
            raise ValueError("faults.add: give status=, reset_connection=True or latency= (seconds)")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"faults.add: status must be an HTTP error code (4xx/5xx), got {status}")
        fault = Fault(
            verb=verb,
            resource=resource,
            namespace=namespace,
            status=status,
            retry_after=retry_after,
            rate=rate,
            remaining=count,
            reset_connection=reset_connection,
            latency=latency,
            message=message or _default_message(status),
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def decide(self, verb: str, resource: str, namespace: str) -> FaultDecision | None:
        """The first matching fault that fires for this request, if any (consumes count-based faults)."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(verb, resource, namespace) or not fires(fault, self._random):
                    continue
                return FaultDecision(
                    latency=fault.latency,
                    status=fault.status,
                    reason=fault.reason if fault.status else "",
                    message=fault.message,
                    retry_after=fault.retry_after,
                    reset_connection=fault.reset_connection,
                )
        return None

    def expire_next_watch(self, count: int = 1) -> None:
        """The next ``count`` watch requests get a single ERROR event with a 410 Expired Status."""
        with self._lock:
            self._expire_next_watch += count

    def take_watch_expiry(self) -> bool:
        """Consume one pending forced expiry (the server calls this when a watch starts)."""
        with self._lock:
            if self._expire_next_watch > 0:
                self._expire_next_watch -= 1
                return True
            return False

    def on_drop_watches(self, dropper: Callable[[], int]) -> None:
        """Register the server's hook that closes open watch streams (returns how many it closed)."""
        self._watch_droppers.append(dropper)

    def drop_watches(self) -> int:
        """Cut every open watch stream abruptly, as a load balancer or API server restart does."""
        return sum(dropper() for dropper in list(self._watch_droppers))

    def clear(self) -> None:
        """Remove all scripted faults and pending watch expiries; random draws restart from the seed."""
        with self._lock:
            self._faults.clear()
            self._expire_next_watch = 0
            self._random = random.Random(self.seed)

    @property
    def faults(self) -> list[Fault]:
        """The scripted faults, with how often each fired."""
        with self._lock:
            return list(self._faults)


def _default_message(status: int | None) -> str:
    if status == 429:
        return "Too many requests, please try again later."
    if status == 503:
        return "the server is currently unable to handle the request"
    if status == 504:
        return "the server was unable to return a response in the time allotted, but may still be processing"
    if status is None:
        return ""
    return "Internal error occurred: injected fault"
