"""Stopping a Druid task launched through the Overlord: who stopped it decides whether it ends.

Druid promises that restarts and upgrades have no effect on tasks in flight. So a worker that goes away
(SIGTERM from a node drain or deploy, or a hard SIGKILL, even between the Job's create and the task's
submission) leaves the Druid task running and the next try re-attaches to it: one Druid task, one Job. A
person stopping the task (mark failed/success, clear) shuts it down in the Overlord, which records FAILED
"Shutdown request from user" and deletes its Job. The worker cases run ``execute`` in a real subprocess and
signal it, as the worker's supervisor would. Both emulators run: the cluster and a stand-in Overlord.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import TaskDeferred

from druid_k8s_provider.errors import JobFailed
from druid_k8s_provider.launch import stop
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
PROPERTIES = {"druid.indexer.runner.namespace": NAMESPACE}
MODES = [pytest.param("38.0.0", id="airflow-mode"), pytest.param("34.0.0", id="overlord-mode")]
SHUTDOWN_BY_USER = "Shutdown request from user"


# The worker: builds the same operator, installs a SIGTERM handler that calls on_kill (as Airflow's task
# runner does), optionally SIGKILLs itself just before or just after the submission, runs execute and prints
# how it ended.
WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    from druid_k8s_provider.launch import airflow_mode
    from druid_k8s_provider.operators import task as operator_module
    from druid_k8s_provider.operators.task import DruidK8sTaskOperator

    crash = sys.argv[3]
    submit = operator_module.submit

    def crashing_submit(overlord, task, say):
        if crash == "before-submit":
            os.kill(os.getpid(), signal.SIGKILL)
        accepted = submit(overlord, task, say)
        if crash == "after-submit":
            os.kill(os.getpid(), signal.SIGKILL)
        return accepted

    operator_module.submit = crashing_submit  # launch_mode="overlord"
    airflow_mode.submit = crashing_submit  # launch_mode="airflow", inside submit_suspended

    class TaskInstance:
        dag_id, task_id, run_id, map_index, try_number = "druid_dag", "ingest", "manual__1", -1, 1
        def xcom_push(self, key, value): pass
        def get_task_states(self, **query):
            return {self.run_id: {self.task_id: "running"}}  # the API server still counts on this try

    op = DruidK8sTaskOperator(
        task_id="ingest", druid_task=json.loads(sys.argv[1]), runner_properties=json.loads(sys.argv[2]),
        overlord_pod_selector="component=overlord", poll_interval=5,
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
    try:
        print(json.dumps({"result": op.execute({"ti": TaskInstance()})}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    """
)


class FakeTaskInstance:
    def __init__(self, state_on_server: str = "running", try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "druid_dag", "ingest", "manual__1", -1
        self.try_number = try_number
        self.state_on_server = state_on_server
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def get_task_states(self, **query: Any) -> dict[str, dict[str, str]]:
        return {self.run_id: {self.task_id: self.state_on_server}}


@pytest.fixture(autouse=True)
def short_late_job_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stop, "LATE_JOB_WATCH_SECONDS", 2.0)


def operator(seconds: float, **kwargs: Any) -> DruidK8sTaskOperator:
    return DruidK8sTaskOperator(
        task_id="ingest",
        druid_task=index_parallel_task(standinDurationSeconds=seconds),
        runner_properties=PROPERTIES,
        overlord_pod_selector="component=overlord",
        poll_interval=5,
        **kwargs,
    )


def wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def peon_running(kube: KubeEmulator) -> bool:
    return any(
        (pod.get("status") or {}).get("phase") == "Running"
        for pod in kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons=true")
    )


def jobs_left(kube: KubeEmulator) -> list[str]:
    return [job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)]


