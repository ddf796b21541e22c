"""What one Druid task costs the API server and the Overlord, request by request.

A task launched in ``airflow`` mode (an Overlord of Druid 38) asks Kubernetes, itself: the permission
preflight (one rules review), the template pod, the create of its suspended Job, the check for a Job the
Overlord made of its own (one list by the task's label) and the release (one merge patch); the watches that
tell that its pod started and its Job finished are shared by every task of the process. It deletes nothing:
the Overlord deletes the Job when the task completes.

It asks the Overlord: the version (``GET /status``, once per process), the decision over its attempts (one
batched ``POST taskStatus``), the submission, and at the end its report. While it waits, the Overlord is
polled by rounds shared by every task of the process: two list requests (pending, running) while a release
is pending, one batched ``POST taskStatus`` for completion; never one request per task.

The Overlord's own runner talks to the same API server with the same client library as the triggerer, so
only requests that the runner never makes are counted here (the runner creates, reads, lists by job name,
and deletes; it never patches, reviews rules, or lists Jobs by label).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from test_operator_lifecycle import TASK

from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.triggers.overlord_task import DruidOverlordTaskTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NAMESPACE = "druid"
Druid = Any  # tests/integration/conftest.py DruidCluster
INDEXER = "/druid/indexer/v1"
#: The requests the operator's sync client (the worker) makes per task: it is the only user of that client.
WORKER_REQUESTS = {"create selfsubjectrulesreviews": 1, "list pods": 1, "create jobs": 1}


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


def kube_requests(kube: KubeEmulator, *, worker: bool) -> Counter[str]:
    """Requests of the worker's sync client (``worker``) or of the asynchronous clients, by kind."""
    assert kube.metrics.settle(), "a stream the client closed is still open on the server"
    sync_agent = "OpenAPI-Generator/36."
    return Counter(
        f"{record.verb} {record.resource}" + (f"/{record.subresource}" if record.subresource else "")
        for record in kube.metrics.records()
        if record.user_agent.startswith(sync_agent) == worker
    )


def overlord_requests(druid: Druid) -> Counter[str]:
    return Counter(
        f"{request.method} {request.path}"
        + (f"?state={request.query['state']}" if "state" in request.query else "")
        for request in druid.overlord.requests.requests
        if request.path != f"{INDEXER}/action"  # the peons' task actions
    )


def test_a_task_waited_in_its_worker(kube: KubeEmulator, druid: Druid) -> None:
    druid.start()
    kube.metrics.reset()
    druid.overlord.requests.clear()
    result = operator(deferrable=False).execute({"ti": TaskInstance("manual__1")})  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS" and result["report"]["processed"] == 1
    assert kube_requests(kube, worker=True) == Counter(WORKER_REQUESTS)
    own = kube_requests(kube, worker=False)
    assert own["patch jobs"] == 1  # the release
    # The release's look for the Overlord's Job, and no list of every peon Job: its own Job and pods are
    # watched from the release's answer (the Overlord's runner lists pods too, so those are not pinned).
    assert own["list jobs"] == 1
    assert own["watch jobs"] == own["watch pods"] == 1
    asked = overlord_requests(druid)
    assert asked["GET /status"] <= 1  # once per process
    assert asked[f"POST {INDEXER}/task"] == 1
    assert asked[f"GET {INDEXER}/task/{result['druid_task_id']}/reports"] == 1
    assert asked[f"GET {INDEXER}/tasks?state=pending"] == asked[f"GET {INDEXER}/tasks?state=running"] >= 1
    assert not [kind for kind in asked if kind.endswith("/status") and "/task/" in kind]


def test_tasks_waited_in_the_triggerer_share_the_watches_and_the_overlord_rounds(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start()
    tasks = 3
    kube.metrics.reset()
    druid.overlord.requests.clear()
    runs = [(operator(deferrable=True), {"ti": TaskInstance(f"manual__{n}")}) for n in range(tasks)]
    deferrals = []
    for op, context in runs:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)  # type: ignore[arg-type]
        deferrals.append(deferred.value)
    submitted = overlord_requests(druid)
    assert submitted[f"POST {INDEXER}/taskStatus"] == tasks  # one batched decision per task
    assert submitted[f"POST {INDEXER}/task"] == tasks
    assert submitted["GET /status"] <= 1
    druid.overlord.requests.clear()

    async def triggerer() -> list[Any]:
        triggers = [
            DruidOverlordTaskTrigger(**json.loads(json.dumps(d.trigger.serialize()[1]))) for d in deferrals
        ]
        return await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))

    events = asyncio.run(triggerer())
    waited = overlord_requests(druid)
    druid.overlord.requests.clear()
    for (op, context), deferral, event in zip(runs, deferrals, events, strict=True):
        result = getattr(op, deferral.method_name)(context, event.payload, **(deferral.kwargs or {}))
        assert result["status"] == "SUCCESS"
    # While waiting: shared rounds only (two lists per release round, batched statuses), nothing per task.
    assert set(waited) <= {
        f"GET {INDEXER}/tasks?state=pending",
        f"GET {INDEXER}/tasks?state=running",
        f"POST {INDEXER}/taskStatus",
    }
    assert waited[f"GET {INDEXER}/tasks?state=pending"] == waited[f"GET {INDEXER}/tasks?state=running"]
    # At the end: the report of each task, and nothing else (its log was streamed whole).
    assert overlord_requests(druid) == Counter(
        {f"GET {INDEXER}/task/{event.payload['druid_task_id']}/reports": 1 for event in events}
    )
    assert kube_requests(kube, worker=True) == Counter(
        {kind: n * tasks for kind, n in WORKER_REQUESTS.items()}
    )
    own = kube_requests(kube, worker=False)
    assert own["patch jobs"] == tasks
    assert own["list jobs"] == 1 + tasks  # one shared list, one look per release
    assert own["watch jobs"] == own["watch pods"] == 1
