"""The launch through the Overlord (issue 14), end to end against both emulators over real HTTP.

Both launch modes (``airflow``: an Overlord of Druid 38 joins the provider's Job; ``overlord``: an Overlord
of Druid 34, chosen by ``auto``, creates its own), waited in the worker and in the triggerer. Each test
asserts what a user sees: the Airflow result or error, XCom, the Overlord's task list, the Jobs in the
cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import TaskDeferred
from structlog.testing import capture_logs
from test_operator_lifecycle import FakeTaskInstance, logged, operator, run

from druid_k8s_provider.errors import DruidK8sConfigError, JobFailed
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import oom_killed
from druid_k8s_provider.testing.tasks import index_parallel_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
MODES = [
    pytest.param("38.0.0", "airflow", id="airflow-mode"),
    pytest.param("34.0.0", "overlord", id="overlord-mode"),
]
WAITS = [pytest.param(False, id="in-worker"), pytest.param(True, id="deferred")]


def druid_tasks(overlord: Any) -> list[dict[str, Any]]:
    """Every task the Overlord knows (``GET /druid/indexer/v1/tasks``)."""
    response = httpx.get(f"{overlord.url}/druid/indexer/v1/tasks", trust_env=False)
    response.raise_for_status()
    return list(response.json())


def our_jobs(kube: KubeEmulator) -> list[dict[str, Any]]:
    """Jobs carrying the Airflow identity: created by the operator, not by the Overlord."""
    return [
        job
        for job in kube.store.list("jobs", NAMESPACE)
        if "airflow.apache.org/dag-id" in ((job["metadata"].get("annotations")) or {})
    ]


def wait_until(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)
    return value


@pytest.mark.parametrize(("version", "mode"), MODES)
@pytest.mark.parametrize("deferrable", WAITS)
def test_success_reports_the_overlords_status_and_the_ingestion_report(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str, deferrable: bool
) -> None:
    overlord = start_overlord(druid_version=version)
    ti = FakeTaskInstance()
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task(), deferrable=deferrable), ti)
    assert result["status"] == "SUCCESS" and result["error"] is None
    assert result["launch_mode"] == mode
    assert result["report"]["processed"] == 2 and result["report"]["unparseable"] == 0
    assert result["report"]["segmentsPublished"] == 1  # the stand-in peon's one DAY segment
    assert ti.xcom["return_value"]["report"] == result["report"]
    tasks = druid_tasks(overlord)
    assert [(task["id"], task["statusCode"]) for task in tasks] == [(result["druid_task_id"], "SUCCESS")]
    assert result["druid_task_id"].endswith("_attempt1")
    lines = logged(logs)
    peon_lines = [line for line in lines if "Running task" in line or "Task completed" in line]
    assert len(peon_lines) == len(set(peon_lines))  # each line of the peon's log once
    assert any("Ingestion report" in line for line in lines)
    assert len(our_jobs(kube)) == (1 if mode == "airflow" else 0) or not kube.store.list("jobs", NAMESPACE)


@pytest.mark.parametrize(("version", "mode"), MODES)
@pytest.mark.parametrize("deferrable", WAITS)
def test_a_failed_druid_task_fails_with_the_peons_error(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str, deferrable: bool
) -> None:
    overlord = start_overlord(druid_version=version)
    ti = FakeTaskInstance()
    with pytest.raises(JobFailed) as raised:
        run(operator(druid_task=index_parallel_task(standinOutcome="FAILED"), deferrable=deferrable), ti)
    (task,) = druid_tasks(overlord)
    assert task["statusCode"] == "FAILED" and task["errorMsg"]
    assert task["errorMsg"] in str(raised.value)
    assert ti.xcom["return_value"]["status"] == "FAILED"
    assert ti.xcom["return_value"]["launch_mode"] == mode


@pytest.mark.parametrize(("version", "mode"), MODES)
@pytest.mark.parametrize("deferrable", WAITS)
def test_a_task_waiting_for_locks_has_no_pod_and_no_launch_timeout_then_runs(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str, deferrable: bool
) -> None:
    overlord = start_overlord(druid_version=version)
    holder = index_parallel_task("lock_holder", standinDurationSeconds=4.0)
    httpx.post(f"{overlord.url}/druid/indexer/v1/task", json=holder, trust_env=False).raise_for_status()
    wait_until(
        lambda: kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons"), what="holder pod"
    )
    properties = {"druid.indexer.runner.k8sjobLaunchTimeout": "PT1S"}
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run(
                operator(druid_task=index_parallel_task(), deferrable=deferrable, properties=properties),
                FakeTaskInstance(),
            )
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()

    def waiting() -> list[dict[str, Any]]:
        return [task for task in druid_tasks(overlord) if task["id"] != "lock_holder"]

    (ours,) = wait_until(waiting, what="our task submitted")
    status = httpx.get(f"{overlord.url}/druid/indexer/v1/task/{ours['id']}/status", trust_env=False).json()
    assert status["status"]["runnerStatusCode"] == "WAITING"
    time.sleep(1.5)  # longer than K8sjobLaunchTimeout: waiting for locks is no launch
    pods = kube.store.list("pods", NAMESPACE)
    assert not [pod for pod in pods if ours["id"].replace("_", "") in str(pod["metadata"].get("annotations"))]
    worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["status"] == "SUCCESS"
    statuses = {task["id"]: task["statusCode"] for task in druid_tasks(overlord)}
    assert statuses == {"lock_holder": "SUCCESS", ours["id"]: "SUCCESS"}


def test_without_an_overlord_connection_nothing_is_written(
    kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", raising=False)
    kube.metrics.reset()
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(druid_task=index_parallel_task()), FakeTaskInstance())
    assert raised.value.field == "druid_ingest_conn_id"
    assert "locks" in str(raised.value)
    writes = [r for r in kube.metrics.records() if r.verb in ("create", "update", "patch", "delete")]
    assert writes == []


@pytest.mark.parametrize("deferrable", WAITS)
def test_druid_34_in_auto_mode_lets_the_overlord_create_the_job(
    kube: KubeEmulator, start_overlord: Any, deferrable: bool
) -> None:
    overlord = start_overlord(druid_version="34.0.0")
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task(), deferrable=deferrable), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["launch_mode"] == "overlord"
    assert any("below 35.0.0" in line for line in logged(logs))
    assert our_jobs(kube) == []
    assert any(f"Created Job[{result['job_name']}]" in line for line in overlord.log_lines)


@pytest.mark.parametrize(("version", "mode"), MODES)
def test_settings_the_overlord_decides_are_named_in_a_warning_and_the_task_still_runs(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str
) -> None:
    """debugJobs on the operator keeps nothing (the Overlord's own decides); in overlord mode the template
    selector and a Job-shaping property given to the operator do not shape the Overlord's Job either."""
    start_overlord(druid_version=version)
    properties = {"druid.indexer.runner.debugJobs": "true", "druid.indexer.runner.labels": {"team": "ingest"}}
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task(), properties=properties), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["launch_mode"] == mode
    warnings = [str(entry["event"]) for entry in logs if entry["log_level"] == "warning"]
    assert [line for line in warnings if "debugJobs" in line] == [
        "druid.indexer.runner.debugJobs (set in runner_properties) has no effect: the Overlord deletes a "
        "task's Job when the task completes unless its own druid.indexer.runner.debugJobs is true; set it in "
        "the Overlord's runtime.properties"
    ]
    ignored = [line for line in warnings if line.startswith("launch_mode 'overlord'")]
    if mode == "overlord":
        (warning,) = ignored
        assert warning.endswith(
            "no effect on it: overlord_pod_selector; druid.indexer.runner.labels (set in runner_properties). "
            "Configure the Overlord's runner instead"
        )
    else:
        assert ignored == []
    wait_until(lambda: not kube.store.list("jobs", NAMESPACE), what="the Overlord deleting the Job")


