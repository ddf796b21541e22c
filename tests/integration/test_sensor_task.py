"""DruidK8sTaskSensor against both emulators (Kubernetes + Overlord) over real HTTP: it waits on the
Overlord's status by Druid task id (also for tasks Druid itself submitted), adds the pod's reason to a
failure, and fails clearly for an unknown id or a missing connection."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred
from druid_support import NAMESPACE, Druid, both_emulators

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import DruidK8sConfigError, DruidK8sTaskError, JobFailed
from druid_k8s_provider.job_builder import peon_job_name
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor
from druid_k8s_provider.testing.tasks import index_parallel_task
from druid_k8s_provider.triggers.overlord_board import OverlordBoard
from druid_k8s_provider.triggers.task_status import DruidTaskStatusTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CONFIG = RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE})


@pytest.fixture
def druid(monkeypatch: pytest.MonkeyPatch) -> Iterator[Druid]:
    """Both emulators; the Overlord keeps finished Jobs (``debugJobs``) so the pod's reason can be read."""
    with both_emulators(monkeypatch, **{"druid.indexer.runner.debugJobs": "true"}) as druid:
        yield druid


@pytest.fixture
def druid_deleting_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Druid]:
    """Both emulators; the Overlord deletes each Job as soon as its task completes (Druid's default)."""
    with both_emulators(monkeypatch) as druid:
        yield druid


def context() -> dict[str, Any]:
    xcom: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="d",
        task_id="wait",
        run_id="r",
        map_index=-1,
        try_number=1,
        get_first_reschedule_date=lambda _context: None,
        xcom=xcom,
        xcom_push=lambda key, value: xcom.__setitem__(key, value),
    )
    return {"ti": ti}


def sensor(task_id: str, **kwargs: Any) -> DruidK8sTaskSensor:
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("timeout", 60)
    return DruidK8sTaskSensor(task_id="wait", druid_task_id=task_id, namespace=NAMESPACE, **kwargs)


def run_deferred(waiting: DruidK8sTaskSensor, ctx: dict[str, Any]) -> Any:
    """Execute a deferrable sensor as Airflow would: defer, run the trigger to its event, resume."""
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(ctx)
    event = asyncio.run(anext(deferred.value.trigger.run()))
    return getattr(waiting, deferred.value.method_name)(ctx, event.payload)


def test_waits_for_a_task_druid_itself_submitted_and_reports_its_outcome_and_rows(druid: Druid) -> None:
    task_id = druid.submit(index_parallel_task("index_parallel_by_supervisor"))
    result = sensor(task_id).execute(context())
    assert result["status"] == "SUCCESS" and result["error"] is None
    assert result["job_name"] == peon_job_name(task_id, CONFIG)
    assert result["job_name"] in druid.job_names() and result["pod_name"].startswith(result["job_name"])
    rows = {
        key: result["report"][key] for key in ("processed", "processedWithError", "thrownAway", "unparseable")
    }
    assert rows == {"processed": 2, "processedWithError": 0, "thrownAway": 0, "unparseable": 0}
    assert result["duration_ms"] >= 0


def test_a_task_waiting_for_locks_has_no_job_yet_and_is_waited_for(druid: Druid) -> None:
    holder = druid.submit(index_parallel_task("index_parallel_holder", standinDurationSeconds=1.0))
    waiter = druid.submit(index_parallel_task("index_parallel_waiter"))
    assert druid.status(waiter)["runnerStatusCode"] == "WAITING"
    assert peon_job_name(waiter, CONFIG) not in druid.job_names()
    assert sensor(waiter).execute(context())["status"] == "SUCCESS"
    assert sensor(holder).execute(context())["status"] == "SUCCESS"


