"""Turn a Druid task, a template pod and the runner configuration into the Job Druid's runner would create.

Three adapters, as in Druid (``druid.indexer.runner.k8s.adapter.type``):

- ``overlordSingleContainer``: the Overlord pod's primary container becomes the peon (section 3 of the spec);
- ``overlordMultiContainer``: the same, keeping the Overlord's sidecars, stopped with kubexit when the peon
  ends (section 4) or, ours, run as native Kubernetes sidecars (``sidecarTermination=native``);
- ``customTemplateAdapter``: a ``v1/PodTemplate`` file per task type (section 5).

Everything is a pure function of its inputs: the same task, template and configuration give the same Job,
byte for byte (the gzip header carries no timestamp), which is what lets a relaunch join the Job it created.
The template is never modified; the Job shares no object with it. Every input problem is raised as a
:class:`DruidK8sConfigError` before anything is sent to Kubernetes.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from druid_k8s_provider import naming
from druid_k8s_provider.config import (
    CUSTOM_TEMPLATE_ADAPTER,
    MULTI_CONTAINER_ADAPTER,
    POD_TEMPLATE_PREFIX,
    RUNNER_PREFIX,
    RunnerConfig,
)
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import TASK_JAVA_OPTS_CONTEXT_KEY, DruidTask
from druid_k8s_provider.template_selection import TemplateSelection

log = logging.getLogger(__name__)

MAIN_CONTAINER_NAME = "main"
PEON_PORT = 8100
PEON_TLS_PORT = 8091
TASK_ANNOTATION = "task"
# Linux refuses to exec a process with one environment string over MAX_ARG_STRLEN (32 pages = 128 KiB), and
# we hold annotations to the same bound (Kubernetes allows 256 KiB in total): a bigger task must reach the
# peon through deep storage, as Druid does for large payloads.
MAX_PAYLOAD_BYTES = 128 * 1024
DEFAULT_HEAP = "1g"

_JAVA_OPTS_ARRAY_PROPERTY = RUNNER_PREFIX + "javaOptsArray"
_PRIMARY_CONTAINER_PROPERTY = RUNNER_PREFIX + "primaryContainerName"
_SIDECAR_COMMANDS_PROPERTY = RUNNER_PREFIX + "sidecarCommands"
_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
_GRAVEYARD = "graveyard"
_KUBEXIT = "kubexit"
# Guava's breaking whitespace, which Druid's option splitter uses, excludes the non-breaking spaces.
_NON_BREAKING_SPACES = "\u00a0\u2007\u202f"
_DECIMAL_UNITS = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_BINARY_UNITS = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}


# --- public API ------------------------------------------------------------------------------------------


def build_job(
    task: DruidTask | Mapping[str, Any] | str, template: Mapping[str, Any], config: RunnerConfig
) -> dict[str, Any]:
    """The ``batch/v1`` Job for ``task``, as a plain dict in API form (camelCase), ready to POST.

    ``template`` is the Overlord pod (a ``v1`` Pod, as read from the API) for the overlord adapters, or a
    ``v1`` PodTemplate for ``customTemplateAdapter`` (see :func:`load_pod_template`).
    """
    druid_task = task if isinstance(task, DruidTask) else DruidTask.from_spec(task)
    name = naming.job_name(druid_task.id)
    labels = naming.peon_labels(druid_task, config.labels)
    annotations = naming.peon_annotations(druid_task, config.annotations, config.enable_tls_port)
    if config.adapter_type == CUSTOM_TEMPLATE_ADAPTER:
        pod_metadata, pod_spec = _custom_template_pod(druid_task, template, config, labels, annotations)
    else:
        pod_metadata = {"labels": dict(labels), "annotations": dict(annotations)}
        pod_spec = _overlord_pod(druid_task, template, config, name)
    _check_annotation_size("metadata.annotations", annotations)
    _check_annotation_size("spec.template.metadata.annotations", pod_metadata["annotations"])
    job_spec: dict[str, Any] = {
        "activeDeadlineSeconds": int(config.max_task_duration.total_seconds()),
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": int(config.task_cleanup_delay.total_seconds()),
        "template": {"metadata": pod_metadata, "spec": pod_spec},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


#: Druid's default pod template selection: by task type.
DEFAULT_SELECTION = TemplateSelection()


def load_pod_template(
    config: RunnerConfig, task: DruidTask, selection: TemplateSelection = DEFAULT_SELECTION
) -> dict[str, Any]:
    """The ``v1/PodTemplate`` for ``task`` from the custom adapter's files: the one ``selection`` picks (by
    default the task type's), else the base one."""
    key = selection.template_key(task)
    if key is not None and key in config.pod_templates_by_type:
        prop, path = POD_TEMPLATE_PREFIX + key, config.pod_templates_by_type[key]
    elif config.pod_template_base:
        prop, path = POD_TEMPLATE_PREFIX + "base", config.pod_template_base
    else:
        if key == task.type:
            missing = f"no pod template for task type {task.type!r}"
        elif key is None:
            missing = f"no pod template selector matching task {task.id!r}"
        else:
            missing = f"no pod template {key!r} (the selector's choice for task {task.id!r})"
        raise DruidK8sConfigError(
            POD_TEMPLATE_PREFIX + "base",
            f"{CUSTOM_TEMPLATE_ADAPTER} has {missing} and no base template",
            f"set {POD_TEMPLATE_PREFIX}base (or {POD_TEMPLATE_PREFIX}{key or task.type}) to a v1/PodTemplate "
            "file",
        )
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DruidK8sConfigError(
            prop,
            f"cannot read the pod template file {path!r}: {error.strerror or error}",
            "point the property at a readable v1/PodTemplate YAML file",
        ) from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DruidK8sConfigError(
            prop,
            f"the pod template file {path!r} is not valid YAML: {error}",
            "fix the YAML syntax of the file",
        ) from error
    if not isinstance(loaded, dict):
        raise DruidK8sConfigError(
            prop, f"the pod template file {path!r} holds no YAML mapping", "write a v1/PodTemplate document"
        )
    _pod_template_spec(loaded, where=f"{prop} ({path})")
    return loaded


