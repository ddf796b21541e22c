"""What one Druid task costs the API server, request by request (the budget: at most 5 of its own).

Waited in the triggerer, a task's own requests are the permission preflight (one rules review), the template
pod, the create, the log stream and the delete; the watches that tell that its pod started and its Job
finished are shared by every task of the triggerer (a list and a watch of peon Jobs, and of peon pods).
Waited in its worker, a task has nothing to share: it watches only its own Job and pods, starting from the
create's resourceVersion, so it lists nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits
from druid_k8s_provider.triggers.job import DruidK8sJobTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NAMESPACE = "druid"
TASK = {"type": "index_parallel", "spec": {"dataSchema": {"dataSource": "wikipedia"}}}
Druid = Any  # tests/integration/conftest.py DruidCluster

# What every task asks for itself, in either mode (the template pod is found by a label selector here).
OWN_REQUESTS = {
    "create selfsubjectrulesreviews": 1,
    "list pods": 1,
    "create jobs": 1,
    "get pods/log": 1,
    "delete jobs": 1,
}


class TaskInstance:
    def __init__(self, run_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = (
            "druid_dag",
            "ingest",
            run_id,
            -1,
            1,
        )

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def operator(deferrable: bool) -> DruidK8sTaskOperator:
    return DruidK8sTaskOperator(
        task_id="ingest",
        druid_task=TASK,
        runner_properties={"druid.indexer.runner.namespace": NAMESPACE},
        overlord_pod_selector="component=overlord",
        deferrable=deferrable,
    )


def requests_by_kind(kube: KubeEmulator) -> Counter[str]:
    """Every request the emulator answered, once it noticed the streams closed (a stream is recorded when its
    handler ends, a moment after the client went away)."""
    assert kube.metrics.settle(), "a stream the client closed is still open on the server"
    return Counter(
        f"{record.verb} {record.resource}" + (f"/{record.subresource}" if record.subresource else "")
        for record in kube.metrics.records()
    )


def test_a_task_waited_in_its_worker_lists_nothing_and_watches_only_its_own_job_and_pods(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(exits(0, ["peon done"], after=0.3))
    kube.metrics.reset()
    result = operator(deferrable=False).execute({"ti": TaskInstance("manual__1")})  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS"
    assert requests_by_kind(kube) == Counter({**OWN_REQUESTS, "watch jobs": 1, "watch pods": 1})
    assert kube.store.list("jobs", NAMESPACE) == []


def test_tasks_waited_in_the_triggerer_cost_five_requests_each_plus_the_shared_watches(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(exits(0, ["peon done"], after=0.3))
    tasks = 3
    kube.metrics.reset()
    runs = [(operator(deferrable=True), {"ti": TaskInstance(f"manual__{n}")}) for n in range(tasks)]
    deferrals = []
    for op, context in runs:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)  # type: ignore[arg-type]
        deferrals.append(deferred.value)

    async def triggerer() -> list[Any]:
        triggers = [DruidK8sJobTrigger(**json.loads(json.dumps(d.trigger.serialize()[1]))) for d in deferrals]
        return await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))

    events = asyncio.run(triggerer())
    for (op, context), deferral, event in zip(runs, deferrals, events, strict=True):
        result = getattr(op, deferral.method_name)(context, event.payload, **(deferral.kwargs or {}))
        assert result["status"] == "SUCCESS"
    own = Counter({kind: count * tasks for kind, count in OWN_REQUESTS.items()})
    shared = Counter({"list jobs": 1, "watch jobs": 1, "list pods": 1, "watch pods": 1})
    assert requests_by_kind(kube) == own + shared
    assert sum(own.values()) == 5 * tasks
    assert kube.store.list("jobs", NAMESPACE) == []
