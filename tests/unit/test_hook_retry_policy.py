"""How the hook retries: single calls give up after a few attempts, waiting reads outlast an API outage.

An API server restart keeps it away for tens of seconds. A read of a waiting task must keep trying for as
long as that lasts, pausing no more than ``max_wait`` between attempts, so it resumes within moments of the
server's return; only its deadline or a cancellation (a user stopping the task) ends it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import tenacity

from druid_k8s_provider.hooks.druid_k8s import RetryPolicy
from druid_k8s_provider.hooks.k8s_errors import ApiCallFailed
from druid_k8s_provider.hooks.k8s_retry import worth_logging
from druid_k8s_provider.triggers.job import _keep_trying

QUICK = RetryPolicy(initial_wait=0.001, max_wait=0.002)


class Outage:
    """A call that fails with a refused connection ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("connection refused")
        return "answer"


def call_with(policy: RetryPolicy, call: Outage) -> str:
    for attempt in policy.sync("GET /outage"):
        with attempt:
            return call()
    raise AssertionError("unreachable")


def test_a_single_call_gives_up_after_its_attempts() -> None:
    outage = Outage(failures=100)
    with pytest.raises(ConnectionRefusedError):
        call_with(QUICK, outage)
    assert outage.calls == QUICK.attempts


def test_a_waiting_read_outlasts_any_number_of_failures() -> None:
    outage = Outage(failures=50)
    assert call_with(QUICK.until(None), outage) == "answer"
    assert outage.calls == 51


def test_a_waiting_read_stops_at_its_deadline_with_the_last_failure() -> None:
    outage = Outage(failures=10**6)
    with pytest.raises(ConnectionRefusedError):
        call_with(QUICK.until(time.time() + 0.2), outage)
    assert outage.calls > QUICK.attempts  # it kept trying past the single call's budget, then stopped


def test_refusals_that_retrying_does_not_cure_are_not_retried() -> None:
    calls = []

    def forbidden() -> None:
        calls.append(1)
        raise ApiCallFailed(403, "Forbidden", "jobs.batch is forbidden")

    with pytest.raises(ApiCallFailed):
        for attempt in QUICK.until(None).sync("GET /jobs"):
            with attempt:
                forbidden()
    assert len(calls) == 1


async def test_pauses_grow_to_the_cap_and_stay_there() -> None:
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    outage = Outage(failures=30)
    policy = RetryPolicy(initial_wait=0.2, max_wait=2.0)
    async for attempt in policy.until(None).asynchronous("GET /outage", sleep=record):
        with attempt:
            outage()
    assert len(pauses) == 30
    assert pauses[0] < 0.5
    assert max(pauses) == pauses[-1] == policy.max_wait


async def test_cancelling_a_waiting_read_ends_it() -> None:
    started = asyncio.Event()

    async def never_answers() -> None:
        async for attempt in QUICK.until(None).asynchronous("GET /outage"):
            with attempt:
                started.set()
                raise ConnectionRefusedError("connection refused")

    retrying = asyncio.create_task(never_answers())
    await started.wait()
    retrying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await retrying


async def test_progress_starts_the_back_off_over() -> None:
    """A watch that had listed, or a log stream that showed lines, then broke: a new outage begins."""
    script = iter(["fail", "fail", "progress", "fail", "done"])
    failed_attempts: list[int] = []

    async def attempt() -> bool:
        step = next(script)
        if step == "fail":
            raise ConnectionResetError("dropped")
        return step == "done"

    def note(state: tenacity.RetryCallState) -> None:
        failed_attempts.append(state.attempt_number)

    await _keep_trying(QUICK, "watch", attempt, retry_on=lambda exc: True, before_sleep=note)
    assert failed_attempts == [1, 2, 1]


def test_an_endless_retry_logs_its_first_attempts_then_every_tenth() -> None:
    def logged(attempts: int | None) -> list[int]:
        numbers = []
        for number in range(1, 31):
            state = tenacity.RetryCallState(None, None, (), {})
            state.attempt_number = number
            if worth_logging(state, attempts):
                numbers.append(number)
        return numbers

    assert logged(None) == [1, 2, 3, 10, 20, 30]
    assert logged(6) == list(range(1, 31))
