"""DruidK8sHook against the emulator over HTTP: retries, errors that say what to do, RBAC, proxies, paging."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from druid_k8s_provider.errors import KubernetesApiError, MissingPermission, TemplatePodNotFound
from druid_k8s_provider.hooks.druid_k8s import DruidK8sAsyncHook, DruidK8sHook, RetryPolicy
from druid_k8s_provider.hooks.k8s_api import jobs_path
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMESPACE = "druid"
#: The least-privilege Role the provider documents for the runner namespace.
RUNNER_ROLE = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]


def manifest(name: str, task_id: str) -> dict[str, Any]:
    labels = {"druid.k8s.peons": "true"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels,
            "annotations": {"task.id": task_id},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "peon:1"}]},
            },
        },
    }


def test_create_or_join_joins_only_the_same_druid_task(api: KubeEmulator) -> None:
    hook = DruidK8sHook()
    job, created = hook.create_or_join_job(manifest("peon-a", "task-a"))
    again, created_again = hook.create_or_join_job(manifest("peon-a", "task-a"))
    assert (created, created_again) == (True, False)
    assert again["metadata"]["uid"] == job["metadata"]["uid"]
    with pytest.raises(KubernetesApiError) as raised:
        hook.create_or_join_job(manifest("peon-a", "task-b"))
    message = str(raised.value)
    assert "task-b" in message and "peon-a" in message and "another Druid task ('task-a')" in message
    assert api.metrics.creates("jobs") == 1


def test_429_is_retried_after_the_servers_retry_after(api: KubeEmulator) -> None:
    hook = DruidK8sHook()
    hook.create_or_join_job(manifest("peon-a", "task-a"))
    api.faults.add(verb="get", resource="jobs", status=429, retry_after=1, count=2)
    started = time.monotonic()
    assert hook.get_job("peon-a", NAMESPACE) is not None
    assert time.monotonic() - started >= 2.0
    assert api.metrics.count("get", "jobs", status=429) == 2


def test_5xx_and_dropped_connections_are_retried_with_backoff(api: KubeEmulator) -> None:
    hook = DruidK8sHook()
    api.faults.add(verb="create", resource="jobs", status=503, count=1)
    api.faults.add(verb="create", resource="jobs", reset_connection=True, count=1)
    job, created = hook.create_or_join_job(manifest("peon-a", "task-a"))
    assert created or job["metadata"]["annotations"]["task.id"] == "task-a"
    assert api.metrics.creates("jobs") == 1


def test_persistent_failure_ends_with_an_error_naming_the_task_job_and_fix(api: KubeEmulator) -> None:
    hook = DruidK8sHook(retry_policy=RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05))
    api.faults.add(verb="create", resource="jobs", status=500)
    with pytest.raises(KubernetesApiError) as raised:
        hook.create_or_join_job(manifest("peon-a", "task-a"))
    message = str(raised.value)
    assert "task-a" in message and "peon-a" in message
    assert "HTTP 500" in message and "still failing after retries" in message and "Fix:" in message
    assert api.metrics.count("create", "jobs") == 3


def test_the_documented_role_is_enough_and_a_missing_verb_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    missing_delete = [
        {**RUNNER_ROLE[0], "verbs": ["get", "list", "watch", "create"]},
        *RUNNER_ROLE[1:],
    ]
    with KubeEmulator(cluster=False, tokens={"runner": RUNNER_ROLE, "no-delete": missing_delete}) as kube:
        kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        for conn_id, token in (("runner", "runner"), ("nodelete", "no-delete")):
            path = kube.write_kubeconfig(token=token)
            monkeypatch.setenv(
                f"AIRFLOW_CONN_{conn_id.upper()}",
                json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(path)}}),
            )
        runner = DruidK8sHook("runner")
        runner.create_or_join_job(manifest("peon-a", "task-a"))
        assert [job["metadata"]["name"] for job in runner.list_peon_jobs(NAMESPACE)] == ["peon-a"]
        assert runner.find_job_pod("peon-a", NAMESPACE) is None
        assert runner.list_events(NAMESPACE, ["peon-a"]) == []
        with pytest.raises(MissingPermission) as raised:
            DruidK8sHook("nodelete").delete_job("peon-a", NAMESPACE)
        assert "HTTP 403" in str(raised.value) and "delete" in str(raised.value)
        assert "Role" in str(raised.value)
        assert runner.delete_job("peon-a", NAMESPACE) is True


def test_list_peon_jobs_pages_with_continue_and_skips_other_jobs(api: KubeEmulator) -> None:
    hook = DruidK8sHook()
    for index in range(7):
        hook.create_or_join_job(manifest(f"peon-{index}", f"task-{index}"))
    other = manifest("nightly-report", "x")
    other["metadata"]["labels"] = {"app": "report"}
    other["spec"]["template"]["metadata"]["labels"] = {"app": "report"}
    hook.create_or_join_job(other)
    names = [job["metadata"]["name"] for job in hook.list_peon_jobs(NAMESPACE, page_size=3)]
    assert sorted(names) == [f"peon-{index}" for index in range(7)]
    assert api.metrics.count("list", "jobs") == 3


def test_delete_reports_whether_the_job_existed(api: KubeEmulator) -> None:
    hook = DruidK8sHook()
    hook.create_or_join_job(manifest("peon-a", "task-a"))
    assert hook.delete_job("peon-a", NAMESPACE) is True
    assert hook.delete_job("peon-a", NAMESPACE) is False
    assert hook.get_job("peon-a", NAMESPACE) is None


def test_template_pod_by_name_or_first_running_by_selector(api: KubeEmulator) -> None:
    for name, phase in (("overlord-b", "Running"), ("overlord-a", "Pending"), ("overlord-c", "Running")):
        api.store.create(
            "pods",
            NAMESPACE,
            {
                "metadata": {"name": name, "labels": {"component": "overlord"}},
                "spec": {"containers": [{"name": "druid", "image": "apache/druid:31.0.0"}]},
            },
        )
        api.store.mutate(
            "pods",
            NAMESPACE,
            name,
            lambda pod, p=phase: pod.setdefault("status", {}).update(phase=p),
            subresource="status",
        )
    hook = DruidK8sHook()
    assert hook.get_template_pod(NAMESPACE, pod_name="overlord-a")["metadata"]["name"] == "overlord-a"
    assert hook.get_template_pod(NAMESPACE, selector="component=overlord")["metadata"]["name"] == "overlord-b"
    with pytest.raises(TemplatePodNotFound, match="overlord-x"):
        hook.get_template_pod(NAMESPACE, pod_name="overlord-x")
    for name in ("overlord-b", "overlord-c"):
        api.store.mutate(
            "pods", NAMESPACE, name, lambda pod: pod["status"].update(phase="Failed"), subresource="status"
        )
    with pytest.raises(TemplatePodNotFound, match="none is Running"):
        hook.get_template_pod(NAMESPACE, selector="component=overlord")


@pytest.fixture
def unreachable_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Proxy variables pointing at a port nobody listens on: honouring them breaks every call."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_disable_client_proxy_ignores_proxy_variables_sync(
    api: KubeEmulator, unreachable_proxy: None
) -> None:
    quick = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02)
    with pytest.raises(KubernetesApiError):
        DruidK8sHook(retry_policy=quick).get_job("peon-a", NAMESPACE)
    assert DruidK8sHook(disable_client_proxy=True, retry_policy=quick).get_job("peon-a", NAMESPACE) is None


def test_disable_client_proxy_ignores_proxy_variables_async(
    api: KubeEmulator, unreachable_proxy: None
) -> None:
    quick = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02)

    async def read(disable: bool) -> Any:
        hook = DruidK8sAsyncHook(disable_client_proxy=disable, retry_policy=quick)
        async with hook.session() as session:
            return await session.get(jobs_path(NAMESPACE, "peon-a"))

    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(read(False))
    assert asyncio.run(read(True)) is None
