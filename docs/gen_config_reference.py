"""Write the property table of docs/configuration.md from RunnerConfig, so the reference cannot drift.

Run it after changing ``druid_k8s_provider/config.py``, ``config_names.py`` or ``config_properties.py``::

    .venv/bin/python docs/gen_config_reference.py

Names, types and defaults are read from the code: the dataclass fields of ``RunnerConfig`` (in declaration
order), ``config.druid_name_of`` for the Druid property behind each field, the type hints for the type, and a
``RunnerConfig`` built from nothing but a namespace for the defaults, so a default resolved at construction
time (``overlordNamespace``) is shown as the user gets it. Only the effect of each property is prose, kept
here because config.py has no per-field text; a field without one makes this script fail, which makes the
docs test fail. ``tests/unit/test_docs_config_reference.py`` regenerates the table and compares.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pendulum

from druid_k8s_provider import config, config_names, get_provider_info
from druid_k8s_provider.operators.ignored import job_shaping

CONFIGURATION_PAGE = Path(__file__).resolve().parent / "configuration.md"
BEGIN_MARKER = (
    "<!-- BEGIN GENERATED CONFIG REFERENCE: run `python docs/gen_config_reference.py`; do not edit -->"
)
END_MARKER = "<!-- END GENERATED CONFIG REFERENCE -->"
ARGUMENTS_BEGIN_MARKER = (
    "<!-- BEGIN GENERATED ARGUMENT REFERENCE: run `python docs/gen_config_reference.py`; do not edit -->"
)
ARGUMENTS_END_MARKER = "<!-- END GENERATED ARGUMENT REFERENCE -->"


def _airflow_base(klass: type) -> type:
    """The first of Airflow's own classes among ``klass``'s ancestors (ours in between skipped)."""
    return next(base for base in klass.__mro__[1:] if base.__module__.startswith("airflow."))


# Classes whose own arguments are documented, by the import path users write, with the Airflow arguments
# of their base class a DAG author most often adds.
DOCUMENTED_CLASSES: Mapping[str, str] = {
    "druid_k8s_provider.operators.task.DruidK8sTaskOperator": "`task_id`, `retries`, `pool`, ...",
    "druid_k8s_provider.sensors.task.DruidK8sTaskSensor": "`task_id`, `poke_interval`, `timeout`, `mode`",
}
# Defaults computed from Airflow's configuration when the module is imported: the value seen here would
# depend on this machine's airflow.cfg, so the option is shown instead.
_DEFAULTS_FROM_AIRFLOW_OPTIONS: Mapping[str, str] = {"deferrable": "[operators] default_deferrable"}

# A namespace no real default can equal: a default that comes out as this value was derived from it.
_NAMESPACE_PROBE = "reference-namespace-probe"

# Added to the effect of every property that only shapes the Job the provider builds
# (druid_k8s_provider.operators.ignored), so the table says what the operator's warning says.
OVERLORD_MODE_NOTE = (
    "No effect in `overlord` launch mode, where the Overlord builds the Job from its own configuration; set "
    "in Airflow there, a warning says so."
)

# Fields whose text is one of a fixed set; the type hint says only ``str`` for some of them.
_CHOICES: Mapping[str, tuple[str, ...]] = {
    "adapter_type": config_names.ADAPTER_TYPES,
    "sidecar_termination": config_names.SIDECAR_TERMINATIONS,
}

# Fields whose type hint is not what the user writes: template paths are strings on disk, and the per-type
# templates are one property per task type that RunnerConfig gathers into a mapping.
_FILE_PATH_FIELDS = frozenset({"pod_template_base", "pod_templates_by_type"})

# What each property does, keyed by the Druid property name. Keep to what the code does.
EFFECTS: Mapping[str, str] = {
    "druid.indexer.runner.namespace": (
        "Namespace the peon Jobs are created in, and that the reaper DAG cleans. Must be a valid namespace "
        "name."
    ),
    "druid.indexer.runner.k8s.adapter.type": (
        "How the peon pod is built: from the Overlord pod's primary container only, from all of its "
        "containers (sidecars included), or from a pod template file. See [Adapters](adapters.md)."
    ),
    "druid.indexer.runner.sidecarSupport": (
        "Deprecated Druid switch: `true` selects `overlordMultiContainer`. Refused together with an "
        "explicitly chosen other adapter."
    ),
    "druid.indexer.runner.primaryContainerName": (
        "The Druid container of the Overlord pod; it becomes the peon's `main` container and moves to the "
        "front. Unset means the first container. A name the pod does not have is an error."
    ),
    "druid.indexer.runner.kubexitImage": (
        "Image of the `kubexit` init container that `overlordMultiContainer` adds to stop sidecars "
        "when the peon ends."
    ),
    "druid.indexer.runner.debugJobs": (
        "The Overlord's: its own `true` keeps finished Jobs and their pods for inspection instead of "
        "deleting them when the task completes; the reaper DAG still removes them after `taskCleanupDelay`. "
        "Given to the operator (`runner_properties`, `[druid_k8s] runner_properties`) it has no effect, and "
        "a warning says so."
    ),
    "druid.indexer.runner.disableClientProxy": (
        "`true` makes the Kubernetes client ignore `HTTP_PROXY` / `HTTPS_PROXY` settings of the worker."
    ),
    "druid.indexer.runner.maxTaskDuration": (
        "Longest a task may run: the Job's `activeDeadlineSeconds` (Kubernetes kills the pod with reason "
        "`DeadlineExceeded`; the Overlord's value in `overlord` launch mode), and how long the operator "
        "waits for the outcome."
    ),
    "druid.indexer.runner.taskCleanupDelay": (
        "How long a finished Job is kept: the Job's `ttlSecondsAfterFinished` (the Overlord's value in "
        "`overlord` launch mode), and the age after which the reaper DAG deletes finished peon Jobs."
    ),
    "druid.indexer.runner.taskCleanupInterval": "How often the reaper DAG runs (its schedule).",
    "druid.indexer.runner.K8sjobLaunchTimeout": (
        "Longest wait for the peon pod to leave `Pending`, counted from the Job's release (`airflow` launch "
        "mode) or appearance (`overlord`); after it the task fails with the pod's waiting reason and recent "
        "events, and is shut down in the Overlord, which deletes its Job. Also accepted spelled "
        "`k8sjobLaunchTimeout` (only one of the two may be set)."
    ),
    "druid.indexer.runner.javaOptsArray": (
        "Overlord adapters only: JVM options of the peon, first in `JAVA_OPTS`. Each element is split on "
        "white space, then the last `-Xmx` and `-XX:MaxDirectMemorySize` set the main container's memory "
        "(1.2 x (heap + direct)). `customTemplateAdapter` ignores it, as Druid does, and logs a warning "
        "once: put JVM options in the pod template. The string form `javaOpts` is refused."
    ),
    "druid.indexer.runner.labels": (
        "Extra labels on the Job and its pod. Keys the runner sets itself (`druid.k8s.peons`, "
        "`druid.task.*`) are refused."
    ),
    "druid.indexer.runner.annotations": (
        "Extra annotations on the Job and its pod. Keys the runner sets itself (`task.*`, `tls.enabled`) "
        "are refused."
    ),
    "druid.indexer.runner.peonMonitors": (
        "Overlord adapters only: when non-empty, replaces the main container's `druid_monitoring_monitors` "
        "env with this list. `customTemplateAdapter` ignores it with a warning."
    ),
    "druid.indexer.runner.graceTerminationPeriodSeconds": (
        "The pod's `terminationGracePeriodSeconds`: how long a peon has to stop when its Job is deleted. "
        "Unset leaves Kubernetes' default (30 s)."
    ),
    "druid.indexer.runner.capacity": (
        "Druid's cap on Jobs in flight. Accepted and validated for compatibility; with the provider the cap "
        "is an Airflow pool (see [Operations](operations.md#capacity-with-airflow-pools))."
    ),
    "druid.indexer.runner.cpuCoreInMicro": (
        "Overlord adapters only: CPU request and limit of the main container, in millicores (1000 = one "
        "core). `customTemplateAdapter` ignores it with a warning: the template sets resources."
    ),
    "druid.indexer.runner.k8s.podTemplate.base": (
        "`customTemplateAdapter`: the pod template file (a `v1/PodTemplate` YAML) used for task types "
        "without their own."
    ),
    "druid.indexer.runner.k8s.podTemplate.<taskType>": (
        "`customTemplateAdapter`: the pod template file for one task type, e.g. "
        "`druid.indexer.runner.k8s.podTemplate.index_parallel`; wins over the base template."
    ),
    "druid.indexer.runner.overlordNamespace": (
        "Namespace in which the Overlord pod used as the template is looked up (overlord adapters). "
        "Everything the pod refers to (service account, ConfigMaps, Secrets) must also exist in the Jobs' "
        "namespace. `customTemplateAdapter` (Druid 33+): the value of the label `druid.overlord.namespace` "
        "on each Job and pod (else the runner namespace); set on the Overlord, its restore adopts only Jobs "
        "with that label, so several Druid clusters can share one Jobs namespace."
    ),
    "druid.indexer.runner.sidecarTermination": (
        "How `overlordMultiContainer` ends sidecars: `kubexit` wraps every container as Druid does; "
        "`native` makes them Kubernetes native sidecars (init containers with `restartPolicy: Always`, "
        "Kubernetes 1.29+), which need no command. Not a Druid property."
    ),
    "druid.indexer.runner.k8sTaskPodNamePrefix": (
        "Names the Jobs (and the peon pods' hostnames) after this prefix instead of the task id: its "
        "letters and digits, lowercased, at most 30, then `-` and the hash of the task id, as Druid 33 and "
        "later do. Labels and annotations still carry the task id. Ignored, with a warning, for an older "
        "`druidVersion`. A prefix without letters or digits is refused. Stop running tasks before changing "
        "it: their Jobs are found by name."
    ),
    "druid.indexer.runner.druidVersion": (
        "The Druid release of the peon image, as `X.Y.Z` (30.0.0 or later), for Jobs built without a "
        "version from the Overlord: the operator builds (and names) the Job for the version the Overlord "
        "reports (`GET /status`), which wins over this property, so it applies only when the Overlord "
        "reports none, and to `build_job` called without `druid_version` (a dry run). Unset there: the "
        "current release's Jobs (Druid 34.0.0 and later). See [Druid versions](adapters.md#druid-versions). "
        "Not a Druid property."
    ),
    "druid.indexer.runner.sidecarCommands": (
        "Command (the image's entrypoint) of sidecars that set `args` but no `command`, by container name, "
        "so kubexit can wrap them. Not a Druid property."
    ),
    "druid.indexer.task.baseTaskDir": (
        "Task directory of the peon. Before Druid 34: `TASK_DIR` and the argument of `/peon.sh`; from "
        "Druid 34 (overlord adapters): `-Ddruid.indexer.task.baseTaskDir` in `JAVA_OPTS`, and `TASK_DIR` "
        "is `<baseTaskDir>/<task id>`. `customTemplateAdapter`: `TASK_DIR`."
    ),
    "druid.enableTlsPort": (
        "`true` gives the peon its TLS port 8091 (`-Ddruid.tlsPort`) and sets the annotation `tls.enabled`."
    ),
    "druid.processing.intermediaryData.storage.type": (
        "Does not change the Job. Without MiddleManagers it must be `deepstore`, or multi-phase parallel "
        "ingestion fails; `RunnerConfig.from_runtime_properties` logs a warning when it is not."
    ),
}


def _is_optional(hint: Any) -> tuple[bool, Any]:
    """Split ``X | None`` into (True, X); anything else into (False, hint)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) == 1:
            return True, members[0]
    return False, hint