def compress_task(task: DruidTask) -> str:
    """The task as the peon reads it from ``TASK_JSON``: base64 of the gzip of the task JSON."""
    return base64.b64encode(gzip.compress(task.to_json().encode("utf-8"), mtime=0)).decode("ascii")


def decompress_task(payload: str) -> dict[str, Any]:
    """Inverse of :func:`compress_task`, for tests and for re-reading a Job's task."""
    decoded = json.loads(gzip.decompress(base64.b64decode(payload)).decode("utf-8"))
    if not isinstance(decoded, dict):
        raise ValueError("the payload does not hold a JSON object")
    return decoded


def java_options(task: DruidTask, config: RunnerConfig) -> list[str]:
    """The peon's JVM options, in Druid's order: runner array, task context, then the port settings."""
    tls = config.enable_tls_port
    tls_port = PEON_TLS_PORT if tls else -1
    return [
        *config.java_opts_array,
        *split_java_opts(task.java_opts or ""),
        f"-Ddruid.port={PEON_PORT}",
        f"-Ddruid.plaintextPort={PEON_PORT}",
        f"-Ddruid.tlsPort={tls_port}",
        f"-Ddruid.task.executor.tlsPort={tls_port}",
        f"-Ddruid.task.executor.enableTlsPort={'true' if tls else 'false'}",
    ]


def split_java_opts(text: str) -> list[str]:
    """Split options on white space outside double quotes, keeping the quotes, as Druid's splitter does."""
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    for character in text:
        if character == '"':
            in_quotes = not in_quotes
        if not in_quotes and character.isspace() and character not in _NON_BREAKING_SPACES:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(character)
    if current:
        tokens.append("".join(current))
    return tokens


def parse_human_readable_bytes(text: str) -> int:
    """Druid's human-readable byte sizes: ``k/m/g/t/p`` are powers of 1000, ``KiB``... powers of 1024."""
    stripped = text.strip()
    lowered = stripped.lower()
    multiplier = 1
    digits = stripped
    for units in (_BINARY_UNITS, _DECIMAL_UNITS):
        for suffix, factor in units.items():
            if lowered.endswith(suffix):
                multiplier, digits = factor, stripped[: -len(suffix)]
                break
        if multiplier != 1:
            break
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(
            f"{text!r} is not a size (a whole number, optionally with k, m, g, t, KiB, MiB, GiB, TiB)"
        )
    return int(digits) * multiplier


def container_memory_bytes(options: Sequence[str], sources: str = _JAVA_OPTS_ARRAY_PROPERTY) -> int:
    """1.2 x (heap + direct memory), as Druid sizes the peon container (Java double arithmetic, truncated).

    Heap is the last ``-Xmx`` (default 1g), direct memory the last ``-XX:MaxDirectMemorySize=`` (default: the
    heap). ``sources`` names where the options came from, for the error message.
    """
    heap = _last_size(options, "-Xmx", sources) or parse_human_readable_bytes(DEFAULT_HEAP)
    direct = _last_size(options, "-XX:MaxDirectMemorySize=", sources) or heap
    return int((heap + direct) * 1.2)


