"""Pod logs as ``kubectl logs`` and the clients read them: container choice, follow, tail, since, limits."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
from kubernetes.client import ApiException

from druid_k8s_provider.testing import KubeEmulator


def _log(k8s: Any, name: str, **options: Any) -> str:
    """The log as text; kubernetes 36 returns a bytes repr from read_namespaced_pod_log (issue 2596)."""
    response = k8s.core.read_namespaced_pod_log(name, "default", _preload_content=False, **options)
    return str(response.data.decode())


def _message(error: ApiException) -> str:
    return str(json.loads(error.body)["message"])


def test_log_of_a_single_container_pod(kube: KubeEmulator, k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("one"))
    for line in ("first", "second", "third"):
        kube.logs.append("default", "one", "main", line)
    assert _log(k8s, "one") == "first\nsecond\nthird\n"
    assert _log(k8s, "one", tail_lines=2) == "second\nthird\n"
    assert _log(k8s, "one", limit_bytes=8) == "first\nse"
    stamped = _log(k8s, "one", timestamps=True).splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z first", stamped[0])


def test_since_seconds_skips_older_lines(kube: KubeEmulator, k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("since"))
    kube.logs.append("default", "since", "main", "old")
    time.sleep(1.1)
    kube.logs.append("default", "since", "main", "new")
    assert _log(k8s, "since", since_seconds=1) == "new\n"


def test_multi_container_pod_needs_a_container_name(kube: KubeEmulator, k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("two", containers=("main", "sidecar")))
    kube.logs.append("default", "two", "sidecar", "from the sidecar")
    with pytest.raises(ApiException) as ambiguous:
        _log(k8s, "two")
    assert ambiguous.value.status == 400
    assert (
        _message(ambiguous.value)
        == "a container name must be specified for pod two, choose one of: [main sidecar]"
    )
    assert _log(k8s, "two", container="sidecar") == "from the sidecar\n"
    with pytest.raises(ApiException) as unknown:
        _log(k8s, "two", container="nope")
    assert _message(unknown.value) == "container nope is not valid for pod two"


def test_container_that_has_not_started_is_a_400(kube: KubeEmulator, k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("waiting"))
    with pytest.raises(ApiException) as waiting:
        _log(k8s, "waiting")
    assert waiting.value.status == 400
    assert (
        _message(waiting.value) == 'container "main" in pod "waiting" is waiting to start: ContainerCreating'
    )

    def pulling(pod: dict[str, Any]) -> None:
        pod["status"]["containerStatuses"] = [
            {
                "name": "main",
                "state": {"waiting": {"reason": "ImagePullBackOff"}},
                "ready": False,
                "restartCount": 0,
            }
        ]

    kube.store.mutate("pods", "default", "waiting", pulling, subresource="status")
    with pytest.raises(ApiException) as backoff:
        _log(k8s, "waiting")
    assert _message(backoff.value).endswith("is waiting to start: ImagePullBackOff")


def test_previous_reads_the_instance_before_a_restart(
    kube: KubeEmulator, k8s: Any, pod_manifest: Any
) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("restarted"))
    with pytest.raises(ApiException) as none_yet:
        _log(k8s, "restarted", previous=True)
    assert _message(none_yet.value) == 'previous terminated container "main" in pod "restarted" not found'
    kube.logs.mark_started("default", "restarted", "main")
    kube.logs.append("default", "restarted", "main", "crashed")
    kube.logs.close("default", "restarted", "main")
    kube.logs.mark_started("default", "restarted", "main")
    kube.logs.append("default", "restarted", "main", "second try")
    assert _log(k8s, "restarted", previous=True) == "crashed\n"
    assert _log(k8s, "restarted") == "second try\n"


def test_follow_streams_until_the_container_ends(kube: KubeEmulator, k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("follow"))
    kube.logs.append("default", "follow", "main", "line 1")

    def produce() -> None:
        time.sleep(0.2)
        kube.logs.append("default", "follow", "main", "line 2")
        kube.logs.close("default", "follow", "main")

    threading.Thread(target=produce).start()
    response = k8s.core.read_namespaced_pod_log("follow", "default", follow=True, _preload_content=False)
    lines = [line.decode() for line in response.stream()]
    assert "".join(lines) == "line 1\nline 2\n"


async def test_asyncio_client_reads_logs() -> None:
    from kubernetes_asyncio import client, config

    async with KubeEmulator(cluster=False) as kube:
        kube.store.create(
            "pods",
            "default",
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x:1"}]}},
        )
        kube.logs.append("default", "p", "main", "hello")
        api = await config.new_client_from_config(config_file=kube.kubeconfig_path)
        async with api:
            assert await client.CoreV1Api(api).read_namespaced_pod_log("p", "default") == "hello\n"
