"""Which of the operator's settings the launch through the Overlord leaves without effect, so it can say so.

Every task goes through the Overlord (spec ``druid-overlord.md``), which decides two things from its own
configuration whatever the operator is given:

- whether a finished task's Job is kept: the Overlord deletes it at completion unless its own
  ``druid.indexer.runner.debugJobs`` is true, in both launch modes;
- in ``launch_mode="overlord"``, the whole Job: its adapter, its pod template (the Overlord pod or the
  template files) and every property that shapes the pod come from the Overlord's ``runtime.properties``.

The operator still uses the namespace, the timeouts it waits with, ``disableClientProxy``, the name prefix
and the Druid version in every mode, so those are never named here. Pure functions; the operator logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from druid_k8s_provider.config import druid_name_of
from druid_k8s_provider.config_names import POD_TEMPLATE_PREFIX

#: ``RunnerConfig`` fields that only shape the Job the provider builds (``launch_mode="airflow"``).
_JOB_SHAPING_ATTRIBUTES = (
    "adapter_type",
    "sidecar_support",
    "primary_container_name",
    "kubexit_image",
    "java_opts_array",
    "labels",
    "annotations",
    "peon_monitors",
    "grace_termination_period_seconds",
    "cpu_core_in_micro",
    "pod_template_base",
    "overlord_namespace",
    "base_task_dir",
    "enable_tls_port",
    "sidecar_termination",
    "sidecar_commands",
)
#: Their Druid property names; the per-task-type pod templates (``k8s.podTemplate.<taskType>``) too.
JOB_SHAPING_PROPERTIES = frozenset(druid_name_of(attribute) for attribute in _JOB_SHAPING_ATTRIBUTES)
DEBUG_JOBS_PROPERTY = druid_name_of("debug_jobs")
#: The operator arguments that choose the Job's template (``launch_mode="airflow"`` only), and the
#: ``[druid_k8s]`` options that default two of them.
TEMPLATE_ARGUMENTS = ("overlord_pod_name", "overlord_pod_selector", "pod_template_file", "execution_config")
TEMPLATE_OPTIONS = ("overlord_pod_selector", "execution_config")


def job_shaping(names: Iterable[str]) -> list[str]:
    """The property names among ``names`` that shape only the Job the provider builds, in the given order:
    in ``launch_mode="overlord"`` the Overlord's own values apply instead."""
    return [name for name in names if name in JOB_SHAPING_PROPERTIES or name.startswith(POD_TEMPLATE_PREFIX)]
