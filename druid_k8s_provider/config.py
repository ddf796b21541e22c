"""The runner configuration: Druid's ``druid.indexer.runner.*`` properties, with Druid's names and defaults.

Properties can come from the Overlord's ``runtime.properties`` (so a team moving from the in-Overlord runner
points us at the file it already has), from Airflow config, or from operator arguments; later sources win
(:meth:`RunnerConfig.merged`). Values are accepted as the strings a properties file holds or as native Python
values. Every bad value is refused here, before anything reaches Kubernetes, with an error naming the
property and the fix; a misspelt runner property is refused too, because a silently ignored typo (say
``maxTaskDurration``) would run tasks with a default nobody asked for.

The property names are in ``config_names``; each property's parser and the table of them in
``config_properties``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import javaproperties
import pendulum

from druid_k8s_provider.config_names import (
    CUSTOM_TEMPLATE_ADAPTER,
    DEEP_STORAGE_INTERMEDIARY,
    DEFAULT_BASE_TASK_DIR,
    DEFAULT_KUBEXIT_IMAGE,
    INTERMEDIARY_STORAGE_PROPERTY,
    JAVA_OPTS_PROPERTY,
    LAUNCH_TIMEOUT_ALIASES,
    MULTI_CONTAINER_ADAPTER,
    OTHER_RUNNER_PREFIXES,
    OTHER_RUNNER_PROPERTIES,
    POD_TEMPLATE_PREFIX,
    RUNNER_PREFIX,
    SINGLE_CONTAINER_ADAPTER,
    SidecarTermination,
)
from druid_k8s_provider.config_properties import (
    BY_ATTRIBUTE,
    BY_DRUID_NAME,
    MAX_INT,
    POD_TEMPLATES_BY_TYPE,
    PROPERTIES,
    did_you_mean,
    non_empty_text,
    refuse_misspelt_task_type,
)
from druid_k8s_provider.errors import DruidK8sConfigError

log = logging.getLogger(__name__)


def druid_name_of(attribute: str) -> str:
    """The Druid property behind a RunnerConfig attribute, for error messages of other modules."""
    return BY_ATTRIBUTE[attribute].druid_name


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
    capacity: int = MAX_INT
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
                hint = f"; did you mean {suggestion!r}" if suggestion in BY_DRUID_NAME else ""
                raise DruidK8sConfigError(
                    str(druid_name),
                    f"not a Druid property name{hint}",
                    "use Druid's full property names, e.g. druid.indexer.runner.namespace",
                )
            if druid_name == JAVA_OPTS_PROPERTY:
                raise DruidK8sConfigError(
                    druid_name,
                    "the string form of the peon JVM options is not supported (Druid's Kubernetes runner "
                    "ignores it too)",
                    f'use {RUNNER_PREFIX}javaOptsArray with a JSON array, e.g. ["-Xmx2g", "-XX:+UseG1GC"]',
                )
            if druid_name.startswith(POD_TEMPLATE_PREFIX) and druid_name != POD_TEMPLATE_PREFIX + "base":
                task_type = druid_name[len(POD_TEMPLATE_PREFIX) :]
                refuse_misspelt_task_type(druid_name, task_type)
                templates_by_type[task_type] = non_empty_text(druid_name, raw)
                continue
            prop = BY_DRUID_NAME.get(druid_name)
            if prop is None:
                if (
                    druid_name.startswith(RUNNER_PREFIX)
                    and druid_name not in OTHER_RUNNER_PROPERTIES
                    and not druid_name.startswith(OTHER_RUNNER_PREFIXES)
                ):
                    raise DruidK8sConfigError(
                        druid_name,
                        f"unknown runner property{did_you_mean(druid_name, BY_DRUID_NAME)}",
                        "correct the name or remove the property (see the configuration docs)",
                    )
                log.debug("Ignoring property %s: it does not shape peon Jobs", druid_name)
                continue
            if prop.attribute in values and druid_name in LAUNCH_TIMEOUT_ALIASES:
                raise DruidK8sConfigError(
                    druid_name,
                    "both spellings of the launch timeout are set",
                    f"keep only one of {LAUNCH_TIMEOUT_ALIASES[0]} and {LAUNCH_TIMEOUT_ALIASES[1]}",
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
                INTERMEDIARY_STORAGE_PROPERTY,
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
            prop = BY_ATTRIBUTE.get(attribute)
            if prop is None:
                raise DruidK8sConfigError(
                    attribute,
                    f"unknown runner setting{did_you_mean(attribute, BY_ATTRIBUTE)}",
                    f"use one of {sorted(BY_ATTRIBUTE)}",
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
        for prop in (*PROPERTIES, POD_TEMPLATES_BY_TYPE):
            value = getattr(self, prop.attribute)
            if value is None:
                continue
            if prop is POD_TEMPLATES_BY_TYPE:
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
