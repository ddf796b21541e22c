"""Golden manifests: whole Jobs written by hand from the spec, compared with what build_job produces.

The rule tests check one rule at a time; these catch anything else that slips in or out (a stray field of
the Overlord pod, a lost volume, a reordered env var). The compressed task is checked by decompressing it,
then replaced by a placeholder, because its bytes are not something a person can write down.

There is one golden Job per Druid release layout (``adapters/layout.py``): 30.0.0; 31.0.0 to 33.x
(``--loadBroadcastDatasourceMode``, ``LOAD_BROADCAST_DATASOURCE_MODE``, ``task.jobTemplate``); 34.0.0 and
later, which is also what an unknown version gets (no task directory in the command, a per-task
``TASK_DIR``, ``-Ddruid.indexer.task.baseTaskDir``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_job_builder_support import KAFKA_TASK, KILL_TASK, build, config, overlord_pod, pod_template

from druid_k8s_provider.job_builder import TASK_ANNOTATION, decompress_task, load_pod_template
from druid_k8s_provider.task import DruidTask

PAYLOAD = "<base64 gzip of the task JSON>"
KILL_JOB_NAME = "killwikipedia20240101-cb1fc81fb292b04fc5b53c3f4e4fbb2b"


def _with_payload_placeholder(job: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """The Job with TASK_JSON / the task annotation checked against ``task`` and replaced by PAYLOAD."""
    job = copy.deepcopy(job)
    pod = job["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    if TASK_ANNOTATION in annotations:
        assert decompress_task(annotations[TASK_ANNOTATION]) == task
        annotations[TASK_ANNOTATION] = PAYLOAD
    for container in pod["spec"]["containers"]:
        for var in container.get("env", []):
            if var["name"] == "TASK_JSON" and "value" in var:
                assert decompress_task(var["value"]) == task
                var["value"] = PAYLOAD
    return job


def _kill_labels(**extra: str) -> dict[str, str]:
    return {
        **extra,
        "druid.k8s.peons": "true",
        "druid.task.id": "killwikipedia20240101",
        "druid.task.group.id": "killwikipedia20240101",
        "druid.task.type": "kill",
        "druid.task.datasource": "wikipedia",
    }


def _kill_annotations(**extra: str) -> dict[str, str]:
    return {
        **extra,
        "task.id": "kill_wikipedia_2024-01-01",
        "task.type": "kill",
        "task.group.id": "kill_wikipedia_2024-01-01",
        "task.datasource": "wikipedia",
        "tls.enabled": "false",
    }


JAVA_OPTS_NO_TLS = (
    "-Ddruid.port=8100 -Ddruid.plaintextPort=8100 -Ddruid.tlsPort=-1 -Ddruid.task.executor.tlsPort=-1 "
    "-Ddruid.task.executor.enableTlsPort=false"
)
KILL_ID = "kill_wikipedia_2024-01-01"
# Per release layout: the peon command, TASK_DIR and JAVA_OPTS of the kill task's overlord Job.
OVERLORD_LAYOUTS: dict[str, tuple[str, str, str]] = {
    "30.0.0": (
        f"/peon.sh /tmp/persistent/task 1 --taskId {KILL_ID}",
        "/tmp/persistent/task",
        JAVA_OPTS_NO_TLS,
    ),
    "31.0.0": (
        f"/peon.sh /tmp/persistent/task 1 --loadBroadcastDatasourceMode NONE --taskId {KILL_ID}",
        "/tmp/persistent/task",
        JAVA_OPTS_NO_TLS,
    ),
    "34.0.0": (
        f"/peon.sh --loadBroadcastDatasourceMode NONE --taskId {KILL_ID}",
        f"/tmp/persistent/task/{KILL_ID}",
        "-Ddruid.indexer.task.baseTaskDir=/tmp/persistent/task " + JAVA_OPTS_NO_TLS,
    ),
}


def _main_container(version: str = "30.0.0", **overrides: Any) -> dict[str, Any]:
    """The Overlord's druid container turned into the peon, as section 3 describes it."""
    args, task_dir, java_opts = OVERLORD_LAYOUTS[version]
    main = {
        "name": "main",
        "image": "apache/druid:30.0.0",
        "args": [args],
        "env": [
            {"name": "druid_monitoring_monitors", "value": '["org.apache.druid.OverlordMonitor"]'},
            {"name": "DRUID_XMX", "value": "1g"},
            {"name": "TASK_DIR", "value": task_dir},
            {"name": "TASK_JSON", "value": PAYLOAD},
            {"name": "JAVA_OPTS", "value": java_opts},
            {"name": "druid_host", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TASK_ID", "value": "kill_wikipedia_2024-01-01"},
        ],
        "ports": [
            {"name": "druid-tls-port", "containerPort": 8091, "protocol": "TCP"},
            {"name": "druid-port", "containerPort": 8100, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": "1000m", "memory": "2400000000", "ephemeral-storage": "10Gi"},
            "limits": {"cpu": "1000m", "memory": "2400000000"},
        },
        "volumeMounts": [{"name": "conf", "mountPath": "/opt/druid/conf"}],
        "command": ["sh", "-c"],
    }
    main.update(overrides)
    return main


def _overlord_pod_spec(**overrides: Any) -> dict[str, Any]:
    spec = {
        "serviceAccountName": "druid",
        "securityContext": {"fsGroup": 1000},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "druid", "effect": "NoSchedule"}],
        "volumes": [{"name": "conf", "configMap": {"name": "druid-conf"}}],
        "initContainers": [{"name": "wait-for-zk", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
        "terminationGracePeriodSeconds": 60,
        "restartPolicy": "Never",
        "hostname": KILL_JOB_NAME,
    }
    spec.update(overrides)
    return spec


def _job(pod_metadata: dict[str, Any], pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": KILL_JOB_NAME,
            "namespace": "druid",
            "labels": _kill_labels(),
            "annotations": _kill_annotations(),
        },
        "spec": {
            "activeDeadlineSeconds": 14400,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 172800,
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


@pytest.mark.parametrize("version", sorted(OVERLORD_LAYOUTS))
def test_golden_single_container_job(version: str) -> None:
    expected = _job(
        {"labels": _kill_labels(), "annotations": _kill_annotations()},
        _overlord_pod_spec(containers=[_main_container(version)]),
    )
    actual = _with_payload_placeholder(build(KILL_TASK, overlord_pod(), config(), version), KILL_TASK)
    assert actual == expected


def test_without_a_version_the_job_is_the_current_releases() -> None:
    current = build(KILL_TASK, overlord_pod(), config())
    assert current == build(KILL_TASK, overlord_pod(), config(), "34.0.0")
    assert current == build(KILL_TASK, overlord_pod(), config(), "36.1.0")
    assert current == build(KILL_TASK, overlord_pod(), config(druidVersion="34.0.0"))


def test_golden_multi_container_kubexit_job() -> None:
    kubexit_mounts = [
        {"name": "graveyard", "mountPath": "/graveyard"},
        {"name": "kubexit", "mountPath": "/kubexit"},
    ]
    main = _main_container(
        command=["/bin/sh", "-c"],
        args=[f'/kubexit/kubexit /bin/sh -c "/peon.sh /tmp/persistent/task 1 --taskId {KILL_ID}"'],
    )
    main["env"] += [
        {"name": "KUBEXIT_NAME", "value": "main"},
        {"name": "KUBEXIT_GRAVEYARD", "value": "/graveyard"},
    ]
    main["volumeMounts"] += kubexit_mounts
    sidecar = {
        "name": "log-shipper",
        "image": "fluent/fluent-bit:3.0",
        "command": ["/bin/sh", "-c"],
        "args": [
            "/kubexit/kubexit /bin/sh -c "
            '"/fluent-bit/bin/fluent-bit -c /etc/\\"fluent\\"/bit.conf -R C:\\\\parsers" || true'
        ],
        "env": [
            {"name": "KUBEXIT_NAME", "value": "log-shipper"},
            {"name": "KUBEXIT_GRAVEYARD", "value": "/graveyard"},
            {"name": "KUBEXIT_DEATH_DEPS", "value": "main"},
        ],
        "volumeMounts": kubexit_mounts,
    }
    expected = _job(
        {"labels": _kill_labels(), "annotations": _kill_annotations()},
        _overlord_pod_spec(
            containers=[main, sidecar],
            volumes=[
                {"name": "conf", "configMap": {"name": "druid-conf"}},
                {"name": "graveyard", "emptyDir": {"medium": "Memory"}},
                {"name": "kubexit", "emptyDir": {}},
            ],
            initContainers=[
                {"name": "wait-for-zk", "image": "busybox:1.36", "command": ["sh", "-c", "true"]},
                {
                    "name": "kubexit",
                    "image": "karlkfi/kubexit:v0.3.2",
                    "command": ["cp", "/bin/kubexit", "/kubexit/kubexit"],
                    "volumeMounts": [{"name": "kubexit", "mountPath": "/kubexit"}],
                },
            ],
        ),
    )
    cfg = config(**{"k8s.adapter.type": "overlordMultiContainer"})
    actual = _with_payload_placeholder(build(KILL_TASK, overlord_pod(), cfg, "30.0.0"), KILL_TASK)
    assert actual == expected


@pytest.mark.parametrize("version", ["30.0.0", "31.0.0", "34.0.0"])
def test_golden_custom_template_job(version: str, tmp_path: Path) -> None:
    template_file = tmp_path / "kafka.yaml"
    template_file.write_text(yaml.safe_dump(pod_template()), encoding="utf-8")
    cfg = config(
        **{
            "k8s.adapter.type": "customTemplateAdapter",
            "k8s.podTemplate.base": str(tmp_path / "base.yaml"),
            "k8s.podTemplate.index_kafka": str(template_file),
        },
        labels='{"team": "ingest"}',
    )
    task = DruidTask.from_spec(KAFKA_TASK)
    actual = _with_payload_placeholder(build(task, load_pod_template(cfg, task), cfg, version), KAFKA_TASK)
    since_31 = version != "30.0.0"
    labels = {
        "team": "ingest",
        "druid.k8s.peons": "true",
        "druid.task.id": "indexkafkaevents0a1b2c3d",
        "druid.task.group.id": "indexkafkaevents",
        "druid.task.type": "index_kafka",
        "druid.task.datasource": "events",
        # Druid 33.0.0 on: the namespace the Overlord's restore looks for (the runner's, none being set).
        **({"druid.overlord.namespace": "druid"} if version == "34.0.0" else {}),
    }
    annotations = {
        "task.id": "index_kafka_events_0a1b2c3d",
        "task.type": "index_kafka",
        "task.group.id": "index_kafka_events",
        "task.datasource": "events",
        "tls.enabled": "false",
    }
    job_template = {"task.jobTemplate": "index_kafka"} if since_31 else {}
    broadcast_mode = [{"name": "LOAD_BROADCAST_DATASOURCE_MODE", "value": "ALL"}] if since_31 else []
    expected = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "indexkafkaevents0a1b2c3d-844b149e16ddc1babc41c955e2f94d93",
            "namespace": "druid",
            "labels": labels,
            "annotations": {**annotations, **job_template},
        },
        "spec": {
            "activeDeadlineSeconds": 14400,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 172800,
            "template": {
                "metadata": {
                    "labels": {"tier": "peon", **labels},
                    "annotations": {
                        "sidecar.istio.io/inject": "false",
                        **annotations,
                        "task": PAYLOAD,
                        **job_template,
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "druid-peon",
                    "containers": [
                        {
                            "name": "main",
                            "image": "apache/druid:30.0.0",
                            "command": ["sh", "-c", "/peon.sh /druid/data 1"],
                            "env": [
                                {"name": "CUSTOM_ENV", "value": "kept"},
                                {"name": "TASK_DIR", "value": "/tmp/persistent/task"},
                                {"name": "TASK_ID", "value": "index_kafka_events_0a1b2c3d"},
                                *broadcast_mode,
                                {"name": "LOAD_BROADCAST_SEGMENTS", "value": "true"},
                                {
                                    "name": "TASK_JSON",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['task']"}},
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }
    assert actual == expected
