"""The Overlord emulator's lockbox and task actions: Druid's refusals, without any I/O."""

from __future__ import annotations

from typing import Any

import pytest

from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.actions import ActionRefused, UnknownAction, perform
from druid_k8s_provider.testing.overlord.lockbox import Interval, Lockbox, task_intervals
from druid_k8s_provider.testing.overlord.queue import EntryAlreadyExists, TaskQueue


def task(task_id: str, interval: str = "2026-01-01/2026-01-02", group: str | None = None) -> DruidTask:
    spec: dict[str, Any] = {
        "type": "index_parallel",
        "id": task_id,
        "spec": {"dataSchema": {"dataSource": "wikipedia", "granularitySpec": {"intervals": [interval]}}},
    }
    if group:
        spec["groupId"] = group
    return DruidTask.from_spec(spec)


def act(lockbox: Lockbox, who: DruidTask, **action: Any) -> Any:
    return perform(lockbox, who, action, lambda task_id, location: None)


def test_intervals_parse_and_print_as_joda_does() -> None:
    assert str(Interval.parse("2026-01-01/2026-01-02")) == "2026-01-01T00:00:00.000Z/2026-01-02T00:00:00.000Z"
    assert Interval.parse("2026-01-01T00:00:00Z/P1D") == Interval.parse("2026-01-01/2026-01-02")
    assert Interval.parse("P1D/2026-01-02") == Interval.parse("2026-01-01/2026-01-02")
    for bad in ("2026-01-01", "2026-01-02/2026-01-01", "x/y"):
        with pytest.raises(ValueError):
            Interval.parse(bad)


def test_task_intervals_come_from_the_spec_of_each_task_type() -> None:
    assert task_intervals(task("a")) == [Interval.parse("2026-01-01/2026-01-02")]
    compact = DruidTask.from_spec(
        {
            "type": "compact",
            "id": "c",
            "dataSource": "w",
            "ioConfig": {"inputSpec": {"interval": "2026-01/2026-02"}},
        }
    )
    assert task_intervals(compact) == [Interval.parse("2026-01-01/2026-02-01")]
    kill = DruidTask.from_spec({"type": "kill", "id": "k", "dataSource": "w", "interval": "2026-01-01/P1M"})
    assert task_intervals(kill) == [Interval.parse("2026-01-01/2026-02-01")]
    assert task_intervals(DruidTask.from_spec({"type": "noop", "id": "n"})) == []


def test_an_inactive_task_is_refused_its_lock_and_its_allocation() -> None:
    lockbox, stray = Lockbox(), task("stray")
    with pytest.raises(ActionRefused, match=r"^Unable to grant lock to inactive Task \[stray\]$"):
        act(
            lockbox,
            stray,
            type="timeChunkLockTryAcquire",
            lockType="EXCLUSIVE",
            interval="2026-01-01/2026-01-02",
        )
    with pytest.raises(ActionRefused, match="inactive Task"):
        act(lockbox, stray, type="segmentAllocate", dataSource="wikipedia", timestamp="2026-01-01T01:00:00Z")
    assert act(lockbox, stray, type="updateStatus", status={"status": "SUCCESS"}) is None


def test_overlapping_intervals_block_another_group_but_not_the_same_group() -> None:
    lockbox = Lockbox()
    first, rival, sibling = task("first"), task("rival"), task("sibling", group="first")
    for each in (first, rival, sibling):
        lockbox.add(each)
    assert lockbox.lock_all(first, task_intervals(first))
    assert not lockbox.lock_all(rival, task_intervals(rival))
    assert lockbox.lock_all(sibling, task_intervals(sibling))
    lockbox.remove("first")
    lockbox.remove("sibling")
    assert lockbox.lock_all(rival, task_intervals(rival))


def test_locks_are_kept_per_datasource_and_task_and_listed_oldest_first() -> None:
    lockbox = Lockbox()
    early = task("early", "2026-03-01/2026-03-02", group="shared")
    elsewhere = DruidTask.from_spec(
        {
            "type": "index_parallel",
            "id": "elsewhere",
            "spec": {
                "dataSchema": {"dataSource": "other", "granularitySpec": {"intervals": ["2026-03-01/P1D"]}}
            },
        }
    )
    late = task("late", "2026-01-01/2026-01-02", group="shared")
    for each in (early, elsewhere, late):
        lockbox.add(each)
    assert lockbox.lock_all(early, task_intervals(early))
    assert lockbox.lock_all(elsewhere, task_intervals(elsewhere))  # same interval, another datasource
    assert lockbox.lock_all(late, task_intervals(late))
    # The later task joins its group's older lock: its locks are listed in the order they were made.
    joined = lockbox.try_lock(late, Interval.parse("2026-03-01/2026-03-02"))
    assert joined is lockbox.locks_of("early")[0]
    assert [str(lock.interval)[:10] for lock in lockbox.locks_of("late")] == ["2026-03-01", "2026-01-01"]
    lockbox.release("late", Interval.parse("2026-01-01/2026-01-02"))
    assert lockbox.locks_of("late") == [joined]
    lockbox.remove("early")  # the shared lock stays while "late" holds it
    assert lockbox.locks_of("late") == [joined] and joined.task_ids == {"late"}
    lockbox.remove("late")
    rival = task("rival", "2026-03-01/2026-03-02")
    lockbox.add(rival)
    assert lockbox.lock_all(rival, task_intervals(rival))
    assert [lock.data_source for lock in lockbox.locks_of("elsewhere")] == ["other"]


def test_publishing_needs_a_covering_lock() -> None:
    lockbox, owner = Lockbox(), task("owner")
    lockbox.add(owner)
    segment = act(
        lockbox, owner, type="segmentAllocate", dataSource="wikipedia", timestamp="2026-01-01T05:00:00Z"
    )
    assert segment["interval"] == "2026-01-01T00:00:00.000Z/2026-01-02T00:00:00.000Z"
    result = act(lockbox, owner, type="segmentTransactionalInsert", segments=[segment])
    assert result["success"] is True
    other = task("other", "2026-02-01/2026-02-02")
    lockbox.add(other)
    with pytest.raises(ActionRefused, match=r"are not covered by locks\[\[\]\] for task\[other\]$"):
        act(lockbox, other, type="segmentTransactionalInsert", segments=[segment])
    with pytest.raises(UnknownAction):
        act(lockbox, owner, type="noSuchAction")


def test_the_queue_refuses_a_known_id_even_after_completion() -> None:
    queue = TaskQueue()
    queue.add(task("a"))
    assert queue.complete("a", "SUCCESS", 5, None)
    assert not queue.complete("a", "FAILED", 1, "late")
    with pytest.raises(EntryAlreadyExists, match=r"Task\[a\] already exists"):
        queue.add(task("a"))
    assert queue.statuses(["a", "b"]) == {
        "a": {
            "id": "a",
            "status": "SUCCESS",
            "duration": 5,
            "errorMsg": None,
            "location": {"host": None, "port": -1, "tlsPort": -1},
        }
    }
