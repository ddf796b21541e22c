"""Both emulators for the sensor's and the reaper's tests: a whole Kubernetes cluster and a stand-in Overlord
beside it, reached through the ``kubernetes_default`` and ``druid_ingest_default`` Airflow connections, with
Druid's own view of tasks (submitted straight to its API, as its supervisors and the Coordinator do)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.demo import overlord_connection

NAMESPACE = "druid"


class Druid:
    """The Overlord emulator beside the cluster, and Druid's API as its own services use it."""

    def __init__(self, kube: KubeEmulator, overlord: OverlordEmulator) -> None:
        self.kube, self.overlord = kube, overlord
        self.http = httpx.Client(base_url=overlord.url, timeout=30, trust_env=False)

    def submit(self, task: dict[str, Any]) -> str:
        response = self.http.post("/druid/indexer/v1/task", json=task)
        response.raise_for_status()
        return str(response.json()["task"])

    def status(self, task_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/druid/indexer/v1/task/{task_id}/status").json()["status"])

    def wait_for(self, task_id: str, *codes: str, timeout: float = 30) -> dict[str, Any]:
        """Poll until the task's statusCode or runnerStatusCode is one of ``codes``."""
        deadline = time.monotonic() + timeout
        while {(status := self.status(task_id))["statusCode"], status["runnerStatusCode"]}.isdisjoint(codes):
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} never reached {codes}: {status}")
            time.sleep(0.05)
        return status

    def client_requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request the Overlord answered, but the peons' task actions."""
        return [
            (request.method, request.path)
            for request in self.overlord.requests.requests
            if request.path != "/druid/indexer/v1/action"
        ]

    def job_names(self) -> set[str]:
        return {job["metadata"]["name"] for job in self.kube.store.list("jobs", NAMESPACE)}


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)


@contextmanager
def both_emulators(monkeypatch: pytest.MonkeyPatch, **properties: Any) -> Iterator[Druid]:
    """A cluster and an Overlord with test timings and the runner ``properties`` given; the Airflow
    connections ``kubernetes_default`` and ``druid_ingest_default`` point at them."""
    with (
        KubeEmulator() as kube,
        OverlordEmulator(
            kube, runner_properties=properties, start_delay=600, pod_lookup_scale=0.01, poll_interval=0.05
        ) as overlord,
    ):
        kubernetes = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(kubernetes))
        monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(overlord_connection(overlord.url)))
        druid = Druid(kube, overlord)
        try:
            yield druid
        finally:
            druid.http.close()
