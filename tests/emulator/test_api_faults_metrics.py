"""Scripted faults and request metrics: what tests use to break the API server and to see what clients did."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes.client import ApiException

from druid_k8s_provider.testing import KubeEmulator


def _get(kube: KubeEmulator, path: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(kube.url + path, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_count_fault_fails_the_next_matching_requests_only(
    kube: KubeEmulator, k8s: Any, job_manifest: Any
) -> None:
    kube.faults.add(verb="create", resource="jobs", status=500, count=1)
    with pytest.raises(ApiException) as failed:
        k8s.batch.create_namespaced_job("default", job_manifest("retry-me"))
    assert failed.value.status == 500
    assert json.loads(failed.value.body)["reason"] == "InternalError"
    assert k8s.batch.create_namespaced_job("default", job_manifest("retry-me")).metadata.name == "retry-me"
    k8s.core.list_namespaced_pod("default")  # other verbs were never affected


def test_throttling_fault_sends_retry_after(kube: KubeEmulator) -> None:
    kube.faults.add(verb="list", resource="pods", status=429, retry_after=2, count=1)
    status, headers, body = _get(kube, "/api/v1/namespaces/default/pods")
    assert (status, headers["Retry-After"], body["reason"], body["code"]) == (
        429,
        "2",
        "TooManyRequests",
        429,
    )
    assert _get(kube, "/api/v1/namespaces/default/pods")[0] == 200


def test_rate_faults_are_reproducible_for_a_seed() -> None:
    def pattern(seed: int) -> list[int]:
        with KubeEmulator(cluster=False, fault_seed=seed) as kube:
            kube.faults.add(verb="get", resource="namespaces", status=503, rate=0.5)
            return [_get(kube, "/api/v1/namespaces/default")[0] for _ in range(30)]

    first, again = pattern(7), pattern(7)
    assert first == again
    assert set(first) == {200, 503}


def test_connection_reset_and_latency(kube: KubeEmulator) -> None:
    kube.faults.add(verb="get", resource="namespaces", reset_connection=True, count=1)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError)):
        _get(kube, "/api/v1/namespaces/default")
    kube.faults.clear()
    kube.faults.add(verb="get", resource="namespaces", latency=0.3, count=1)
    started = time.monotonic()
    assert _get(kube, "/api/v1/namespaces/default")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_bad_fault_scripts_are_refused(kube: KubeEmulator) -> None:
    with pytest.raises(ValueError, match="rate= or count="):
        kube.faults.add(status=500, rate=0.5, count=1)
    with pytest.raises(ValueError, match="status="):
        kube.faults.add(verb="get")


def _open_watch(kube: KubeEmulator, lines: list[bytes], errors: list[BaseException]) -> threading.Thread:
    def read() -> None:
        try:
            with urllib.request.urlopen(
                kube.url + "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=30", timeout=30
            ) as response:
                lines.extend(response)
        except Exception as error:
            errors.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    deadline = time.monotonic() + 5
    while kube.metrics.open_watches == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread


def test_drop_watches_cuts_open_streams_and_restart_keeps_objects(kube: KubeEmulator) -> None:
    lines: list[bytes] = []
    errors: list[BaseException] = []
    thread = _open_watch(kube, lines, errors)
    assert kube.metrics.open_watches == 1
    assert kube.faults.drop_watches() == 1
    thread.join(timeout=5)
    assert not thread.is_alive()
    deadline = time.monotonic() + 5
    while kube.metrics.open_watches and time.monotonic() < deadline:
        time.sleep(0.01)  # the server notices the aborted connection a moment after the client does
    assert kube.metrics.open_watches == 0 and kube.metrics.peak_watches == 1

    kube.store.create("configmaps", "default", {"metadata": {"name": "survivor"}})
    port = kube.server.port
    thread = _open_watch(kube, lines, errors)
    kube.restart_server()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert kube.server.port == port
    assert _get(kube, "/api/v1/namespaces/default/configmaps/survivor")[0] == 200


def test_expire_next_watch_forces_one_410(kube: KubeEmulator) -> None:
    kube.faults.expire_next_watch()
    path = "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1&resourceVersion=1"
    with urllib.request.urlopen(kube.url + path, timeout=10) as response:
        events = [json.loads(line) for line in response]
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
        ("ERROR", 410, "Expired")
    ]
    with urllib.request.urlopen(kube.url + path, timeout=10) as response:
        assert response.read() == b""


def test_metrics_count_requests_by_kubernetes_verb(kube: KubeEmulator, k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("once"))
    with pytest.raises(ApiException):
        k8s.batch.create_namespaced_job("default", job_manifest("once"))
    k8s.batch.read_namespaced_job("once", "default")
    k8s.batch.list_namespaced_job("default")
    k8s.batch.patch_namespaced_job("once", "default", {"metadata": {"labels": {"a": "b"}}})
    k8s.batch.patch_namespaced_job_status("once", "default", {"status": {"active": 1}})
    k8s.batch.delete_namespaced_job("once", "default")
    metrics = kube.metrics
    assert metrics.creates("jobs") == 1
    assert metrics.count(verb="create", resource="jobs") == 2
    assert metrics.count(verb="create", status=409) == 1
    assert [metrics.count(verb=verb, resource="jobs") for verb in ("get", "list", "patch", "delete")] == [
        1,
        1,
        1,
        1,
    ]
    assert metrics.count(verb="patch", resource="jobs/status") == 1
    record = metrics.records()[0]
    assert (record.verb, record.resource, record.namespace, record.status) == (
        "create",
        "jobs",
        "default",
        201,
    )
    assert record.user_agent.startswith("OpenAPI-Generator/")
    status, _, snapshot = _get(kube, "/metrics")
    assert status == 200
    assert snapshot["creates"] == {"jobs": 1}
    assert snapshot["by_verb_resource"]["create jobs"] == 2
    metrics.reset()
    assert metrics.creates("jobs") == 0 and metrics.snapshot()["requests_total"] == 0
