"""The runner configuration: Druid's ``druid.indexer.runner.*`` properties, with Druid's names and defaults.

Properties can come from the Overlord's ``runtime.properties`` (so a team moving from the in-Overlord runner
points us at the file it already has), from Airflow config, or from operator arguments; later sources win
(:meth:`RunnerConfig.merged`). Values are accepted as the strings a properties file holds or as native Python
values. Every bad value is refused here, before anything reaches Kubernetes, with an error naming the
property and the fix; a misspelt runner property is refused too, because a silently ignored typo (say
``maxTaskDurration``) would run tasks with a default nobody asked for.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import javaproperties
import pendulum

from druid_k8s_provider import naming
from druid_k8s_provider.adapters.layout import parse_version
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import KNOWN_TASK_TYPES

log = logging.getLogger(__name__)

RUNNER_PREFIX = "druid.indexer.runner."
POD_TEMPLATE_PREFIX = RUNNER_PREFIX + "k8s.podTemplate."
SINGLE_CONTAINER_ADAPTER = "overlordSingleContainer"
MULTI_CONTAINER_ADAPTER = "overlordMultiContainer"
CUSTOM_TEMPLATE_ADAPTER = "customTemplateAdapter"
ADAPTER_TYPES = (SINGLE_CONTAINER_ADAPTER, MULTI_CONTAINER_ADAPTER, CUSTOM_TEMPLATE_ADAPTER)
SIDECAR_TERMINATIONS = ("kubexit", "native")
DEFAULT_KUBEXIT_IMAGE = "karlkfi/kubexit:v0.3.2"
DEFAULT_BASE_TASK_DIR = "/tmp/persistent/task"
DEEP_STORAGE_INTERMEDIARY = "deepstore"

SidecarTermination = Literal["kubexit", "native"]

# Runner properties that belong to Druid's other task runners (remote/httpRemote on the Overlord, the forking
# runner on MiddleManagers) or that configure the Overlord side of the Kubernetes runner. An Overlord
# runtime.properties may legitimately hold them; they do not change the Jobs, so they are accepted and
# ignored. Anything else under druid.indexer.runner.* that we do not know is a typo and refused.
_OTHER_RUNNER_PROPERTIES = frozenset(
    RUNNER_PREFIX + name
    for name in (
        "type",
        "taskAssignmentTimeout",
        "taskCleanupTimeout",
        "taskShutdownLinkTimeout",
        "minWorkerVersion",
        "compressZnodes",
        "maxZnodeBytes",
        "pendingTasksRunnerNumThreads",
        "maxRetriesBeforeBlacklist",
        "workerBlackListBackoffTime",
        "workerBlackListCleanupPeriod",
        "maxPercentageBlacklistWorkers",
        "allowedPrefixes",
        "classpath",
        "javaCommand",
        "startPort",
        "endPort",
        "ports",
        # Kubernetes runner settings of the Overlord's own client and bookkeeping, not of the Jobs.
        "taskJoinTimeout",
        "logSaveTimeout",
        "enableKubernetesClientSharedInformers",
        "kubernetesClientInformerResyncPeriod",
    )
)
# Druid's hybrid runner (``type=k8sAndWorker``) keeps its settings under this prefix.
_OTHER_RUNNER_PREFIXES = (RUNNER_PREFIX + "k8sAndWorker.",)
_JAVA_OPTS_PROPERTY = RUNNER_PREFIX + "javaOpts"
_BASE_TASK_DIR_PROPERTY = "druid.indexer.task.baseTaskDir"
_ENABLE_TLS_PORT_PROPERTY = "druid.enableTlsPort"
_INTERMEDIARY_STORAGE_PROPERTY = "druid.processing.intermediaryData.storage.type"
_LAUNCH_TIMEOUT_ALIASES = (RUNNER_PREFIX + "K8sjobLaunchTimeout", RUNNER_PREFIX + "k8sjobLaunchTimeout")
_MAX_INT = 2147483647


# --- value parsers: (property name, raw value) -> typed value, or DruidK8sConfigError -------------------


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DruidK8sConfigError(name, f"expected a string, got {value!r}", "give the value as text")
    return value.strip()


def _non_empty_text(name: str, value: Any) -> str:
    text = _text(name, value)
    if not text:
        raise DruidK8sConfigError(name, "the value is empty", "give a non-empty value or remove the property")
    return text


def _optional_text(name: str, value: Any) -> str | None:
    return None if value is None else (_text(name, value) or None)


def _namespace(name: str, value: Any) -> str:
    text = _non_empty_text(name, value)
    if len(text) > naming.MAX_LABEL_LENGTH or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", text):
        raise DruidK8sConfigError(
            name,
            f"{text!r} is not a valid Kubernetes namespace name",
            "use at most 63 lowercase alphanumerics or '-', starting and ending with an alphanumeric",
        )
    return text


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DruidK8sConfigError(name, f"{value!r} is not a boolean", "use true or false")


def _integer(name: str, value: Any, *, minimum: int) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        number = int(value.strip())
    if number is None:
        raise DruidK8sConfigError(name, f"{value!r} is not an integer", f"use a whole number >= {minimum}")
    if not minimum <= number <= _MAX_INT:
        raise DruidK8sConfigError(
            name, f"{number} is out of range", f"use a whole number between {minimum} and {_MAX_INT}"
        )
    return number


def _duration(name: str, value: Any, *, allow_zero: bool) -> pendulum.Duration:
    """An ISO-8601 period as Druid reads it (case-insensitive, ``PT10m`` is valid), as a pendulum Duration."""
    fix = "use an ISO-8601 period such as PT10M, PT4H or P2D"
    if isinstance(value, datetime.timedelta):
        duration = pendulum.duration(seconds=value.total_seconds())
    elif isinstance(value, str) and re.search(r"\d", value):
        try:
            parsed = pendulum.parse(value.strip().upper(), exact=True)
        except ValueError as error:
            raise DruidK8sConfigError(name, f"{value!r} is not an ISO-8601 period", fix) from error
        if not isinstance(parsed, pendulum.Duration):
            raise DruidK8sConfigError(name, f"{value!r} is a point in time, not a period", fix)
        if parsed.years or parsed.months:
            raise DruidK8sConfigError(
                name,
                f"{value!r} uses years or months, which have no fixed length",
                "express it in weeks, days, hours or minutes (e.g. P30D instead of P1M)",
            )
        duration = parsed
    else:
        raise DruidK8sConfigError(name, f"{value!r} is not an ISO-8601 period", fix)
    seconds = duration.total_seconds()
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise DruidK8sConfigError(name, f"{value!r} is not a positive duration", fix)
    return duration


def _json(name: str, value: Any, expected: type, example: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise DruidK8sConfigError(
                name,
                f"the value is not valid JSON ({error.msg} at column {error.colno})",
                f"use JSON like {example}",
            ) from error
    if expected is list and isinstance(value, tuple):
        value = list(value)
    if expected is dict and isinstance(value, Mapping):
        value = dict(value)
    if not isinstance(value, expected):
        kind = "array" if expected is list else "object"
        raise DruidK8sConfigError(name, f"expected a JSON {kind}, got {value!r}", f"use JSON like {example}")
    return value


def _string_array(name: str, value: Any, example: str) -> tuple[str, ...]:
    items = _json(name, value, list, example)
    if not all(isinstance(item, str) for item in items):
        raise DruidK8sConfigError(
            name, f"every element must be a string, got {items!r}", f"use JSON like {example}"
        )
    return tuple(items)


def _string_object(name: str, value: Any, example: str) -> dict[str, str]:
    items = _json(name, value, dict, example)
    for key, item in items.items():
        if not isinstance(item, str):
            raise DruidK8sConfigError(
                name, f"the value of {key!r} is {item!r}, not a string", f"quote every value, as in {example}"
            )
    return cast(dict[str, str], items)


def _labels(name: str, value: Any) -> dict[str, str]:
    labels = _string_object(name, value, '{"team": "ingest"}')
    for key, item in labels.items():
        problem = naming.label_key_problem(key) or naming.label_value_problem(item)
        if problem:
            raise DruidK8sConfigError(
                name, f"label {key!r}: {problem}", "use valid Kubernetes label keys and values"
            )
        if key in naming.RESERVED_LABEL_KEYS:
            raise DruidK8sConfigError(
                name,
                f"label {key!r} is set by the runner itself",
                "remove it; the runner sets it on every Job",
            )
    return labels


def _annotations(name: str, value: Any) -> dict[str, str]:
    annotations = _string_object(name, value, '{"owner": "ingest-team"}')
    for key in annotations:
        problem = naming.label_key_problem(key)
        if problem:
            raise DruidK8sConfigError(name, f"annotation {problem}", "use valid Kubernetes annotation keys")
        if key in naming.RESERVED_ANNOTATION_KEYS:
            raise DruidK8sConfigError(
                name,
                f"annotation {key!r} is set by the runner itself",
                "remove it; the runner sets it on every Job",
            )
    return annotations


def _pod_name_prefix(name: str, value: Any) -> str | None:
    prefix = _optional_text(name, value)
    problem = None if prefix is None else naming.pod_name_prefix_problem(prefix)
    if problem:
        raise DruidK8sConfigError(
            name, problem, "use letters and digits (other characters are dropped), or unset it"
        )
    return prefix


def _druid_version(name: str, value: Any) -> str | None:
    text = _optional_text(name, value)
    if text is None:
        return None
    parse_version(name, text)
    return text


def _adapter_type(name: str, value: Any) -> str:
    text = _non_empty_text(name, value)
    if text not in ADAPTER_TYPES:
        raise DruidK8sConfigError(
            name,
            f"unknown adapter type {text!r}{_did_you_mean(text, ADAPTER_TYPES)}",
            f"use one of {ADAPTER_TYPES}",
        )
    return text


def _sidecar_termination(name: str, value: Any) -> str:
    text = _non_empty_text(name, value).lower()
    if text not in SIDECAR_TERMINATIONS:
        raise DruidK8sConfigError(
            name,
            f"unknown sidecar termination {value!r}",
            "use kubexit (Druid's way) or native (Kubernetes 1.29+ sidecar containers)",
        )
    return text


def _sidecar_commands(name: str, value: Any) -> dict[str, tuple[str, ...]]:
    example = '{"istio-proxy": ["/usr/local/bin/pilot-agent", "proxy", "sidecar"]}'
    commands = _json(name, value, dict, example)
    parsed: dict[str, tuple[str, ...]] = {}
    for container, command in commands.items():
        if (
            not isinstance(command, list | tuple)
            or not command
            or not all(isinstance(part, str) for part in command)
        ):
            raise DruidK8sConfigError(
                name,
                f"the command of container {container!r} is {command!r}, not a non-empty array of strings",
                f"use JSON like {example}",
            )
        parsed[container] = tuple(command)
    return parsed


def _pod_templates(name: str, value: Any) -> dict[str, str]:
    templates = _string_object(name, value, '{"index_parallel": "/templates/index.yaml"}')
    for task_type in templates:
        _refuse_misspelt_task_type(POD_TEMPLATE_PREFIX + task_type, task_type)
    return {task_type: path.strip() for task_type, path in templates.items()}


# --- the property table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Property:
    """One configuration input: its Druid name, the dataclass attribute it sets, and how to parse it."""

    druid_name: str
    attribute: str
    parse: Callable[[str, Any], Any]


def _runner(name: str, attribute: str, parse: Callable[[str, Any], Any]) -> _Property:
    return _Property(RUNNER_PREFIX + name, attribute, parse)


_PROPERTIES = (
    _runner("namespace", "namespace", _namespace),
    _runner("k8s.adapter.type", "adapter_type", _adapter_type),
    _runner("sidecarSupport", "sidecar_support", _boolean),
    _runner("primaryContainerName", "primary_container_name", _optional_text),
    _runner("kubexitImage", "kubexit_image", _non_empty_text),
    _runner("debugJobs", "debug_jobs", _boolean),
    _runner("disableClientProxy", "disable_client_proxy", _boolean),
    _runner("maxTaskDuration", "max_task_duration", lambda n, v: _duration(n, v, allow_zero=False)),
    _runner("taskCleanupDelay", "task_cleanup_delay", lambda n, v: _duration(n, v, allow_zero=True)),
    _runner("taskCleanupInterval", "task_cleanup_interval", lambda n, v: _duration(n, v, allow_zero=False)),
    _runner("K8sjobLaunchTimeout", "k8s_job_launch_timeout", lambda n, v: _duration(n, v, allow_zero=False)),
    _runner(
        "javaOptsArray", "java_opts_array", lambda n, v: _string_array(n, v, '["-Xmx2g", "-XX:+UseG1GC"]')
    ),
    _runner("labels", "labels", _labels),
    _runner("annotations", "annotations", _annotations),
    _runner(
        "peonMonitors",
        "peon_monitors",
        lambda n, v: _string_array(n, v, '["org.apache.druid.java.util.metrics.JvmMonitor"]'),
    ),
    _runner(
        "graceTerminationPeriodSeconds",
        "grace_termination_period_seconds",
        lambda n, v: None if v is None else _integer(n, v, minimum=0),
    ),
    _runner("capacity", "capacity", lambda n, v: _integer(n, v, minimum=1)),
    _runner("cpuCoreInMicro", "cpu_core_in_micro", lambda n, v: _integer(n, v, minimum=1)),
    _runner("k8s.podTemplate.base", "pod_template_base", _optional_text),
    _runner("overlordNamespace", "overlord_namespace", _namespace),
    _runner("sidecarTermination", "sidecar_termination", _sidecar_termination),
    _runner("sidecarCommands", "sidecar_commands", _sidecar_commands),
    _runner("k8sTaskPodNamePrefix", "k8s_task_pod_name_prefix", _pod_name_prefix),
    _runner("druidVersion", "druid_version", _druid_version),
    _Property(_BASE_TASK_DIR_PROPERTY, "base_task_dir", _non_empty_text),
    _Property(_ENABLE_TLS_PORT_PROPERTY, "enable_tls_port", _boolean),
    _Property(_INTERMEDIARY_STORAGE_PROPERTY, "intermediary_storage_type", _optional_text),
)
_BY_DRUID_NAME = {prop.druid_name: prop for prop in _PROPERTIES}
_BY_DRUID_NAME[_LAUNCH_TIMEOUT_ALIASES[1]] = _BY_DRUID_NAME[_LAUNCH_TIMEOUT_ALIASES[0]]
_BY_ATTRIBUTE = {prop.attribute: prop for prop in _PROPERTIES}
_POD_TEMPLATES_BY_TYPE = _Property(
    POD_TEMPLATE_PREFIX + "<taskType>", "pod_templates_by_type", _pod_templates
)
_BY_ATTRIBUTE[_POD_TEMPLATES_BY_TYPE.attribute] = _POD_TEMPLATES_BY_TYPE


def _did_you_mean(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def druid_name_of(attribute: str) -> str:
    """The Druid property behind a RunnerConfig attribute, for error messages of other modules."""
    return _BY_ATTRIBUTE[attribute].druid_name


@dataclass(frozen=True)
class RunnerConfig:
    """Everything that shapes a peon Job, with Druid's defaults.

    Build it with :meth:`from_properties` or :meth:`from_runtime_properties`; construct it directly only with
    already typed values. Consistency between fields is checked on every construction, so
    :meth:`merged` cannot produce a configuration ``from_properties`` would have refused.
    """

    namespace: str
    adapter_type: str = SINGLE_CONTAINER_ADAPTER
    sidecar_support: bool = False
    primary_container_name: str | None = None
    kubexit_image: str = DEFAULT_KUBEXIT_IMAGE
    debug_jobs: bool = False
    disable_client_proxy: bool = False
    max_task_duration: pendulum.Duration = field(default_factory=lambda: pendulum.duration(hours=4))
    task_cleanup_delay: pendulum.Duration = field(default_factory=lambda: pendulum.duration(days=2))
    task_cleanup_interval: pendulum.Duration = field(default_factory=lambda: pendulum.duration(minutes=10))
    k8s_job_launch_timeout: pendulum.Duration = field(default_factory=lambda: pendulum.duration(hours=1))
    java_opts_array: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    peon_monitors: tuple[str, ...] = ()
    grace_termination_period_seconds: int | None = None
    capacity: int = _MAX_INT
    cpu_core_in_micro: int = 1000
    pod_template_base: str | None = None
    pod_templates_by_type: Mapping[str, str] = field(default_factory=dict)
    overlord_namespace: str = ""
    base_task_dir: str = DEFAULT_BASE_TASK_DIR
    enable_tls_port: bool = False
    intermediary_storage_type: str | None = None
    sidecar_termination: SidecarTermination = "kubexit"
    sidecar_commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    k8s_task_pod_name_prefix: str | None = None
    druid_version: str | None = None

    def __post_init__(self) -> None:
        """Resolve the defaults that depend on other fields and refuse contradictions."""
        if not self.namespace:
            raise DruidK8sConfigError(
                RUNNER_PREFIX + "namespace",
                "the namespace is empty",
                "set it to the namespace the peon Jobs run in (where the Overlord pod is)",
            )
        if not self.overlord_namespace:
            object.__setattr__(self, "overlord_namespace", self.namespace)
        if self.sidecar_support:
            if self.adapter_type == CUSTOM_TEMPLATE_ADAPTER:
                raise DruidK8sConfigError(
                    RUNNER_PREFIX + "sidecarSupport",
                    f"sidecarSupport=true contradicts k8s.adapter.type={CUSTOM_TEMPLATE_ADAPTER}",
                    f"remove sidecarSupport (deprecated) and set k8s.adapter.type={MULTI_CONTAINER_ADAPTER} "
                    "if the sidecars of the Overlord pod should run with each task",
                )
            # Druid's deprecated switch: sidecar support means the multi-container adapter.
            object.__setattr__(self, "adapter_type", MULTI_CONTAINER_ADAPTER)
        # Freeze the mappings so a shared config cannot be changed behind another task's back.
        for name in ("labels", "annotations", "pod_templates_by_type", "sidecar_commands"):
            object.__setattr__(self, name, _FrozenDict(getattr(self, name)))

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> RunnerConfig:
        """Build the configuration from Druid property names (``druid.indexer.runner.namespace`` ...).

        Unknown ``druid.indexer.runner.*`` names are refused with the closest known name; other ``druid.*``
        properties are ignored (an Overlord file holds many). A key that is not a Druid name is refused.
        """
        values: dict[str, Any] = {}
        templates_by_type: dict[str, str] = {}
        for druid_name, raw in properties.items():
            if not isinstance(druid_name, str) or not druid_name.startswith("druid."):
                suggestion = RUNNER_PREFIX + str(druid_name)
                hint = f"; did you mean {suggestion!r}" if suggestion in _BY_DRUID_NAME else ""
                raise DruidK8sConfigError(
                    str(druid_name),
                    f"not a Druid property name{hint}",
                    "use Druid's full property names, e.g. druid.indexer.runner.namespace",
                )
            if druid_name == _JAVA_OPTS_PROPERTY:
                raise DruidK8sConfigError(
                    druid_name,
                    "the string form of the peon JVM options is not supported (Druid's Kubernetes runner "
                    "ignores it too)",
                    f'use {RUNNER_PREFIX}javaOptsArray with a JSON array, e.g. ["-Xmx2g", "-XX:+UseG1GC"]',
                )
            if druid_name.startswith(POD_TEMPLATE_PREFIX) and druid_name != POD_TEMPLATE_PREFIX + "base":
                task_type = druid_name[len(POD_TEMPLATE_PREFIX) :]
                _refuse_misspelt_task_type(druid_name, task_type)
                templates_by_type[task_type] = _non_empty_text(druid_name, raw)
                continue
            prop = _BY_DRUID_NAME.get(druid_name)
            if prop is None:
                if (
                    druid_name.startswith(RUNNER_PREFIX)
                    and druid_name not in _OTHER_RUNNER_PROPERTIES
                    and not druid_name.startswith(_OTHER_RUNNER_PREFIXES)
                ):
                    raise DruidK8sConfigError(
                        druid_name,
                        f"unknown runner property{_did_you_mean(druid_name, _BY_DRUID_NAME)}",
                        "correct the name or remove the property (see the configuration docs)",
                    )
                log.debug("Ignoring property %s: it does not shape peon Jobs", druid_name)
                continue
            if prop.attribute in values and druid_name in _LAUNCH_TIMEOUT_ALIASES:
                raise DruidK8sConfigError(
                    druid_name,
                    "both spellings of the launch timeout are set",
                    f"keep only one of {_LAUNCH_TIMEOUT_ALIASES[0]} and {_LAUNCH_TIMEOUT_ALIASES[1]}",
                )
            values[prop.attribute] = prop.parse(druid_name, raw)
        if templates_by_type:
            values["pod_templates_by_type"] = templates_by_type
        if "namespace" not in values:
            raise DruidK8sConfigError(
                RUNNER_PREFIX + "namespace",
                "the property is required and missing",
                "set it to the namespace the peon Jobs run in (where the Overlord pod is)",
            )
        _refuse_explicit_adapter_conflict(values)
        return cls(**values)

    @classmethod
    def from_runtime_properties(cls, path: str | Path) -> RunnerConfig:
        """Build the configuration from an Overlord ``runtime.properties`` file (Java properties format).

        Logs a warning when intermediate data is not kept in deep storage: without MiddleManagers, shuffle
        data of parallel ingestion must go to deep storage or the second phase cannot find it.
        """
        properties = {
            key: value for key, value in read_runtime_properties(path).items() if key.startswith("druid.")
        }
        config = cls.from_properties(properties)
        if config.intermediary_storage_type != DEEP_STORAGE_INTERMEDIARY:
            log.warning(
                "%s is %r in %s; peons on Kubernetes have no MiddleManager to serve shuffle data, "
                "so set it to %r or parallel ingestion with more than one phase will fail",
                _INTERMEDIARY_STORAGE_PROPERTY,
                config.intermediary_storage_type or "local (Druid's default)",
                path,
                DEEP_STORAGE_INTERMEDIARY,
            )
        return config

    def merged(self, **overrides: Any) -> RunnerConfig:
        """A copy with some attributes replaced (snake_case names, native values or property strings).

        Used to layer operator arguments over file and Airflow configuration.
        """
        parsed: dict[str, Any] = {}
        for attribute, raw in overrides.items():
            prop = _BY_ATTRIBUTE.get(attribute)
            if prop is None:
                raise DruidK8sConfigError(
                    attribute,
                    f"unknown runner setting{_did_you_mean(attribute, _BY_ATTRIBUTE)}",
                    f"use one of {sorted(_BY_ATTRIBUTE)}",
                )
            parsed[attribute] = prop.parse(prop.druid_name, raw)
        if (
            "namespace" in parsed
            and "overlord_namespace" not in parsed
            and self.overlord_namespace == self.namespace
        ):
            parsed["overlord_namespace"] = ""
        if (
            parsed.get("adapter_type") not in (None, MULTI_CONTAINER_ADAPTER)
            and "sidecar_support" not in parsed
        ):
            parsed["sidecar_support"] = False
        return dataclasses.replace(self, **parsed)

    def as_properties(self) -> dict[str, str]:
        """The configuration as Druid properties (strings), e.g. to pass it to a deferred trigger."""
        properties: dict[str, str] = {}
        for prop in (*_PROPERTIES, _POD_TEMPLATES_BY_TYPE):
            value = getattr(self, prop.attribute)
            if value is None:
                continue
            if prop is _POD_TEMPLATES_BY_TYPE:
                for task_type, path in value.items():
                    properties[POD_TEMPLATE_PREFIX + task_type] = path
                continue
            properties[prop.druid_name] = _property_text(value)
        return properties


def _property_text(value: Any) -> str:
    """A typed value back in the text form a runtime.properties file holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, pendulum.Duration):
        return f"PT{int(value.total_seconds())}S"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, Mapping):
        return json.dumps(
            {key: list(item) if isinstance(item, tuple) else item for key, item in value.items()}
        )
    return str(value)


