"""Today's DruidK8sTaskOperator against both emulators: the Kubernetes cluster and a stand-in Druid Overlord.

The operator creates the peon Job itself and never submits the task, so by Druid's rules the peon's first
lock request is refused ("Unable to grant lock to inactive Task") and the ingestion cannot succeed on a real
cluster. The test states what users need (the ingestion succeeds) and is a strict expected failure until
the operator submits its tasks to the Overlord.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_operator_lifecycle import FakeTaskInstance, operator, run

from druid_k8s_provider.errors import JobFailed
from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASK = {
    "type": "index_parallel",
    "spec": {
        "dataSchema": {
            "dataSource": "wikipedia",
            "granularitySpec": {"segmentGranularity": "DAY", "intervals": ["2026-01-01/2026-01-02"]},
        },
        "ioConfig": {"type": "index_parallel", "inputSource": {"type": "inline", "data": '{"page":"a"}'}},
    },
    "context": {"standinDurationSeconds": 0.2},
}


@pytest.fixture
def overlord(kube: KubeEmulator) -> Iterator[OverlordEmulator]:
    with OverlordEmulator(kube, start_delay=1.0, pod_lookup_scale=0.01, poll_interval=0.05) as emulator:
        yield emulator


@pytest.mark.xfail(
    strict=True,
    raises=JobFailed,
    reason="the operator creates the peon Job without submitting the task to the Overlord, so the Overlord "
    "refuses the peon's lock: Unable to grant lock to inactive Task [<id>]",
)
def test_todays_operator_ingests_through_the_overlord(kube: KubeEmulator, overlord: OverlordEmulator) -> None:
    ti = FakeTaskInstance()
    result = run(operator(druid_task=TASK, task_logs_location=f"file://{overlord.task_log_dir}"), ti)
    assert result["status"] == "SUCCESS"
