"""DruidK8sTaskOperator against both emulators: the Kubernetes cluster and a stand-in Druid Overlord.

Before issue 14 the operator created the peon Job without submitting the task, so by Druid's rules the
peon's first lock request was refused ("Unable to grant lock to inactive Task") and the ingestion could not
succeed on a real cluster. Now the task is submitted first: the ingestion succeeds.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_operator_lifecycle import FakeTaskInstance, operator, run

from druid_k8s_provider.testing import KubeEmulator

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


def test_the_operator_ingests_through_the_overlord(kube: KubeEmulator, start_overlord: Any) -> None:
    start_overlord()
    ti = FakeTaskInstance()
    result = run(operator(druid_task=TASK), ti)
    assert result["status"] == "SUCCESS"
