"""The emulated cluster every chaos test starts from.

An emulator reachable through the ``kubernetes_default`` Airflow connection (as a deployment defines it, with
the ``AIRFLOW_CONN_`` variable), the runner namespace, and the Overlord pods whose spec the peons inherit.
Images get their behaviour before any pod exists, so no container ever starts without one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from druid_k8s_provider.testing import KubeEmulator

NAMESPACE = "druid"
OVERLORD = "druid-overlord-0"
PEON_LABELS = {"druid.k8s.peons": "true"}


@contextlib.contextmanager
def connected_emulator(
    monkeypatch: pytest.MonkeyPatch,
    *,
    images: Mapping[str, Any] | None = None,
    overlords: Mapping[str, str] | None = None,
    **options: Any,
) -> Iterator[KubeEmulator]:
    """``KubeEmulator(**options)`` with ``images`` (pattern -> behaviour) registered and ``overlords``
    (pod name -> image) Running in the runner namespace."""
    with KubeEmulator(**options) as kube:
        connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
        for pattern, behaviour in (images or {}).items():
            kube.register_image(pattern, behaviour)
        kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        for name, image in (overlords or {}).items():
            kube.store.create(
                "pods",
                NAMESPACE,
                {"metadata": {"name": name}, "spec": {"containers": [{"name": "druid", "image": image}]}},
            )
        yield kube


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
