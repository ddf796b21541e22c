"""The emulated kubelet: container outcomes, env, logs, images, init containers and graceful deletion."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cluster_support import wait_for
from kubernetes import client, config, watch

from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext, image_pull_fails
from druid_k8s_provider.testing.controllers.common import Timings

T = TypeVar("T")
NS = "default"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.cluster.timings = Timings(image_pull_backoff=0.2, config_retry=0.05, crash_backoff=0.05)
        yield emulator


@pytest.fixture
def core(kube: KubeEmulator) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=kube.kubeconfig_path)
    yield client.CoreV1Api(api_client)
    api_client.close()


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"restartPolicy": "Never", "containers": containers, **spec},
    }


def shell(script: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "command": ["sh", "-c", script], **extra}


def pod_log(core: client.CoreV1Api, name: str, **options: Any) -> str:
    """Raw log text (the client's str conversion of this endpoint is broken in kubernetes 33+)."""
    return str(core.read_namespaced_pod_log(name, NS, _preload_content=False, **options).data.decode())


def started_log(core: client.CoreV1Api, name: str) -> str:
    """The log, or "" while the container has not started (the API answers 400 then)."""
    try:
        return pod_log(core, name)
    except client.ApiException as error:
        if error.status == 400:
            return ""
        raise


def phase_in(core: client.CoreV1Api, name: str, *phases: str) -> client.V1Pod | None:
    current = core.read_namespaced_pod(name, NS)
    return current if current.status.phase in phases else None


def waiting_reason(core: client.CoreV1Api, name: str, reason: str) -> client.V1ContainerState | None:
    statuses = core.read_namespaced_pod(name, NS).status.container_statuses or ()
    for status in statuses:
        if status.state.waiting is not None and status.state.waiting.reason == reason:
            return status.state.waiting
    return None


def pod_events(core: client.CoreV1Api, name: str) -> list[tuple[str, str, str]]:
    return [
        (event.reason, event.type, event.message)
        for event in core.list_namespaced_event(NS).items
        if event.involved_object.name == name
    ]


def test_local_process_gets_downward_api_and_configmap_env_and_logs_both_streams(
    core: client.CoreV1Api,
) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "settings"}, "data": {"mode": "fast"}})
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TASK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['task']"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "GREETING", "value": "hi $(POD_NAME)"},
    ]
    script = 'echo "$POD_NAME $POD_NAMESPACE $TASK $TEAM $MODE $GREETING"; echo "ip=$POD_IP"; echo oops >&2'
    metadata = {"annotations": {"task": "index_wiki"}, "labels": {"team": "data"}}
    core.create_namespaced_pod(NS, pod("env-pod", [shell(script, env=env)], metadata=metadata))

    done = wait_for(lambda: phase_in(core, "env-pod", "Succeeded", "Failed"))
    assert done.status.phase == "Succeeded"
    lines = pod_log(core, "env-pod").splitlines()
    assert lines[0] == "env-pod default index_wiki data fast hi env-pod"
    assert lines[1] == f"ip={done.status.pod_ip}"
    assert lines[2] == "oops"
    conditions = {cond.type: cond.status for cond in done.status.conditions}
    assert conditions["PodScheduled"] == "True" and conditions["Initialized"] == "True"
    assert conditions["Ready"] == "False"  # completed pods are not ready
    assert done.status.host_ip == "127.0.0.1" and done.status.start_time is not None


def test_missing_configmap_key_is_create_container_config_error_until_it_exists(
    core: client.CoreV1Api,
) -> None:
    env = [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "mode"}}}]
    core.create_namespaced_pod(NS, pod("cfg", [shell('echo "mode=$MODE"', env=env)]))

    waiting = wait_for(lambda: waiting_reason(core, "cfg", "CreateContainerConfigError"))
    assert waiting.message == 'configmap "later" not found'
    assert ("Failed", "Warning", 'Error: configmap "later" not found') in pod_events(core, "cfg")

    core.create_namespaced_config_map(NS, {"metadata": {"name": "later"}, "data": {"other": "x"}})
    waiting = wait_for(
        lambda: (w := waiting_reason(core, "cfg", "CreateContainerConfigError")) and "key" in w.message and w
    )
    assert waiting.message == "couldn't find key mode in ConfigMap default/later"

    core.patch_namespaced_config_map("later", NS, {"data": {"mode": "slow"}})
    wait_for(lambda: phase_in(core, "cfg", "Succeeded"))
    assert pod_log(core, "cfg") == "mode=slow\n"


