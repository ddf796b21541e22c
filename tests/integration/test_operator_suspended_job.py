"""The suspended Job of ``launch_mode="airflow"`` is never left behind or reused for another task JSON
(issue 14), end to end against both emulators over real HTTP.

The Job is created suspended before its task is submitted. A submission the Overlord refuses deletes it; one
whose fate cannot be learned keeps it for the retry, which submits the task and releases it; a later try whose
task JSON changed does not run the earlier try's Job.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from test_operator_lifecycle import FakeTaskInstance, logged, operator, run
from test_operator_overlord_protocol import druid_task, druid_tasks, our_jobs

from druid_k8s_provider.errors import OverlordApiError
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.overlord_transport import OverlordRetryPolicy
from druid_k8s_provider.job_builder import decompress_task
from druid_k8s_provider.launch import airflow_mode
from druid_k8s_provider.naming import PEON_LABEL
from druid_k8s_provider.operators import task as operator_module
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
#: The Overlord keeps finished Jobs, so a test can read the task JSON the Job ran.
KEEP_JOBS = {"druid.indexer.runner.debugJobs": "true"}


class WorkerKilled(BaseException):
    """A worker killed between two steps (SIGKILL): nothing of the operator runs after it."""


def payload(overlord: Any, task_id: str) -> dict[str, Any]:
    """The task JSON the Overlord holds (``GET /druid/indexer/v1/task/{id}``)."""
    response = httpx.get(f"{overlord.url}/druid/indexer/v1/task/{task_id}", trust_env=False)
    response.raise_for_status()
    return dict(response.json()["payload"])


def job_task(job: dict[str, Any]) -> dict[str, Any]:
    """The task JSON a Job of the overlord adapters carries (env ``TASK_JSON`` of container ``main``)."""
    (main,) = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "main"]
    (value,) = [var["value"] for var in main["env"] if var["name"] == "TASK_JSON"]
    return decompress_task(value)


def retry() -> FakeTaskInstance:
    ti = FakeTaskInstance()
    ti.try_number = 2  # type: ignore[attr-defined]
    return ti


def first_try_killed_before_submit(monkeypatch: pytest.MonkeyPatch, task: dict[str, Any]) -> None:
    """Run the first try of ``task``, whose worker dies right after creating the suspended Job, before the
    submission."""

    def die(*args: Any, **kwargs: Any) -> bool:
        raise WorkerKilled

    with monkeypatch.context() as patched, pytest.raises(WorkerKilled):
        patched.setattr(airflow_mode, "submit_suspended", die)
        run(operator(druid_task=task, launch_mode="airflow"), FakeTaskInstance())


def test_a_submission_druid_refuses_fails_saying_so_and_deletes_the_suspended_job(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord(druid_version="38.0.0")
    typo = {**druid_task(), "type": "index_paralel"}  # no Druid module registers this type
    with pytest.raises(OverlordApiError) as raised, capture_logs() as logs:
        run(operator(druid_task=typo, launch_mode="airflow"), FakeTaskInstance())
    message = str(raised.value)
    assert raised.value.status == 400
    assert "Could not resolve type id 'index_paralel'" in message
    assert "The Overlord does not have Druid task" in message and "the Job was deleted" in message
    assert any("the Job was deleted" in line for line in logged(logs))
    assert kube.metrics.creates("jobs") == 1, "the Job was created suspended before the submission"
    assert kube.store.list("jobs", NAMESPACE) == []
    assert druid_tasks(overlord) == []


def test_an_overlord_unreachable_at_submission_keeps_the_job_and_the_retry_submits_and_releases_it(
    kube: KubeEmulator, start_overlord: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submission may have reached the Overlord, which cannot be asked: the Job stays (suspended, no
    pod, unlabelled), and the retry runs the task in it: one Druid task, one Job."""
    overlord = start_overlord(druid_version="38.0.0")
    quick = OverlordRetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02)

    class QuickOverlordHook(DruidOverlordHook):
        def __init__(self, conn_id: str) -> None:
            super().__init__(conn_id, retry_policy=quick)

    plan_launch = operator_module.plan_launch

    def plan_then_lose_the_leader(*args: Any, **kwargs: Any) -> Any:
        plan = plan_launch(*args, **kwargs)
        overlord.set_leader(False)  # every API request answers 503
        return plan

    with monkeypatch.context() as patched:
        patched.setattr(operator_module, "DruidOverlordHook", QuickOverlordHook)
        patched.setattr(operator_module, "plan_launch", plan_then_lose_the_leader)
        with pytest.raises(OverlordApiError) as raised:
            run(operator(druid_task=druid_task(), launch_mode="airflow"), FakeTaskInstance())
    assert "still unavailable after the retries" in str(raised.value)
    assert "is kept: a retry of this Airflow task submits the task and releases the Job" in str(raised.value)
    (kept,) = our_jobs(kube)
    assert kept["spec"]["suspend"] is True and PEON_LABEL not in kept["metadata"]["labels"]
    assert kube.store.list("pods", NAMESPACE, label_selector=f"job-name={kept['metadata']['name']}") == []

    overlord.set_leader(True)
    result = run(operator(druid_task=druid_task(), launch_mode="airflow"), retry())
    assert result["status"] == "SUCCESS" and result["job_name"] == kept["metadata"]["name"]
    assert [(task["id"], task["statusCode"]) for task in druid_tasks(overlord)] == [
        (result["druid_task_id"], "SUCCESS")
    ]
    assert kube.metrics.creates("jobs") == 1