def druid_tasks(overlord: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{overlord.url}/druid/indexer/v1/tasks", trust_env=False)
    response.raise_for_status()
    return list(response.json())


def start_worker(tmp_path: Path, seconds: float, crash: str = "none") -> subprocess.Popen[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            json.dumps(index_parallel_task(standinDurationSeconds=seconds)),
            json.dumps(PROPERTIES),
            crash,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )


@pytest.mark.parametrize("version", MODES)
def test_user_stop_of_a_running_task_shuts_it_down_in_the_overlord(
    kube: KubeEmulator, start_overlord: Any, version: str
) -> None:
    overlord = start_overlord(druid_version=version)
    op, ti = operator(60), FakeTaskInstance()
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            op.execute({"ti": ti})  # type: ignore[arg-type]
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    wait_for(lambda: peon_running(kube))
    ti.state_on_server = "failed"  # a user marked the task failed; the supervisor then calls on_kill
    op.on_kill()
    worker.join(30)
    assert isinstance(outcome["error"], JobFailed)
    assert "stopped by a user" in str(outcome["error"])
    (task,) = druid_tasks(overlord)
    assert task["statusCode"] == "FAILED" and task["errorMsg"] == SHUTDOWN_BY_USER
    wait_for(lambda: jobs_left(kube) == [])


@pytest.mark.parametrize("version", MODES)
def test_user_stop_of_a_deferred_task_shuts_it_down_in_the_overlord(
    kube: KubeEmulator, start_overlord: Any, version: str
) -> None:
    overlord = start_overlord(druid_version=version)
    with pytest.raises(TaskDeferred) as deferred:
        operator(60, deferrable=True).execute({"ti": FakeTaskInstance()})  # type: ignore[arg-type]
    trigger = deferred.value.trigger

    async def triggerer_then_user_stop() -> None:
        waiting = asyncio.create_task(anext(trigger.run()))
        while not peon_running(kube):
            await asyncio.sleep(0.05)
        waiting.cancel()  # the triggerer cancels the trigger, then calls on_kill for a user's stop
        await trigger.on_kill()

    asyncio.run(triggerer_then_user_stop())
    (task,) = druid_tasks(overlord)
    assert task["statusCode"] == "FAILED" and task["errorMsg"] == SHUTDOWN_BY_USER
    wait_for(lambda: jobs_left(kube) == [])


def test_user_stop_of_a_task_waiting_for_locks_deletes_our_suspended_job(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord()
    holder = index_parallel_task("lock_holder", standinDurationSeconds=5)
    httpx.post(f"{overlord.url}/druid/indexer/v1/task", json=holder, trust_env=False).raise_for_status()
    with pytest.raises(TaskDeferred) as deferred:
        operator(1, deferrable=True).execute({"ti": FakeTaskInstance()})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    ours = trigger.spec.job_name
    assert kube.store.get("jobs", NAMESPACE, ours)["spec"]["suspend"] is True
    asyncio.run(trigger.on_kill())
    statuses = {task["id"]: (task["statusCode"], task["errorMsg"]) for task in druid_tasks(overlord)}
    assert statuses[trigger.spec.druid_task_id] == ("FAILED", SHUTDOWN_BY_USER)
    assert ours not in jobs_left(kube)


@pytest.mark.parametrize("version", MODES)
def test_worker_sigterm_leaves_the_task_running_and_the_retry_reattaches(
    kube: KubeEmulator, start_overlord: Any, tmp_path: Path, version: str
) -> None:
    overlord = start_overlord(druid_version=version)
    worker = start_worker(tmp_path, 3.0)
    wait_for(lambda: peon_running(kube))
    worker.send_signal(signal.SIGTERM)
    stdout, _ = worker.communicate(timeout=30)
    report = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    assert "worker is shutting down; the Druid task keeps running" in report["error"]
    assert peon_running(kube)

    result = operator(3.0).execute({"ti": FakeTaskInstance(try_number=2)})  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS"
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]
    assert kube.metrics.creates("jobs") == 1


@pytest.mark.parametrize(
    ("version", "crash"),
    [
        pytest.param("38.0.0", "before-submit", id="airflow-mode-create-before-submit"),
        pytest.param("38.0.0", "after-submit", id="airflow-mode-after-submit"),
        pytest.param("34.0.0", "after-submit", id="overlord-mode-after-submit"),
    ],
)
@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_worker_sigkill_around_the_submission_then_the_retry_runs_one_task_in_one_job(
    kube: KubeEmulator, start_overlord: Any, tmp_path: Path, version: str, crash: str, deferrable: bool
) -> None:
    overlord = start_overlord(druid_version=version)
    worker = start_worker(tmp_path, 0.5, crash)
    worker.wait(30)
    assert worker.returncode == -signal.SIGKILL
    submitted = druid_tasks(overlord)
    assert len(submitted) == (0 if crash == "before-submit" else 1)

    retry, ti = operator(0.5, deferrable=deferrable), FakeTaskInstance(try_number=2)
    try:
        result = retry.execute({"ti": ti})  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        event = asyncio.run(anext(deferred.trigger.run()))
        result = retry.execute_complete({"ti": ti}, event.payload, **deferred.kwargs)  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS"
    tasks = druid_tasks(overlord)
    assert [(task["id"], task["statusCode"]) for task in tasks] == [(result["druid_task_id"], "SUCCESS")]
    assert result["druid_task_id"].endswith("_attempt1")
    assert kube.metrics.creates("jobs") == 1
