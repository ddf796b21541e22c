"""The emulated cluster every chaos test starts from.

An emulator reachable through the ``kubernetes_default`` Airflow connection (as a deployment defines it, with
the ``AIRFLOW_CONN_`` variable), the runner namespace, and the Overlord pods whose spec the peons inherit.
With a cluster, a stand-in Overlord (Druid 38) runs beside it, reachable through ``druid_ingest_default``:
the Overlord pods carry its spec (how peons reach it) with the test's image, and a peon that ends with exit
code 0 pushes a SUCCESS ``status.json`` to the task logs as a Druid peon does, which the Overlord reads.
Images get their behaviour before any pod exists, so no container ever starts without one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.standin_peon import (
    LOGS_DIRECTORY_ENV,
    decode_task_payload,
    is_peon,
    task_payload,
    task_status,
)

NAMESPACE = "druid"
OVERLORD = "druid-overlord-0"
PEON_LABELS = {"druid.k8s.peons": "true"}


@contextlib.contextmanager
def connected_emulator(
    monkeypatch: pytest.MonkeyPatch,
    *,
    images: Mapping[str, Any] | None = None,
    overlords: Mapping[str, str] | None = None,
    overlord_properties: Mapping[str, Any] | None = None,
    **options: Any,
) -> Iterator[KubeEmulator]:
    """``KubeEmulator(**options)`` with ``images`` (pattern -> behaviour) registered and ``overlords``
    (pod name -> image) Running in the runner namespace; with a cluster, an Overlord emulator with
    ``overlord_properties`` (runner properties such as ``debugJobs``) beside it."""
    if not options.get("cluster", True):
        with KubeEmulator(**options) as kube:
            _connect_kubernetes(monkeypatch, kube, images)
            kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
            yield kube
        return
    with connected_cluster(
        monkeypatch, images=images, overlords=overlords, overlord_properties=overlord_properties, **options
    ) as (kube, _):
        yield kube


@contextlib.contextmanager
def connected_cluster(
    monkeypatch: pytest.MonkeyPatch,
    *,
    images: Mapping[str, Any] | None = None,
    overlords: Mapping[str, str] | None = None,
    overlord_properties: Mapping[str, Any] | None = None,
    overlord_fault_seed: int = 0,
    **options: Any,
) -> Iterator[tuple[KubeEmulator, OverlordEmulator]]:
    """:func:`connected_emulator` with a cluster, giving the Overlord emulator too (its faults seeded with
    ``overlord_fault_seed``)."""
    with KubeEmulator(**options) as kube:
        _connect_kubernetes(monkeypatch, kube, images)  # before the Overlord registers its stand-in peon
        with OverlordEmulator(
            kube,
            runner_properties=overlord_properties,
            start_delay=1.0,
            # Druid looks for a joined Job's pod for about four minutes; a fifth of that leaves room for a
            # release retried through the faults and restarts (a hundredth would not).
            pod_lookup_scale=0.2,
            poll_interval=0.05,
            fault_seed=overlord_fault_seed,
        ) as overlord:
            yield _connect_overlord(monkeypatch, kube, overlord, overlords)


def _connect_overlord(
    monkeypatch: pytest.MonkeyPatch,
    kube: KubeEmulator,
    overlord: OverlordEmulator,
    overlords: Mapping[str, str] | None,
) -> tuple[KubeEmulator, OverlordEmulator]:
    """Point ``druid_ingest_default`` at the Overlord and start the Overlord pods (their images given)."""
    host, port = overlord.url.removeprefix("http://").rsplit(":", 1)
    druid = {"conn_type": "druid", "host": host, "port": int(port), "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(druid))
    for name, image in (overlords or {}).items():
        if name == OVERLORD:  # the Overlord's own pod: its peons get the test's image

            def use(pod: dict[str, Any], image: str = image) -> None:
                pod["spec"]["containers"][0]["image"] = image

            kube.store.mutate("pods", NAMESPACE, OVERLORD, use)
            continue
        pod = overlord.overlord_pod()
        pod["metadata"] = {"name": name}
        pod["spec"]["containers"][0]["image"] = image
        kube.store.create("pods", NAMESPACE, pod)
    return kube, overlord


def _connect_kubernetes(
    monkeypatch: pytest.MonkeyPatch, kube: KubeEmulator, images: Mapping[str, Any] | None
) -> None:
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
    for pattern, behaviour in (images or {}).items():
        kube.register_image(pattern, reporting_to_the_overlord(behaviour))


def reporting_to_the_overlord(behaviour: Any) -> Any:
    """A peon behaviour that, once it ended with exit code 0, pushes its task's SUCCESS ``status.json`` to
    the task-log directory it inherited from the Overlord's pod (the chaos tasks take no locks); other
    containers and failures are the behaviour's alone (no status: the Overlord says FAILED)."""

    async def peon(ctx: Any) -> int:
        code = int(await behaviour(ctx))
        if code == 0 and is_peon(ctx) and ctx.env.get(LOGS_DIRECTORY_ENV):
            task_id = str(decode_task_payload(task_payload(ctx))["id"])
            status = json.dumps(task_status(task_id, "SUCCESS", 0, None))
            (Path(ctx.env[LOGS_DIRECTORY_ENV]) / f"{task_id}.status.json").write_text(status)
        return code

    if hasattr(behaviour, "pull"):  # an image that fails to pull keeps failing
        peon.pull = behaviour.pull  # type: ignore[attr-defined]
    return peon


def peon_like_job(name: str, task_id: str) -> dict[str, Any]:
    """A Job as the provider labels and annotates it, for API servers without controllers."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": PEON_LABELS, "annotations": {"task.id": task_id}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": PEON_LABELS},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "peon"}]},
            },
        },
    }
