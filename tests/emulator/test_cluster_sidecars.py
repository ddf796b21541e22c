"""Sidecar semantics of the emulated cluster: kubexit, native sidecars, and the plain sidecar trap.

The kubexit and native cases use Jobs built by the provider's own job_builder, so these tests check that what
we launch in production really finishes on a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from cluster_support import wait_for
from kubernetes import client, config

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import build_job
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits, never_exits

T = TypeVar("T")
NS = "default"
TASK = {"type": "index_parallel", "id": "index_wiki_2024", "dataSource": "wiki"}


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.register_image("apache/druid:*", exits(0, lines=["peon: task SUCCESS"], after=0.3))
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=kube.kubeconfig_path)
    yield api_client
    api_client.close()


def overlord_pod() -> dict[str, Any]:
    """An Overlord pod with a log-shipping sidecar that never exits on its own."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "druid-overlord-0", "namespace": NS},
        "spec": {
            "containers": [
                {"name": "druid", "image": "apache/druid:30.0.0", "args": ["overlord"]},
                {"name": "log-shipper", "image": "fluent/fluent-bit:3.0", "command": ["sleep", "1000"]},
            ]
        },
    }


def runner_config(**extra: str) -> RunnerConfig:
    properties = {
        "druid.indexer.runner.namespace": NS,
        "druid.indexer.runner.k8s.adapter.type": "overlordMultiContainer",
        "druid.indexer.runner.javaOptsArray": '["-Xmx256m"]',
        **{f"druid.indexer.runner.{key}": value for key, value in extra.items()},
    }
    return RunnerConfig.from_properties(properties)


def finished(batch: client.BatchV1Api, name: str) -> list[str] | None:
    conditions = batch.read_namespaced_job(name, NS).status.conditions or ()
    types = [cond.type for cond in conditions if cond.status == "True"]
    return types if {"Complete", "Failed"} & set(types) else None


def only_pod(core: client.CoreV1Api, job_name: str) -> client.V1Pod:
    (pod,) = core.list_namespaced_pod(NS, label_selector=f"job-name={job_name}").items
    return pod


def pod_log(core: client.CoreV1Api, name: str, container: str) -> str:
    """Raw log text (the client's str conversion of this endpoint is broken in kubernetes 33+)."""
    response = core.read_namespaced_pod_log(name, NS, container=container, _preload_content=False)
    return str(response.data.decode())


def test_kubexit_wired_job_completes_when_main_ends(api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    manifest = build_job(TASK, overlord_pod(), runner_config())
    name = manifest["metadata"]["name"]
    batch.create_namespaced_job(NS, manifest)

    assert "Complete" in wait_for(lambda: finished(batch, name), what="the kubexit job to complete")
    pod = only_pod(core, name)
    states = {status.name: status.state.terminated for status in pod.status.container_statuses}
    assert states["main"].exit_code == 0
    assert states["log-shipper"].exit_code == 0  # SIGTERMed by kubexit, then `|| true`
    assert pod.status.init_container_statuses[0].name == "kubexit"
    assert "peon: task SUCCESS" in pod_log(core, pod.metadata.name, "main").splitlines()
    shipper_log = pod_log(core, pod.metadata.name, "log-shipper")
    assert "Death Deps: main" in shipper_log and "Tombstone modified: /graveyard/main" in shipper_log


def test_kubexit_runs_a_local_main_command(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kubexit_env = [{"name": "KUBEXIT_GRAVEYARD", "value": "/graveyard"}]
    main = {
        "name": "main",
        "image": "busybox:1.36",
        "command": ["/bin/sh", "-c"],
        "args": ['/kubexit/kubexit /bin/sh -c "echo \\"main work\\""'],
        "env": [{"name": "KUBEXIT_NAME", "value": "main"}, *kubexit_env],
    }
    sidecar = {
        "name": "helper",
        "image": "busybox:1.36",
        "command": ["/bin/sh", "-c"],
        "args": ['/kubexit/kubexit /bin/sh -c "sleep 1000" || true'],
        "env": [
            {"name": "KUBEXIT_NAME", "value": "helper"},
            {"name": "KUBEXIT_DEATH_DEPS", "value": "main"},
            {"name": "KUBEXIT_GRACE_PERIOD", "value": "2s"},
            *kubexit_env,
        ],
    }
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "local-kubexit"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [main, sidecar]}},
        },
    }
    batch.create_namespaced_job(NS, manifest)

    assert "Complete" in wait_for(lambda: finished(batch, "local-kubexit"))
    pod = only_pod(core, "local-kubexit")
    assert "main work" in pod_log(core, pod.metadata.name, "main").splitlines()


def test_native_sidecar_job_completes_and_the_sidecar_is_stopped(api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    manifest = build_job(TASK, overlord_pod(), runner_config(sidecarTermination="native"))
    name = manifest["metadata"]["name"]
    batch.create_namespaced_job(NS, manifest)

    assert "Complete" in wait_for(lambda: finished(batch, name), what="the native-sidecar job to complete")
    pod = only_pod(core, name)
    assert pod.status.phase == "Succeeded"
    (sidecar,) = pod.status.init_container_statuses
    assert sidecar.name == "log-shipper" and sidecar.state.terminated is not None
    assert sidecar.state.terminated.exit_code == 143  # `sleep` ended by SIGTERM after main finished
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_plain_sidecar_keeps_the_job_running_until_its_deadline(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("fluent/fluent-bit:*", never_exits(lines=["shipping"]))
    spec = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": "apache/druid:30.0.0"},
            {"name": "log-shipper", "image": "fluent/fluent-bit:3.0"},
        ],
    }
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "stuck"},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 2, "template": {"spec": spec}},
    }
    batch.create_namespaced_job(NS, manifest)

    def main_done() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(NS, label_selector="job-name=stuck").items
        if not pods:
            return None
        states = {status.name: status.state for status in pods[0].status.container_statuses or ()}
        return pods[0] if states.get("main") and states["main"].terminated else None

    wait_for(main_done, what="main to finish")
    time.sleep(0.5)
    pod = only_pod(core, "stuck")
    states = {status.name: status.state for status in pod.status.container_statuses}
    assert pod.status.phase == "Running"
    assert states["main"].terminated.exit_code == 0 and states["log-shipper"].running is not None
    status = batch.read_namespaced_job("stuck", NS).status
    assert status.active == 1 and not finished(batch, "stuck")
    # only the deadline ends it, as on a real cluster
    assert wait_for(lambda: finished(batch, "stuck")) == ["FailureTarget", "Failed"]
    failed = next(
        cond for cond in batch.read_namespaced_job("stuck", NS).status.conditions if cond.type == "Failed"
    )
    assert failed.reason == "DeadlineExceeded"