def _refuse_misspelt_task_type(druid_name: str, task_type: str) -> None:
    """A template for a task type no task has is never used: refuse names close to a known type or ``base``.

    Task types of extensions we do not know are accepted when they resemble nothing known.
    """
    if task_type in KNOWN_TASK_TYPES:
        return
    close = difflib.get_close_matches(task_type, [*KNOWN_TASK_TYPES, "base"], n=1, cutoff=0.75)
    if close:
        raise DruidK8sConfigError(
            druid_name,
            f"{task_type!r} is not a Druid task type (did you mean {close[0]!r}?)",
            f"name the property {POD_TEMPLATE_PREFIX}{close[0]}",
        )


def _refuse_explicit_adapter_conflict(values: Mapping[str, Any]) -> None:
    """Druid refuses sidecarSupport=true together with an explicitly chosen non-multi-container adapter."""
    adapter = values.get("adapter_type")
    if values.get("sidecar_support") and adapter not in (None, MULTI_CONTAINER_ADAPTER):
        raise DruidK8sConfigError(
            RUNNER_PREFIX + "sidecarSupport",
            f"sidecarSupport=true contradicts k8s.adapter.type={adapter}",
            f"remove sidecarSupport (deprecated) and keep k8s.adapter.type={adapter}, "
            f"or set k8s.adapter.type={MULTI_CONTAINER_ADAPTER}",
        )


class _FrozenDict(dict[str, Any]):
    """A dict that refuses changes: configuration mappings are shared between tasks."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("RunnerConfig mappings are read-only; use RunnerConfig.merged() to change them")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        """Hashable, so a RunnerConfig can key a cache (values are strings or tuples)."""
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[_FrozenDict], tuple[dict[str, Any]]]:
        """Copy and pickle through the constructor, never through the refused ``__setitem__``."""
        return (_FrozenDict, (dict(self),))


def read_runtime_properties(path: str | Path) -> dict[str, str]:
    """The properties of a Java ``.properties`` file, or an error naming the file and what is wrong."""
    file_path = Path(path)
    try:
        with file_path.open(encoding="utf-8") as handle:
            return dict(javaproperties.load(handle))
    except OSError as error:
        raise DruidK8sConfigError(
            str(file_path),
            f"cannot read the runtime.properties file: {error.strerror or error}",
            "point runtime_properties_file at the Overlord's runtime.properties and make it readable",
        ) from error
    except (UnicodeDecodeError, ValueError) as error:
        raise DruidK8sConfigError(
            str(file_path),
            f"not a readable Java properties file: {error}",
            "save it as UTF-8 Java properties",
        ) from error
