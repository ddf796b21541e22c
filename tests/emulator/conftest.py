"""Fixtures for the emulator suites: a running API server and ready-made clients for it.

Each test gets its own emulator (ephemeral port, temporary kubeconfig), so tests never share objects or
watches and can run alongside every other suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client, config

from druid_k8s_provider.testing import KubeEmulator


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    """An API-only emulator (no controllers: objects change only when the test changes them)."""
    with KubeEmulator(cluster=False) as emulator:
        yield emulator


@dataclass
class SyncClients:
    """The official synchronous client, configured from the emulator's kubeconfig."""

    api: client.ApiClient
    core: client.CoreV1Api
    batch: client.BatchV1Api


@pytest.fixture
def k8s(kube: KubeEmulator) -> Iterator[SyncClients]:
    """``kubernetes`` (sync) clients for ``kube``."""
    api = config.new_client_from_config(config_file=kube.kubeconfig_path)
    try:
        yield SyncClients(api, client.CoreV1Api(api), client.BatchV1Api(api))
    finally:
        api.close()


def _job_manifest(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A minimal valid Job, as users write it (the server fills in the rest)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "echo hi"]}
                    ],
                }
            },
            **spec,
        },
    }


def _pod_manifest(name: str, containers: tuple[str, ...] = ("main",), **metadata: Any) -> dict[str, Any]:
    """A minimal valid Pod with the given container names."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {"containers": [{"name": c, "image": "busybox:1.36"} for c in containers]},
    }


@pytest.fixture(name="job_manifest")
def job_manifest_fixture() -> Callable[..., dict[str, Any]]:
    """``job_manifest(name, labels=None, **spec)``: a minimal valid Job."""
    return _job_manifest


@pytest.fixture(name="pod_manifest")
def pod_manifest_fixture() -> Callable[..., dict[str, Any]]:
    """``pod_manifest(name, containers=("main",), **metadata)``: a minimal valid Pod."""
    return _pod_manifest


@dataclass
class KubectlResult:
    """What a kubectl run printed and how it exited."""

    returncode: int
    stdout: str
    stderr: str


Kubectl = Callable[..., KubectlResult]


@pytest.fixture
def kubectl(kube: KubeEmulator) -> Kubectl:
    """Run the real kubectl against ``kube``; missing kubectl skips locally but fails in CI."""
    binary = shutil.which("kubectl")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is required in CI (.ci/run installs it) but is not on PATH")
        pytest.skip("kubectl is not installed")

    # Discovery is cached per server address; ports get reused, so each emulator gets its own cache.
    cache_dir = os.path.join(os.path.dirname(kube.kubeconfig_path), "kubectl-cache")

    def run(*arguments: str, stdin: str | None = None, timeout: float = 20) -> KubectlResult:
        completed = subprocess.run(
            [binary, "--kubeconfig", kube.kubeconfig_path, "--cache-dir", cache_dir, *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return KubectlResult(completed.returncode, completed.stdout, completed.stderr)

    return run
