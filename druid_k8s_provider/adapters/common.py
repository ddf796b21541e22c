"""What the adapters share: the task payload, template checks, container order and env merging."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections.abc import Mapping, Sequence
from typing import Any

from druid_k8s_provider.config_names import CUSTOM_TEMPLATE_ADAPTER, RUNNER_PREFIX
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import DruidTask

MAIN_CONTAINER_NAME = "main"
TASK_ANNOTATION = "task"
# Linux refuses to exec a process with one environment string over MAX_ARG_STRLEN (32 pages = 128 KiB), and
# we hold annotations to the same bound (Kubernetes allows 256 KiB in total): a bigger task must reach the
# peon through deep storage, as Druid does for large payloads.
MAX_PAYLOAD_BYTES = 128 * 1024
PRIMARY_CONTAINER_PROPERTY = RUNNER_PREFIX + "primaryContainerName"

# Druid's BroadcastDatasourceLoadingSpec: the task context may choose the mode; kill tasks and MSQ
# controllers never load broadcast datasources (apache/druid PR 17027).
BROADCAST_MODE_CONTEXT_KEY = "broadcastDatasourceLoadingMode"
BROADCAST_MODES = ("ALL", "NONE", "ONLY_REQUIRED")
_NO_BROADCAST_TASK_TYPES = frozenset({"kill", "query_controller"})


def compress_task(task: DruidTask) -> str:
    """The task as the peon reads it from ``TASK_JSON``: base64 of the gzip of the task JSON."""
    return base64.b64encode(gzip.compress(task.to_json().encode("utf-8"), mtime=0)).decode("ascii")


def decompress_task(payload: str) -> dict[str, Any]:
    """Inverse of :func:`compress_task`, for tests and for re-reading a Job's task."""
    decoded = json.loads(gzip.decompress(base64.b64decode(payload)).decode("utf-8"))
    if not isinstance(decoded, dict):
        raise ValueError("the payload does not hold a JSON object")
    return decoded


def broadcast_loading_mode(task: DruidTask) -> str:
    """``ALL``, ``NONE`` or ``ONLY_REQUIRED``: the broadcast datasources the peon loads, as Druid decides."""
    if task.type in _NO_BROADCAST_TASK_TYPES:
        return "NONE"
    mode = task.context.get(BROADCAST_MODE_CONTEXT_KEY)
    if mode is None:
        return "ALL"
    if not isinstance(mode, str) or mode.upper() not in BROADCAST_MODES:
        raise DruidK8sConfigError(
            f"task.context.{BROADCAST_MODE_CONTEXT_KEY}",
            f"the value is {mode!r}, not a broadcast datasource loading mode",
            f"use one of {', '.join(BROADCAST_MODES)}, or leave it out (ALL)",
        )
    return mode.upper()


def check_env_payload(payload: str) -> None:
    """Refuse a task whose compressed JSON cannot be passed in one environment variable."""
    size = len("TASK_JSON=") + len(payload) + 1
    if size > MAX_PAYLOAD_BYTES:
        raise DruidK8sConfigError(
            "task",
            f"the compressed task is {len(payload)} bytes, more than the {MAX_PAYLOAD_BYTES // 1024} KiB an "
            "environment variable can carry to the peon",
            "such a task must go through deep storage, which this provider does not do: make the task "
            "smaller (e.g. read inline data from an input source instead of embedding it)",
        )


