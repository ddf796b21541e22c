"""The end of a peon that finished while the API server was down must be seen as soon as it is back.

Against a real kube-apiserver restarted while a peon ran (down about 30 s after its drain, the peon ended
meanwhile), a deferred task learned of the completion 22 s and 35 s after the server was back: the reads
that failed during the outage had given up or were waiting out a back-off that kept growing, and only a
later retry or the fallback poll found the outcome. Here the emulator's API server goes away as a real one
does (it drains: open streams go on for a moment while new work is refused; then connections are refused)
while two peons write their last lines and exit: one waited for by a deferred trigger, one by a worker.
It comes back after :data:`OUTAGE_SECONDS`, long enough for a back-off without a low cap to be many seconds
into a pause (the waits before this fix learned of the end 14 s after the server's return). The fallback
poll is set to an hour, so only the watch's relist and the log stream's reconnect, retried with a capped
back-off, can deliver the outcomes: each must arrive within a few of those capped pauses after the server
is back, with every log line shown once. A poking sensor, whose reads used to give up and fail it, rides
out a shorter outage the same way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from emulated_cluster import NAMESPACE, OVERLORD, connected_emulator, reporting_to_the_overlord

from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s import RetryPolicy
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext
from druid_k8s_provider.triggers.job import FINISHED, MISSING

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

#: As long as the real incident's outage; far longer than one call's retries, so every read in flight when
#: the server went away gives up and only the waiters' own retrying can bring the outcome.
OUTAGE_SECONDS = 50.0
#: How long the stopping API server keeps serving the open streams (the peons end only after that).
DRAIN_SECONDS = 1.0
#: A poke's outage: longer than one call's whole retry budget, which a poke used to end the sensor with.
SENSOR_OUTAGE_SECONDS = 12.0
#: The fallback poll: far beyond the test, so it cannot be what finds the outcome.
FALLBACK_POLL_SECONDS = 3600.0
#: How soon after the server is back an outcome must be known: a few of the retries' longest pause (the
#: relist, the log stream's reconnect, its drain), far below the outage and the fallback poll.
PROMPT_SECONDS = 3 * RetryPolicy().max_wait + 2.0
FIRST_LINES = [f"peon line {number} before the outage" for number in range(3)]
LAST_LINES = [f"peon line {number} during the outage" for number in range(3)]


@dataclass
class Waiter:
    """One task waiting through the outage: what it showed of the peon's log and when it knew the end."""

    task_id: str
    shown: list[str] = field(default_factory=list)
    done_at: float | None = None


class ApiOutage:
    """Stops the emulator's API server once ``ready()`` holds, lets the peons end while it is down, and
    starts it again ``seconds`` after it stopped."""

    def __init__(
        self, kube: KubeEmulator, task_ids: list[str], ready: Callable[[], bool], seconds: float
    ) -> None:
        self.kube = kube
        self.job_names = [job_name(task_id) for task_id in task_ids]
        self.ready = ready
        self.seconds = seconds
        self.release_peons = threading.Event()
        self.back_at: float | None = None
        self.peons_ended_while_down = False
        self.thread = threading.Thread(target=self._run, name="api-outage")

    async def peon(self, ctx: ContainerContext) -> int:
        """The peons' behaviour: first lines, then the last ones and exit 0 once the server is down."""
        for line in FIRST_LINES:
            ctx.log(line)
        while not self.release_peons.is_set():
            await asyncio.sleep(0.05)
        for line in LAST_LINES:
            ctx.log(line)
        return 0

    def _jobs_finished(self) -> bool:
        def finished() -> bool:
            jobs = [self.kube.store.get("jobs", NAMESPACE, name) for name in self.job_names]
            return all(job_state.is_finished(job) for job in jobs)

        return self.kube.run(finished)

    def _run(self) -> None:
        server = self.kube.server
        until(self.ready, "the tasks were waiting")
        self.kube.run(server.stop(drain=DRAIN_SECONDS))
        down_at = time.monotonic()
        self.release_peons.set()
        until(self._jobs_finished, "the Jobs completed in the store")
        self.peons_ended_while_down = True
        time.sleep(max(0.0, down_at + self.seconds - time.monotonic()))
        self.kube.run(server.start(server.host, server.port))
        self.back_at = time.monotonic()

    def __enter__(self) -> ApiOutage:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_peons.set()
        self.thread.join()


def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    # The Overlord keeps finished Jobs (debugJobs) for the sensor, which follows the Job.
    debug_jobs = {"druid.indexer.runner.debugJobs": "true"}
    with connected_emulator(
        monkeypatch, overlords={OVERLORD: "peon:1"}, overlord_properties=debug_jobs
    ) as emulator:
        yield emulator


