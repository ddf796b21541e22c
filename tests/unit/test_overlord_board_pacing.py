"""When the board's batched status rounds come after ``check_soon``: soon, but never more than one a second.

What a user notices: a task's outcome is reported about a second after its Job ends, whether it ends alone
or among a stream of others ending every few milliseconds on the same triggerer; and the Overlord is asked
at most once a second however many Jobs end. The Overlord here answers after a set time, as a loaded one
does, so the pacing alone is measured (the emulator's answers are tested in tests/overlord/).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.triggers import overlord_board
from druid_k8s_provider.triggers.overlord_board import FOLLOW_UP_SECONDS, OverlordBoard

ANSWER_SECONDS = 0.5  # how long the Overlord takes to answer each batched status
STREAM_SECONDS = 6.0


class SlowOverlord:
    """Answers ``taskStatus`` after :data:`ANSWER_SECONDS`: RUNNING until a task is marked complete."""

    def __init__(self) -> None:
        self.complete: set[str] = set()
        self.round_starts: list[float] = []

    async def task_statuses(self, task_ids: Sequence[str]) -> dict[str, OverlordTaskStatus]:
        self.round_starts.append(asyncio.get_running_loop().time())
        answer = {
            task_id: OverlordTaskStatus(task_id, "SUCCESS" if task_id in self.complete else "RUNNING")
            for task_id in task_ids
        }
        await asyncio.sleep(ANSWER_SECONDS)
        return answer

    async def task_status(self, task_id: str) -> OverlordTaskStatus:
        """A lone release waiter's own status: still WAITING for its locks."""
        return OverlordTaskStatus(task_id, "RUNNING", runner_status_code="WAITING")

    async def aclose(self) -> None:
        pass


@pytest.fixture
def overlord(monkeypatch: pytest.MonkeyPatch) -> SlowOverlord:
    answering = SlowOverlord()
    monkeypatch.setattr(overlord_board.OverlordBoard, "_new_hook", lambda self: answering)
    return answering


async def test_a_lone_completion_is_asked_about_a_second_after_check_soon(overlord: SlowOverlord) -> None:
    board = OverlordBoard(status_interval=600.0)  # only check_soon can bring a round in time
    wait = asyncio.create_task(board.wait_complete("index_parallel_alone"))
    await asyncio.sleep(0.1)
    overlord.complete.add("index_parallel_alone")
    asked_at = asyncio.get_running_loop().time()
    board.check_soon()
    assert (await wait).status_code == "SUCCESS"
    first_round, round_after = overlord.round_starts  # the first at once, as the wait began
    # Then not at once: the Overlord records an outcome a moment after the Job ends.
    assert first_round < asked_at and round_after - asked_at >= FOLLOW_UP_SECONDS - 0.01


async def test_a_stream_of_completions_gets_a_round_each_second_not_each_second_plus_an_answer(
    overlord: SlowOverlord,
) -> None:
    board = OverlordBoard(status_interval=600.0)
    loop = asyncio.get_running_loop()
    ids = [f"index_parallel_{n:03}" for n in range(int(STREAM_SECONDS / 0.05))]
    waits = [asyncio.create_task(board.wait_complete(task_id)) for task_id in ids]
    seen_at: dict[str, float] = {}
    for task_id, wait in zip(ids, waits, strict=True):
        wait.add_done_callback(lambda _, task_id=task_id: seen_at.setdefault(task_id, loop.time()))
    await asyncio.sleep(0.1)
    ended_at: dict[str, float] = {}
    for task_id in ids:  # a Job ends every 50 ms, and the Overlord records its outcome at once
        overlord.complete.add(task_id)
        ended_at[task_id] = loop.time()
        board.check_soon()
        await asyncio.sleep(0.05)
    assert {(await wait).status_code for wait in waits} == {"SUCCESS"}
    await asyncio.sleep(0)  # the waits' done callbacks

    starts = overlord.round_starts
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= FOLLOW_UP_SECONDS - 0.01  # never more than one request a second
    # Paced from each round's start: about one round a second through the stream, not one per 1.5 s.
    assert sorted(gaps)[len(gaps) // 2] < FOLLOW_UP_SECONDS + ANSWER_SECONDS / 2
    slowest = max(seen_at[task_id] - ended_at[task_id] for task_id in ids)
    # A task ending just after a round started is seen at the end of the next one.
    assert slowest <= FOLLOW_UP_SECONDS + ANSWER_SECONDS + 0.3


async def test_a_check_soon_whose_waiter_went_away_brings_no_round_for_the_next_waiters(
    overlord: SlowOverlord,
) -> None:
    board = OverlordBoard(status_interval=600.0, release_interval=600.0)
    gone = asyncio.create_task(board.wait_complete("index_parallel_cancelled"))
    await asyncio.sleep(0.05)
    board.check_soon()  # its Job ended, then the Airflow task was cancelled before the round
    gone.cancel()
    await asyncio.sleep(0.05)
    asked = len(overlord.round_starts)
    # The next waiter only waits for its release (its locks): the release rounds tell it, and a status
    # round waits an interval, not the spent check_soon's second.
    waiting = asyncio.create_task(board.wait_handed_to_runner("index_parallel_waiting"))
    await asyncio.sleep(FOLLOW_UP_SECONDS + 0.5)
    assert len(overlord.round_starts) == asked
    waiting.cancel()
