"""Shared inputs for the job builder tests: an Overlord pod as the API returns it, tasks, configurations.

Every Job a test builds goes through :func:`build`, which validates it against the Kubernetes 1.30 and 1.32
(kubectl's version here) schemas, strictly: unknown fields fail. So no test can pass with a manifest the API
server would refuse.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import build_job
from druid_k8s_provider.task import DruidTask

R = "druid.indexer.runner."

OVERLORD_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "druid-overlord-0",
        "namespace": "druid",
        "uid": "0b8c1f9e-1111-2222-3333-444455556666",
        "resourceVersion": "4711",
        "labels": {"app": "druid", "component": "overlord"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": "druid-overlord",
                "uid": "x",
                "controller": True,
            }
        ],
    },
    "spec": {
        "nodeName": "node-7",
        "serviceAccountName": "druid",
        "securityContext": {"fsGroup": 1000},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "druid", "effect": "NoSchedule"}],
        "volumes": [{"name": "conf", "configMap": {"name": "druid-conf"}}],
        "initContainers": [{"name": "wait-for-zk", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
        "terminationGracePeriodSeconds": 60,
        "containers": [
            {
                "name": "druid",
                "image": "apache/druid:30.0.0",
                "args": ["overlord"],
                "env": [
                    {"name": "druid_monitoring_monitors", "value": '["org.apache.druid.OverlordMonitor"]'},
                    {"name": "DRUID_XMX", "value": "1g"},
                ],
                "ports": [{"name": "http", "containerPort": 8081, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/status/health", "port": 8081}},
                "livenessProbe": {"httpGet": {"path": "/status/health", "port": 8081}},
                "startupProbe": {"httpGet": {"path": "/status/health", "port": 8081}},
                "resources": {
                    "requests": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"},
                    "limits": {"memory": "4Gi"},
                },
                "volumeMounts": [{"name": "conf", "mountPath": "/opt/druid/conf"}],
            },
            {
                "name": "log-shipper",
                "image": "fluent/fluent-bit:3.0",
                "command": ["/fluent-bit/bin/fluent-bit"],
                "args": ["-c", '/etc/"fluent"/bit.conf', "-R", "C:\\parsers"],
            },
        ],
    },
    "status": {"phase": "Running", "podIP": "10.0.0.5"},
}

KILL_TASK: dict[str, Any] = {
    "type": "kill",
    "id": "kill_wikipedia_2024-01-01",
    "dataSource": "wikipedia",
    "interval": "2024-01-01/2024-02-01",
}

KAFKA_TASK: dict[str, Any] = {
    "type": "index_kafka",
    "id": "index_kafka_events_0a1b2c3d",
    "groupId": "index_kafka_events",
    "dataSchema": {"dataSource": "events"},
    "ioConfig": {"topic": "events"},
    "context": {"druid.indexer.runner.javaOpts": '-Xmx2g -Dlabel="two words"'},
}

REALTIME_TASK: dict[str, Any] = {"type": "index_realtime", "id": "index_realtime_rt_1", "dataSource": "rt"}

POD_TEMPLATE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "PodTemplate",
    "metadata": {"name": "druid-peon-base"},
    "template": {
        "metadata": {"labels": {"tier": "peon"}, "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "druid-peon",
            "containers": [
                {
                    "name": "main",
                    "image": "apache/druid:30.0.0",
                    "command": ["sh", "-c", "/peon.sh /druid/data 1"],
                    "env": [{"name": "CUSTOM_ENV", "value": "kept"}],
                }
            ],
        },
    },
}


def overlord_pod() -> dict[str, Any]:
    """A fresh copy of the Overlord pod, so a test may change it."""
    return copy.deepcopy(OVERLORD_POD)


def pod_template() -> dict[str, Any]:
    return copy.deepcopy(POD_TEMPLATE)


def config(**runner_properties: Any) -> RunnerConfig:
    """A configuration in namespace ``druid`` plus runner properties given by their suffix."""
    properties = {R + "namespace": "druid"}
    for key, value in runner_properties.items():
        properties[key if key.startswith("druid.") else R + key] = value
    return RunnerConfig.from_properties(properties)


def validated(job: dict[str, Any]) -> dict[str, Any]:
    """The Job, after checking it against the Kubernetes 1.30 and 1.32 schemas (strict)."""
    for version in ("1.30", "1.32"):
        kubernetes_validate.validate(job, version, strict=True)
    return job


def build(
    task: dict[str, Any] | DruidTask,
    template: dict[str, Any],
    runner_config: RunnerConfig,
    druid_version: str | None = None,
) -> dict[str, Any]:
    return validated(build_job(task, template, runner_config, druid_version=druid_version))


def container(job: dict[str, Any], name: str = "main") -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == name
    )
    return found


def env_of(container_spec: dict[str, Any]) -> dict[str, Any]:
    """Env var name -> value (or valueFrom), for assertions that do not care about order."""
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container_spec.get("env", [])}