def replace_env(env: list[dict[str, Any]], added: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append ``added`` to ``env``, dropping earlier variables of the same names.

    Kubernetes lets the last duplicate win, so the effect is Druid's (which appends); without duplicates the
    manifest is unambiguous for every reader.
    """
    names = {var["name"] for var in added}
    return [var for var in env if var.get("name") not in names] + [dict(var) for var in added]


def as_native_sidecar(container: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes 1.29+ sidecar: an init container that keeps running and is stopped after the main one."""
    container["restartPolicy"] = "Always"
    return container


def primary_first(containers: list[dict[str, Any]], primary_name: str | None) -> list[dict[str, Any]]:
    """The containers with the primary (Druid) one first; by default the first container is the primary."""
    if not primary_name:
        return list(containers)
    names = [container["name"] for container in containers]
    if primary_name not in names:
        raise DruidK8sConfigError(
            PRIMARY_CONTAINER_PROPERTY,
            f"the template pod has no container named {primary_name!r}; its containers are {names}",
            f"set {PRIMARY_CONTAINER_PROPERTY} to one of {names}, or unset it to use the first container",
        )
    index = names.index(primary_name)
    return [containers[index], *containers[:index], *containers[index + 1 :]]


# --- template validation ---------------------------------------------------------------------------------


def overlord_pod_spec(template: Mapping[str, Any]) -> dict[str, Any]:
    """A private copy of the Overlord pod's spec, after checking the template is a v1 Pod with containers."""
    if not isinstance(template, Mapping):
        raise DruidK8sConfigError(
            "template",
            f"the template is a {type(template).__name__}, not a pod in API form",
            "pass the Overlord pod as a dict in API form (camelCase), as the Kubernetes API returns it",
        )
    _check_kind(template, "Pod", "template", "the overlord adapters need the Overlord pod (kind: Pod)")
    spec = template.get("spec")
    _check_pod_spec(spec, "template.spec")
    return copy.deepcopy(dict(spec))  # type: ignore[arg-type]


def pod_template_spec(pod_template: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``template`` (metadata + spec) of a v1 PodTemplate, after checking it."""
    if not isinstance(pod_template, Mapping):
        raise DruidK8sConfigError(
            where, f"the template is a {type(pod_template).__name__}", "pass a v1/PodTemplate as a dict"
        )
    _check_kind(pod_template, "PodTemplate", where, f"{CUSTOM_TEMPLATE_ADAPTER} needs a v1/PodTemplate")
    template_spec = pod_template.get("template")
    if not isinstance(template_spec, dict):
        raise DruidK8sConfigError(
            f"{where}.template",
            "the PodTemplate has no 'template' object",
            "write the pod under 'template:' with 'metadata' and 'spec', as in a v1/PodTemplate",
        )
    _check_pod_spec(template_spec.get("spec"), f"{where}.template.spec")
    return template_spec


def _check_kind(document: Mapping[str, Any], kind: str, where: str, fix: str) -> None:
    """Refuse a document that says it is something else (pods listed by the API carry no kind: allowed)."""
    if "kind" in document and document["kind"] != kind:
        raise DruidK8sConfigError(
            f"{where}.kind", f"the template is a {document['kind']!r}, not a {kind}", fix
        )
    if "apiVersion" in document and document["apiVersion"] != "v1":
        raise DruidK8sConfigError(
            f"{where}.apiVersion",
            f"apiVersion is {document['apiVersion']!r}, not 'v1'",
            f"use apiVersion: v1 ({fix})",
        )


def _check_pod_spec(spec: Any, where: str) -> None:
    """A pod spec in API form with at least one named container."""
    if not isinstance(spec, Mapping):
        raise DruidK8sConfigError(
            where, "the template has no pod spec", "give the template a 'spec' with containers"
        )
    snake = sorted(key for key in spec if "_" in key)
    if snake:
        raise DruidK8sConfigError(
            where,
            f"fields {snake} are in the Python client's snake_case form",
            "pass the API form (camelCase), e.g. ApiClient().sanitize_for_serialization(pod)",
        )
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise DruidK8sConfigError(
            f"{where}.containers",
            "the template has no containers",
            "give the template pod at least one container: the Druid container that runs the peon",
        )
    seen: set[str] = set()
    for index, container in enumerate(containers):
        name = container.get("name") if isinstance(container, Mapping) else None
        if not isinstance(name, str) or not name:
            raise DruidK8sConfigError(
                f"{where}.containers[{index}]", "the container has no name", "give every container a name"
            )
        if name in seen:
            raise DruidK8sConfigError(
                f"{where}.containers[{name}]",
                "two containers have this name",
                "give every container its own name",
            )
        seen.add(name)
