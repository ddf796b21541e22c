"""Turn a Druid task, a template pod and the runner configuration into the Job Druid's runner would create.

Three adapters, as in Druid (``druid.indexer.runner.k8s.adapter.type``), in ``druid_k8s_provider.adapters``:

- ``overlordSingleContainer`` and ``overlordMultiContainer`` (:mod:`~druid_k8s_provider.adapters.overlord`):
  the Overlord pod's primary container becomes the peon, the multi-container one keeping its sidecars;
- ``customTemplateAdapter`` (:mod:`~druid_k8s_provider.adapters.custom_template`): a ``v1/PodTemplate``
  file per task type.

The Job is the one the Druid release running the peon builds (:mod:`~druid_k8s_provider.adapters.layout`):
``druid_version`` (argument, else ``RunnerConfig.druid_version``), the current release's layout when
neither is given.

Everything is a pure function of its inputs: the same task, template, configuration and version give the
same Job, byte for byte (the gzip header carries no timestamp), which is what lets a relaunch join the Job
it created. The template is never modified; the Job shares no object with it. Every input problem is
raised as a :class:`DruidK8sConfigError` before anything is sent to Kubernetes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from druid_k8s_provider import naming
from druid_k8s_provider.adapters import custom_template
from druid_k8s_provider.adapters.common import (
    MAIN_CONTAINER_NAME,
    MAX_PAYLOAD_BYTES,
    TASK_ANNOTATION,
    compress_task,
    decompress_task,
)
from druid_k8s_provider.adapters.jvm import (
    DEFAULT_HEAP,
    PEON_PORT,
    PEON_TLS_PORT,
    container_memory_bytes,
    parse_human_readable_bytes,
    split_java_opts,
)
from druid_k8s_provider.adapters.layout import DruidLayout, layout_for
from druid_k8s_provider.adapters.overlord import overlord_pod
from druid_k8s_provider.config import RunnerConfig, druid_name_of
from druid_k8s_provider.config_names import CUSTOM_TEMPLATE_ADAPTER, RUNNER_PREFIX
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.template_selection import TemplateSelection

__all__ = [
    "DEFAULT_HEAP",
    "DEFAULT_SELECTION",
    "MAIN_CONTAINER_NAME",
    "MAX_PAYLOAD_BYTES",
    "PEON_PORT",
    "PEON_TLS_PORT",
    "TASK_ANNOTATION",
    "build_job",
    "compress_task",
    "container_memory_bytes",
    "decompress_task",
    "load_pod_template",
    "parse_human_readable_bytes",
    "peon_job_name",
    "split_java_opts",
]

log = logging.getLogger(__name__)

_POD_NAME_PREFIX_PROPERTY = RUNNER_PREFIX + "k8sTaskPodNamePrefix"
_warned_prefix_versions: set[tuple[int, int, int]] = set()

#: Druid's default pod template selection: by task type.
DEFAULT_SELECTION = TemplateSelection()


def build_job(
    task: DruidTask | Mapping[str, Any] | str,
    template: Mapping[str, Any],
    config: RunnerConfig,
    *,
    druid_version: str | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job for ``task``, as a plain dict in API form (camelCase), ready to POST.

    ``template`` is the Overlord pod (a ``v1`` Pod, as read from the API) for the overlord adapters, or a
    ``v1`` PodTemplate for ``customTemplateAdapter`` (see :func:`load_pod_template`). ``druid_version``
    (plain ``X.Y.Z``, e.g. from the Overlord's ``/status``) overrides ``config.druid_version``; with neither,
    the Job is the current Druid release's (see :func:`~druid_k8s_provider.adapters.layout.layout_for`).
    """
    druid_task = task if isinstance(task, DruidTask) else DruidTask.from_spec(task)
    layout = _layout(config, druid_version)
    name = _job_name(druid_task.id, config, layout)
    labels = naming.peon_labels(druid_task, config.labels)
    annotations = naming.peon_annotations(druid_task, config.annotations, config.enable_tls_port)
    if config.adapter_type == CUSTOM_TEMPLATE_ADAPTER:
        if layout.overlord_namespace_label:
            labels[naming.OVERLORD_NAMESPACE_LABEL] = config.overlord_namespace or config.namespace
        pod_metadata, pod_spec = custom_template.custom_template_pod(
            druid_task, template, config, labels, annotations, layout
        )
        template_name = custom_template.template_name(template)
        if layout.job_template_annotation and template_name:
            annotations[custom_template.JOB_TEMPLATE_ANNOTATION] = template_name
    else:
        pod_metadata = {"labels": dict(labels), "annotations": dict(annotations)}
        pod_spec = overlord_pod(druid_task, template, config, name, layout)
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


def peon_job_name(task_id: str, config: RunnerConfig, *, druid_version: str | None = None) -> str:
    """The name :func:`build_job` gives the Job of ``task_id``: Druid's, with ``k8sTaskPodNamePrefix`` in
    place of the id's characters from Druid 33 on (see :func:`naming.job_name`)."""
    return _job_name(task_id, config, _layout(config, druid_version))


def load_pod_template(
    config: RunnerConfig, task: DruidTask, selection: TemplateSelection = DEFAULT_SELECTION
) -> dict[str, Any]:
    """The ``v1/PodTemplate`` for ``task`` from the custom adapter's files: the one ``selection`` picks (by
    default the task type's), else the base one. Refused without ``k8s.podTemplate.base``, as in Druid."""
    return custom_template.load_pod_template(config, task, selection)


def _layout(config: RunnerConfig, druid_version: str | None) -> DruidLayout:
    if druid_version is not None:
        return layout_for(druid_version)
    return layout_for(config.druid_version, druid_name_of("druid_version"))


def _job_name(task_id: str, config: RunnerConfig, layout: DruidLayout) -> str:
    prefix = config.k8s_task_pod_name_prefix
    if prefix and not layout.pod_name_prefix:
        if layout.version not in _warned_prefix_versions:
            _warned_prefix_versions.add(layout.version)
            log.warning(
                "%s is ignored: Druid %s names Jobs after the task id (the prefix came with Druid 33.0.0)",
                _POD_NAME_PREFIX_PROPERTY,
                ".".join(map(str, layout.version)),
            )
        prefix = None
    return naming.job_name(task_id, prefix)


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
