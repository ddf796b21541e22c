"""Stopping a running Druid task: who stopped it decides whether the Job dies.

Druid promises that restarts and upgrades have no effect on tasks in flight. So a worker that goes away
(SIGTERM from a node drain or deploy, or a hard SIGKILL) leaves the Job running and the next try joins it,
while a person stopping the task (mark failed/success, clear) deletes the Job. The worker cases run
``execute`` in a real subprocess and signal it, as the worker's supervisor would.
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

import pytest
from airflow.sdk.exceptions import TaskDeferred

from druid_k8s_provider.errors import JobFailed
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits, never_exits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
Druid = Any  # tests/integration/conftest.py DruidCluster
TASK = {"type": "index_parallel", "spec": {"dataSchema": {"dataSource": "wikipedia"}}}
PROPERTIES = {"druid.indexer.runner.namespace": NAMESPACE}

# The worker: builds the same operator, installs a SIGTERM handler that calls on_kill (as Airflow's task
# runner does), runs execute and prints how it ended.
WORKER = textwrap.dedent(
    """
    import json, signal, sys
    from druid_k8s_provider.operators.task import DruidK8sTaskOperator

    class TaskInstance:
        dag_id, task_id, run_id, map_index = "druid_dag", "ingest", "manual__1", -1
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
    def __init__(self, state_on_server: str = "running") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "druid_dag", "ingest", "manual__1", -1
        self.state_on_server = state_on_server
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def get_task_states(self, **query: Any) -> dict[str, dict[str, str]]:
        return {self.run_id: {self.task_id: self.state_on_server}}


def operator(**kwargs: Any) -> DruidK8sTaskOperator:
    return DruidK8sTaskOperator(
        task_id="ingest",
        druid_task=TASK,
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


def start_worker(tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(TASK), json.dumps(PROPERTIES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )


def test_user_stop_of_a_running_task_deletes_the_job(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(never_exits(["working"]))
    op, ti = operator(), FakeTaskInstance()
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
    worker.join(20)
    assert isinstance(outcome["error"], JobFailed)
    assert "stopped by a user; the Job was deleted" in str(outcome["error"])
    assert jobs_left(kube) == []
    wait_for(lambda: not kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons=true"))


def test_user_stop_of_a_deferred_task_deletes_the_job(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(never_exits(["working"]))
    with pytest.raises(TaskDeferred) as deferred:
        operator(deferrable=True).execute({"ti": FakeTaskInstance()})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    wait_for(lambda: peon_running(kube))
    asyncio.run(trigger.on_kill())  # what the triggerer calls when a user acts on the deferred task
    assert jobs_left(kube) == []


def test_worker_sigterm_leaves_the_job_running_and_the_retry_reattaches(
    kube: KubeEmulator, druid: Druid, tmp_path: Path
) -> None:
    druid.start(exits(0, ["peon done"], after=2.5))
    worker = start_worker(tmp_path)
    wait_for(lambda: peon_running(kube))
    worker.send_signal(signal.SIGTERM)
    stdout, _ = worker.communicate(timeout=30)
    report = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    assert "worker is shutting down; the Job keeps running" in report["error"]
    assert len(jobs_left(kube)) == 1 and peon_running(kube)

    retry = FakeTaskInstance()
    result = operator().execute({"ti": retry})  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS"
    assert kube.metrics.creates("jobs") == 1
    assert jobs_left(kube) == []


def test_worker_sigkill_right_after_the_create_then_retry_runs_exactly_one_job(
    kube: KubeEmulator, druid: Druid, tmp_path: Path
) -> None:
    druid.start(exits(0, ["peon done"], after=1.0))
    worker = start_worker(tmp_path)
    wait_for(lambda: bool(kube.store.list("jobs", NAMESPACE)))
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert worker.returncode == -signal.SIGKILL

    retry = operator(deferrable=True)
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        retry.execute({"ti": ti})  # type: ignore[arg-type]
    event = asyncio.run(anext(deferred.value.trigger.run()))
    result = retry.execute_complete({"ti": ti}, event.payload, **deferred.value.kwargs)  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS"
    assert kube.metrics.creates("jobs") == 1
    assert jobs_left(kube) == []
