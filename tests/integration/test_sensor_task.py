"""DruidK8sTaskSensor against the emulator: waits for an existing Job to succeed, fails clearly when it
failed, disappeared or never existed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred

from druid_k8s_provider.errors import DruidK8sTaskError, JobFailed
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMESPACE = "druid"
ScriptedJob = Any  # tests/integration/conftest.py ScriptedJob
TASK_ID = "index_parallel_wikipedia_2026-01-01T00:00:00.000Z"


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


def run_deferred(waiting: DruidK8sTaskSensor, ctx: dict[str, Any], change: Callable[[], None]) -> Any:
    """Execute a deferrable sensor as Airflow would: defer, apply ``change`` to the cluster, resume."""
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(ctx)
    threading.Timer(0.3, change).start()
    event = asyncio.run(anext(deferred.value.trigger.run()))
    return getattr(waiting, deferred.value.method_name)(ctx, event.payload)


def deadline_exceeded(job: ScriptedJob) -> None:
    """The Job controller stops the Job at activeDeadlineSeconds: Failed/DeadlineExceeded, pod killed."""

    def fail(obj: dict[str, Any]) -> None:
        obj.setdefault("status", {})["conditions"] = [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        ]

    job.kube.store.mutate("jobs", NAMESPACE, job.name, fail, subresource="status")


def sensor(**kwargs: Any) -> DruidK8sTaskSensor:
    return DruidK8sTaskSensor(
        task_id="wait", druid_task_id=TASK_ID, namespace=NAMESPACE, poke_interval=0.1, timeout=20, **kwargs
    )


def test_poke_mode_waits_until_the_job_succeeds_and_reports_its_outcome(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()
    threading.Timer(0.5, job.exits, args=(0,)).start()
    result = sensor().execute(context())
    assert result["status"] == "SUCCESS" and result["error"] is None
    assert result["job_name"] == job.name and result["pod_name"] == job.pod


def test_poke_mode_fails_with_the_reason_when_the_job_fails_and_still_pushes_the_summary(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()
    threading.Timer(0.5, job.exits, args=(1,)).start()
    ctx = context()
    with pytest.raises(JobFailed) as raised:
        sensor().execute(ctx)
    assert "exited with code 1" in str(raised.value) and "any_end=True" in str(raised.value)
    summary = ctx["ti"].xcom["return_value"]
    assert summary["status"] == "FAILED" and "exited with code 1" in summary["error"]
    assert summary["pod_name"] == job.pod


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferred"])
def test_a_job_stopped_at_its_deadline_fails_the_sensor_saying_so(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob], deferrable: bool
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()
    with pytest.raises(JobFailed) as raised:
        if deferrable:
            run_deferred(sensor(deferrable=True), context(), lambda: deadline_exceeded(job))
        else:
            threading.Timer(0.3, deadline_exceeded, args=(job,)).start()
            sensor().execute(context())
    assert "DeadlineExceeded" in str(raised.value) and "maxTaskDuration" in str(raised.value)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferred"])
def test_any_end_lets_a_failed_job_end_the_wait_with_the_outcome_in_xcom(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob], deferrable: bool
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()
    if deferrable:
        waiting = sensor(deferrable=True, any_end=True)
        result = run_deferred(waiting, context(), lambda: deadline_exceeded(job))
    else:
        threading.Timer(0.3, deadline_exceeded, args=(job,)).start()
        result = sensor(any_end=True).execute(context())
    assert result["status"] == "FAILED" and "DeadlineExceeded" in result["error"]


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferred"])
def test_a_job_deleted_while_running_is_reported_as_disappeared(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob], deferrable: bool
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()

    def delete() -> None:
        api.store.delete("jobs", NAMESPACE, job.name)

    with pytest.raises(JobFailed) as raised:
        if deferrable:
            run_deferred(sensor(deferrable=True), context(), delete)
        else:
            threading.Timer(0.3, delete).start()
            sensor().execute(context())
    assert "disappeared before it finished" in str(raised.value)
    assert "no Job exists" not in str(raised.value)


def test_reschedule_mode_knows_a_missing_job_was_running_at_an_earlier_poke(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    """A rescheduled sensor starts afresh: that an earlier poke of this try rescheduled means the Job ran."""
    scripted(job_name(TASK_ID), TASK_ID).running()
    with pytest.raises(AirflowRescheduleException):
        sensor(mode="reschedule").execute(context())
    api.store.delete("jobs", NAMESPACE, job_name(TASK_ID))
    later = context()
    later["ti"].get_first_reschedule_date = lambda _context: datetime.now(UTC)
    with pytest.raises(JobFailed, match="disappeared before it finished"):
        sensor(mode="reschedule").execute(later)


def test_reschedule_mode_frees_the_worker_while_the_job_runs(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    scripted(job_name(TASK_ID), TASK_ID).running()
    with pytest.raises(AirflowRescheduleException):
        sensor(mode="reschedule").execute(context())


def test_deferrable_mode_resumes_when_the_job_finishes(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()
    result = run_deferred(sensor(deferrable=True), context(), lambda: job.exits(0))
    assert result["status"] == "SUCCESS"


def test_a_task_without_a_job_fails_at_once_with_a_clear_message(api: KubeEmulator) -> None:
    started = time.monotonic()
    with pytest.raises(DruidK8sTaskError) as raised:
        sensor().execute(context())
    assert time.monotonic() - started < 5
    assert "no Job exists for this Druid task" in str(raised.value)
    assert TASK_ID in str(raised.value) and NAMESPACE in str(raised.value)


def test_a_job_of_another_task_with_the_same_name_is_not_waited_for(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    scripted(job_name(TASK_ID), "some-other-task")
    with pytest.raises(DruidK8sTaskError, match="belongs to task 'some-other-task'"):
        sensor().execute(context())
