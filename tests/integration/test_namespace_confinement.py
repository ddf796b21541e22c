"""Namespace confinement: the provider reads and writes only in the namespace(s) it is configured for.

Another team's namespace holds Jobs and pods that look exactly like ours (peon label, finished long ago).
The operator (in the worker and deferred), the sensor and the reaper run against the runner namespace;
the emulator's request log must show no request outside it (the Overlord's namespace aside, where only the
template pod is read), no cluster-wide list or watch, and the other team's objects untouched. Tasks run
through a stand-in Overlord (Druid 38) that keeps finished Jobs (``debugJobs``) for the sensor and reaper.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from druid_k8s_provider.errors import JobFailed
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.reaper import reap
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor
from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.behaviours import exits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RUNNER_NAMESPACE = "druid"
OVERLORD_NAMESPACE = "druid-control"
FOREIGN_NAMESPACE = "analytics"
CLUSTER_SCOPED = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "namespaces"}
FINISHED_LONG_AGO = "2020-01-01T00:00:00Z"


def peon_like_job(name: str) -> dict[str, Any]:
    labels = {"druid.k8s.peons": "true"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": {"task.id": name}},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "foreign:1"}]},
            }
        },
    }


def finish_long_ago(job: dict[str, Any]) -> None:
    job["status"] = {
        "startTime": FINISHED_LONG_AGO,
        "completionTime": FINISHED_LONG_AGO,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": FINISHED_LONG_AGO}],
    }


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    with (
        KubeEmulator() as emulator,
        OverlordEmulator(
            emulator,
            runner_properties={"druid.indexer.runner.debugJobs": "true"},
            start_delay=1.0,
            pod_lookup_scale=0.01,
            poll_interval=0.05,
        ) as overlord,
    ):
        connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(emulator.kubeconfig_path)}}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
        host, port = overlord.url.removeprefix("http://").rsplit(":", 1)
        druid = {"conn_type": "druid", "host": host, "port": int(port), "schema": "http"}
        monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(druid))
        emulator.register_image("peon:fails", exits(1, lines=["peon failed"]))
        emulator.register_image("foreign:*", exits(0, after=30))
        for namespace in (OVERLORD_NAMESPACE, FOREIGN_NAMESPACE):
            emulator.store.create("namespaces", None, {"metadata": {"name": namespace}})
        for namespace, name, image in (
            (RUNNER_NAMESPACE, "druid-overlord-fails", "peon:fails"),
            (OVERLORD_NAMESPACE, "druid-overlord-0", None),
            (FOREIGN_NAMESPACE, "druid-overlord-0", "foreign:1"),
        ):
            pod = overlord.overlord_pod()  # the Overlord's spec (how its peons reach it), elsewhere
            pod["metadata"] = {"name": name, "labels": {"app": "druid", "component": "overlord"}}
            if image is not None:
                pod["spec"]["containers"][0]["image"] = image
            emulator.store.create("pods", namespace, pod)
        for name in ("analytics-peon-finished", "analytics-peon-running"):
            emulator.store.create("jobs", FOREIGN_NAMESPACE, peon_like_job(name))
        emulator.store.mutate(
            "jobs", FOREIGN_NAMESPACE, "analytics-peon-finished", finish_long_ago, subresource="status"
        )
        yield emulator


def context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="confined", task_id="druid", run_id="manual_1", map_index=-1, try_number=1,
        xcom_push=lambda key, value: None, get_first_reschedule_date=lambda _context: None,
    )  # fmt: skip
    return {"ti": ti}


def run(operator: DruidK8sTaskOperator) -> Any:
    ctx = context()
    try:
        return operator.execute(ctx)
    except TaskDeferred as deferred:
        event = asyncio.run(anext(deferred.trigger.run()))
        return getattr(operator, deferred.method_name)(ctx, event.payload, **(deferred.kwargs or {}))


def operator(task_id: str, **kwargs: Any) -> DruidK8sTaskOperator:
    properties = {"druid.indexer.runner.namespace": RUNNER_NAMESPACE, **kwargs.pop("properties", {})}
    return DruidK8sTaskOperator(
        task_id="druid",
        druid_task={
            "type": "index_parallel",
            "id": task_id,
            "spec": {"dataSchema": {"dataSource": "wikipedia"}},
        },
        runner_properties=properties,
        poll_interval=0.5,
        **{"overlord_pod_selector": "app=druid,component=overlord", **kwargs},
    )


def requests_by_namespace(kube: KubeEmulator) -> dict[str, set[str]]:
    """Namespace -> the requests made there (``verb resource``); ``""`` is cluster-wide."""
    seen: dict[str, set[str]] = {}
    for record in kube.metrics.records():
        if record.resource.startswith("/"):
            continue  # discovery, /version: no objects
        resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
        seen.setdefault(record.namespace, set()).add(f"{record.verb} {resource}")
    return seen


def foreign_jobs(kube: KubeEmulator) -> set[str]:
    """The other team's Jobs (their pods and status move on by themselves: the cluster runs them)."""
    return {job["metadata"]["name"] for job in kube.store.list("jobs", FOREIGN_NAMESPACE)}