@pytest.mark.parametrize(("version", "mode"), MODES)
@pytest.mark.parametrize("deferrable", WAITS)
def test_an_overlord_restart_mid_run_adopts_the_job_and_the_task_completes(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str, deferrable: bool
) -> None:
    overlord = start_overlord(druid_version=version)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run(
                operator(druid_task=index_parallel_task(standinDurationSeconds=4.0), deferrable=deferrable),
                FakeTaskInstance(),
            )
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    wait_until(
        lambda: [
            pod
            for pod in kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons")
            if (pod.get("status") or {}).get("phase") == "Running"
        ],
        what="the peon running",
    )
    overlord.restart(downtime=0.5)
    worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["status"] == "SUCCESS"
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]
    assert not [line for line in overlord.log_lines if "Shutdown" in line or "shutdown" in line]


@pytest.mark.parametrize(("version", "mode"), MODES)
def test_a_retry_after_a_real_failure_runs_the_next_attempt(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str
) -> None:
    overlord = start_overlord(druid_version=version)
    with pytest.raises(JobFailed):
        run(operator(druid_task=index_parallel_task(standinOutcome="FAILED")), FakeTaskInstance())
    retry = FakeTaskInstance()
    retry.try_number = 2  # type: ignore[attr-defined]
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task()), retry)
    assert result["status"] == "SUCCESS" and result["druid_task_id"].endswith("_attempt2")
    assert any("FAILED in Druid, so this try runs attempt 2" in line for line in logged(logs))
    statuses = sorted((task["id"][-8:], task["statusCode"]) for task in druid_tasks(overlord))
    assert statuses == [("attempt1", "FAILED"), ("attempt2", "SUCCESS")]


