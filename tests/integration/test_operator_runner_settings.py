"""The Overlord's runner settings read before the launch (issue 14): an Overlord whose runner would name the
task's Job differently (``k8sTaskPodNamePrefix``) cannot join ours, so ``auto`` lets it create the Job and
``airflow`` is refused before any write; when its settings cannot be read (``GET /status/properties``
refused), the release still finds its Job and deletes ours while suspended. Against both emulators over
real HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from test_operator_lifecycle import FakeTaskInstance, logged, operator, run
from test_operator_overlord_protocol import NAMESPACE, WAITS, druid_tasks, our_jobs, wait_until

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

THEIRS = {"druid.indexer.runner.k8sTaskPodNamePrefix": "theirs", "druid.indexer.runner.capacity": "1"}
PREFIX = "druid.indexer.runner.k8sTaskPodNamePrefix"
WRITES = ("create", "update", "patch", "delete")


def hold_the_only_slot(kube: KubeEmulator, overlord: Any) -> None:
    """Submit a task of another datasource (no lock in common) and wait until its peon has the runner's one
    slot, so the next task is PENDING, queued for capacity."""
    holder = index_parallel_task("holder", datasource="other", standinDurationSeconds=3.0)
    httpx.post(f"{overlord.url}/druid/indexer/v1/task", json=holder, trust_env=False).raise_for_status()
    wait_until(
        lambda: kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons"), what="holder pod"
    )


def created_jobs(overlord: Any) -> list[str]:
    """The Jobs the Overlord's runner created, from its log (``Created Job[<name>]``)."""
    return [
        line.split("Created Job[", 1)[1].split("]", 1)[0]
        for line in overlord.log_lines
        if "Created Job[" in line
    ]


@pytest.mark.parametrize("deferrable", WAITS)
def test_a_prefix_mismatch_under_capacity_pressure_lets_auto_choose_overlord_mode_one_job_one_peon(
    kube: KubeEmulator, start_overlord: Any, deferrable: bool
) -> None:
    overlord = start_overlord(runner_properties=THEIRS)
    hold_the_only_slot(kube, overlord)
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task(), deferrable=deferrable), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["launch_mode"] == "overlord"
    assert any(
        "auto: the Overlord's druid.indexer.runner.k8sTaskPodNamePrefix is 'theirs' and ours is unset" in line
        for line in logged(logs)
    )
    assert result["job_name"].startswith("theirs-")
    assert our_jobs(kube) == []
    ours = [name for name in created_jobs(overlord) if name != created_jobs(overlord)[0]]
    assert ours == [result["job_name"]]  # one Job, so one peon, for our task: the Overlord's
    assert {task["id"]: task["statusCode"] for task in druid_tasks(overlord)} == {
        "holder": "SUCCESS",
        result["druid_task_id"]: "SUCCESS",
    }


def test_airflow_mode_with_a_prefix_mismatch_is_refused_before_any_write(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord(runner_properties=THEIRS)
    kube.metrics.reset()
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(druid_task=index_parallel_task(), launch_mode="airflow"), FakeTaskInstance())
    assert raised.value.field == PREFIX
    assert "'theirs'" in raised.value.problem and "ours is unset" in raised.value.problem
    assert f"set {PREFIX} to 'theirs'" in raised.value.fix
    assert [r for r in kube.metrics.records() if r.verb in WRITES] == []
    assert druid_tasks(overlord) == []


@pytest.mark.parametrize("deferrable", WAITS)
def test_runner_settings_that_cannot_be_read_leave_the_release_to_follow_the_overlords_job(
    kube: KubeEmulator, start_overlord: Any, deferrable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Without CONFIG READ (403 on ``GET /status/properties``) the mode comes from the version alone, and
    the release finds the Overlord's Job by its ``task.id`` annotation: ours is deleted while suspended."""
    overlord = start_overlord(runner_properties={PREFIX: "theirs"})
    overlord.faults.add(step="properties", status=403, message="Unauthorized")
    with capture_logs() as logs, caplog.at_level(logging.WARNING):
        result = run(operator(druid_task=index_parallel_task(), deferrable=deferrable), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["launch_mode"] == "airflow"
    assert any("runner settings could not be read" in record.getMessage() for record in caplog.records)
    assert result["job_name"].startswith("theirs")
    assert any("its own Job" in line for line in logged(logs))
    assert our_jobs(kube) == []
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]


def test_hidden_runner_settings_count_as_unreadable(kube: KubeEmulator, start_overlord: Any) -> None:
    """An Overlord that hides its runner properties (``druid.server.hiddenProperties``) lists no namespace:
    the provider does not take the missing prefix for an unset one, and launches as before."""
    start_overlord(hidden_properties=["druid.indexer.runner"])
    result = run(operator(druid_task=index_parallel_task()), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["launch_mode"] == "airflow"


def test_matching_runner_settings_keep_airflow_mode(kube: KubeEmulator, start_overlord: Any) -> None:
    start_overlord(runner_properties={PREFIX: "ingest"})
    result = run(
        operator(druid_task=index_parallel_task(), properties={PREFIX: "Ingest"}), FakeTaskInstance()
    )
    assert result["status"] == "SUCCESS" and result["launch_mode"] == "airflow"
    assert result["job_name"].startswith("ingest-")
