"""DruidK8sTaskSensor against the emulator: waits for an existing Job, fails clearly when there is none."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred

from druid_k8s_provider.errors import DruidK8sTaskError
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMESPACE = "druid"
ScriptedJob = Any  # tests/integration/conftest.py ScriptedJob
TASK_ID = "index_parallel_wikipedia_2026-01-01T00:00:00.000Z"


def context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="d",
        task_id="wait",
        run_id="r",
        map_index=-1,
        try_number=1,
        get_first_reschedule_date=lambda _context: None,
    )
    return {"ti": ti}


def sensor(**kwargs: Any) -> DruidK8sTaskSensor:
    return DruidK8sTaskSensor(
        task_id="wait", druid_task_id=TASK_ID, namespace=NAMESPACE, poke_interval=0.1, timeout=20, **kwargs
    )


def test_poke_mode_waits_until_the_job_finishes_and_reports_its_outcome(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted(job_name(TASK_ID), TASK_ID)
    job.running()
    threading.Timer(0.5, job.exits, args=(1,)).start()
    started = time.monotonic()
    result = sensor().execute(context())
    assert time.monotonic() - started >= 0.4
    assert result["status"] == "FAILED" and "exited with code 1" in result["error"]
    assert result["job_name"] == job.name and result["pod_name"] == job.pod


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
    waiting = sensor(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(context())
    threading.Timer(0.3, job.exits, args=(0,)).start()
    event = asyncio.run(anext(deferred.value.trigger.run()))
    result = getattr(waiting, deferred.value.method_name)(context(), event.payload)
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
