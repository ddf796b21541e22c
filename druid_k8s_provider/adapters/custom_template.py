"""``customTemplateAdapter``: the peon pod from a ``v1/PodTemplate`` file per task type (section 5).

The containers are kept as written; the Druid container gets the task's env, the pod the task's labels and
annotations. What the overlord adapters derive from runner options (``JAVA_OPTS``, memory, CPU, monitors)
is the template's business here, as in Druid: those options have no effect, and :func:`warn_ineffective`
says so once per option.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from druid_k8s_provider.adapters.common import (
    MAIN_CONTAINER_NAME,
    TASK_ANNOTATION,
    as_native_sidecar,
    broadcast_loading_mode,
    compress_task,
    pod_template_spec,
    primary_first,
    replace_env,
)
from druid_k8s_provider.adapters.layout import DruidLayout
from druid_k8s_provider.config import RunnerConfig, druid_name_of
from druid_k8s_provider.config_names import CUSTOM_TEMPLATE_ADAPTER, POD_TEMPLATE_PREFIX, RUNNER_PREFIX
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import TASK_JAVA_OPTS_CONTEXT_KEY, DruidTask
from druid_k8s_provider.template_selection import TemplateSelection

log = logging.getLogger(__name__)

#: Druid's annotation naming the pod template a Job was built from (Druid 31+, apache/druid PR 16772).
JOB_TEMPLATE_ANNOTATION = "task.jobTemplate"
BASE_TEMPLATE = "base"
BASE_TEMPLATE_PROPERTY = POD_TEMPLATE_PREFIX + BASE_TEMPLATE
#: Runner settings only the overlord adapters read (Druid's PodTemplateTaskAdapter ignores them too).
OVERLORD_ONLY_SETTINGS = (
    "java_opts_array",
    "peon_monitors",
    "cpu_core_in_micro",
    "kubexit_image",
    "sidecar_commands",
)
_DEFAULTS = RunnerConfig(namespace="default")
_warned: set[str] = set()


def load_pod_template(config: RunnerConfig, task: DruidTask, selection: TemplateSelection) -> dict[str, Any]:
    """The ``v1/PodTemplate`` for ``task``: the one ``selection`` picks (by default the task type's), else
    the base one.

    Without ``k8s.podTemplate.base`` every task is refused, whatever other templates exist: Druid refuses to
    start the adapter without it. The returned document records which template it is in its own
    ``metadata.annotations['task.jobTemplate']`` (``base``, a task type or a selection key), which
    :func:`custom_template_pod` copies to the Job as Druid does.
    """
    if not config.pod_template_base:
        raise DruidK8sConfigError(
            BASE_TEMPLATE_PROPERTY,
            f"{CUSTOM_TEMPLATE_ADAPTER} needs a base pod template, also when every task type has its own "
            "(Druid refuses to start the adapter without it)",
            f"set {BASE_TEMPLATE_PROPERTY} to a v1/PodTemplate file",
        )
    key = selection.template_key(task)
    if key is None or key not in config.pod_templates_by_type:
        key = BASE_TEMPLATE
    prop = POD_TEMPLATE_PREFIX + key
    path = config.pod_template_base if key == BASE_TEMPLATE else config.pod_templates_by_type[key]
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
    pod_template_spec(loaded, where=f"{prop} ({path})")
    metadata = loaded.setdefault("metadata", {}) or {}
    loaded["metadata"] = metadata
    metadata["annotations"] = {**(metadata.get("annotations") or {}), JOB_TEMPLATE_ANNOTATION: key}
    return loaded


def template_name(template: Mapping[str, Any]) -> str | None:
    """The template's name as :func:`load_pod_template` recorded it, or None for a template given directly."""
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    name = annotations.get(JOB_TEMPLATE_ANNOTATION)
    return name if isinstance(name, str) else None


def custom_template_pod(
    task: DruidTask,
    template: Mapping[str, Any],
    config: RunnerConfig,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    layout: DruidLayout,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 5: the pod template as written, plus the task's labels, annotations and environment."""
    warn_ineffective(config, task)
    pod_template = copy.deepcopy(dict(template))
    template_spec = pod_template_spec(pod_template, where="template")
    metadata = template_spec.get("metadata") or {}
    spec = template_spec["spec"]
    containers = primary_first(spec["containers"], config.primary_container_name)
    main = containers[0]
    # Ours: the Druid container is called `main` as with the overlord adapters, so logs and status are
    # always read from the same container name.
    main["name"] = MAIN_CONTAINER_NAME
    payload = compress_task(task)
    broadcast_mode = (
        [{"name": "LOAD_BROADCAST_DATASOURCE_MODE", "value": broadcast_loading_mode(task)}]
        if layout.broadcast_datasource_mode
        else []
    )
    env: list[dict[str, Any]] = [
        {"name": "TASK_DIR", "value": config.base_task_dir},
        {"name": "TASK_ID", "value": task.id},
        *broadcast_mode,
        {"name": "LOAD_BROADCAST_SEGMENTS", "value": "true" if task.serves_queries else "false"},
        {
            "name": "TASK_JSON",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{TASK_ANNOTATION}']"}},
        },
    ]
    main["env"] = replace_env(list(main.get("env") or []), env)
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
            *(as_native_sidecar(c) for c in containers[1:]),
        ]
    spec["restartPolicy"] = "Never"
    if config.grace_termination_period_seconds is not None:
        spec["terminationGracePeriodSeconds"] = config.grace_termination_period_seconds
    name = template_name(template)
    job_template = {JOB_TEMPLATE_ANNOTATION: name} if layout.job_template_annotation and name else {}
    pod_metadata = {
        "labels": {**(metadata.get("labels") or {}), **labels},
        "annotations": {
            **(metadata.get("annotations") or {}),
            **annotations,
            TASK_ANNOTATION: payload,
            **job_template,
        },
    }
    return pod_metadata, spec


def warn_ineffective(config: RunnerConfig, task: DruidTask) -> None:
    """Warn once per option that this adapter ignores although it is set: the overlord adapters' runner
    options, and a task context's ``druid.indexer.runner.javaOpts``."""
    ignored = [
        druid_name_of(setting)
        for setting in OVERLORD_ONLY_SETTINGS
        if getattr(config, setting) != getattr(_DEFAULTS, setting)
    ]
    if task.java_opts:
        ignored.append(f"task context {TASK_JAVA_OPTS_CONTEXT_KEY}")
    for option in ignored:
        if option in _warned:
            continue
        _warned.add(option)
        log.warning(
            "%s has no effect with %s (as in Druid): the pod template decides the peon's JVM options and "
            "resources. Set JAVA_OPTS, resources or env in the template (Druid's peon.sh also reads the "
            "jvm.config of its configuration directory), or use an overlord adapter.",
            option,
            CUSTOM_TEMPLATE_ADAPTER,
        )
