"""Least privilege: the Role of docs/rbac.yaml is enough for the whole lifecycle and the reaper, every rule in
it is used, and without any one of its permissions preflight stops a task before it creates anything.

Tasks run through a stand-in Overlord (Druid 38, ``debugJobs`` on so finished Jobs stay for the sensor and the
reaper); its own runner uses the cluster's admin credentials, as a real Overlord uses its own service account.
The emulator enforces Role rules per bearer token (``KubeEmulator(tokens=...)``), answering 403 and
``SelfSubjectAccessReview`` as a real API server does (access reviews are open to every authenticated user,
as ClusterRole ``system:basic-user`` makes them on a cluster), so each token holds exactly the Role.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from druid_k8s_provider.errors import DruidK8sTaskError, JobFailed, JobLaunchTimeout, MissingPermission
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.preflight import (
    LIFECYCLE_PERMISSIONS,
    ROLE_RULES,
    Permission,
    check_permissions,
    operator_requirements,
    permissions_of,
    reaper_requirements,
)
from druid_k8s_provider.reaper import reap
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor
from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.behaviours import exits, image_pull_fails

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
REPO = Path(__file__).resolve().parents[2]
RBAC_YAML = REPO / "docs" / "rbac.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:druid:airflow-druid-k8s"
GROUP_OF = {"jobs": "batch"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
FULL_ROLE_TOKEN = "full-role"
OVERLORD_POD = "druid-overlord-0"


def manifest_documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def role_rules() -> list[dict[str, Any]]:
    """The rules of the Role in docs/rbac.yaml, as a user would apply them."""
    (role,) = [doc for doc in manifest_documents(RBAC_YAML.read_text()) if doc["kind"] == "Role"]
    return list(role["rules"])


def rules_without(permission: Permission) -> list[dict[str, Any]]:
    """docs/rbac.yaml's Role with one verb of one resource taken away."""
    return [granted.as_rule() for granted in permissions_of(role_rules()) if granted != permission]


#: The questions preflight asks (created, but not writes to the cluster).
REVIEWS = ("selfsubjectaccessreviews", "selfsubjectrulesreviews")


def token_for(permission: Permission) -> str:
    return "without-" + re.sub(r"[^a-z0-9]+", "-", str(permission))


def connection_id(token: str) -> str:
    return "k8s_" + token.replace("-", "_")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[KubeEmulator, OverlordEmulator]]:
    """One emulated cluster; a token for the full Role and one per Role minus a single permission."""
    tokens: dict[str, Any] = {FULL_ROLE_TOKEN: {"user": SERVICE_ACCOUNT, "rules": role_rules()}}
    for permission in LIFECYCLE_PERMISSIONS:
        tokens[token_for(permission)] = {
            "user": SERVICE_ACCOUNT,
            "rules": rules_without(permission),
        }
    with (
        KubeEmulator(tokens=tokens) as emulator,
        OverlordEmulator(
            emulator,
            runner_properties={"druid.indexer.runner.debugJobs": "true"},
            start_delay=1.0,
            pod_lookup_scale=0.01,
            poll_interval=0.05,
        ) as overlord,
    ):
        emulator.register_image("peon:fails", exits(1, lines=["peon started", "segment push failed"]))
        emulator.register_image("peon:unpullable", image_pull_fails())
        emulator.store.create("pods", NAMESPACE, overlord_pod("overlord-fails", "peon:fails"))
        emulator.store.create("pods", NAMESPACE, overlord_pod("overlord-unpullable", "peon:unpullable"))
        yield emulator, overlord