def test_a_failed_task_fails_the_sensor_with_druids_error_and_the_pods_reason(druid: Druid) -> None:
    task_id = druid.submit(index_parallel_task("index_parallel_failing", standinOutcome="FAILED"))
    ctx = context()
    with pytest.raises(JobFailed) as raised:
        sensor(task_id).execute(ctx)
    message = str(raised.value)
    assert "ended FAILED" in message and "Stand-in peon failed on purpose" in message
    assert "exited with code 1" in message and "any_end=True" in message
    summary = ctx["ti"].xcom["return_value"]
    assert summary["status"] == "FAILED" and "exited with code 1" in summary["error"]


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferred"])
def test_the_job_is_found_by_its_task_id_when_the_overlords_name_prefix_differs(
    monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    """The Overlord names its Jobs after its own k8sTaskPodNamePrefix; the sensor, configured without it,
    still finds the Job (by its task.id annotation) and adds the pod's reason to the failure."""
    properties = {
        "druid.indexer.runner.debugJobs": "true",
        "druid.indexer.runner.k8sTaskPodNamePrefix": "theirs",
    }
    with both_emulators(monkeypatch, **properties) as druid:
        task_id = druid.submit(index_parallel_task("index_parallel_prefixed", standinOutcome="FAILED"))
        ctx = context()
        with pytest.raises(JobFailed) as raised:
            waiting = sensor(task_id, deferrable=deferrable)
            run_deferred(waiting, ctx) if deferrable else waiting.execute(ctx)
    assert "exited with code 1" in str(raised.value)
    summary = ctx["ti"].xcom["return_value"]
    assert summary["job_name"].startswith("theirs-") and summary["job_name"] != peon_job_name(task_id, CONFIG)
    assert summary["pod_name"].startswith(summary["job_name"])
    assert "exited with code 1" in summary["error"]


def test_any_end_accepts_a_failed_task_with_the_outcome_in_the_summary(druid: Druid) -> None:
    task_id = druid.submit(index_parallel_task("index_parallel_failing", standinOutcome="FAILED"))
    result = sensor(task_id, any_end=True).execute(context())
    assert result["status"] == "FAILED" and "Stand-in peon failed on purpose" in result["error"]


def test_the_overlord_deleting_the_job_at_completion_does_not_hide_the_outcome(
    druid_deleting_jobs: Druid,
) -> None:
    task_id = druid_deleting_jobs.submit(index_parallel_task("index_parallel_no_debug_jobs"))
    result = sensor(task_id).execute(context())
    assert result["status"] == "SUCCESS" and result["pod_name"] is None
    assert result["report"]["processed"] == 2


def test_an_id_the_overlord_does_not_know_fails_at_once_naming_the_id_and_connection(druid: Druid) -> None:
    with pytest.raises(DruidK8sTaskError) as raised:
        sensor("index_parallel_never_submitted", timeout=3600).execute(context())
    assert "index_parallel_never_submitted" in str(raised.value)
    assert "'druid_ingest_default'" in str(raised.value)


def test_without_an_overlord_connection_the_error_names_druid_ingest_conn_id(
    druid: Druid, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT")
    with pytest.raises(DruidK8sConfigError) as raised:
        sensor("index_parallel_any").execute(context())
    assert raised.value.field == "druid_ingest_conn_id" and "druid_ingest_default" in str(raised.value)


def test_reschedule_mode_frees_the_worker_while_the_task_is_active(druid: Druid) -> None:
    task_id = druid.submit(index_parallel_task("index_parallel_long", standinDurationSeconds=5.0))
    with pytest.raises(AirflowRescheduleException):
        sensor(task_id, mode="reschedule", poke_interval=30).execute(context())


def test_deferrable_mode_resumes_with_the_outcome_once_the_overlord_reports_it(druid: Druid) -> None:
    task_id = druid.submit(index_parallel_task("index_parallel_deferred"))
    result = run_deferred(sensor(task_id, deferrable=True), context())
    assert result["status"] == "SUCCESS" and result["report"]["processed"] == 2
    assert result["pod_name"].startswith(peon_job_name(task_id, CONFIG))


def test_deferrable_mode_fails_with_druids_error_and_the_pods_reason(druid: Druid) -> None:
    task_id = druid.submit(index_parallel_task("index_parallel_deferred_failing", standinOutcome="FAILED"))
    with pytest.raises(JobFailed) as raised:
        run_deferred(sensor(task_id, deferrable=True), context())
    assert "Stand-in peon failed on purpose" in str(raised.value) and "exited with code 1" in str(
        raised.value
    )


def test_deferred_sensors_of_a_process_share_one_batched_status_request_per_round(druid: Druid) -> None:
    """Five sensors waiting in one triggerer: the Overlord sees batched status rounds, never a request per
    sensor per interval."""
    task_ids = [
        druid.submit(index_parallel_task(f"index_parallel_many_{day}", f"2026-03-0{day}/2026-03-0{day + 1}"))
        for day in range(1, 6)
    ]
    triggers = []
    for task_id in task_ids:
        with pytest.raises(TaskDeferred) as deferred:
            sensor(task_id, deferrable=True, poke_interval=1).execute(context())
        triggers.append(deferred.value.trigger)
    druid.overlord.requests.clear()

    async def wait_all() -> tuple[list[Any], int]:
        events = await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))
        return list(events), OverlordBoard.shared("druid_ingest_default").status_rounds

    events, board_rounds = asyncio.run(wait_all())
    assert [event.payload["overlord"]["status_code"] for event in events] == ["SUCCESS"] * 5
    asked = [
        (request.method, request.path)
        for request in druid.overlord.requests.requests
        if request.path != "/druid/indexer/v1/action"  # the peons' lock and publish actions
    ]
    assert set(asked) == {("POST", "/druid/indexer/v1/taskStatus")}, asked
    assert len(asked) == board_rounds, "every status request is one shared round for all five sensors"


