"""Fixtures for the Airflow shell against the Kubernetes API emulator over real HTTP.

Two emulators: ``api`` has no controllers, so a test scripts every Job and pod state itself (watch and
timing tests); ``kube`` runs the whole cluster (scheduler, job controller, kubelet with image behaviours),
so the operator runs end to end. Both are reached through the ``kubernetes_default`` Airflow connection,
written as the environment variable a deployment would use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from druid_k8s_provider.testing import KubeEmulator

NAMESPACE = "druid"
#: What a peon's TASK_JSON looks like (base64 of gzipped task JSON): must never travel in events or logs.
SECRET_ENV = [{"name": "TASK_JSON", "value": "H4sIAAAAAAAA_compressed_task_with_credentials"}]


def connect(kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``kubernetes_default`` at the emulator and create the runner namespace."""
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
    kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    """An API server without controllers: objects change only when the test changes them."""
    with KubeEmulator(cluster=False, bookmark_interval=0.5) as emulator:
        connect(emulator, monkeypatch)
        yield emulator


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    """A whole emulated cluster: pods get scheduled, containers run their image's behaviour."""
    with KubeEmulator() as emulator:
        connect(emulator, monkeypatch)
        yield emulator


class ScriptedJob:
    """A peon-like Job and its pod in an API server without controllers, moved through states by hand."""

    def __init__(self, kube: KubeEmulator, name: str, task_id: str) -> None:
        self.kube, self.name, self.task_id, self.pod = kube, name, task_id, f"{name}-abcde"
        labels = {"druid.k8s.peons": "true"}
        kube.store.create(
            "jobs",
            NAMESPACE,
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "labels": labels, "annotations": {"task.id": task_id}},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 600,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "main", "image": "peon", "env": SECRET_ENV}],
                        },
                    },
                },
            },
        )
        kube.store.create(
            "pods",
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": self.pod, "labels": {**labels, "job-name": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "peon", "env": SECRET_ENV}],
                },
            },
        )

    def _pod_status(self, change: Callable[[dict[str, Any]], None]) -> None:
        def apply(pod: dict[str, Any]) -> None:
            change(pod.setdefault("status", {}))

        self.kube.store.mutate("pods", NAMESPACE, self.pod, apply, subresource="status")

    def waiting(self, reason: str, message: str = "") -> None:
        """Main container stuck waiting (image trouble, config error ...)."""

        def change(status: dict[str, Any]) -> None:
            status["phase"] = "Pending"
            status["containerStatuses"] = [
                {
                    "name": "main",
                    "ready": False,
                    "restartCount": 0,
                    "image": "peon",
                    "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
            ]

        self._pod_status(change)

    def unschedulable(self, message: str) -> None:
        """The scheduler found no node."""

        def change(status: dict[str, Any]) -> None:
            status["phase"] = "Pending"
            status["conditions"] = [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]

        self._pod_status(change)

    def running(self) -> None:
        """Main started: its log can be read."""
        self.kube.logs.mark_started(NAMESPACE, self.pod, "main")

        def change(status: dict[str, Any]) -> None:
            status["phase"] = "Running"
            status["containerStatuses"] = [
                {
                    "name": "main",
                    "ready": True,
                    "restartCount": 0,
                    "image": "peon",
                    "imageID": "",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ]

        self._pod_status(change)

    def log(self, *lines: str) -> None:
        """Main writes lines."""
        for line in lines:
            self.kube.logs.append(NAMESPACE, self.pod, "main", line)

    def exits(self, code: int, reason: str = "Completed") -> None:
        """Main ends; the Job controller then records the outcome."""
        self.kube.logs.close(NAMESPACE, self.pod, "main")

        def change(status: dict[str, Any]) -> None:
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            status["containerStatuses"] = [
                {
                    "name": "main",
                    "ready": False,
                    "restartCount": 0,
                    "image": "peon",
                    "imageID": "",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": reason,
                            "startedAt": "2026-01-01T00:00:00Z",
                            "finishedAt": "2026-01-01T00:00:03Z",
                        }
                    },
                }
            ]

        self._pod_status(change)

        def finish(job: dict[str, Any]) -> None:
            status = job.setdefault("status", {})
            condition = "Complete" if code == 0 else "Failed"
            status["conditions"] = [
                {
                    "type": condition,
                    "status": "True",
                    "reason": "" if code == 0 else "BackoffLimitExceeded",
                    "message": "",
                }
            ]
            status["startTime"] = "2026-01-01T00:00:00Z"

        self.kube.store.mutate("jobs", NAMESPACE, self.name, finish, subresource="status")

    def event(self, reason: str, message: str, kind: str = "Pod") -> None:
        """Record an event about the pod (or the Job)."""
        name = self.pod if kind == "Pod" else self.name
        self.kube.store.create(
            "events",
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{name}.{reason.lower()}"},
                "involvedObject": {"kind": kind, "name": name, "namespace": NAMESPACE},
                "reason": reason,
                "message": message,
                "type": "Warning",
                "lastTimestamp": "2026-01-01T00:00:01Z",
            },
        )