def test_a_retry_with_a_changed_task_json_replaces_the_leftover_suspended_job_and_runs_the_new_json(
    kube: KubeEmulator, start_overlord: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlord = start_overlord(druid_version="38.0.0", runner_properties=KEEP_JOBS)
    first_try_killed_before_submit(monkeypatch, druid_task())
    (leftover,) = our_jobs(kube)
    assert leftover["spec"]["suspend"] is True and druid_tasks(overlord) == []

    changed = druid_task(standinRowCount=7)
    with capture_logs() as logs:
        result = run(operator(druid_task=changed, launch_mode="airflow"), retry())
    assert result["status"] == "SUCCESS" and result["druid_task_id"].endswith("_attempt1")
    assert any(
        "carries a task JSON that differs from this DAG's current one" in line for line in logged(logs)
    )
    (task,) = druid_tasks(overlord)
    assert payload(overlord, task["id"])["context"]["standinRowCount"] == 7
    (job,) = our_jobs(kube)
    assert job["metadata"]["uid"] != leftover["metadata"]["uid"]
    assert job_task(job)["context"]["standinRowCount"] == 7
    assert result["report"]["processed"] == 7
    assert kube.metrics.creates("jobs") == 2


def test_a_retry_whose_attempt_the_overlord_already_has_follows_it_and_says_the_json_differs(
    kube: KubeEmulator, start_overlord: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The earlier try's task reached the Overlord with the old JSON (another try of the same task
    instance submitted it just after this one asked): Druid runs that one, and so does the Job."""
    overlord = start_overlord(druid_version="38.0.0", runner_properties=KEEP_JOBS)
    old = druid_task()
    first_try_killed_before_submit(monkeypatch, old)
    (leftover,) = our_jobs(kube)
    plan_launch = operator_module.plan_launch

    def plan_then_the_old_json_is_submitted(*args: Any, **kwargs: Any) -> Any:
        plan = plan_launch(*args, **kwargs)
        submitted = httpx.post(
            f"{overlord.url}/druid/indexer/v1/task", json={**old, "id": plan.task.id}, trust_env=False
        )
        submitted.raise_for_status()
        return plan

    monkeypatch.setattr(operator_module, "plan_launch", plan_then_the_old_json_is_submitted)
    with capture_logs() as logs:
        result = run(operator(druid_task=druid_task(standinRowCount=7), launch_mode="airflow"), retry())
    assert result["status"] == "SUCCESS"
    warnings = [entry["event"] for entry in logs if entry.get("log_level") == "warning"]
    assert any(
        "differs from this DAG's current task JSON; Druid runs what it was given" in w for w in warnings
    )
    (task,) = druid_tasks(overlord)
    assert "standinRowCount" not in payload(overlord, task["id"])["context"]
    (job,) = our_jobs(kube)
    assert job["metadata"]["uid"] == leftover["metadata"]["uid"]
    assert "standinRowCount" not in job_task(job)["context"]
    assert kube.metrics.creates("jobs") == 1