def test_request_budget_one_status_per_poke_then_the_report_and_one_look_at_the_job(druid: Druid) -> None:
    """While the task runs a poke costs one Overlord request and nothing in Kubernetes; the end costs the
    report and, in Kubernetes, the Job and its pod."""
    running = druid.submit(index_parallel_task("index_parallel_budget_running", standinDurationSeconds=1.0))
    druid.wait_for(running, "RUNNING")
    druid.overlord.requests.clear()
    sensor(running, poke_interval=0.2).execute(context())
    asked = Counter(druid.client_requests())
    pokes = asked[("GET", f"/druid/indexer/v1/task/{running}/status")]
    assert pokes >= 2, "the sensor should have poked the running task more than once"
    assert asked == {
        ("GET", f"/druid/indexer/v1/task/{running}/status"): pokes,
        ("GET", f"/druid/indexer/v1/task/{running}/reports"): 1,
    }

    done = druid.submit(index_parallel_task("index_parallel_budget_done", "2026-04-01/2026-04-02"))
    druid.wait_for(done, "SUCCESS")
    druid.overlord.requests.clear()
    druid.kube.metrics.reset()
    sensor(done).execute(context())
    assert Counter(druid.client_requests()) == {
        ("GET", f"/druid/indexer/v1/task/{done}/status"): 1,
        ("GET", f"/druid/indexer/v1/task/{done}/reports"): 1,
    }
    kubernetes = Counter(f"{record.verb} {record.resource}" for record in druid.kube.metrics.records())
    assert kubernetes == {"get jobs": 1, "list pods": 1}


def test_a_deferred_wait_for_a_task_the_overlord_lost_ends_with_an_error_naming_it(druid: Druid) -> None:
    """A task id the Overlord does not know while the sensor waits in the triggerer (it lost the task, e.g. a
    reset metadata store; here it never had it): the wait ends with an error naming the task and the
    connection instead of lasting until the sensor's timeout."""
    waiting = sensor("index_parallel_lost", deferrable=True)
    trigger = DruidTaskStatusTrigger(
        druid_task_id="index_parallel_lost",
        druid_ingest_conn_id="druid_ingest_default",
        kubernetes_conn_id="kubernetes_default",
        namespace=NAMESPACE,
        job_name=peon_job_name("index_parallel_lost", CONFIG),
        status_interval=0.05,
    )
    event = asyncio.run(anext(trigger.run()))
    assert event.payload["status"] == "error"
    with pytest.raises(DruidK8sTaskError) as raised:
        waiting.execute_complete(context(), event.payload)
    assert "index_parallel_lost" in str(raised.value) and "'druid_ingest_default'" in str(raised.value)
    assert "does not know the task" in str(raised.value)


def test_the_trigger_rebuilds_itself_from_its_serialized_kwargs() -> None:
    trigger = DruidTaskStatusTrigger(
        druid_task_id="t",
        druid_ingest_conn_id="druid_ingest_default",
        kubernetes_conn_id="kubernetes_default",
        namespace=NAMESPACE,
        job_name="j",
        status_interval=5.0,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "druid_k8s_provider.triggers.task_status.DruidTaskStatusTrigger"
    assert DruidTaskStatusTrigger(**kwargs).serialize() == (classpath, kwargs)