# --- overlord adapters -----------------------------------------------------------------------------------


def _overlord_pod(
    task: DruidTask, template: Mapping[str, Any], config: RunnerConfig, name: str
) -> dict[str, Any]:
    """Pod spec of sections 3 and 4: the Overlord pod's spec with the peon as its first container."""
    spec = _overlord_pod_spec(template)
    containers = _primary_first(spec["containers"], config.primary_container_name)
    multi = config.adapter_type == MULTI_CONTAINER_ADAPTER
    main, sidecars = containers[0], (containers[1:] if multi else [])
    _make_main_container(main, task, config)
    spec.pop("nodeName", None)
    spec.pop("ephemeralContainers", None)  # ours: the API refuses them in a pod template
    spec["restartPolicy"] = "Never"
    spec["hostname"] = name
    if config.grace_termination_period_seconds is not None:
        spec["terminationGracePeriodSeconds"] = config.grace_termination_period_seconds
    if multi:
        _check_sidecar_commands_name_sidecars(sidecars, config)
    if multi and config.sidecar_termination == "native":
        spec["containers"] = [main]
        spec["initContainers"] = [
            *(spec.get("initContainers") or []),
            *(_as_native_sidecar(c) for c in sidecars),
        ]
    elif multi:
        spec["containers"] = [main, *sidecars]
        _wire_kubexit(spec, config)
    else:
        spec["containers"] = [main]
    return spec


def _make_main_container(main: dict[str, Any], task: DruidTask, config: RunnerConfig) -> None:
    """Rename, re-port, re-command and re-size the peon container, and hand it the task (section 3)."""
    options = java_options(task, config)
    sources = _JAVA_OPTS_ARRAY_PROPERTY + (
        f" / task context {TASK_JAVA_OPTS_CONTEXT_KEY}" if task.java_opts else ""
    )
    memory = container_memory_bytes(options, sources)
    main["name"] = MAIN_CONTAINER_NAME
    for probe in _PROBES:
        main.pop(probe, None)
    main["ports"] = [
        {"name": "druid-tls-port", "containerPort": PEON_TLS_PORT, "protocol": "TCP"},
        {"name": "druid-port", "containerPort": PEON_PORT, "protocol": "TCP"},
    ]
    main["command"] = ["sh", "-c"]
    main["args"] = [_peon_command(task, config)]
    env = list(main.get("env") or [])
    if config.peon_monitors:
        env = [var for var in env if var.get("name") != "druid_monitoring_monitors"]
        env.append(
            {
                "name": "druid_monitoring_monitors",
                "value": json.dumps(list(config.peon_monitors), separators=(",", ":")),
            }
        )
    payload = compress_task(task)
    _check_env_payload(payload)
    added: list[dict[str, Any]] = [
        {"name": "TASK_DIR", "value": config.base_task_dir},
        {"name": "TASK_JSON", "value": payload},
        {"name": "JAVA_OPTS", "value": " ".join(options)},
        {"name": "druid_host", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "TASK_ID", "value": task.id},
    ]
    main["env"] = _replace_env(env, added)
    resources = main.get("resources") or {}
    sizes = {"cpu": f"{config.cpu_core_in_micro}m", "memory": str(memory)}
    main["resources"] = {
        **resources,
        "requests": {**(resources.get("requests") or {}), **sizes},
        "limits": {**(resources.get("limits") or {}), **sizes},
    }


def _peon_command(task: DruidTask, config: RunnerConfig) -> str:
    """``/peon.sh <baseTaskDir> 1`` with the node type and broadcast-segment flags the task needs."""
    command = f"/peon.sh {config.base_task_dir} 1"
    if task.node_type:
        command += f" --nodeType {task.node_type}"
    if task.serves_queries:
        command += " --loadBroadcastSegments true"
    return command


