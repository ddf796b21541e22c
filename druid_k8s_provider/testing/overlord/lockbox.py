"""The Overlord's lockbox: time-chunk locks, segment allocation and the publish check, as Druid refuses them.

Rules (apache/druid ``TaskLockbox``, ``TaskLocks``, ``TimeChunkLockTryAcquireAction``,
``SegmentAllocateAction``, ``SegmentTransactionalInsertAction``):

- Only *active* tasks (submitted to the queue and not complete) get locks; any other task's lock or allocation
  request raises :class:`InactiveTask` with Druid's message ``Unable to grant lock to inactive Task [<id>]``.
- Tasks of one group share their locks; a lock of another group on an overlapping interval of the same
  datasource blocks the request (the try-acquire answers no lock), unless both locks are SHARED or both
  APPEND. Druid's preemption of lower-priority locks is not emulated: a blocked task simply waits.
- Publishing segments needs, for every segment, a lock of the task on the same datasource whose interval
  contains the segment's and whose version is not older: else :class:`LocksDoNotCover` with Druid's
  ``Segments[...] are not covered by locks[...] for task[...]``.

Pure: no I/O, no clock other than the version stamp of a new lock.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pendulum

from druid_k8s_provider.task import DruidTask

_UTC = dt.UTC
_SHAREABLE = frozenset({"SHARED", "APPEND"})
# Druid's granularity names (``Granularities``) and the start of their bucket around a timestamp.
_PERIOD_UNITS = {
    "SECOND": "second",
    "MINUTE": "minute",
    "HOUR": "hour",
    "DAY": "day",
    "WEEK": "week",
    "MONTH": "month",
    "YEAR": "year",
}


class InactiveTask(Exception):
    """A lock or allocation for a task the queue does not hold (Druid's ISE from ``TaskLockbox.tryLock``)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Unable to grant lock to inactive Task [{task_id}]")


class LocksDoNotCover(Exception):
    """A publish whose segments are not all under the task's locks (``TaskLocks.checkLockCoversSegments``)."""


@dataclass(frozen=True)
class Interval:
    """A half-open UTC interval ``[start, end)``, printed as Druid prints Joda intervals."""

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def parse(cls, text: str) -> Interval:
        """``2026-01-01/2026-02-01``, ``2026-01-01T00:00:00Z/P1D`` or ``P1D/2026-01-02``; else ValueError."""
        parts = str(text).split("/")
        if len(parts) != 2:
            raise ValueError(f"interval [{text}] is not <start>/<end>")
        first, second = parts
        if first.startswith("P"):
            end = _instant(second)
            return cls._checked(end - _period(first), end, text)
        start = _instant(first)
        end = start + _period(second) if second.startswith("P") else _instant(second)
        return cls._checked(start, end, text)

    @classmethod
    def _checked(cls, start: dt.datetime, end: dt.datetime, text: str) -> Interval:
        if end <= start:
            raise ValueError(f"interval [{text}] is empty")
        return cls(start, end)

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end

    def contains(self, other: Interval) -> bool:
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{joda_time(self.start)}/{joda_time(self.end)}"


def _instant(text: str) -> pendulum.DateTime:
    parsed = pendulum.parse(text, tz="UTC")
    if isinstance(parsed, pendulum.DateTime):
        return parsed.in_timezone("UTC")
    if isinstance(parsed, pendulum.Date):
        return pendulum.datetime(parsed.year, parsed.month, parsed.day)
    raise ValueError(f"[{text}] is not an instant")


def _period(text: str) -> pendulum.Duration:
    parsed = pendulum.parse(text)
    if not isinstance(parsed, pendulum.Duration):
        raise ValueError(f"[{text}] is not an ISO-8601 period")
    return parsed


def joda_time(instant: dt.datetime) -> str:
    """``2026-01-01T00:00:00.000Z``: Joda's ISO format in UTC, as Druid prints instants."""
    utc = instant.astimezone(_UTC)
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def bucket(timestamp: str, granularity: Any) -> Interval:
    """The segment-granularity bucket holding ``timestamp`` (``DAY``, ``HOUR``, ``MONTH``, ``ALL`` ...)."""
    name = granularity.get("type", "") if isinstance(granularity, Mapping) else str(granularity or "DAY")
    name = name.upper()
    if name == "ALL":
        return Interval(dt.datetime(1, 1, 1, tzinfo=_UTC), dt.datetime(9999, 12, 31, tzinfo=_UTC))
    unit = _PERIOD_UNITS.get(name, "day")
    start = _instant(timestamp).start_of(unit)
    return Interval(start, start.add(**{f"{unit}s": 1}))


def task_intervals(task: DruidTask) -> list[Interval]:
    """The intervals a task locks before it runs (its ``isReady``), read from the task JSON.

    ``index``/``index_parallel``: ``spec.dataSchema.granularitySpec.intervals`` (none: the task appends and
    locks at allocation time); ``compact``: ``ioConfig.inputSpec.interval`` or ``interval``; ``kill`` and
    others: ``interval``. Raises ValueError for an interval that does not parse.
    """
    spec = task.spec
    schema = (spec.get("spec") or {}).get("dataSchema") or spec.get("dataSchema") or {}
    texts: Iterable[Any] = (schema.get("granularitySpec") or {}).get("intervals") or ()
    if not texts:
        io_config = spec.get("ioConfig") or {}
        single = (io_config.get("inputSpec") or {}).get("interval") or spec.get("interval")
        texts = [single] if single else ()
    return [Interval.parse(str(text)) for text in texts]


@dataclass
class TaskLock:
    """One time-chunk lock (Druid's ``TimeChunkLock``), shared by the tasks of its group."""

    group_id: str
    data_source: str
    interval: Interval
    version: str
    lock_type: str
    priority: int
    task_ids: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """The lock as ``TaskLock`` JSON (``granularity`` timeChunk)."""
        return {
            "granularity": "timeChunk",
            "type": self.lock_type,
            "groupId": self.group_id,
            "dataSource": self.data_source,
            "interval": str(self.interval),
            "version": self.version,
            "priority": self.priority,
            "revoked": False,
        }

    def __str__(self) -> str:
        return (
            f"TimeChunkLock{{type={self.lock_type}, groupId='{self.group_id}', "
            f"dataSource='{self.data_source}', "
            f"interval={self.interval}, version='{self.version}', priority={self.priority}, revoked=false}}"
        )


class Lockbox:
    """The active tasks, their locks and their allocated segment ids.

    Locks are indexed by datasource and by task, each list in creation order (the order a lookup meets
    them in), so a request costs the locks of its own datasource or task, not every lock held.
    """

    def __init__(self) -> None:
        self._active: dict[str, DruidTask] = {}
        self._created = itertools.count()
        self._creation: dict[int, int] = {}  # id(lock) -> its creation number, while the lock exists
        self._by_source: dict[str, list[TaskLock]] = {}
        self._by_task: dict[str, list[TaskLock]] = {}
        self._partitions: dict[tuple[str, str, str], int] = {}

    def add(self, task: DruidTask) -> None:
        """The task enters the queue: it may now take locks."""
        self._active[task.id] = task

    def remove(self, task_id: str) -> None:
        """The task completed: it leaves the active set and its locks are released."""
        self._active.pop(task_id, None)
        for lock in self._by_task.pop(task_id, ()):
            lock.task_ids.discard(task_id)
            if not lock.task_ids:
                self._drop(lock)

    def release(self, task_id: str, interval: Interval) -> None:
        """The task gives up its lock on exactly ``interval`` (``lockRelease``)."""
        for lock in self.locks_of(task_id):
            if lock.interval == interval:
                self._leave(lock, task_id)

    def is_active(self, task_id: str) -> bool:
        return task_id in self._active

    def locks_of(self, task_id: str) -> list[TaskLock]:
        """The task's locks, oldest first."""
        return list(self._by_task.get(task_id, ()))

    def try_lock(self, task: DruidTask, interval: Interval, lock_type: str = "EXCLUSIVE") -> TaskLock | None:
        """The task's lock on ``interval`` (new, its group's, or already held), or None when blocked."""
        if task.id not in self._active:
            raise InactiveTask(task.id)
        data_source = task.data_source or ""
        for lock in self._by_source.get(data_source, ()):
            if not lock.interval.overlaps(interval):
                continue
            if lock.group_id == task.group_id and lock.interval.contains(interval):
                self._join(lock, task.id)
                return lock
            if lock.group_id != task.group_id and not (
                lock.lock_type == lock_type and lock_type in _SHAREABLE
            ):
                return None
        lock = TaskLock(
            group_id=task.group_id,
            data_source=data_source,
            interval=interval,
            version=joda_time(dt.datetime.now(_UTC)),
            lock_type=lock_type,
            priority=int(task.context.get("priority", 0) or 0),
        )
        self._creation[id(lock)] = next(self._created)
        self._by_source.setdefault(data_source, []).append(lock)
        self._join(lock, task.id)
        return lock

    def lock_all(self, task: DruidTask, intervals: Iterable[Interval]) -> bool:
        """Lock every interval for the task (its ``isReady``); False at the first one that is blocked.

        The locks taken for the intervals before the blocked one stay held by the task (it asks again on
        the queue's next pass, and finds them its own).
        """
        return all(self.try_lock(task, interval) is not None for interval in intervals)

    def _join(self, lock: TaskLock, task_id: str) -> None:
        if task_id in lock.task_ids:
            return
        lock.task_ids.add(task_id)
        bisect.insort(self._by_task.setdefault(task_id, []), lock, key=lambda held: self._creation[id(held)])

    def _leave(self, lock: TaskLock, task_id: str) -> None:
        lock.task_ids.discard(task_id)
        held = self._by_task.get(task_id, [])
        _remove_same(held, lock)
        if not held:
            self._by_task.pop(task_id, None)
        if not lock.task_ids:
            self._drop(lock)

    def _drop(self, lock: TaskLock) -> None:
        """The last task left the lock: it is gone."""
        same_source = self._by_source.get(lock.data_source, [])
        _remove_same(same_source, lock)
        if not same_source:
            self._by_source.pop(lock.data_source, None)
        self._creation.pop(id(lock), None)

    def allocate(self, task: DruidTask, data_source: str, interval: Interval) -> dict[str, Any] | None:
        """A new segment id (``SegmentIdWithShardSpec`` JSON) in ``interval`` under the task's lock, or None.

        A lock of the task that already covers the bucket is used; otherwise the bucket is locked first.
        """
        if task.id not in self._active:
            raise InactiveTask(task.id)
        lock = next(
            (
                held
                for held in self.locks_of(task.id)
                if held.data_source == data_source and held.interval.contains(interval)
            ),
            None,
        ) or self.try_lock(task, interval)
        if lock is None:
            return None
        key = (data_source, str(interval), lock.version)
        partition = self._partitions.get(key, 0)
        self._partitions[key] = partition + 1
        return {
            "dataSource": data_source,
            "interval": str(interval),
            "version": lock.version,
            "shardSpec": {"type": "numbered", "partitionNum": partition, "partitions": 0},
        }

    def check_covered(self, task: DruidTask, segments: list[Mapping[str, Any]]) -> None:
        """Raise :class:`LocksDoNotCover` unless the task's locks cover every segment (Druid's rule)."""
        locks = self.locks_of(task.id)
        for segment in segments:
            interval = Interval.parse(str(segment.get("interval", "")))
            covered = any(
                lock.data_source == segment.get("dataSource")
                and lock.interval.contains(interval)
                and lock.version >= str(segment.get("version", ""))
                for lock in locks
            )
            if not covered:
                described = ", ".join(segment_id(s) for s in segments)
                raise LocksDoNotCover(
                    f"Segments[[{described}]] are not covered by locks[[{', '.join(map(str, locks))}]] "
                    f"for task[{task.id}]"
                )


def _remove_same(locks: list[TaskLock], lock: TaskLock) -> None:
    """Remove ``lock`` itself (not an equal one) from ``locks``, if it is there."""
    for index, held in enumerate(locks):
        if held is lock:
            del locks[index]
            return


def segment_id(segment: Mapping[str, Any]) -> str:
    """Druid's segment id: ``<dataSource>_<start>_<end>_<version>[_<partition>]``."""
    start, _, end = str(segment.get("interval", "")).partition("/")
    partition = (segment.get("shardSpec") or {}).get("partitionNum", 0)
    suffix = f"_{partition}" if partition else ""
    return f"{segment.get('dataSource')}_{start}_{end}_{segment.get('version')}{suffix}"
