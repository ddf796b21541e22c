"""Request metrics of the emulated API server.

Tests assert on what a client actually did to the cluster ("exactly one Job was ever created", "no list
calls while waiting", "watches do not leak"), so every request is recorded with the verb Kubernetes would
name, and open watch streams are tracked with their peak.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, NamedTuple


class RequestRecord(NamedTuple):
    """One finished request, as the audit log of a real server would describe it.

    A tuple of plain values, so the garbage collector stops tracking it: a long run keeps up to 100,000
    of these, and tracked objects would make every full collection (a pause of the server) slower.
    """

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection, or the HTTP method
    resource: str  # plural ("jobs"), or the non-resource path ("/version")
    subresource: str
    namespace: str
    user_agent: str
    status: int
    latency_seconds: float
    bytes_sent: int


class RequestMetrics:
    """Thread-safe counters over recorded requests; ``snapshot()`` is what ``GET /metrics`` returns."""

    def __init__(self, keep_records: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._keep_records = keep_records
        self._records: list[RequestRecord] = []
        self._by_verb_resource: Counter[tuple[str, str]] = Counter()
        self._by_status: Counter[int] = Counter()
        self._creates: Counter[str] = Counter()
        self._bytes_sent = 0
        self._open_watches = 0
        self._peak_watches = 0

    def record(self, record: RequestRecord) -> None:
        """Count one finished request (a successful create also counts towards ``creates``)."""
        with self._lock:
            if len(self._records) < self._keep_records:
                self._records.append(record)
            resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
            self._by_verb_resource[(record.verb, resource)] += 1
            self._by_status[record.status] += 1
            self._bytes_sent += record.bytes_sent
            if record.verb == "create" and record.status == 201 and not record.subresource:
                self._creates[record.resource] += 1

    def request_started(self) -> None:
        """A request arrived; :meth:`request_ended` follows when its handler is done (a stream's, a moment
        after its client went away)."""
        with self._lock:
            self._in_flight += 1

    def request_ended(self) -> None:
        """The handler of a request started with :meth:`request_started` is done."""
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is in flight, so every stream a client closed is recorded; False if some
        were still open after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def watch_opened(self) -> None:
        """A watch stream started."""
        with self._lock:
            self._open_watches += 1
            self._peak_watches = max(self._peak_watches, self._open_watches)

    def watch_closed(self) -> None:
        """A watch stream ended."""
        with self._lock:
            self._open_watches -= 1

    @property
    def open_watches(self) -> int:
        """Watch streams open right now."""
        with self._lock:
            return self._open_watches

    @property
    def peak_watches(self) -> int:
        """Most watch streams open at once since the last reset."""
        with self._lock:
            return self._peak_watches

    def count(self, verb: str | None = None, resource: str | None = None, status: int | None = None) -> int:
        """Requests matching every given criterion (``resource``: ``pods``, or ``pods/log``)."""
        with self._lock:
            records = list(self._records)
        return sum(
            1
            for r in records
            if (verb is None or r.verb == verb)
            and (
                resource is None
                or resource == (f"{r.resource}/{r.subresource}" if r.subresource else r.resource)
            )
            and (status is None or r.status == status)
        )

    def creates(self, resource: str) -> int:
        """Successful creates of ``resource`` (e.g. ``jobs``) since the last reset."""
        with self._lock:
            return self._creates[resource]

    def records(self) -> list[RequestRecord]:
        """Every recorded request, oldest first."""
        with self._lock:
            return list(self._records)

    def snapshot(self) -> dict[str, Any]:
        """All counters as plain JSON-able data."""
        with self._lock:
            latencies = sorted(r.latency_seconds for r in self._records if r.verb != "watch")
            return {
                "requests_total": sum(self._by_status.values()),
                "by_verb_resource": {
                    f"{verb} {resource}": n for (verb, resource), n in self._by_verb_resource.items()
                },
                "by_status": {str(status): n for status, n in self._by_status.items()},
                "creates": dict(self._creates),
                "bytes_sent": self._bytes_sent,
                "open_watches": self._open_watches,
                "peak_watches": self._peak_watches,
                "latency_p50_seconds": _percentile(latencies, 0.50),
                "latency_p99_seconds": _percentile(latencies, 0.99),
                "recent": [r._asdict() for r in self._records[-50:]],
            }

    def reset(self) -> None:
        """Forget all counts; open watches stay counted (they are still open), the peak restarts from them."""
        with self._lock:
            self._records.clear()
            self._by_verb_resource.clear()
            self._by_status.clear()
            self._creates.clear()
            self._bytes_sent = 0
            self._peak_watches = self._open_watches


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]
