"""The provider's Airflow metrics, emitted from the worker and from the triggerer, against both emulators.

Airflow's ``Stats`` is replaced by a recorder in :mod:`druid_k8s_provider.metrics` (the one place that
emits): each test runs the real operator (and, deferred, its trigger, as a triggerer would) and reads what
was emitted. Values are not asserted beyond their sign: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from overlord_double import INDEXER, OverlordDouble, Scripted
from overlord_proxy import OverlordProxy
from test_bad_input_corpus import connect_druid
from test_operator_lifecycle import NAMESPACE, TASK, FakeTaskInstance, operator, run

from druid_k8s_provider import metrics
from druid_k8s_provider.errors import JobFailed, OverlordApiError
from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook, DruidOverlordHook
from druid_k8s_provider.hooks.overlord_transport import OverlordRetryPolicy
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Druid = Any  # tests/integration/conftest.py DruidCluster
FAST = OverlordRetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02)


@dataclass
class Emitted:
    kind: str
    name: str
    value: float
    tags: dict[str, Any] | None


@dataclass
class RecordedStats:
    """Stands in for Airflow's ``Stats``: records ``incr`` and ``timing``."""

    emitted: list[Emitted] = field(default_factory=list)

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, Any] | None = None) -> None:
        self.emitted.append(Emitted("counter", stat, count, tags))

    def timing(self, stat: str, dt_: dt.timedelta | float, *, tags: dict[str, Any] | None = None) -> None:
        milliseconds = dt_.total_seconds() * 1000 if isinstance(dt_, dt.timedelta) else float(dt_)
        self.emitted.append(Emitted("timer", stat, milliseconds, tags))

    def named(self, name: str) -> list[Emitted]:
        return [entry for entry in self.emitted if entry.name == name]


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> RecordedStats:
    recorder = RecordedStats()
    monkeypatch.setattr(metrics, "Stats", recorder)
    return recorder


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "triggerer"])
def test_a_task_in_airflow_mode_emits_startup_lock_wait_and_outcome(
    kube: KubeEmulator, druid: Druid, stats: RecordedStats, deferrable: bool
) -> None:
    druid.start()
    task = {**TASK, "context": {"standinDurationSeconds": 1}}  # long enough for the wait to see it run
    result = run(operator(druid_task=task, deferrable=deferrable), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    (startup,) = stats.named(metrics.PEON_STARTUP_TIME)
    assert startup.kind == "timer" and startup.value >= 0
    assert startup.tags == {"launch_mode": "airflow", "namespace": NAMESPACE}
    (lock_wait,) = stats.named(metrics.LOCK_WAIT)
    assert lock_wait.kind == "timer" and lock_wait.value >= 0 and lock_wait.tags == {"namespace": NAMESPACE}
    (outcome,) = stats.named(metrics.TASK_OUTCOME)
    assert outcome.kind == "counter" and outcome.value == 1
    assert outcome.tags == {"task_type": "index_parallel", "status": "SUCCESS", "launch_mode": "airflow"}
    assert len(stats.named(f"{metrics.TASK_OUTCOME}.index_parallel.SUCCESS")) == 1
    assert stats.named(metrics.OVERLORD_REQUEST_ERRORS) == []


def test_overlord_mode_emits_the_startup_of_the_overlords_job_and_no_lock_wait(
    kube: KubeEmulator, druid: Druid, stats: RecordedStats
) -> None:
    druid.start(druid_version="34.0.0")
    failing = {
        **TASK,
        "type": "index",
        "context": {"standinOutcome": "FAILED", "standinDurationSeconds": 1},
    }
    with pytest.raises(JobFailed):
        run(operator(druid_task=failing), FakeTaskInstance())
    (startup,) = stats.named(metrics.PEON_STARTUP_TIME)
    assert startup.value >= 0 and startup.tags == {"launch_mode": "overlord", "namespace": NAMESPACE}
    assert stats.named(metrics.LOCK_WAIT) == []  # no release: the Overlord hands its own Job to the runner
    (outcome,) = stats.named(metrics.TASK_OUTCOME)
    assert outcome.tags == {"task_type": "index", "status": "FAILED", "launch_mode": "overlord"}
    assert len(stats.named(f"{metrics.TASK_OUTCOME}.index.FAILED")) == 1


@pytest.fixture
def proxy(druid: Druid, monkeypatch: pytest.MonkeyPatch) -> Iterator[OverlordProxy]:
    druid.start()
    with OverlordProxy(druid.overlord.url) as spoiling:
        connect_druid(monkeypatch, spoiling.url)
        yield spoiling


def errors_by_endpoint(stats: RecordedStats) -> list[tuple[str, str]]:
    return [
        (entry.tags["endpoint"], entry.tags["status"])
        for entry in stats.named(metrics.OVERLORD_REQUEST_ERRORS)
        if entry.tags
    ]


def test_overlord_request_errors_are_counted_in_the_worker_and_in_the_triggerer(
    kube: KubeEmulator, proxy: OverlordProxy, stats: RecordedStats
) -> None:
    """The worker's submission is answered with a login page (the Overlord stored the task: it goes on),
    then a status round of the deferred wait with garbage (the try ends; its retry re-attaches)."""
    proxy.spoil("POST", f"{INDEXER}/task")
    proxy.spoil("POST", f"{INDEXER}/taskStatus", body=b"\x00garbage")  # a first try asks none before
    ti = FakeTaskInstance()
    with pytest.raises(OverlordApiError):
        run(operator(deferrable=True), ti)
    assert errors_by_endpoint(stats) == [
        ("submit_task", metrics.INVALID_ANSWER),
        ("task_statuses", metrics.INVALID_ANSWER),
    ]
    assert len(stats.named(f"{metrics.OVERLORD_REQUEST_ERRORS}.submit_task.invalid_answer")) == 1
    assert stats.named(metrics.TASK_OUTCOME) == []  # no outcome: the task is left to the next try
    proxy.heal()
    ti.try_number = 2
    assert run(operator(deferrable=True), ti)["status"] == "SUCCESS"
    assert len(stats.named(metrics.TASK_OUTCOME)) == 1


def test_every_failed_attempt_counts_by_endpoint_and_status(
    monkeypatch: pytest.MonkeyPatch, stats: RecordedStats
) -> None:
    """Retried answers (503 of a non-leader, 502 of a proxy) count each time, a refusal once; the
    ``entryAlreadyExists`` of a re-attaching submission is no error."""
    with OverlordDouble() as double:
        connect_druid(monkeypatch, f"http://127.0.0.1:{double.port}")
        double.script("GET", "/status", Scripted(503, "not the leader", "text/plain"))
        DruidOverlordHook(retry_policy=FAST).overlord_version()
        double.script("POST", f"{INDEXER}/taskStatus", Scripted(502, "<html>Bad Gateway</html>", "text/html"))

        async def in_the_triggerer() -> None:
            async with DruidOverlordAsyncHook(retry_policy=FAST) as hook:
                await hook.task_statuses(["t1"])
                await hook.submit_task({"type": "index", "id": "t1"})
                with pytest.raises(OverlordApiError):
                    await hook.submit_task({"type": "index", "id": "t1"})  # entryAlreadyExists: re-attach

        asyncio.run(in_the_triggerer())
        double.script("GET", f"{INDEXER}/task/t1/reports", Scripted(403, {"error": "no READ on wiki"}))
        with pytest.raises(OverlordApiError):
            DruidOverlordHook(retry_policy=FAST).task_report("t1")
    assert errors_by_endpoint(stats) == [
        ("overlord_version", "503"),
        ("task_statuses", "502"),
        ("task_report", "403"),
    ]
    assert len(stats.named(f"{metrics.OVERLORD_REQUEST_ERRORS}.overlord_version.503")) == 1
