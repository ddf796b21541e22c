"""Each runner property: its Druid name, the :class:`~druid_k8s_provider.config.RunnerConfig` attribute it
sets, and the parser of its value (as the string a properties file holds or as a native Python value), which
refuses a bad value with an error naming the property and the fix."""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import pendulum

from druid_k8s_provider import naming
from druid_k8s_provider.adapters.layout import parse_version
from druid_k8s_provider.config_names import (
    ADAPTER_TYPES,
    BASE_TASK_DIR_PROPERTY,
    ENABLE_TLS_PORT_PROPERTY,
    INTERMEDIARY_STORAGE_PROPERTY,
    LAUNCH_TIMEOUT_ALIASES,
    POD_TEMPLATE_PREFIX,
    RUNNER_PREFIX,
    SIDECAR_TERMINATIONS,
)
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import KNOWN_TASK_TYPES

MAX_INT = 2147483647


# --- value parsers: (property name, raw value) -> typed value, or DruidK8sConfigError -------------------


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DruidK8sConfigError(name, f"expected a string, got {value!r}", "give the value as text")
    return value.strip()


def non_empty_text(name: str, value: Any) -> str:
    """The value as stripped text; refused when it is not text or is empty."""
    text = _text(name, value)
    if not text:
        raise DruidK8sConfigError(name, "the value is empty", "give a non-empty value or remove the property")
    return text


def _optional_text(name: str, value: Any) -> str | None:
    return None if value is None else (_text(name, value) or None)


def _namespace(name: str, value: Any) -> str:
    text = non_empty_text(name, value)
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
    if not minimum <= number <= MAX_INT:
        raise DruidK8sConfigError(
            name, f"{number} is out of range", f"use a whole number between {minimum} and {MAX_INT}"
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
    text = non_empty_text(name, value)
    if text not in ADAPTER_TYPES:
        raise DruidK8sConfigError(
            name,
            f"unknown adapter type {text!r}{did_you_mean(text, ADAPTER_TYPES)}",
            f"use one of {ADAPTER_TYPES}",
        )
    return text


def _sidecar_termination(name: str, value: Any) -> str:
    text = non_empty_text(name, value).lower()
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
        refuse_misspelt_task_type(POD_TEMPLATE_PREFIX + task_type, task_type)
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


PROPERTIES = (
    _runner("namespace", "namespace", _namespace),
    _runner("k8s.adapter.type", "adapter_type", _adapter_type),
    _runner("sidecarSupport", "sidecar_support", _boolean),
    _runner("primaryContainerName", "primary_container_name", _optional_text),
    _runner("kubexitImage", "kubexit_image", non_empty_text),
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
    _Property(BASE_TASK_DIR_PROPERTY, "base_task_dir", non_empty_text),
    _Property(ENABLE_TLS_PORT_PROPERTY, "enable_tls_port", _boolean),
    _Property(INTERMEDIARY_STORAGE_PROPERTY, "intermediary_storage_type", _optional_text),
)
BY_DRUID_NAME = {prop.druid_name: prop for prop in PROPERTIES}
BY_DRUID_NAME[LAUNCH_TIMEOUT_ALIASES[1]] = BY_DRUID_NAME[LAUNCH_TIMEOUT_ALIASES[0]]
BY_ATTRIBUTE = {prop.attribute: prop for prop in PROPERTIES}
POD_TEMPLATES_BY_TYPE = _Property(POD_TEMPLATE_PREFIX + "<taskType>", "pod_templates_by_type", _pod_templates)
BY_ATTRIBUTE[POD_TEMPLATES_BY_TYPE.attribute] = POD_TEMPLATES_BY_TYPE


def did_you_mean(name: str, candidates: Any) -> str:
    """`` (did you mean 'x'?)`` with the candidate closest to ``name``, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def refuse_misspelt_task_type(druid_name: str, task_type: str) -> None:
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