@pytest.fixture
def scripted(api: KubeEmulator) -> Callable[[str, str], ScriptedJob]:
    """Make scripted Jobs in the controller-less API server."""
    return lambda name, task_id: ScriptedJob(api, name, task_id)


class DruidCluster:
    """The emulated cluster with a stand-in Druid Overlord (:class:`OverlordEmulator`, Druid 38 unless told):
    its pod ``druid-overlord-0`` (selector ``component=overlord``) is the peon template, and
    ``druid_ingest_default`` points at its API. Peons run the stand-in peon unless a test gives them another
    behaviour (which then pushes no ``status.json``: the Overlord says "Peon did not report status
    successfully.")."""

    def __init__(self, kube: KubeEmulator, start_overlord: Callable[..., Any]) -> None:
        self.kube = kube
        self._start_overlord = start_overlord
        self.overlord: Any = None

    def start(
        self,
        peon: Any = None,
        sidecars: list[dict[str, Any]] | None = None,
        env: list[dict[str, Any]] | None = None,
        image: str | None = None,
        **overlord: Any,
    ) -> dict[str, Any]:
        """Start the Overlord (keyword arguments go to the emulator), give peons of its image ``peon``'s
        behaviour, and add ``sidecars`` / ``env`` / another ``image`` to its pod; returns the pod."""
        self.overlord = self._start_overlord(**overlord)
        pod_name = "druid-overlord-0"
        if peon is not None:
            peon_image = (image or "apache/druid").split(":")[0] + "*"
            self.kube.register_image(peon_image, peon)

        def change(pod: dict[str, Any]) -> None:
            main = pod["spec"]["containers"][0]
            main["env"] = [*main.get("env", []), *(env or [])]
            if image is not None:
                main["image"] = image
            pod["spec"]["containers"] = [main, *(sidecars or [])]

        if sidecars or env or image:
            self.kube.store.mutate("pods", NAMESPACE, pod_name, change)
        return dict(self.kube.store.get("pods", NAMESPACE, pod_name))

    def peon_env(self) -> list[dict[str, Any]]:
        """The Overlord pod's env a peon needs to reach the Overlord and its task logs (for pod templates)."""
        return list(self.overlord.overlord_pod()["spec"]["containers"][0]["env"])


@pytest.fixture
def druid(kube: KubeEmulator, start_overlord: Callable[..., Any]) -> DruidCluster:
    """The emulated cluster, ready to start an Overlord with a chosen peon behaviour."""
    return DruidCluster(kube, start_overlord)


def connect_overlord(
    overlord: Any, monkeypatch: pytest.MonkeyPatch, conn_id: str = "druid_ingest_default"
) -> None:
    """Point the Overlord connection (``druid_ingest_default``, as the Apache Druid provider names it) at
    the Overlord emulator."""
    host, port = overlord.url.removeprefix("http://").rsplit(":", 1)
    connection = {"conn_type": "druid", "host": host, "port": int(port), "schema": "http"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


@pytest.fixture
def start_overlord(kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Start an Overlord emulator beside the cluster (test timings) and point ``druid_ingest_default`` at it;
    its pod is the peon template (selector ``component=overlord``). Keyword arguments go to the emulator
    (``druid_version``, ``runner_properties`` ...)."""
    from druid_k8s_provider.testing import OverlordEmulator

    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        kwargs.setdefault("start_delay", 1.0)
        kwargs.setdefault("pod_lookup_scale", 0.01)
        kwargs.setdefault("poll_interval", 0.05)
        emulator = OverlordEmulator(kube, **kwargs).__enter__()
        started.append(emulator)
        connect_overlord(emulator, monkeypatch)
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.__exit__(None, None, None)
