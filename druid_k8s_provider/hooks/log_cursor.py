"""A position in a container log, so every line reaches the Airflow log once and in order.

The log is read with ``timestamps=true``: each line starts with the RFC 3339 time the kubelet saw it. A cursor
is the last timestamp shown plus how many lines carried exactly that timestamp, which is enough to resume
with ``sinceTime`` (whole seconds on a real API server) and skip what was already shown, across a stream that
dropped, a deferral, or a resume in another process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pendulum

_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def timestamp_key(timestamp: str) -> tuple[int, int]:
    """(epoch seconds, nanoseconds) of an RFC 3339 timestamp, comparable whatever its precision."""
    match = _TIMESTAMP.match(timestamp)
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {timestamp!r}")
    whole, fraction, zone = match.groups()
    moment = pendulum.parse(whole + ("Z" if zone == "Z" else zone))
    assert isinstance(moment, pendulum.DateTime)
    return int(moment.timestamp()), int((fraction or "0").ljust(9, "0"))


def split_line(raw: str) -> tuple[str | None, str]:
    """Split a ``timestamps=true`` log line into (timestamp, text); (None, raw) when it carries none."""
    head, sep, rest = raw.partition(" ")
    if sep and _TIMESTAMP.match(head):
        return head, rest
    return None, raw


@dataclass
class LogCursor:
    """The last shown timestamp and how many lines with exactly that timestamp were shown."""

    timestamp: str | None = None
    lines_at_timestamp: int = 0
    _to_skip_at_timestamp: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.begin_read()

    def begin_read(self) -> None:
        """Call before each (re)read of the log: a re-read yields the lines at the cursor's instant again."""
        self._to_skip_at_timestamp = self.lines_at_timestamp

    def admit(self, timestamp: str | None) -> bool:
        """True when the line is new (and advance past it); False when it was shown before.

        Lines without a timestamp cannot be placed and are always admitted.
        """
        if timestamp is None:
            return True
        if self.timestamp is not None:
            key, current = timestamp_key(timestamp), timestamp_key(self.timestamp)
            if key < current:
                return False
            if key == current:
                if self._to_skip_at_timestamp > 0:
                    self._to_skip_at_timestamp -= 1
                    return False
                self.lines_at_timestamp += 1
                return True
        self.timestamp, self.lines_at_timestamp, self._to_skip_at_timestamp = timestamp, 1, 0
        return True

    def since_time(self) -> str | None:
        """The ``sinceTime`` to resume from: the cursor's second, truncated, as the API server accepts it."""
        if self.timestamp is None:
            return None
        seconds, _ = timestamp_key(self.timestamp)
        return pendulum.from_timestamp(seconds, tz="UTC").format("YYYY-MM-DD[T]HH:mm:ss[Z]")

    def to_dict(self) -> dict[str, object]:
        """Serializable form (trigger kwargs, event payloads)."""
        return {"timestamp": self.timestamp, "lines_at_timestamp": self.lines_at_timestamp}

    @classmethod
    def from_dict(cls, data: dict[str, object] | None) -> LogCursor:
        """Inverse of :meth:`to_dict`; None gives a cursor at the start of the log."""
        if not data:
            return cls()
        timestamp = data.get("timestamp")
        count = data.get("lines_at_timestamp") or 0
        return cls(str(timestamp) if timestamp else None, int(count))  # type: ignore[call-overload]