def _wire_kubexit(spec: dict[str, Any], config: RunnerConfig) -> None:
    """Section 4: every container runs under kubexit; sidecars die when ``main`` does."""
    existing = {volume.get("name") for volume in spec.get("volumes") or []}
    for volume_name in (_GRAVEYARD, _KUBEXIT):
        if volume_name in existing:
            raise DruidK8sConfigError(
                f"template.spec.volumes[{volume_name}]",
                f"the template already has a volume named {volume_name!r}, which kubexit needs",
                "rename that volume in the Overlord pod, or use sidecarTermination=native",
            )
    spec["volumes"] = [
        *(spec.get("volumes") or []),
        {"name": _GRAVEYARD, "emptyDir": {"medium": "Memory"}},
        {"name": _KUBEXIT, "emptyDir": {}},
    ]
    mounts = [{"name": _GRAVEYARD, "mountPath": "/graveyard"}, {"name": _KUBEXIT, "mountPath": "/kubexit"}]
    main, *sidecars = spec["containers"]
    for container in spec["containers"]:
        env = [*(container.get("env") or []), {"name": "KUBEXIT_NAME", "value": container["name"]}]
        env.append({"name": "KUBEXIT_GRAVEYARD", "value": "/graveyard"})
        if container is not main:
            env.append({"name": "KUBEXIT_DEATH_DEPS", "value": MAIN_CONTAINER_NAME})
        container["env"] = env
        container["volumeMounts"] = [*(container.get("volumeMounts") or []), *copy.deepcopy(mounts)]
    main["args"] = [_under_kubexit(" ".join(main["args"]))]
    main["command"] = ["/bin/sh", "-c"]
    for sidecar in sidecars:
        command = _sidecar_command(sidecar, config)
        sidecar["command"] = ["/bin/sh", "-c"]
        sidecar["args"] = [_under_kubexit(" ".join(command)) + " || true"]
    spec["initContainers"] = [
        *(spec.get("initContainers") or []),
        {
            "name": _KUBEXIT,
            "image": config.kubexit_image,
            "command": ["cp", "/bin/kubexit", "/kubexit/kubexit"],
            "volumeMounts": [{"name": _KUBEXIT, "mountPath": "/kubexit"}],
        },
    ]


def _under_kubexit(command_line: str) -> str:
    """``/kubexit/kubexit /bin/sh -c "<command>"`` with backslashes and double quotes escaped."""
    escaped = command_line.replace("\\", "\\\\").replace('"', '\\"')
    return f'/kubexit/kubexit /bin/sh -c "{escaped}"'


def _sidecar_command(sidecar: Mapping[str, Any], config: RunnerConfig) -> list[str]:
    """The full command line a sidecar runs: its command (or the configured override) and its args.

    A sidecar without an explicit command runs its image's entrypoint, which the Overlord pod does not say;
    it cannot be wrapped in kubexit. Druid fails obscurely on it; we refuse before launch.
    """
    name = sidecar["name"]
    command = sidecar.get("command") or list(config.sidecar_commands.get(name, ()))
    if not command:
        raise DruidK8sConfigError(
            f"template.spec.containers[{name}].command",
            f"sidecar container {name!r} has no explicit command, so it cannot be wrapped in kubexit "
            "(its image entrypoint is unknown)",
            f"set {_SIDECAR_COMMANDS_PROPERTY} to a JSON object such as "
            f'{{"{name}": ["<entrypoint of its image>"]}}, or set {RUNNER_PREFIX}sidecarTermination=native '
            "(Kubernetes 1.29+ native sidecars need no command)",
        )
    return [*command, *(sidecar.get("args") or [])]


def _check_sidecar_commands_name_sidecars(
    sidecars: Sequence[Mapping[str, Any]], config: RunnerConfig
) -> None:
    """A command override for a container that is not a sidecar of the template is a typo."""
    names = [sidecar["name"] for sidecar in sidecars]
    unknown = sorted(set(config.sidecar_commands) - set(names))
    if unknown:
        raise DruidK8sConfigError(
            _SIDECAR_COMMANDS_PROPERTY,
            f"names {unknown} that are not sidecars of the template pod (its sidecars: {names})",
            "use the names of the template pod's sidecar containers",
        )