def test_init_containers_run_in_order_before_the_main_container(
    core: client.CoreV1Api, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    init = [shell(f"echo {step} >> {trace}", name=f"init-{step}") for step in ("one", "two")]
    main = shell(f"cat {trace}")
    core.create_namespaced_pod(NS, pod("ordered", [main], initContainers=init))

    done = wait_for(lambda: phase_in(core, "ordered", "Succeeded", "Failed"))
    assert done.status.phase == "Succeeded"
    assert pod_log(core, "ordered") == "one\ntwo\n"
    assert [status.name for status in done.status.init_container_statuses] == ["init-one", "init-two"]
    assert all(
        status.state.terminated.reason == "Completed" for status in done.status.init_container_statuses
    )


def test_failing_init_container_fails_the_pod_and_main_never_starts(core: client.CoreV1Api) -> None:
    init = [shell("exit 4", name="setup")]
    core.create_namespaced_pod(NS, pod("bad-init", [shell("echo never")], initContainers=init))

    done = wait_for(lambda: phase_in(core, "bad-init", "Failed"))
    assert done.status.init_container_statuses[0].state.terminated.exit_code == 4
    assert done.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    initialized = next(cond for cond in done.status.conditions if cond.type == "Initialized")
    assert initialized.status == "False" and initialized.reason == "ContainersNotInitialized"


def test_image_pull_failure_backs_off_with_events_then_recovers(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    kube.register_image("registry.example.com/private/*", image_pull_fails(failures=2))
    container = {"name": "main", "image": "registry.example.com/private/app:1", "command": ["true"]}
    core.create_namespaced_pod(NS, pod("pull", [container]))

    waiting = wait_for(lambda: waiting_reason(core, "pull", "ImagePullBackOff"))
    assert waiting.message.startswith(
        'Back-off pulling image "registry.example.com/private/app:1": ErrImagePull:'
    )
    wait_for(lambda: phase_in(core, "pull", "Succeeded"), what="the third pull to succeed")
    reasons = [(reason, kind) for reason, kind, _ in pod_events(core, "pull")]
    assert ("Failed", "Warning") in reasons and ("BackOff", "Normal") in reasons
    messages = [message for _, _, message in pod_events(core, "pull")]
    assert any(
        message.startswith('Failed to pull image "registry.example.com/private/app:1":')
        for message in messages
    )
    assert "Error: ImagePullBackOff" in messages and "Error: ErrImagePull" in messages


def test_invalid_image_reference_stays_waiting_with_invalid_image_name(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(
        NS, pod("bad-image", [{"name": "main", "image": "Not A Valid Ref", "command": ["true"]}])
    )

    waiting = wait_for(lambda: waiting_reason(core, "bad-image", "InvalidImageName"))
    assert "invalid reference format" in waiting.message
    assert core.read_namespaced_pod("bad-image", NS).status.phase == "Pending"


def test_executable_missing_everywhere_is_a_start_error_with_exit_128(core: client.CoreV1Api) -> None:
    container = {"name": "main", "image": "example/peon:1", "command": ["/opt/druid/peon.sh", "task"]}
    core.create_namespaced_pod(NS, pod("no-exec", [container]))

    done = wait_for(lambda: phase_in(core, "no-exec", "Failed"))
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("StartError", 128)
    assert (
        'exec: "/opt/druid/peon.sh": stat /opt/druid/peon.sh: no such file or directory' in terminated.message
    )


def test_deletion_sends_sigterm_the_handler_runs_and_the_pod_goes(
    core: client.CoreV1Api, tmp_path: Path
) -> None:
    marker = tmp_path / "terminated"
    script = f"trap 'echo got SIGTERM > {marker}; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
    core.create_namespaced_pod(NS, pod("graceful", [shell(script)], terminationGracePeriodSeconds=10))
    wait_for(lambda: started_log(core, "graceful") == "ready\n", what="the script to start")

    stream = watch.Watch()
    started = time.monotonic()
    core.delete_namespaced_pod("graceful", NS)
    last: client.V1Pod | None = None
    for event in stream.stream(
        core.list_namespaced_pod, NS, field_selector="metadata.name=graceful", timeout_seconds=10
    ):
        last = event["object"]
        if event["type"] == "DELETED":
            stream.stop()
    assert time.monotonic() - started < 5  # the handler exited at once: no waiting for the 10 s grace
    assert marker.read_text() == "got SIGTERM\n"
    assert last is not None
    assert last.status.container_statuses[0].state.terminated.exit_code == 0
    assert last.status.phase == "Succeeded"


def test_container_ignoring_sigterm_is_killed_after_the_grace_period(core: client.CoreV1Api) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    core.create_namespaced_pod(NS, pod("stubborn", [shell(script)], terminationGracePeriodSeconds=1))
    wait_for(lambda: started_log(core, "stubborn") == "ready\n")

    stream = watch.Watch()
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", NS)
    states = []
    for event in stream.stream(
        core.list_namespaced_pod, NS, field_selector="metadata.name=stubborn", timeout_seconds=10
    ):
        states.append(event["object"])
        if event["type"] == "DELETED":
            stream.stop()
    assert 1 <= time.monotonic() - started < 4
    final = states[-1].status
    assert final.phase == "Failed"
    assert final.container_statuses[0].state.terminated.exit_code == 137
    assert ("Killing", "Normal", "Stopping container main") in pod_events(core, "stubborn")


def test_behaviour_that_raises_exits_1_with_the_traceback_in_the_log(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    async def broken(ctx: ContainerContext) -> int:
        raise RuntimeError("behaviour bug")

    kube.register_image("broken:*", broken)
    core.create_namespaced_pod(NS, pod("raiser", [{"name": "main", "image": "broken:1"}]))

    done = wait_for(lambda: phase_in(core, "raiser", "Failed"))
    assert done.status.container_statuses[0].state.terminated.exit_code == 1
    assert "RuntimeError: behaviour bug" in pod_log(core, "raiser")


def test_second_pod_with_a_tagged_image_finds_it_already_present(core: client.CoreV1Api) -> None:
    for name in ("first", "second"):
        core.create_namespaced_pod(NS, pod(name, [shell("true")]))
        wait_for(lambda name=name: phase_in(core, name, "Succeeded"))

    assert ("Pulling", "Normal", 'Pulling image "busybox:1.36"') in pod_events(core, "first")
    second = pod_events(core, "second")
    assert ("Pulled", "Normal", 'Container image "busybox:1.36" already present on machine') in second
    assert not any(reason == "Pulling" for reason, _, _ in second)


def test_stopping_the_emulator_kills_local_processes(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with KubeEmulator() as kube:
        api_client = config.new_client_from_config(config_file=kube.kubeconfig_path)
        core = client.CoreV1Api(api_client)
        script = f"echo $$$$ > {pid_file}; exec sleep 1000"  # Kubernetes turns $$ into $
        core.create_namespaced_pod(NS, pod("lingering", [shell(script)]))
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        pid = int(pid_file.read_text())
        api_client.close()

    def exited() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(exited, timeout=5, what=f"process {pid} to be killed")


def test_pod_active_deadline_fails_the_pod_with_deadline_exceeded(core: client.CoreV1Api) -> None:
    long_running = shell("sleep 30")
    core.create_namespaced_pod(NS, pod("bounded", [long_running], activeDeadlineSeconds=1))

    done = wait_for(lambda: phase_in(core, "bounded", "Failed"))
    assert done.status.reason == "DeadlineExceeded"
    assert done.status.message == "Pod was active on the node longer than the specified deadline"
    assert done.status.container_statuses[0].state.terminated.exit_code == 143


def test_plain_function_behaviour_returns_the_exit_code(kube: KubeEmulator, core: client.CoreV1Api) -> None:
    def instant(ctx: ContainerContext) -> int:
        ctx.log(f"{ctx.container_name} in {ctx.pod['metadata']['name']}")
        return 5

    kube.register_image("instant:*", instant)
    core.create_namespaced_pod(NS, pod("sync", [{"name": "main", "image": "instant:1"}]))

    done = wait_for(lambda: phase_in(core, "sync", "Failed"))
    assert done.status.container_statuses[0].state.terminated.exit_code == 5
    assert pod_log(core, "sync") == "main in sync\n"


def test_fallback_to_logs_on_error_puts_the_log_tail_in_the_termination_message(
    core: client.CoreV1Api,
) -> None:
    script = "for i in $(seq 1 100); do echo line $i; done; exit 1"
    failing = shell(script, terminationMessagePolicy="FallbackToLogsOnError")
    core.create_namespaced_pod(NS, pod("tail", [failing]))

    done = wait_for(lambda: phase_in(core, "tail", "Failed"))
    message = done.status.container_statuses[0].state.terminated.message
    assert message.splitlines() == [f"line {i}" for i in range(21, 101)]


def test_secret_env_reaches_the_container_and_string_data_is_stored_as_base64(
    core: client.CoreV1Api,
) -> None:
    # Overlord pods commonly read the metadata-store password from a Secret; the peon clone must start.
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "metadata-store"}, "stringData": {"password": "s3cr3t"}}
    )
    stored = core.read_namespaced_secret("metadata-store", NS)
    assert stored.type == "Opaque"
    assert stored.data == {"password": "czNjcjN0"}
    assert getattr(stored, "string_data", None) is None
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "metadata-store", "key": "password"}}}]
    core.create_namespaced_pod(NS, pod("secret-env", [shell('echo "len=${#PASSWORD}"', env=env)]))

    wait_for(lambda: phase_in(core, "secret-env", "Succeeded"))
    assert pod_log(core, "secret-env") == "len=6\n"
    assert [s.metadata.name for s in core.list_namespaced_secret(NS, field_selector="type=Opaque").items] == [
        "metadata-store"
    ]
