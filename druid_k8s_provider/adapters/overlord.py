"""``overlordSingleContainer`` and ``overlordMultiContainer``: the peon pod from the Overlord's own pod.

The Overlord pod's primary container becomes the peon (section 3 of the spec); the multi-container adapter
keeps the Overlord's sidecars, stopped with kubexit when the peon ends (section 4) or, ours, run as native
Kubernetes sidecars (``sidecarTermination=native``).
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from druid_k8s_provider.adapters.common import (
    MAIN_CONTAINER_NAME,
    as_native_sidecar,
    broadcast_loading_mode,
    check_env_payload,
    compress_task,
    overlord_pod_spec,
    primary_first,
    replace_env,
)
from druid_k8s_provider.adapters.jvm import (
    JAVA_OPTS_ARRAY_PROPERTY,
    PEON_PORT,
    PEON_TLS_PORT,
    container_memory_bytes,
    java_options,
)
from druid_k8s_provider.adapters.layout import DruidLayout
from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.config_names import MULTI_CONTAINER_ADAPTER, RUNNER_PREFIX
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import TASK_JAVA_OPTS_CONTEXT_KEY, DruidTask

_SIDECAR_COMMANDS_PROPERTY = RUNNER_PREFIX + "sidecarCommands"
_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
_GRAVEYARD = "graveyard"
_KUBEXIT = "kubexit"


def overlord_pod(
    task: DruidTask, template: Mapping[str, Any], config: RunnerConfig, name: str, layout: DruidLayout
) -> dict[str, Any]:
    """Pod spec of sections 3 and 4: the Overlord pod's spec with the peon as its first container."""
    spec = overlord_pod_spec(template)
    containers = primary_first(spec["containers"], config.primary_container_name)
    multi = config.adapter_type == MULTI_CONTAINER_ADAPTER
    main, sidecars = containers[0], (containers[1:] if multi else [])
    _make_main_container(main, task, config, layout)
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
            *(as_native_sidecar(c) for c in sidecars),
        ]
    elif multi:
        spec["containers"] = [main, *sidecars]
        _wire_kubexit(spec, config)
    else:
        spec["containers"] = [main]
    return spec


def peon_task_dir(task: DruidTask, config: RunnerConfig, layout: DruidLayout) -> str:
    """``TASK_DIR``: the base task directory, or from Druid 34 on the task's own directory under it."""
    if layout.task_dir_from_peon_script:
        return str(PurePosixPath(config.base_task_dir) / task.id)
    return config.base_task_dir


def peon_command(task: DruidTask, config: RunnerConfig, layout: DruidLayout) -> str:
    """The peon command line of ``sh -c``, as the Druid release of ``layout`` writes it.

    ``/peon.sh`` [``<baseTaskDir> 1`` before Druid 34] [``--nodeType T``] [``--loadBroadcastSegments true``
    for tasks that serve queries] [``--loadBroadcastDatasourceMode M`` from Druid 31] ``--taskId ID``. Ours:
    the directory and the id are shell-quoted when they hold characters the shell would split or expand;
    the usual ones need no quotes and come out as Druid writes them.
    """
    words = ["/peon.sh"]
    if not layout.task_dir_from_peon_script:
        words += [shlex.quote(config.base_task_dir), "1"]
    if task.node_type:
        words += ["--nodeType", task.node_type]
    if task.serves_queries:
        words += ["--loadBroadcastSegments", "true"]
    if layout.broadcast_datasource_mode:
        words += ["--loadBroadcastDatasourceMode", broadcast_loading_mode(task)]
    words += ["--taskId", shlex.quote(task.id)]
    return " ".join(words)


def _make_main_container(
    main: dict[str, Any], task: DruidTask, config: RunnerConfig, layout: DruidLayout
) -> None:
    """Rename, re-port, re-command and re-size the peon container, and hand it the task (section 3)."""
    options = java_options(task, config, layout)
    sources = JAVA_OPTS_ARRAY_PROPERTY + (
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
    main["args"] = [peon_command(task, config, layout)]
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
    check_env_payload(payload)
    added: list[dict[str, Any]] = [
        {"name": "TASK_DIR", "value": peon_task_dir(task, config, layout)},
        {"name": "TASK_JSON", "value": payload},
        {"name": "JAVA_OPTS", "value": " ".join(options)},
        {"name": "druid_host", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # Ours: Druid sets TASK_ID only in pod template Jobs; here it lets every reader of the pod (and
        # peon.sh, which then passes the same --taskId once more) see the task without decoding TASK_JSON.
        {"name": "TASK_ID", "value": task.id},
    ]
    main["env"] = replace_env(env, added)
    resources = main.get("resources") or {}
    sizes = {"cpu": f"{config.cpu_core_in_micro}m", "memory": str(memory)}
    main["resources"] = {
        **resources,
        "requests": {**(resources.get("requests") or {}), **sizes},
        "limits": {**(resources.get("limits") or {}), **sizes},
    }


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