def test_operator_sensor_and_reaper_stay_in_the_runner_namespace(kube: KubeEmulator) -> None:
    foreign_before = foreign_jobs(kube)
    kube.metrics.reset()

    assert run(operator("confined-ok"))["status"] == "SUCCESS"
    with pytest.raises(JobFailed):
        run(
            operator(
                "confined-fails",
                deferrable=True,
                overlord_pod_selector=None,
                overlord_pod_name="druid-overlord-fails",
            )
        )
    kept = run(operator("confined-kept"))
    sensed = DruidK8sTaskSensor(
        task_id="wait",
        druid_task_id="confined-kept",
        namespace=RUNNER_NAMESPACE,
        poke_interval=0.1,
        timeout=20,
    ).execute(context())
    assert sensed["status"] == "SUCCESS"
    summary = reap(DruidK8sHook(namespace=RUNNER_NAMESPACE), RUNNER_NAMESPACE, dt.timedelta(0))
    assert summary["deleted"] == summary["examined"] == 3, summary  # the Overlord's debugJobs kept all three
    assert kube.store.list("jobs", RUNNER_NAMESPACE) == [], kept

    seen = requests_by_namespace(kube)
    cluster_wide = {request for request in seen.pop("", set()) if request.split()[1] not in CLUSTER_SCOPED}
    assert cluster_wide == set(), f"cluster-wide requests read every namespace: {cluster_wide}"
    assert set(seen) == {RUNNER_NAMESPACE}, f"requests outside {RUNNER_NAMESPACE!r}: {seen}"
    assert foreign_jobs(kube) == foreign_before == {"analytics-peon-finished", "analytics-peon-running"}


def test_with_an_overlord_namespace_only_the_template_pod_is_read_there(kube: KubeEmulator) -> None:
    kube.metrics.reset()
    result = run(
        operator(
            "confined-overlord", properties={"druid.indexer.runner.overlordNamespace": OVERLORD_NAMESPACE}
        )
    )
    assert result["status"] == "SUCCESS" and result["namespace"] == RUNNER_NAMESPACE
    seen = requests_by_namespace(kube)
    seen.pop("", None)
    assert set(seen) == {RUNNER_NAMESPACE, OVERLORD_NAMESPACE}, seen
    assert seen[OVERLORD_NAMESPACE] <= {"get pods", "list pods"}, seen[OVERLORD_NAMESPACE]
    assert FOREIGN_NAMESPACE not in seen


def test_the_sensor_without_a_namespace_looks_in_the_configured_runner_namespace(
    kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner namespace configured for the provider ([druid_k8s] runner_properties) is where the
    operator puts Jobs; a sensor given no namespace must look there, not in the connection's default."""
    runner = json.dumps({"druid.indexer.runner.namespace": RUNNER_NAMESPACE})
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", runner)
    kept = run(operator("confined-sensed"))
    kube.metrics.reset()
    sensed = DruidK8sTaskSensor(
        task_id="wait", druid_task_id="confined-sensed", poke_interval=0.1, timeout=20
    )
    try:
        assert sensed.execute(context())["namespace"] == RUNNER_NAMESPACE
        seen = requests_by_namespace(kube)
        seen.pop("", None)
        assert set(seen) == {RUNNER_NAMESPACE}, seen
    finally:
        DruidK8sHook(namespace=RUNNER_NAMESPACE).delete_job(kept["job_name"], RUNNER_NAMESPACE)
