"""The inputs of ``DruidK8sTaskOperator``: the task JSON, the layered runner properties, the connections, the
launch mode, and the Job the ``airflow`` launch mode builds from them (template pod or pod template files).

Every input problem is a :class:`DruidK8sConfigError` naming the argument and the fix, raised before
anything is written to the cluster or submitted to the Overlord.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jinja2
from airflow.sdk import BaseOperator, conf
from airflow.sdk.log import mask_secret

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import DruidK8sConfigError, MissingPermission
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.hooks.overlord import DEFAULT_CONN_ID
from druid_k8s_provider.hooks.overlord_connection import require_connection
from druid_k8s_provider.hooks.secrets import sensitive_values
from druid_k8s_provider.job_builder import build_job, load_pod_template
from druid_k8s_provider.launch_protocol import check_launch_mode
from druid_k8s_provider.naming import (
    AIRFLOW_DAG_ID_ANNOTATION,
    AIRFLOW_MAP_INDEX_ANNOTATION,
    AIRFLOW_RUN_ID_ANNOTATION,
    AIRFLOW_TASK_ID_ANNOTATION,
)
from druid_k8s_provider.operators.ignored import (
    DEBUG_JOBS_PROPERTY,
    TEMPLATE_ARGUMENTS,
    TEMPLATE_OPTIONS,
    job_shaping,
)
from druid_k8s_provider.preflight import Requirements, check_permissions
from druid_k8s_provider.settings import CONFIG_SECTION, json_object, layered_runner_properties
from druid_k8s_provider.task import DruidTask, derive_task_id
from druid_k8s_provider.template_selection import TemplateSelection, parse_execution_config

if TYPE_CHECKING:
    from airflow.sdk import Context

POD_TEMPLATE_BASE_PROPERTY = "druid.indexer.runner.k8s.podTemplate.base"
ADAPTER_TYPE_PROPERTY = "druid.indexer.runner.k8s.adapter.type"
T = TypeVar("T")


def airflow_identity(context: Context) -> dict[str, str]:
    """The task instance a Job is launched for, as annotations (a retry has the same identity)."""
    ti = context["ti"]
    map_index = ti.map_index if ti.map_index is not None else -1
    return {
        AIRFLOW_DAG_ID_ANNOTATION: str(ti.dag_id),
        AIRFLOW_TASK_ID_ANNOTATION: str(ti.task_id),
        AIRFLOW_RUN_ID_ANNOTATION: str(ti.run_id),
        AIRFLOW_MAP_INDEX_ANNOTATION: str(map_index),
    }


def annotate(manifest: dict[str, Any], identity: Mapping[str, str]) -> None:
    """Put the Airflow identity on the Job and its pod template (keys the builder set are kept)."""
    for metadata in (manifest["metadata"], manifest["spec"]["template"].setdefault("metadata", {})):
        annotations = metadata.setdefault("annotations", {})
        for key, value in identity.items():
            annotations.setdefault(key, value)


def refuse_foreign_run(
    job: Mapping[str, Any], identity: Mapping[str, str], task_id: str, namespace: str
) -> None:
    """Refuse to join a Job launched for another task instance under the same Druid task id.

    Druid refuses a second submission of a task id; joining would report the earlier run's outcome for a
    task that never ran. Jobs without the annotations (made by Druid, or by older versions) are joined.
    """
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    recorded = {key: annotations[key] for key in identity if key in annotations}
    if not recorded or all(recorded[key] == identity[key] for key in recorded):
        return
    other = "/".join(
        recorded.get(key, "?")
        for key in (AIRFLOW_DAG_ID_ANNOTATION, AIRFLOW_RUN_ID_ANNOTATION, AIRFLOW_TASK_ID_ANNOTATION)
    )
    raise DruidK8sConfigError(
        "task.id",
        f"Druid task id {task_id!r} was already run by {other} (its Job {job['metadata']['name']} is "
        f"still in namespace {namespace}); Druid task ids are unique per submission",
        "remove 'id' from the task JSON so the operator derives one per run, or template it with the run, "
        'e.g. "id": "compact_wiki_{{ ds_nodash }}"',
    )


class DruidTaskInputs(BaseOperator):
    """The operator's arguments, read and checked (see :class:`~druid_k8s_provider.operators.task.\
DruidK8sTaskOperator` for what each means)."""

    druid_task: dict[str, Any] | str
    runner_properties: dict[str, Any] | str | None
    runtime_properties_file: str | None
    overlord_pod_name: str | None
    overlord_pod_selector: str | None
    pod_template_file: str | None
    execution_config: dict[str, Any] | str | None
    kubernetes_conn_id: str | None
    launch_mode: str | None
    druid_ingest_conn_id: str | None

    @staticmethod
    def _read_task_file(path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DruidK8sConfigError(
                "druid_task", f"cannot read the task file {path!r}: {exc.strerror or exc}", "fix the path"
            ) from exc

    # -- inputs ------------------------------------------------------------------------------------------

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Render each templated argument, then register the task's credentials with the secrets masker.

        Rendered one field at a time so a Jinja error (a missing ``.json`` file, a syntax error, an undefined
        value) is reported as bad input naming the argument, not as a bare Jinja exception.
        """
        environment = jinja_env or self.get_template_env()
        for field in self.template_fields:
            value = getattr(self, field, None)
            if not value:
                continue
            try:
                if callable(value):
                    rendered = value(context=context, jinja_env=environment)
                else:
                    rendered = self.render_template(value, context, environment, set())
            except jinja2.TemplateNotFound as exc:
                raise DruidK8sConfigError(
                    field,
                    f"the file {exc.name!r} was not found in the template search path "
                    f"({', '.join(getattr(environment.loader, 'searchpath', []) or ['none'])})",
                    "put the file in the DAG folder or in template_searchpath, or pass an absolute path",
                ) from None
            except jinja2.TemplateSyntaxError as exc:
                raise DruidK8sConfigError(
                    field,
                    f"the Jinja template does not parse: {exc.message} (line {exc.lineno})",
                    "correct the template (unclosed '{{', a stray quote), or escape literal braces",
                ) from None
            except jinja2.TemplateError as exc:
                raise DruidK8sConfigError(
                    field,
                    f"the Jinja template cannot be rendered: {exc.message}",
                    "define the value it uses (params, macros) or give a default with |default(...)",
                ) from None
            setattr(self, field, rendered)
        if isinstance(self.druid_task, Mapping):
            # Kept as JSON text from here on: Airflow redacts rendered fields only a few levels deep, and a
            # task's credentials sit deeper (spec.ioConfig.inputSource.database.connectorConfig...).
            try:
                self.druid_task = json.dumps(self.druid_task, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise DruidK8sConfigError(
                    "druid_task",
                    f"the task holds a value JSON cannot carry ({exc})",
                    "use only JSON values (strings, numbers, true/false, null, lists, objects); write "
                    "dates as ISO-8601 strings, and no NaN or Infinity",
                ) from None
        self._mask_task_secrets()

    def _mask_task_secrets(self) -> None:
        with contextlib.suppress(DruidK8sConfigError):
            for value in sensitive_values(self._task_document()):
                mask_secret(value)

    def _task_document(self) -> dict[str, Any]:
        spec = self.druid_task
        if isinstance(spec, Mapping):
            return dict(spec)
        if isinstance(spec, str):
            try:
                decoded = json.loads(spec)
            except json.JSONDecodeError as exc:
                raise DruidK8sConfigError(
                    "druid_task",
                    f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); a .json path must "
                    "be relative to the DAG folder or template_searchpath, or absolute",
                    "pass a dict, a JSON string or a path to a .json file",
                ) from None
            if isinstance(decoded, dict):
                return decoded
        raise DruidK8sConfigError(
            "druid_task", f"expected a task JSON object, got {type(spec).__name__}", "pass the task as a dict"
        )

    def _layered_properties(self) -> dict[str, Any]:
        """runtime.properties < [druid_k8s] runner_properties < operator arguments."""
        properties = layered_runner_properties(self.runtime_properties_file, self.runner_properties)
        if self.pod_template_file:
            properties[POD_TEMPLATE_BASE_PROPERTY] = self.pod_template_file
            properties.setdefault(ADAPTER_TYPE_PROPERTY, "customTemplateAdapter")
        return properties

    def runner_config(self) -> RunnerConfig:
        """The runner configuration this task runs with (raises DruidK8sConfigError naming the property)."""
        return RunnerConfig.from_properties(self._layered_properties())

    def druid_task_for(self, context: Context) -> DruidTask:
        """The Druid task, with the spec's id or one derived from the task instance."""
        document = self._task_document()
        return DruidTask.from_spec(document, default_id=self._derived_base_id(context, document))

    def _conn_id(self) -> str:
        return (
            self.kubernetes_conn_id
            or conf.get(CONFIG_SECTION, "kubernetes_conn_id", fallback="kubernetes_default")
            or "kubernetes_default"
        )

    def _selector(self) -> str | None:
        return (
            self.overlord_pod_selector
            or conf.get(CONFIG_SECTION, "overlord_pod_selector", fallback="")
            or None
        )

    def _requested_mode(self) -> str:
        """``launch_mode``, else ``[druid_k8s] launch_mode``, else ``auto``; checked before any request."""
        if self.launch_mode not in (None, ""):
            return check_launch_mode(self.launch_mode)
        configured = conf.get(CONFIG_SECTION, "launch_mode", fallback="") or "auto"
        return check_launch_mode(configured, f"[{CONFIG_SECTION}] launch_mode")

    def _ingest_conn_id(self) -> str:
        """``druid_ingest_conn_id``, else ``[druid_k8s] druid_ingest_conn_id``, else the default.

        The argument and the default are checked by the hook, before any request. A connection named by the
        option is looked up here, so an undefined one is refused naming the option, not the argument the
        user never set.
        """
        if self.druid_ingest_conn_id not in (None, ""):
            return self.druid_ingest_conn_id
        configured = conf.get(CONFIG_SECTION, "druid_ingest_conn_id", fallback="")
        if configured in ("", DEFAULT_CONN_ID):
            # Once Airflow loads the provider's configuration, the option reads as its default: the default
            # connection is the argument's too, so its refusal names the argument.
            return DEFAULT_CONN_ID
        require_connection(configured, f"[{CONFIG_SECTION}] druid_ingest_conn_id")
        return configured

    def _derived_base_id(self, context: Context, document: Mapping[str, Any]) -> str:
        """The base Druid task id of this task instance (dag, task, run, map index)."""
        ti = context["ti"]
        return derive_task_id(
            ti.dag_id,
            ti.task_id,
            ti.run_id,
            ti.map_index if ti.map_index is not None else -1,
            str(document.get("type") or "task"),
        )

    def _airflow_properties(self) -> dict[str, str]:
        """The runner properties set in Airflow, each with where: the ``[druid_k8s] runner_properties``
        option or this operator's ``runner_properties`` (the later layer named when both set one)."""
        configured = conf.get(CONFIG_SECTION, "runner_properties", fallback="") or None
        where = dict.fromkeys(
            json_object(f"[{CONFIG_SECTION}] runner_properties", configured),
            f"[{CONFIG_SECTION}] runner_properties",
        )
        where.update(
            dict.fromkeys(json_object("runner_properties", self.runner_properties), "runner_properties")
        )
        return where

    def _warn_ignored_options(self, mode: str) -> None:
        """Say which settings have no effect: ``debugJobs`` set in Airflow (the Overlord's own decides
        whether a finished Job is kept, in every mode) and, in ``overlord`` mode, the template arguments and
        options and the Job-shaping properties set in Airflow (the Overlord builds the Job from its own)."""
        properties = self._airflow_properties()
        if DEBUG_JOBS_PROPERTY in properties:
            self.log.warning(
                "%s (set in %s) has no effect: the Overlord deletes a task's Job when the task completes "
                "unless its own %s is true; set it in the Overlord's runtime.properties",
                DEBUG_JOBS_PROPERTY,
                properties[DEBUG_JOBS_PROPERTY],
                DEBUG_JOBS_PROPERTY,
            )
        if mode != "overlord":
            return
        ignored = [argument for argument in TEMPLATE_ARGUMENTS if getattr(self, argument)]
        ignored += [
            f"[{CONFIG_SECTION}] {option}"
            for option in TEMPLATE_OPTIONS
            if not getattr(self, option) and conf.get(CONFIG_SECTION, option, fallback="")
        ]
        ignored += [f"{name} (set in {properties[name]})" for name in job_shaping(properties)]
        if ignored:
            self.log.warning(
                "launch_mode 'overlord': the Overlord builds the Job from its own pod template, adapter and "
                "runner properties, so these settings have no effect on it: %s. Configure the Overlord's "
                "runner instead",
                "; ".join(ignored),
            )

    @staticmethod
    def _explaining_refusals(
        hook: DruidK8sHook, requirements: Requirements, task_id: str, name: str, read: Callable[[], T]
    ) -> T:
        """``read()``; when it is refused for want of a permission, the preflight names every one missing.

        The preflight (one rules review) runs once the reads that come before it succeeded, just before the
        first write; a read refused earlier still fails with the whole list of what the Role lacks.
        """
        try:
            return read()
        except MissingPermission:
            check_permissions(hook, requirements, task_id=task_id, job_name=name)
            raise

    def _build(
        self, hook: DruidK8sHook, task: DruidTask, config: RunnerConfig, druid_version: str | None
    ) -> dict[str, Any]:
        """The Job manifest; every input problem surfaces here, before anything is created."""
        selection = self._template_selection()
        if config.adapter_type == "customTemplateAdapter":
            template = load_pod_template(config, task, selection)
        elif self.execution_config:
            raise DruidK8sConfigError(
                "execution_config",
                f"pod template selection applies to customTemplateAdapter only; this task uses "
                f"{config.adapter_type}, whose template is the Overlord pod",
                f"set {ADAPTER_TYPE_PROPERTY}=customTemplateAdapter with "
                "druid.indexer.runner.k8s.podTemplate.* files, or drop execution_config",
            )
        else:
            template = hook.get_template_pod(
                config.overlord_namespace or config.namespace, self.overlord_pod_name, self._selector()
            )
        return build_job(task, template, config, druid_version=druid_version)

    def _template_selection(self) -> TemplateSelection:
        """Druid's execution config (this operator's, else ``[druid_k8s] execution_config``), checked."""
        field, value = "execution_config", self.execution_config
        if not value:
            field = f"[{CONFIG_SECTION}] execution_config"
            value = conf.get(CONFIG_SECTION, "execution_config", fallback="") or None
        document = json_object(
            field,
            value,
            what="Druid's task runner execution config (a JSON object)",
            example='{"type": "default", "podTemplateSelectStrategy": {"type": "taskType"}}',
        )
        return parse_execution_config(field, document)