def operator_for(waiter: Waiter, *, deferrable: bool) -> DruidK8sTaskOperator:
    operator = DruidK8sTaskOperator(
        task_id="druid",
        druid_task={
            "type": "index_parallel",
            "id": waiter.task_id,
            "spec": {"dataSchema": {"dataSource": "wikipedia"}},
        },
        runner_properties={"druid.indexer.runner.namespace": NAMESPACE},
        overlord_pod_name=OVERLORD,
        poll_interval=FALLBACK_POLL_SECONDS,
        deferrable=deferrable,
    )
    operator._emit_peon_line = waiter.shown.append  # type: ignore[method-assign]
    return operator


def task_instance() -> SimpleNamespace:
    return SimpleNamespace(dag_id="chaos", task_id="druid", run_id="r", map_index=-1, try_number=1,
                           xcom_push=lambda key, value: None)  # fmt: skip


def test_deferred_and_worker_waits_see_the_end_promptly_after_an_api_outage(kube: KubeEmulator) -> None:
    deferred, in_worker = Waiter("outage_deferred"), Waiter("outage_in_worker")
    waiters = [deferred, in_worker]

    def showing_first_lines() -> bool:
        return all(waiter.shown[: len(FIRST_LINES)] == FIRST_LINES for waiter in waiters)

    outage = ApiOutage(kube, [w.task_id for w in waiters], showing_first_lines, OUTAGE_SECONDS)
    kube.register_image("peon:*", reporting_to_the_overlord(outage.peon))
    deferring = operator_for(deferred, deferrable=True)
    with pytest.raises(TaskDeferred) as deferral:
        deferring.execute({"ti": task_instance()})
    trigger = deferral.value.trigger
    trigger._emit_line = deferred.shown.append  # type: ignore[attr-defined]
    events: list[dict[str, Any]] = []

    def triggerer() -> None:
        events.append(asyncio.run(anext(trigger.run())).payload)
        deferred.done_at = time.monotonic()

    trigger_thread = threading.Thread(target=triggerer, name="triggerer")
    with outage:
        trigger_thread.start()
        try:
            worker_result = operator_for(in_worker, deferrable=False).execute({"ti": task_instance()})
            in_worker.done_at = time.monotonic()
        finally:
            trigger_thread.join()
    [event] = events
    assert event["status"] in (FINISHED, MISSING)  # the Overlord deletes the Job as the task completes
    deferred_result = deferring.execute_complete(
        {"ti": task_instance()}, event, deferral.value.kwargs["details"]
    )

    assert outage.peons_ended_while_down, "the peons were meant to end while the API server was down"
    assert outage.back_at is not None
    late: dict[str, float] = {}
    for waiter, result in zip(waiters, (deferred_result, worker_result), strict=True):
        assert result["status"] == job_state.SUCCESS, waiter.task_id
        ours = [line for line in waiter.shown if line.startswith("peon line")]  # the stand-in's lines aside
        assert ours == FIRST_LINES + LAST_LINES, f"{waiter.task_id}: every log line once, in order"
        assert waiter.done_at is not None
        late[waiter.task_id] = round(waiter.done_at - outage.back_at, 1)
    assert all(seconds < PROMPT_SECONDS for seconds in late.values()), (
        f"seconds from the API server's return to each outcome: {late}, after a {OUTAGE_SECONDS:.0f}s "
        f"outage with a {FALLBACK_POLL_SECONDS:.0f}s fallback poll; the relist and the log stream's "
        f"reconnect should have delivered them within {PROMPT_SECONDS:.0f}s"
    )


def test_a_poking_sensor_rides_out_an_api_outage(kube: KubeEmulator) -> None:
    """A poke during the outage retries until the server is back instead of failing the sensor."""
    launched = Waiter("outage_sensed")
    sensed_job = job_name(launched.task_id)

    def peon_running() -> bool:
        pods = kube.store.list("pods", NAMESPACE, f"job-name={sensed_job}")
        return any((pod.get("status") or {}).get("phase") == "Running" for pod in pods)

    outage = ApiOutage(kube, [launched.task_id], peon_running, SENSOR_OUTAGE_SECONDS)
    kube.register_image("peon:*", reporting_to_the_overlord(outage.peon))
    # The task is launched (and its Job released) by a worker; the sensor waits for the same Job.
    launching = threading.Thread(
        target=lambda: operator_for(launched, deferrable=False).execute({"ti": task_instance()}),
        name="worker",
    )
    launching.start()
    until(peon_running, "the worker launched the task and its peon runs")
    sensor = DruidK8sTaskSensor(
        task_id="wait", druid_task_id=launched.task_id, namespace=NAMESPACE, poke_interval=0.5, timeout=120
    )
    context = {"ti": SimpleNamespace(**vars(task_instance()), get_first_reschedule_date=lambda _: None)}
    with outage:
        result = sensor.execute(context)
        done_at = time.monotonic()
    launching.join(60)
    assert outage.peons_ended_while_down and outage.back_at is not None
    assert result["status"] == job_state.SUCCESS
    assert done_at - outage.back_at < PROMPT_SECONDS
