"""Scheduling and node faults of the emulated cluster: capacity, eviction, pressure, cordon, node loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from cluster_support import wait_for
from kubernetes import client, config

from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits, never_exits
from druid_k8s_provider.testing.controllers.common import Timings

T = TypeVar("T")
NS = "default"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator(node_cpu="1", node_memory="1Gi") as emulator:
        emulator.cluster.timings = Timings(job_backoff=0.05)
        emulator.register_image("server:*", never_exits(lines=["up"]))
        emulator.register_image("quick:*", exits(0, after=0.5))
        yield emulator


@pytest.fixture
def core(kube: KubeEmulator) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=kube.kubeconfig_path)
    yield client.CoreV1Api(api_client)
    api_client.close()


def pod(name: str, image: str, cpu: str = "100m", **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": image, "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def phase_in(core: client.CoreV1Api, name: str, *phases: str) -> client.V1Pod | None:
    current = core.read_namespaced_pod(name, NS)
    return current if current.status.phase in phases else None


def unschedulable(core: client.CoreV1Api, name: str) -> client.V1PodCondition | None:
    conditions = core.read_namespaced_pod(name, NS).status.conditions or ()
    scheduled = next((cond for cond in conditions if cond.type == "PodScheduled"), None)
    return scheduled if scheduled is not None and scheduled.reason == "Unschedulable" else None


def failed_scheduling(core: client.CoreV1Api, name: str) -> list[str]:
    return [
        event.message
        for event in core.list_namespaced_event(NS).items
        if event.involved_object.name == name and event.reason == "FailedScheduling"
    ]


def test_pod_larger_than_the_node_stays_pending_with_an_unschedulable_condition(
    core: client.CoreV1Api,
) -> None:
    core.create_namespaced_pod(NS, pod("huge", "quick:1", cpu="2"))

    scheduled = wait_for(lambda: unschedulable(core, "huge"))
    assert scheduled.status == "False"
    assert scheduled.message.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    current = core.read_namespaced_pod("huge", NS)
    assert current.status.phase == "Pending" and current.spec.node_name is None
    (message,) = failed_scheduling(core, "huge")
    assert message == scheduled.message
    (event,) = [item for item in core.list_namespaced_event(NS).items if item.reason == "FailedScheduling"]
    # the scheduler writes events.k8s.io/v1 events: eventTime set, the legacy timestamps null
    assert event.event_time is not None and event.last_timestamp is None and event.first_timestamp is None
    assert (event.type, event.reporting_component, event.action) == (
        "Warning",
        "default-scheduler",
        "Scheduling",
    )


def test_pending_pod_is_scheduled_once_capacity_frees_up(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("first", "quick:1", cpu="600m"))
    wait_for(lambda: phase_in(core, "first", "Running"))
    core.create_namespaced_pod(NS, pod("second", "quick:1", cpu="600m"))

    wait_for(lambda: unschedulable(core, "second"), what="the second pod to wait for CPU")
    wait_for(lambda: phase_in(core, "second", "Succeeded"), what="the second pod to run after the first")
    first = core.read_namespaced_pod("first", NS).status.container_statuses[0].state.terminated
    second = core.read_namespaced_pod("second", NS).status.container_statuses[0].state.terminated
    assert first.finished_at <= second.started_at


def test_evicted_pod_fails_with_reason_evicted_and_the_job_replaces_it(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    batch = client.BatchV1Api(core.api_client)
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "evictee"},
        "spec": {"backoffLimit": 1, "template": pod("unused", "server:1") | {"metadata": {}}},
    }
    batch.create_namespaced_job(NS, manifest)

    def running_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(NS, label_selector="job-name=evictee").items
        return [item for item in pods if item.status.phase == "Running"]

    (victim,) = wait_for(running_pods)
    assert kube.cluster.evict_pod(NS, victim.metadata.name)

    evicted = wait_for(lambda: phase_in(core, victim.metadata.name, "Failed"))
    assert evicted.status.reason == "Evicted"
    assert evicted.status.message.startswith("The node was low on resource: memory.")
    disruption = next(cond for cond in evicted.status.conditions if cond.type == "DisruptionTarget")
    assert (disruption.status, disruption.reason) == ("True", "TerminationByKubelet")
    (replacement,) = wait_for(running_pods, what="the Job's replacement pod")
    assert replacement.metadata.name != victim.metadata.name
    assert batch.read_namespaced_job("evictee", NS).status.failed == 1


def test_cordoned_node_keeps_new_pods_pending_until_uncordoned(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    kube.cluster.set_node_unschedulable(True)
    core.create_namespaced_pod(NS, pod("waiting", "quick:1"))

    scheduled = wait_for(lambda: unschedulable(core, "waiting"))
    assert scheduled.message.startswith("0/1 nodes are available: 1 node(s) were unschedulable.")
    kube.cluster.set_node_unschedulable(False)
    wait_for(lambda: phase_in(core, "waiting", "Running", "Succeeded"))


def test_memory_pressure_evicts_running_pods_and_taints_the_node(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, pod("resident", "server:1"))
    wait_for(lambda: phase_in(core, "resident", "Running"))

    kube.cluster.set_node_pressure("memory")
    evicted = wait_for(lambda: phase_in(core, "resident", "Failed"))
    assert evicted.status.reason == "Evicted"
    core.create_namespaced_pod(NS, pod("newcomer", "quick:1"))
    scheduled = wait_for(lambda: unschedulable(core, "newcomer"))
    assert "untolerated taint {node.kubernetes.io/memory-pressure: }" in scheduled.message

    kube.cluster.set_node_pressure(None)
    wait_for(lambda: phase_in(core, "newcomer", "Running", "Succeeded"))


def test_lost_node_fails_its_pods_with_node_lost_and_schedules_nothing(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, pod("on-node", "server:1"))
    wait_for(lambda: phase_in(core, "on-node", "Running"))

    kube.cluster.lose_node()
    lost = wait_for(lambda: phase_in(core, "on-node", "Failed"))
    assert lost.status.reason == "NodeLost"
    assert lost.status.message == "Node emulator-node which was running pod on-node is unresponsive"
    core.create_namespaced_pod(NS, pod("later", "quick:1"))
    scheduled = wait_for(lambda: unschedulable(core, "later"))
    assert "node.kubernetes.io/unreachable" in scheduled.message

    kube.cluster.restore_node()
    wait_for(lambda: phase_in(core, "later", "Running", "Succeeded"))


def test_lost_node_can_delete_its_pods_instead(kube: KubeEmulator, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("doomed", "server:1"))
    wait_for(lambda: phase_in(core, "doomed", "Running"))

    kube.cluster.lose_node(delete_pods=True)
    wait_for(lambda: not core.list_namespaced_pod(NS, field_selector="metadata.name=doomed").items or None)


def test_full_node_reports_too_many_pods(kube: KubeEmulator, core: client.CoreV1Api) -> None:
    kube.cluster.node.max_pods = 1
    core.create_namespaced_pod(NS, pod("only", "server:1"))
    wait_for(lambda: phase_in(core, "only", "Running"))
    core.create_namespaced_pod(NS, pod("extra", "quick:1"))

    scheduled = wait_for(lambda: unschedulable(core, "extra"))
    assert scheduled.message.startswith("0/1 nodes are available: 1 Too many pods.")
