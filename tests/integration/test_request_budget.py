"""What one Druid task costs the API server and the Overlord, request by request.

A task launched in ``airflow`` mode (an Overlord of Druid 38) asks Kubernetes, itself: the permission
preflight (one rules review), the template pod, the create of its suspended Job, the check for a Job the
Overlord made of its own (one list by the task's label) and the release (one merge patch); the watches that
tell that its pod started and its Job finished are shared by every task of the process. It deletes nothing:
the Overlord deletes the Job when the task completes.

It asks the Overlord: the version and the runner settings (``GET /status`` and ``GET /status/properties``,
each once per process), the submission (a first try asks nothing before it: no earlier attempt can exist),
and at the end its report. While it waits, the Overlord is polled by rounds shared by every task of the
process: two list requests (pending, running) while a release is pending, one batched ``POST taskStatus``
for completion; never one request per task. A worker, which waits for one task, reads that task's own
status (``GET /task/{id}/status``) for its release instead of the two lists.

A task launched in ``overlord`` mode (an Overlord of Druid 34) asks the Overlord the same, less the release:
the version, the submission, the report; while it waits, only the batched
``POST taskStatus`` rounds. The worker creates no Job (the Overlord does). A ``GET /status/properties`` (the
Overlord's runtime properties) is tolerated once per process: it is per process, not per task.

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


#: Requests the provider may make once per process (not per task), counted apart from the per-task budget.
PER_PROCESS = ("GET /status", "GET /status/properties")


def operator(deferrable: bool, *, airflow_mode: bool = True) -> DruidK8sTaskOperator:
    # The Overlord pod is the template only when the provider builds the Job (airflow mode).
    template = {"overlord_pod_selector": "component=overlord"} if airflow_mode else {}
    return DruidK8sTaskOperator(
        task_id="ingest",
        druid_task=TASK,
        runner_properties={"druid.indexer.runner.namespace": NAMESPACE},
        deferrable=deferrable,
        **template,
    )


def per_process(asked: Counter[str]) -> Counter[str]:
    """Take the per-process requests out of ``asked`` (each at most once) and return them."""
    taken = Counter({kind: asked.pop(kind) for kind in PER_PROCESS if kind in asked})
    assert all(count <= 1 for count in taken.values()), f"asked more than once per process: {taken}"
    return taken


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
    per_process(asked)  # the version and the runner settings, once per process
    task_id = result["druid_task_id"]
    assert asked.pop(f"POST {INDEXER}/task") == 1
    assert asked.pop(f"GET {INDEXER}/task/{task_id}/reports") == 1
    # The release: the lone waiter reads its task's status (runnerStatusCode), not the two task lists.
    assert asked.pop(f"GET {INDEXER}/task/{task_id}/status") >= 1
    # The final status, in batched rounds; no decision before the submission (the first try).
    assert asked.pop(f"POST {INDEXER}/taskStatus") >= 1
    assert (
        asked.pop(f"GET {INDEXER}/task/{task_id}/log", 0) <= 1
    )  # the log's rest: see the overlord-mode test
    assert not asked, f"requests outside the budget: {asked}"


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
    per_process(submitted)
    # The submissions only: a first try has no earlier attempt to ask about.
    assert submitted == Counter({f"POST {INDEXER}/task": tasks})
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
    # While waiting: shared rounds only (two lists per release round, batched statuses), nothing per task
    # but where a release round has a single waiter left: it reads that task's status instead of the lists.
    lone = {kind for kind in waited if kind.startswith(f"GET {INDEXER}/task/") and kind.endswith("/status")}
    assert set(waited) - lone <= {
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


def test_a_task_in_overlord_mode_waited_in_its_worker(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(druid_version="34.0.0")
    kube.metrics.reset()
    druid.overlord.requests.clear()
    run = operator(deferrable=False, airflow_mode=False)
    result = run.execute({"ti": TaskInstance("manual__1")})  # type: ignore[arg-type]
    assert result["status"] == "SUCCESS"
    assert kube_requests(kube, worker=True)["create jobs"] == 0  # the Overlord creates the Job
    asked = overlord_requests(druid)
    per_process(asked)
    task_id = result["druid_task_id"]
    assert asked.pop(f"POST {INDEXER}/task") == 1
    assert asked.pop(f"GET {INDEXER}/task/{task_id}/reports") == 1
    assert asked.pop(f"POST {INDEXER}/taskStatus") >= 1  # the batched rounds (a first try decides nothing)
    # The Overlord deletes its Job as the task completes, maybe before the pod's log was read to the end: the
    # rest comes from the Overlord's task log, in one request.
    assert asked.pop(f"GET {INDEXER}/task/{task_id}/log", 0) <= 1
    assert not asked, f"requests outside the budget: {asked}"  # no lists, no per-task status GET


def test_tasks_in_overlord_mode_waited_in_the_triggerer_poll_in_batched_rounds_only(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(druid_version="34.0.0")
    tasks = 3
    druid.overlord.requests.clear()
    runs = [
        (operator(deferrable=True, airflow_mode=False), {"ti": TaskInstance(f"manual__{n}")})
        for n in range(tasks)
    ]
    deferrals = []
    for op, context in runs:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)  # type: ignore[arg-type]
        deferrals.append(deferred.value)
    submitted = overlord_requests(druid)
    per_process(submitted)
    assert submitted == Counter({f"POST {INDEXER}/task": tasks})  # a first try asks nothing first
    druid.overlord.requests.clear()

    async def triggerer() -> list[Any]:
        triggers = [
            DruidOverlordTaskTrigger(**json.loads(json.dumps(d.trigger.serialize()[1]))) for d in deferrals
        ]
        return await asyncio.gather(*(anext(trigger.run()) for trigger in triggers))

    events = asyncio.run(triggerer())
    waited = overlord_requests(druid)
    per_process(waited)
    assert set(waited) == {f"POST {INDEXER}/taskStatus"}  # shared rounds, nothing per task
    druid.overlord.requests.clear()
    for (op, context), deferral, event in zip(runs, deferrals, events, strict=True):
        result = getattr(op, deferral.method_name)(context, event.payload, **(deferral.kwargs or {}))
        assert result["status"] == "SUCCESS"
    finished = overlord_requests(druid)
    for event in events:
        task_id = event.payload["druid_task_id"]
        assert finished.pop(f"GET {INDEXER}/task/{task_id}/reports") == 1
        assert finished.pop(f"GET {INDEXER}/task/{task_id}/log", 0) <= 1  # the log's rest: see above
    assert not finished, f"requests outside the budget: {finished}"