def _as_native_sidecar(container: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes 1.29+ sidecar: an init container that keeps running and is stopped after the main one."""
    container["restartPolicy"] = "Always"
    return container


# --- custom template adapter -----------------------------------------------------------------------------


def _custom_template_pod(
    task: DruidTask,
    template: Mapping[str, Any],
    config: RunnerConfig,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 5: the pod template as written, plus the task's labels, annotations and environment."""
    pod_template = copy.deepcopy(dict(template))
    template_spec = _pod_template_spec(pod_template, where="template")
    metadata = template_spec.get("metadata") or {}
    spec = template_spec["spec"]
    containers = _primary_first(spec["containers"], config.primary_container_name)
    main = containers[0]
    # Ours: the Druid container is called `main` as with the overlord adapters, so logs and status are
    # always read from the same container name.
    main["name"] = MAIN_CONTAINER_NAME
    payload = compress_task(task)
    env: list[dict[str, Any]] = [
        {"name": "TASK_DIR", "value": config.base_task_dir},
        {"name": "TASK_ID", "value": task.id},
        {"name": "LOAD_BROADCAST_SEGMENTS", "value": "true" if task.serves_queries else "false"},
        {
            "name": "TASK_JSON",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{TASK_ANNOTATION}']"}},
        },
    ]
    main["env"] = _replace_env(list(main.get("env") or []), env)
    spec["containers"] = containers
    if config.sidecar_termination != "native" and len(containers) > 1:
        log.warning(
            "The pod template of task %s has sidecars %s; %s keeps them as written, so they must exit on "
            "their own or the Job never completes. Set %ssidecarTermination=native to run them as native "
            "sidecars (Kubernetes 1.29+).",
            task.id,
            [sidecar["name"] for sidecar in containers[1:]],
            CUSTOM_TEMPLATE_ADAPTER,
            RUNNER_PREFIX,
        )
    if config.sidecar_termination == "native" and len(containers) > 1:
        spec["containers"] = [main]
        spec["initContainers"] = [
            *(spec.get("initContainers") or []),
            *(_as_native_sidecar(c) for c in containers[1:]),
        ]
    spec["restartPolicy"] = "Never"
    if config.grace_termination_period_seconds is not None:
        spec["terminationGracePeriodSeconds"] = config.grace_termination_period_seconds
    pod_metadata = {
        "labels": {**(metadata.get("labels") or {}), **labels},
        "annotations": {**(metadata.get("annotations") or {}), **annotations, TASK_ANNOTATION: payload},
    }
    return pod_metadata, spec


# --- template validation ---------------------------------------------------------------------------------


def _overlord_pod_spec(template: Mapping[str, Any]) -> dict[str, Any]:
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


def _pod_template_spec(pod_template: Mapping[str, Any], where: str) -> dict[str, Any]:
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


def _primary_first(containers: list[dict[str, Any]], primary_name: str | None) -> list[dict[str, Any]]:
    """The containers with the primary (Druid) one first; by default the first container is the primary."""
    if not primary_name:
        return list(containers)
    names = [container["name"] for container in containers]
    if primary_name not in names:
        raise DruidK8sConfigError(
            _PRIMARY_CONTAINER_PROPERTY,
            f"the template pod has no container named {primary_name!r}; its containers are {names}",
            f"set {_PRIMARY_CONTAINER_PROPERTY} to one of {names}, or unset it to use the first container",
        )
    index = names.index(primary_name)
    return [containers[index], *containers[:index], *containers[index + 1 :]]


# --- helpers ---------------------------------------------------------------------------------------------


def _replace_env(env: list[dict[str, Any]], added: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append ``added`` to ``env``, dropping earlier variables of the same names.

    Kubernetes lets the last duplicate win, so the effect is Druid's (which appends); without duplicates the
    manifest is unambiguous for every reader.
    """
    names = {var["name"] for var in added}
    return [var for var in env if var.get("name") not in names] + [dict(var) for var in added]


def _last_size(options: Sequence[str], prefix: str, sources: str) -> int | None:
    """The size given by the last option starting with ``prefix``, or None when there is none."""
    matching = [option for option in options if option.startswith(prefix)]
    if not matching:
        return None
    try:
        return parse_human_readable_bytes(matching[-1][len(prefix) :])
    except ValueError as error:
        raise DruidK8sConfigError(
            sources,
            f"JVM option {matching[-1]!r}: {error}",
            f"write the size as Druid reads it, e.g. {prefix}2g (10^9 bytes) or {prefix}2GiB (2^30 bytes)",
        ) from error


def _check_env_payload(payload: str) -> None:
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


def _check_annotation_size(where: str, annotations: Mapping[str, str]) -> None:
    """Refuse annotations over 128 KiB in total (keys and values), naming the transport problem."""
    size = sum(len(key.encode("utf-8")) + len(value.encode("utf-8")) for key, value in annotations.items())
    if size <= MAX_PAYLOAD_BYTES:
        return
    if TASK_ANNOTATION in annotations:
        raise DruidK8sConfigError(
            "task",
            f"the compressed task makes {where} {size} bytes, over the {MAX_PAYLOAD_BYTES // 1024} KiB a "
            "pod template's annotations may carry",
            "such a payload must go through deep storage, which this provider does not do: make the task "
            "smaller (e.g. read inline data from an input source instead of embedding it)",
        )
    raise DruidK8sConfigError(
        RUNNER_PREFIX + "annotations",
        f"{where} take {size} bytes, over {MAX_PAYLOAD_BYTES // 1024} KiB",
        "keep annotations small; put large data in a ConfigMap",
    )
