"""Fixtures for the Overlord emulator: a Kubernetes emulator with its cluster and an Overlord beside it.

Tests talk to both over real HTTP: the Overlord's Druid API with httpx, the cluster through the store (setup
and assertions only) or the Overlord's runner (which uses the Kubernetes API).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator

NAMESPACE = "druid"


class Druid:
    """The Overlord emulator and an httpx client on its API."""

    def __init__(self, kube: KubeEmulator, overlord: OverlordEmulator, auth: Any = None) -> None:
        self.kube, self.overlord = kube, overlord
        self.http = httpx.Client(base_url=overlord.url, auth=auth, timeout=30, trust_env=False)

    def submit(self, task: dict[str, Any]) -> httpx.Response:
        return self.http.post("/druid/indexer/v1/task", json=task)

    def status(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/druid/indexer/v1/task/{task_id}/status")
        response.raise_for_status()
        return dict(response.json()["status"])

    def wait_for(
        self, task_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Poll the task's status until ``check`` holds; the last status in the assertion otherwise."""
        deadline = time.monotonic() + timeout
        status = self.status(task_id)
        while not check(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} never reached the expected state: {status}")
            time.sleep(0.05)
            status = self.status(task_id)
        return status

    def wait_complete(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(task_id, lambda s: s["statusCode"] != "RUNNING", timeout)

    def jobs(self) -> list[dict[str, Any]]:
        return self.kube.store.list("jobs", NAMESPACE, label_selector="druid.k8s.peons")

    def job_names(self) -> list[str]:
        return [job["metadata"]["name"] for job in self.jobs()]


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        yield emulator


def overlord_for(kube: KubeEmulator, **kwargs: Any) -> OverlordEmulator:
    """An Overlord with test timings: short start delay, fast pod lookups and polls."""
    kwargs.setdefault("start_delay", 1.0)
    kwargs.setdefault("pod_lookup_scale", 0.01)
    kwargs.setdefault("poll_interval", 0.05)
    return OverlordEmulator(kube, **kwargs)


@pytest.fixture
def druid(kube: KubeEmulator) -> Iterator[Druid]:
    """Both emulators, the Overlord at the default (current) Druid version."""
    with overlord_for(kube) as overlord:
        yield Druid(kube, overlord)