@pytest.mark.parametrize(("version", "mode"), MODES)
def test_a_first_try_run_again_follows_its_attempt_instead_of_submitting_another(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str
) -> None:
    """A first try submits attempt 1 without asking the Overlord about earlier attempts (none can exist). Run
    a second time, past its submission (a crash once deferred) or after its end, it is answered
    entryAlreadyExists and follows that task: one Druid task, one Job, and no suspended Job left behind."""
    overlord = start_overlord(druid_version=version)
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred):  # submitted, then the worker goes away before any triggerer runs it
        operator(druid_task=index_parallel_task(), deferrable=True).execute({"ti": ti})
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task()), ti)
    assert result["status"] == "SUCCESS" and result["druid_task_id"].endswith("_attempt1")
    assert any("an earlier try submitted it): re-attaching" in line for line in logged(logs))
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]
    assert kube.metrics.creates("jobs") == 1

    again = run(operator(druid_task=index_parallel_task()), ti)  # and once more, after its success
    assert again["status"] == "SUCCESS" and again["druid_task_id"] == result["druid_task_id"]
    assert again["report"] == result["report"]
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]
    assert not [job for job in our_jobs(kube) if job["spec"].get("suspend")]


def test_a_retry_of_a_succeeded_attempt_reports_it_and_runs_nothing(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord()
    first = run(operator(druid_task=index_parallel_task()), FakeTaskInstance())
    creates = kube.metrics.creates("jobs")
    retry = FakeTaskInstance()
    retry.try_number = 2  # type: ignore[attr-defined]
    result = run(operator(druid_task=index_parallel_task()), retry)
    assert result["status"] == "SUCCESS" and result["druid_task_id"] == first["druid_task_id"]
    assert result["report"] == first["report"]
    assert kube.metrics.creates("jobs") == creates
    assert len(druid_tasks(overlord)) == 1


def test_a_retry_of_a_failed_task_with_a_written_id_is_refused_saying_how_to_template_it(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord()
    written = index_parallel_task("my_index_2026", standinOutcome="FAILED")
    with pytest.raises(JobFailed):
        run(operator(druid_task=written), FakeTaskInstance())
    retry = FakeTaskInstance()
    retry.try_number = 2  # type: ignore[attr-defined]
    overlord.requests.clear()
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(druid_task=written), retry)
    assert raised.value.field == "task.id" and "ti.try_number" in str(raised.value)
    assert [task["id"] for task in druid_tasks(overlord)] == ["my_index_2026"]
    # The refused try shows the failed task's log first (the try that ran it may have died before).
    assert overlord.requests.count("GET", "/druid/indexer/v1/task/my_index_2026/log") >= 1


def test_an_invalid_written_id_is_refused_as_it_is_without_asking_for_a_log(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord()
    overlord.requests.clear()
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(druid_task=index_parallel_task("bad/id")), FakeTaskInstance())
    assert raised.value.field == "task.id" and "bad/id" in str(raised.value)
    assert "FAILED" not in str(raised.value)
    assert not [r for r in overlord.requests.requests if r.path.endswith("/log")]
    assert kube.metrics.creates("jobs") == 0


@pytest.mark.parametrize(("version", "mode"), MODES)
def test_a_peon_killed_for_memory_fails_with_druids_message_and_the_pods_reason(
    kube: KubeEmulator, start_overlord: Any, version: str, mode: str
) -> None:
    start_overlord(druid_version=version)
    kube.register_image("apache/druid*", oom_killed(after=0.3, lines=["allocating"]))
    ti = FakeTaskInstance()
    with pytest.raises(JobFailed) as raised:
        run(operator(druid_task=index_parallel_task()), ti)
    assert "Peon did not report status successfully" in str(raised.value)
    assert "OOMKilled" in str(raised.value)


@pytest.mark.parametrize(("version", "mode"), MODES)
def test_a_submission_whose_answer_was_lost_is_reattached_not_repeated(
    kube: KubeEmulator, start_overlord: Any, monkeypatch: pytest.MonkeyPatch, version: str, mode: str
) -> None:
    """The Overlord got the task, but the answer never reached the worker (a retried request, a crash): the
    submission answers entryAlreadyExists, and the try follows that task instead of failing or submitting
    another."""
    from druid_k8s_provider.operators import task as operator_module

    overlord = start_overlord(druid_version=version)
    plan_launch = operator_module.plan_launch

    def plan_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        plan = plan_launch(*args, **kwargs)
        lost = httpx.post(f"{overlord.url}/druid/indexer/v1/task", json=plan.task.spec, trust_env=False)
        lost.raise_for_status()
        return plan

    monkeypatch.setattr(operator_module, "plan_launch", plan_then_lose_the_answer)
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task()), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert any("an earlier try submitted it): re-attaching" in line for line in logged(logs))
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]
    assert kube.metrics.creates("jobs") == 1