@pytest.fixture
def kube(cluster: tuple[KubeEmulator, OverlordEmulator], monkeypatch: pytest.MonkeyPatch) -> KubeEmulator:
    """The cluster, with ``druid_ingest_default`` pointing at its Overlord."""
    emulator, overlord = cluster
    host, port = overlord.url.removeprefix("http://").rsplit(":", 1)
    druid = {"conn_type": "druid", "host": host, "port": int(port), "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(druid))
    return emulator


@pytest.fixture
def connect(kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Define the Airflow connection of a token; returns its id."""

    def define(token: str) -> str:
        kubeconfig = kube.write_kubeconfig(tmp_path / f"kubeconfig-{token}", token=token)
        conn_id = connection_id(token)
        connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        return conn_id

    return define


def overlord_pod(name: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": "druid", "component": "overlord", "pod": name}},
        "spec": {"containers": [{"name": "druid", "image": image}]},
    }


def context() -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="rbac", task_id="ingest", run_id="manual_1", map_index=-1, try_number=1,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )  # fmt: skip
    return {"ti": ti}


def operator(conn_id: str, task_id: str, **kwargs: Any) -> DruidK8sTaskOperator:
    properties = {
        "druid.indexer.runner.namespace": NAMESPACE,
        "druid.indexer.runner.K8sjobLaunchTimeout": "PT30S",
        **kwargs.pop("properties", {}),
    }
    return DruidK8sTaskOperator(
        task_id="ingest",
        druid_task={"type": "index_parallel", "id": task_id, "spec": {"dataSchema": {"dataSource": "wiki"}}},
        runner_properties=properties,
        kubernetes_conn_id=conn_id,
        poll_interval=0.5,
        image_pull_grace_seconds=0.2,
        **{"overlord_pod_name": OVERLORD_POD, **kwargs},
    )


def run(task: DruidK8sTaskOperator) -> Any:
    """Execute like a worker, and like the triggerer plus a second worker when the operator defers."""
    ctx = context()
    try:
        return task.execute(ctx)
    except TaskDeferred as deferred:
        event = asyncio.run(anext(deferred.trigger.run()))
        return getattr(task, deferred.method_name)(ctx, event.payload, **(deferred.kwargs or {}))


def used_permissions(kube: KubeEmulator) -> set[Permission]:
    """What the provider asked the API server for (access and rules reviews aside), per the request log."""
    used = set()
    for record in kube.metrics.records():
        if record.resource.startswith("/") or record.resource in REVIEWS:
            continue
        resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
        used.add(Permission(record.verb, resource, GROUP_OF.get(record.resource, "")))
    return used


def jobs_of(kube: KubeEmulator) -> list[str]:
    return [job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)]


# -- the Role as written ---------------------------------------------------------------------------------


def test_the_role_in_docs_rbac_yaml_is_the_one_preflight_checks() -> None:
    assert permissions_of(role_rules()) == permissions_of(ROLE_RULES)
    kinds = {doc["kind"]: doc for doc in manifest_documents(RBAC_YAML.read_text())}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding"}
    binding, account, role = kinds["RoleBinding"], kinds["ServiceAccount"], kinds["Role"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "druid-k8s-provider",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert role["metadata"]["name"] == "druid-k8s-provider" and role["metadata"]["namespace"] == NAMESPACE
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])


# -- the lifecycle with exactly that Role ------------------------------------------------------------------


def test_lifecycle_sensor_and_reaper_pass_with_exactly_the_role_and_use_every_rule_of_it(
    kube: KubeEmulator, connect: Any
) -> None:
    conn_id = connect(FULL_ROLE_TOKEN)
    kube.metrics.reset()
    hook = DruidK8sHook(conn_id, NAMESPACE)
    config = operator(conn_id, "unused").runner_config()
    check_permissions(hook, operator_requirements(config))
    check_permissions(hook, reaper_requirements(NAMESPACE))

    assert run(operator(conn_id, "rbac-succeeds"))["status"] == "SUCCESS"
    with pytest.raises(JobFailed, match="Peon did not report status successfully"):
        run(operator(conn_id, "rbac-fails", overlord_pod_name="overlord-fails", deferrable=True))
    with pytest.raises(JobLaunchTimeout, match=r"ErrImagePull|ImagePullBackOff"):
        run(operator(conn_id, "rbac-unpullable", overlord_pod_name="overlord-unpullable"))
    kept = run(
        operator(
            conn_id,
            "rbac-debug",
            overlord_pod_name=None,
            overlord_pod_selector="app=druid,component=overlord",
        )
    )
    assert kept["job_name"] in jobs_of(kube)  # the Overlord's debugJobs keeps it
    sensor = DruidK8sTaskSensor(
        task_id="wait", druid_task_id="rbac-debug", namespace=NAMESPACE, kubernetes_conn_id=conn_id,
        poke_interval=0.1, timeout=20,
    )  # fmt: skip
    ti = SimpleNamespace(**vars(context()["ti"]), get_first_reschedule_date=lambda _context: None)
    assert sensor.execute({"ti": ti})["status"] == "SUCCESS"
    summary = reap(hook, NAMESPACE, cleanup_delay=dt.timedelta(0))
    assert summary["deleted"] >= 1 and jobs_of(kube) == []

    refused = [r for r in kube.metrics.records() if r.status in (401, 403)]
    assert refused == [], f"requests refused under the documented Role: {refused}"
    assert used_permissions(kube) == set(LIFECYCLE_PERMISSIONS), (
        "the Role must hold exactly what the provider uses; "
        f"unused: {sorted(set(LIFECYCLE_PERMISSIONS) - used_permissions(kube))}, "
        f"missing: {sorted(used_permissions(kube) - set(LIFECYCLE_PERMISSIONS))}"
    )


def test_preflight_rides_out_transient_api_failures(kube: KubeEmulator, connect: Any) -> None:
    hook = DruidK8sHook(connect(FULL_ROLE_TOKEN), NAMESPACE)
    kube.faults.add(resource="selfsubjectrulesreviews", status=503, count=2)
    kube.faults.add(resource="selfsubjectrulesreviews", status=429, retry_after=0, count=1)
    kube.faults.add(resource="selfsubjectaccessreviews", status=503, count=2)
    kube.faults.add(resource="selfsubjectaccessreviews", status=429, retry_after=0, count=2)
    try:
        check_permissions(hook, reaper_requirements(NAMESPACE))
    finally:
        kube.faults.clear()


def test_preflight_is_one_rules_review_per_namespace(kube: KubeEmulator, connect: Any) -> None:
    hook = DruidK8sHook(connect(FULL_ROLE_TOKEN), NAMESPACE)
    config = operator(hook.kubernetes_conn_id, "unused").runner_config()
    kube.metrics.reset()
    check_permissions(hook, operator_requirements(config))
    asked = [(r.verb, r.resource) for r in kube.metrics.records()]
    assert asked == [("create", "selfsubjectrulesreviews")]


@pytest.mark.parametrize("refusal", [403, 404])
def test_a_cluster_without_rules_reviews_is_asked_permission_by_permission(
    kube: KubeEmulator, connect: Any, refusal: int
) -> None:
    hook = DruidK8sHook(connect(token_for(Permission("delete", "jobs", "batch"))), NAMESPACE)
    kube.faults.add(resource="selfsubjectrulesreviews", status=refusal, count=1)
    kube.metrics.reset()
    try:
        with pytest.raises(MissingPermission, match=r"missing permission: delete jobs.batch in namespace"):
            check_permissions(hook, reaper_requirements(NAMESPACE))
    finally:
        kube.faults.clear()
    reviews = [r.resource for r in kube.metrics.records() if r.resource == "selfsubjectaccessreviews"]
    assert len(reviews) == len(reaper_requirements(NAMESPACE)[NAMESPACE])


def test_a_cluster_that_refuses_access_reviews_gets_a_clear_error(kube: KubeEmulator, connect: Any) -> None:
    hook = DruidK8sHook(connect(FULL_ROLE_TOKEN), NAMESPACE)
    kube.faults.add(resource="selfsubjectrulesreviews", status=404, count=1)
    kube.faults.add(resource="selfsubjectaccessreviews", status=403, count=1)
    try:
        with pytest.raises(MissingPermission) as raised:
            check_permissions(hook, reaper_requirements(NAMESPACE))
    finally:
        kube.faults.clear()
    message = str(raised.value)
    assert "SelfSubjectAccessReview" in message and "system:basic-user" in message
    assert "HTTP 403" in message and hook.kubernetes_conn_id in message


# -- one permission less ------------------------------------------------------------------------------------


@pytest.mark.parametrize("permission", LIFECYCLE_PERMISSIONS, ids=str)
def test_preflight_names_the_one_missing_permission(
    kube: KubeEmulator, connect: Any, permission: Permission
) -> None:
    hook = DruidK8sHook(connect(token_for(permission)), NAMESPACE)
    config = operator(hook.kubernetes_conn_id, "unused").runner_config()
    with pytest.raises(MissingPermission) as raised:
        check_permissions(hook, operator_requirements(config))
    message = str(raised.value)
    assert f"missing permission: {permission} in namespace {NAMESPACE} — add it to the Role" in message
    assert "docs/rbac.yaml" in message and hook.kubernetes_conn_id in message
    others = [
        str(p) for p in LIFECYCLE_PERMISSIONS if p != permission and not str(p).startswith(str(permission))
    ]
    assert not any(f"{other} in namespace" in message for other in others)


@pytest.mark.parametrize("permission", LIFECYCLE_PERMISSIONS, ids=str)
def test_operator_fails_fast_at_preflight_without_any_one_permission(
    kube: KubeEmulator, connect: Any, permission: Permission
) -> None:
    conn_id = connect(token_for(permission))
    kube.metrics.reset()
    started = time.monotonic()
    with pytest.raises(DruidK8sTaskError) as raised:
        run(operator(conn_id, f"rbac-without-{token_for(permission)}"))
    assert isinstance(raised.value, MissingPermission)
    assert f"missing permission: {permission} in namespace {NAMESPACE}" in str(raised.value)
    assert time.monotonic() - started < 5
    writes = [r for r in kube.metrics.records() if r.verb in WRITE_VERBS and r.resource not in REVIEWS]
    assert writes == [], "preflight must stop the task before anything is created"


REAPER_MISSING: Sequence[Permission] = (
    Permission("list", "jobs", "batch"),
    Permission("delete", "jobs", "batch"),
)


@pytest.mark.parametrize("permission", REAPER_MISSING, ids=str)
def test_reaper_fails_fast_at_preflight_without_list_or_delete(
    kube: KubeEmulator, connect: Any, permission: Permission
) -> None:
    full = DruidK8sHook(connect(FULL_ROLE_TOKEN), NAMESPACE)
    kept = run(operator(full.kubernetes_conn_id, f"rbac-reaper-{permission.verb}"))
    try:
        kube.metrics.reset()
        with pytest.raises(
            MissingPermission, match=f"missing permission: {permission} in namespace {NAMESPACE}"
        ):
            reap(DruidK8sHook(connect(token_for(permission)), NAMESPACE), NAMESPACE, dt.timedelta(0))
        assert kube.metrics.count(verb="delete") == 0 and kept["job_name"] in jobs_of(kube)
    finally:
        full.delete_job(kept["job_name"], NAMESPACE)