def describe_type(attribute: str, hint: Any) -> str:
    """The value format a user writes, from the field's type hint."""
    if attribute in _CHOICES:
        return "one of " + ", ".join(f"`{choice}`" for choice in _CHOICES[attribute])
    if attribute in _FILE_PATH_FIELDS:
        return "file path"
    if attribute == "druid_version":
        return "Druid release `X.Y.Z`"
    _, hint = _is_optional(hint)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in typing.get_args(hint))
    if hint is bool:
        return "boolean"
    if hint is int:
        return "integer"
    if hint is str:
        return "string"
    if hint is pendulum.Duration:
        return "ISO-8601 period"
    if origin is tuple:
        return "JSON array of strings"
    if origin in (Mapping, dict):
        _, value_hint = typing.get_args(hint)
        if typing.get_origin(value_hint) is tuple:
            return "JSON object of string arrays"
        return "JSON object of strings"
    raise TypeError(f"RunnerConfig.{attribute}: no documented format for type {hint!r}; extend describe_type")


def iso_period(duration: pendulum.Duration) -> str:
    """A duration written the way Druid's defaults are (``PT4H``, ``P2D``), largest units first."""
    seconds = int(duration.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    date_part = f"{days}D" if days else ""
    time_part = "".join(
        f"{count}{unit}" for count, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if count
    )
    if not date_part and not time_part:
        return "PT0S"
    return "P" + date_part + (f"T{time_part}" if time_part else "")


def describe_default(attribute: str, value: Any) -> str:
    """A default value in the form a runtime.properties file would hold it."""
    if value is None or (attribute in _FILE_PATH_FIELDS and not value):
        return "unset"
    if value == _NAMESPACE_PROBE:
        return "the value of `druid.indexer.runner.namespace`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, pendulum.Duration):
        return f"`{iso_period(value)}`"
    if isinstance(value, tuple | Mapping):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else dict(value))}`"
    return f"`{value}`"


@dataclasses.dataclass(frozen=True)
class PropertyReference:
    """One row of the reference: what the user writes, in what format, what they get without it, and why."""

    druid_name: str
    value_type: str
    default: str
    effect: str


def property_references() -> list[PropertyReference]:
    """Every property RunnerConfig reads, in the order of its fields."""
    hints = typing.get_type_hints(config.RunnerConfig)
    defaults = config.RunnerConfig.from_properties({"druid.indexer.runner.namespace": _NAMESPACE_PROBE})
    references = []
    for field in dataclasses.fields(config.RunnerConfig):
        druid_name = config.druid_name_of(field.name)
        if druid_name not in EFFECTS:
            raise KeyError(f"{druid_name} (RunnerConfig.{field.name}) has no effect text in {__file__}")
        if field.name == "namespace":
            default = "required"
        else:
            default = describe_default(field.name, getattr(defaults, field.name))
        effect = EFFECTS[druid_name]
        if job_shaping([druid_name]):
            effect = f"{effect} {OVERLORD_MODE_NOTE}"
        references.append(
            PropertyReference(druid_name, describe_type(field.name, hints[field.name]), default, effect)
        )
    return references


def render_reference() -> str:
    """The Markdown between the markers: the property table, then the properties accepted and ignored."""
    lines = [
        BEGIN_MARKER,
        "",
        "| property | type | default | effect |",
        "|---|---|---|---|",
    ]
    for row in property_references():
        lines.append(f"| `{row.druid_name}` | {row.value_type} | {row.default} | {row.effect} |")
    ignored = sorted(config_names.OTHER_RUNNER_PROPERTIES)
    ignored_prefixes = sorted(config_names.OTHER_RUNNER_PREFIXES)
    lines += [
        "",
        "These `druid.indexer.runner.*` properties belong to Druid's other task runners or to the "
        "Overlord side of the Kubernetes runner. They may stay in the file: they are accepted and ignored, "
        "because they do not change the Jobs. Any other unknown `druid.indexer.runner.*` name is refused as "
        "a typo, with the closest known name in the error.",
        "",
        ", ".join(f"`{name}`" for name in ignored),
        "",
        "Every property under "
        + ", ".join(f"`{prefix}`" for prefix in ignored_prefixes)
        + " is accepted and ignored too.",
        "",
        END_MARKER,
    ]
    return "\n".join(lines)


def _param_docs(docstring: str) -> dict[str, str]:
    """``:param name: text`` entries of a docstring (continuation lines joined), by parameter name."""
    docs: dict[str, str] = {}
    current: str | None = None
    for line in inspect.cleandoc(docstring).splitlines():
        match = re.match(r"\s*:param (\w+):\s*(.*)", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _airflow_options() -> frozenset[str]:
    """Options of the provider's ``[druid_k8s]`` config section, as get_provider_info declares them."""
    return frozenset(get_provider_info()["config"]["druid_k8s"]["options"])


def _default_text(name: str, parameter: inspect.Parameter) -> str:
    if name in _DEFAULTS_FROM_AIRFLOW_OPTIONS:
        return f"`{_DEFAULTS_FROM_AIRFLOW_OPTIONS[name]}`"
    if parameter.default is inspect.Parameter.empty:
        return "required"
    return f"`{parameter.default!r}`"


def render_arguments() -> str:
    """One table per documented class: its own arguments, their defaults and their docstring text."""
    options = _airflow_options()
    lines = [ARGUMENTS_BEGIN_MARKER]
    for dotted, base_examples in DOCUMENTED_CLASSES.items():
        module_name, class_name = dotted.rsplit(".", 1)
        klass = getattr(importlib.import_module(module_name), class_name)
        docs = _param_docs(klass.__doc__ or "")
        templated = set(getattr(klass, "template_fields", ()))
        lines += [
            "",
            f"### {class_name}",
            "",
            f"`from {module_name} import {class_name}`. Other keyword arguments go to Airflow's "
            f"`{_airflow_base(klass).__name__}` ({base_examples}).",
            "",
            "| argument | default | `[druid_k8s]` option | templated | meaning |",
            "|---|---|---|---|---|",
        ]
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            if name not in docs:
                raise KeyError(f"{dotted}: argument {name!r} has no ':param {name}:' in the class docstring")
            option = f"`{name}`" if name in options else ""
            templated_mark = "yes" if name in templated else ""
            meaning = docs[name].replace("``", "`")
            default = _default_text(name, parameter)
            lines.append(f"| `{name}` | {default} | {option} | {templated_mark} | {meaning} |")
    lines += ["", ARGUMENTS_END_MARKER]
    return "\n".join(lines)


def splice(page: str, generated: str, begin: str = BEGIN_MARKER, end: str = END_MARKER) -> str:
    """The page with the text between (and including) the markers replaced by ``generated``."""
    start = page.index(begin)
    stop = page.index(end) + len(end)
    return page[:start] + generated + page[stop:]


def main() -> int:
    page = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    updated = splice(page, render_reference())
    updated = splice(updated, render_arguments(), ARGUMENTS_BEGIN_MARKER, ARGUMENTS_END_MARKER)
    if updated != page:
        CONFIGURATION_PAGE.write_text(updated, encoding="utf-8")
        print(f"updated {CONFIGURATION_PAGE}")
    else:
        print(f"{CONFIGURATION_PAGE} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
