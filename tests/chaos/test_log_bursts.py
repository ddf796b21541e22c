"""Every peon log line reaches the task log exactly once, in order, even in bursts cut by API restarts.

Druid peons print hundreds of lines within the same millisecond (segment pushes, merged metrics). The log
stream resumes after a cut with ``sinceTime``, which has whole-second precision on a real API server, so a
resumed read repeats up to a second of lines; the cursor must skip exactly those already shown. Here a peon
writes 1200 lines in four bursts while the API server restarts three times mid-stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import structlog.testing
from airflow.sdk.exceptions import TaskDeferred
from emulated_cluster import NAMESPACE, OVERLORD, connected_emulator

from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

BURSTS = 4
LINES_PER_BURST = 300
RESTART_AFTER_SECONDS = (0.9, 0.7, 0.5)


async def bursty_peon(ctx: ContainerContext) -> int:
    for burst in range(BURSTS):
        for number in range(LINES_PER_BURST):
            ctx.log(f"burst line {burst * LINES_PER_BURST + number:05d}")
        await asyncio.sleep(0.7)
    return 0


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    images = {"peon:*": bursty_peon}
    with connected_emulator(monkeypatch, images=images, overlords={OVERLORD: "peon:1"}) as emulator:
        yield emulator


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_bursts_of_lines_arrive_once_and_in_order_across_api_restarts(
    kube: KubeEmulator, deferrable: bool
) -> None:
    operator = DruidK8sTaskOperator(
        task_id="druid",
        druid_task={
            "type": "index_parallel",
            "id": f"bursts-{deferrable}",
            "spec": {"dataSchema": {"dataSource": "wikipedia"}},
        },
        runner_properties={"druid.indexer.runner.namespace": NAMESPACE},
        overlord_pod_name=OVERLORD,
        deferrable=deferrable,
        poll_interval=2.0,
    )
    ti = SimpleNamespace(dag_id="chaos", task_id="druid", run_id="r", map_index=-1, try_number=1,
                         xcom_push=lambda key, value: None)  # fmt: skip

    def restarts() -> None:
        for pause in RESTART_AFTER_SECONDS:
            time.sleep(pause)
            kube.restart_server()

    restarter = threading.Thread(target=restarts, name="api-restarts")
    with structlog.testing.capture_logs() as captured:
        restarter.start()
        try:
            result = operator.execute({"ti": ti})
        except TaskDeferred as deferred:
            event = asyncio.run(anext(deferred.trigger.run()))
            result = operator.execute_complete({"ti": ti}, event.payload, **(deferred.kwargs or {}))
        finally:
            restarter.join()
    assert result["status"] == "SUCCESS"
    shown = [entry["event"] for entry in captured if str(entry.get("event", "")).startswith("burst line")]
    assert shown == [f"burst line {number:05d}" for number in range(BURSTS * LINES_PER_BURST)]
