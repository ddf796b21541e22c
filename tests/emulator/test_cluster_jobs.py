"""Job and TTL controllers of the emulated cluster, observed over HTTP with the official client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from cluster_support import wait_for
from kubernetes import client, config

from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext, exits, never_exits, oom_killed
from druid_k8s_provider.testing.controllers.common import Timings

T = TypeVar("T")
NS = "default"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.cluster.timings = Timings(job_backoff=0.05, crash_backoff=0.05, image_pull_backoff=0.1)
        yield emulator


@pytest.fixture
def api(kube: KubeEmulator) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=kube.kubeconfig_path)
    yield api_client
    api_client.close()


def job(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    pod_spec = {"restartPolicy": spec.pop("restart_policy", "Never"), "containers": containers}
    pod_spec.update(spec.pop("pod_spec", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": pod_spec}, **spec},
    }


def shell(script: str, name: str = "main", image: str = "busybox:1.36") -> dict[str, Any]:
    return {"name": name, "image": image, "command": ["sh", "-c", script]}


def pod_log(core: client.CoreV1Api, pod: str, **options: Any) -> str:
    """The log text; the client's own str conversion of this endpoint is broken in kubernetes 33+ (it returns
    the repr of the bytes), so read the raw body as users of these versions must."""
    response = core.read_namespaced_pod_log(pod, NS, _preload_content=False, **options)
    return str(response.data.decode())


def condition_types(batch: client.BatchV1Api, name: str) -> list[str]:
    status = batch.read_namespaced_job(name, NS).status
    return [cond.type for cond in status.conditions or () if cond.status == "True"]


def finished(batch: client.BatchV1Api, name: str) -> list[str] | None:
    types = condition_types(batch, name)
    return types if {"Complete", "Failed"} & set(types) else None


def job_pods(core: client.CoreV1Api, name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(NS, label_selector=f"batch.kubernetes.io/job-name={name}").items


def events_for(core: client.CoreV1Api, name: str) -> list[tuple[str, str, str]]:
    return [
        (event.reason, event.type, event.message)
        for event in core.list_namespaced_event(NS).items
        if event.involved_object.name == name
    ]


def test_shell_job_completes_with_pod_labels_owner_status_and_events(api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    created = batch.create_namespaced_job(NS, job("hello", [shell("echo hello; sleep 0.2")]))

    types = wait_for(lambda: finished(batch, "hello"), what="job to finish")
    assert types == ["SuccessCriteriaMet", "Complete"]  # 1.31+ order: interim condition first
    status = batch.read_namespaced_job("hello", NS).status
    assert status.succeeded == 1 and not status.failed and not status.active
    assert status.start_time is not None and status.completion_time is not None
    complete = next(cond for cond in status.conditions if cond.type == "Complete")
    assert complete.reason == "CompletionsReached"

    (pod,) = job_pods(core, "hello")
    assert pod.metadata.generate_name == "hello-"
    assert pod.metadata.name.startswith("hello-") and len(pod.metadata.name) == len("hello-") + 5
    uid = created.metadata.uid
    assert pod.metadata.labels["job-name"] == "hello"
    assert pod.metadata.labels["controller-uid"] == uid
    assert pod.metadata.labels["batch.kubernetes.io/controller-uid"] == uid
    (owner,) = pod.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller, owner.block_owner_deletion) == (
        "Job",
        "hello",
        uid,
        True,
        True,
    )
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name == "emulator-node"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert pod_log(core, pod.metadata.name) == "hello\n"

    job_events = [reason for reason, _, _ in events_for(core, "hello")]
    assert job_events == ["SuccessfulCreate", "Completed"]
    pod_events = [reason for reason, _, _ in events_for(core, pod.metadata.name)]
    assert pod_events == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]


def test_exit_code_1_fails_the_job_with_backoff_limit_exceeded(api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(NS, job("boom", [shell("echo failing; exit 1")], backoffLimit=0))

    assert wait_for(lambda: finished(batch, "boom")) == ["FailureTarget", "Failed"]
    status = batch.read_namespaced_job("boom", NS).status
    failed = next(cond for cond in status.conditions if cond.type == "Failed")
    assert (failed.reason, failed.message) == (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    assert status.failed == 1 and status.completion_time is None
    (pod,) = job_pods(core, "boom")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 1, "Error")
    assert ("BackoffLimitExceeded", "Warning", "Job has reached the specified backoff limit") in events_for(
        core, "boom"
    )


def test_backoff_limit_2_runs_three_pods_before_failing(api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(NS, job("retry", [shell("exit 3")], backoffLimit=2))

    assert "Failed" in wait_for(lambda: finished(batch, "retry"))
    assert batch.read_namespaced_job("retry", NS).status.failed == 3
    pods = job_pods(core, "retry")
    assert len(pods) == 3
    assert {pod.status.container_statuses[0].state.terminated.exit_code for pod in pods} == {3}
    creates = [reason for reason, _, _ in events_for(core, "retry") if reason == "SuccessfulCreate"]
    assert len(creates) == 3


def test_active_deadline_kills_the_pod_and_fails_with_deadline_exceeded(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("forever:*", never_exits(lines=["serving"]))
    manifest = job("slow", [{"name": "main", "image": "forever:1"}], activeDeadlineSeconds=1, backoffLimit=5)
    batch.create_namespaced_job(NS, manifest)

    assert wait_for(lambda: finished(batch, "slow")) == ["FailureTarget", "Failed"]
    failed = next(
        cond for cond in batch.read_namespaced_job("slow", NS).status.conditions if cond.type == "Failed"
    )
    assert (failed.reason, failed.message) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    reasons = [reason for reason, _, _ in events_for(core, "slow")]
    assert (
        reasons[0] == "SuccessfulCreate"
        and "SuccessfulDelete" in reasons
        and reasons[-1] == "DeadlineExceeded"
    )
    wait_for(lambda: not job_pods(core, "slow") or None, what="the killed pod to be removed")


def test_ttl_after_finished_deletes_the_job_and_its_pods(api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(NS, job("short-lived", [shell("true")], ttlSecondsAfterFinished=1))

    wait_for(lambda: finished(batch, "short-lived"))
    assert job_pods(core, "short-lived")  # still there right after finishing

    def gone() -> bool:
        names = [item.metadata.name for item in batch.list_namespaced_job(NS).items]
        return "short-lived" not in names and not job_pods(core, "short-lived")

    wait_for(gone, timeout=5, what="TTL deletion")


def test_oom_killed_container_reports_reason_and_exit_137(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("hungry:*", oom_killed(after=0.1, lines=["allocating"]))
    batch.create_namespaced_job(NS, job("oom", [{"name": "main", "image": "hungry:2"}], backoffLimit=0))

    wait_for(lambda: finished(batch, "oom"))
    (pod,) = job_pods(core, "oom")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)
    assert pod_log(core, pod.metadata.name) == "allocating\n"


def test_restart_policy_on_failure_restarts_the_container_in_place(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    attempts: list[int] = []

    async def flaky(ctx: ContainerContext) -> int:
        attempts.append(1)
        ctx.log(f"attempt {len(attempts)}")
        ctx.termination_message = f"attempt {len(attempts)} ended"
        return 0 if len(attempts) > 1 else 2

    kube.register_image("flaky:*", flaky)
    manifest = job(
        "flaky", [{"name": "main", "image": "flaky:1"}], restart_policy="OnFailure", backoffLimit=3
    )
    batch.create_namespaced_job(NS, manifest)

    assert "Complete" in wait_for(lambda: finished(batch, "flaky"))
    (pod,) = job_pods(core, "flaky")
    status = pod.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 2
    assert status.last_state.terminated.message == "attempt 1 ended"
    assert pod_log(core, pod.metadata.name, previous=True) == "attempt 1\n"
    assert pod_log(core, pod.metadata.name) == "attempt 2\n"
    assert any(reason == "BackOff" for reason, _, _ in events_for(core, pod.metadata.name))


def test_registered_behaviour_wins_and_writes_the_pod_log(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("apache/druid:*", exits(1))
    kube.register_image("apache/druid:30.*", exits(0, lines=["task SUCCESS"]))  # the latest match wins
    container = {"name": "main", "image": "apache/druid:30.0.0", "command": ["sh", "-c", "echo local"]}
    batch.create_namespaced_job(NS, job("druid", [container]))

    assert "Complete" in wait_for(lambda: finished(batch, "druid"))
    (pod,) = job_pods(core, "druid")
    assert pod_log(core, pod.metadata.name) == "task SUCCESS\n"


def test_completions_and_parallelism_run_pods_side_by_side_until_enough_succeed(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("worker:*", exits(0, after=0.3))
    manifest = job("batch-of-3", [{"name": "main", "image": "worker:1"}], completions=3, parallelism=2)
    batch.create_namespaced_job(NS, manifest)

    wait_for(lambda: batch.read_namespaced_job("batch-of-3", NS).status.active == 2, what="two pods at once")
    assert "Complete" in wait_for(lambda: finished(batch, "batch-of-3"))
    assert batch.read_namespaced_job("batch-of-3", NS).status.succeeded == 3
    assert len(job_pods(core, "batch-of-3")) == 3


def test_suspended_job_creates_no_pod_until_resumed(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(NS, job("paused", [shell("true")], suspend=True))

    suspended = wait_for(lambda: "Suspended" in condition_types(batch, "paused"))
    assert suspended and not job_pods(core, "paused")
    assert batch.read_namespaced_job("paused", NS).status.start_time is None
    batch.patch_namespaced_job("paused", NS, {"spec": {"suspend": False}})
    assert "Complete" in wait_for(lambda: finished(batch, "paused"))
    resumed = next(
        c for c in batch.read_namespaced_job("paused", NS).status.conditions if c.type == "Suspended"
    )
    assert (resumed.status, resumed.reason) == ("False", "JobResumed")
    reasons = [reason for reason, _, _ in events_for(core, "paused")]
    assert reasons[:3] == ["Suspended", "Resumed", "SuccessfulCreate"]


def test_deleting_a_running_pod_counts_as_a_failure_and_is_replaced(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("forever:*", never_exits())
    batch.create_namespaced_job(NS, job("replaced", [{"name": "main", "image": "forever:1"}], backoffLimit=2))

    def running() -> list[client.V1Pod]:
        return [pod for pod in job_pods(core, "replaced") if pod.status.phase == "Running"]

    (first,) = wait_for(running)
    core.delete_namespaced_pod(first.metadata.name, NS)
    (second,) = wait_for(lambda: [pod for pod in running() if pod.metadata.name != first.metadata.name])
    # As on a real cluster the status write trails the replacement pod's creation: wait for it, then check
    # that it counts exactly the one deleted pod.
    status = wait_for(lambda: (s := batch.read_namespaced_job("replaced", NS).status).failed and s)
    assert status.failed == 1
    assert second.metadata.labels["job-name"] == "replaced"


def test_kubectl_logs_job_prints_the_pods_output(api: client.ApiClient, kubectl: Any) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job("greeter", [shell("echo hello; sleep 1")]))

    assert "Complete" in wait_for(lambda: finished(batch, "greeter"))
    result = kubectl("logs", "job/greeter")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr


def test_a_quota_without_room_refuses_the_job_controllers_pod_create_with_a_failed_create_event(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    """As on a real cluster: the Job is accepted, its controller's pod create is refused by the quota
    admission (403 Forbidden), recorded as a Warning FailedCreate event on the Job, and retried with
    back-off; no pod appears. Room in the quota lets the next retry through."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    kube.register_image("busybox:*", exits(0, after=0.1))
    core.create_namespaced_resource_quota(
        NS, {"metadata": {"name": "peons"}, "spec": {"hard": {"limits.memory": "1Gi", "pods": "10"}}}
    )
    big = {**shell("true"), "resources": {"limits": {"memory": "6G"}, "requests": {"memory": "6G"}}}
    batch.create_namespaced_job(NS, job("too-big", [big], backoffLimit=0))

    def refused() -> Any:
        events = core.list_namespaced_event(NS, field_selector="involvedObject.name=too-big").items
        return next((event for event in events if event.reason == "FailedCreate"), None)

    event = wait_for(refused, what="the FailedCreate event")
    assert event.type == "Warning" and event.involved_object.kind == "Job"
    assert event.message.startswith('Error creating: pods "too-big-')
    assert event.message.endswith(
        '" is forbidden: exceeded quota: peons, requested: limits.memory=6G, used: limits.memory=0, '
        "limited: limits.memory=1Gi"
    )
    assert core.list_namespaced_pod(NS, label_selector="job-name=too-big").items == []
    assert not condition_types(batch, "too-big")

    core.patch_namespaced_resource_quota("peons", NS, {"spec": {"hard": {"limits.memory": "8G"}}})
    assert "Complete" in wait_for(lambda: condition_types(batch, "too-big") or None, what="the retried Job")
