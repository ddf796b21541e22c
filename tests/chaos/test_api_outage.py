"""A waiting task must ride out an API server outage longer than one call's retries.

Control-plane upgrades and etcd elections make the API server unreachable for tens of seconds while the
peons, on their nodes, keep running. Nothing about the task changed, and its deadlines are far away, so the
waiter has no reason to give up: failing the Airflow task leaves a Job running unseen when the task has no
retries left, and costs a retry otherwise. Here the API server is down for 15 seconds (more than the hook's
retry budget for one call) while the peon runs; when it is back, the task must end with the peon's outcome
and its whole log, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import structlog.testing
from emulated_cluster import NAMESPACE, OVERLORD, connected_emulator

from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(90)]

OUTAGE_SECONDS = 15.0
PEON_LINES = [f"outage peon line {number}" for number in range(5)]


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    images = {"peon:*": exits(0, lines=PEON_LINES, after=3.0)}
    with connected_emulator(monkeypatch, images=images, overlords={OVERLORD: "peon:1"}) as emulator:
        yield emulator


def test_a_waiting_task_outlasts_an_api_server_outage(kube: KubeEmulator) -> None:
    operator = DruidK8sTaskOperator(
        task_id="druid",
        druid_task={
            "type": "index_parallel",
            "id": "outage",
            "spec": {"dataSchema": {"dataSource": "wikipedia"}},
        },
        runner_properties={"druid.indexer.runner.namespace": NAMESPACE},
        overlord_pod_name=OVERLORD,
        poll_interval=5.0,
    )
    ti = SimpleNamespace(dag_id="chaos", task_id="druid", run_id="r", map_index=-1, try_number=1,
                         xcom_push=lambda key, value: None)  # fmt: skip
    server = kube.server

    def outage() -> None:
        time.sleep(1.0)  # the Job exists and the wait has begun
        kube.run(server.stop())
        time.sleep(OUTAGE_SECONDS)
        kube.run(server.start(server.host, server.port))

    api_down = threading.Thread(target=outage, name="api-outage")
    api_down.start()
    try:
        with structlog.testing.capture_logs() as captured:
            result = operator.execute({"ti": ti})
    finally:
        api_down.join()
    assert result["status"] == "SUCCESS"
    shown = [
        entry["event"] for entry in captured if str(entry.get("event", "")).startswith("outage peon line")
    ]
    assert shown == PEON_LINES
