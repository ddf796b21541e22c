"""``DruidK8sTaskOperator``: run one Druid task as a Kubernetes Job, the way Druid's Kubernetes runner does.

Lifecycle (spec section 6): build the Job from the task, the template pod and the runner properties (nothing
is created when any input is bad); create it, or join the Job that already exists for the same Druid task
(a retry after a worker crash never launches a second peon; a Job that is being deleted is not joined: the
launch waits until its name is free); wait for the pod to start within
``K8sjobLaunchTimeout`` (failing fast on reasons waiting will not cure); wait for completion while
streaming the peon's log into the Airflow log; read the outcome (``status.json`` from the task-log location
when configured, else the Job's and pod's state); delete the Job unless ``debugJobs``; return a summary to
XCom and fail the Airflow task when the Druid task failed.

Stopping follows Druid's promise that restarts do not affect tasks in flight: ``on_kill`` deletes the Job
only when a person stopped the task (the API server no longer says it is running); when only the worker is
going away, the Job keeps running and the next try re-attaches to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jinja2
from airflow.sdk import BaseOperator, ObjectStoragePath, conf
from airflow.sdk.log import mask_secret

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import (
    DruidK8sConfigError,
    DruidK8sTaskError,
    JobFailed,
    JobLaunchTimeout,
    KubernetesApiError,
    MissingPermission,
    TemplatePodNotFound,
)
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s import DruidK8sAsyncHook, DruidK8sHook, task_id_of
from druid_k8s_provider.hooks.log_cursor import LogCursor, split_line
from druid_k8s_provider.hooks.secrets import scrub, sensitive_values
from druid_k8s_provider.job_builder import build_job, load_pod_template, peon_job_name
from druid_k8s_provider.preflight import Requirements, check_permissions, operator_requirements
from druid_k8s_provider.settings import CONFIG_SECTION, json_object, layered_runner_properties
from druid_k8s_provider.task import DruidTask, derive_task_id
from druid_k8s_provider.template_selection import TemplateSelection, parse_execution_config
from druid_k8s_provider.triggers.job import (
    ERROR,
    FINISHED,
    LAUNCH_FAILED,
    MISSING,
    SIDECAR_GRACE_SECONDS,
    TIMED_OUT,
    DruidK8sJobTrigger,
    JobFollower,
    OwnJob,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

DAG_ID_ANNOTATION = "airflow.apache.org/dag-id"
TASK_ID_ANNOTATION = "airflow.apache.org/task-id"
RUN_ID_ANNOTATION = "airflow.apache.org/run-id"
MAP_INDEX_ANNOTATION = "airflow.apache.org/map-index"
POD_TEMPLATE_BASE_PROPERTY = "druid.indexer.runner.k8s.podTemplate.base"
ADAPTER_TYPE_PROPERTY = "druid.indexer.runner.k8s.adapter.type"
#: Waiting beyond maxTaskDuration, so Kubernetes' own DeadlineExceeded is what the task reports.
COMPLETION_SLACK_SECONDS = 60.0
T = TypeVar("T")


def airflow_identity(context: Context) -> dict[str, str]:
    """The task instance a Job is launched for, as annotations (a retry has the same identity)."""
    ti = context["ti"]
    map_index = ti.map_index if ti.map_index is not None else -1
    return {
        DAG_ID_ANNOTATION: str(ti.dag_id),
        TASK_ID_ANNOTATION: str(ti.task_id),
        RUN_ID_ANNOTATION: str(ti.run_id),
        MAP_INDEX_ANNOTATION: str(map_index),
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
        recorded.get(key, "?") for key in (DAG_ID_ANNOTATION, RUN_ID_ANNOTATION, TASK_ID_ANNOTATION)
    )
    raise DruidK8sConfigError(
        "task.id",
        f"Druid task id {task_id!r} was already run by {other} (its Job {job['metadata']['name']} is "
        f"still in namespace {namespace}); Druid task ids are unique per submission",
        "remove 'id' from the task JSON so the operator derives one per run, or template it with the run, "
        'e.g. "id": "compact_wiki_{{ ds_nodash }}"',
    )


def _check_join(
    hook: DruidK8sHook,
    requirements: Requirements,
    job: Mapping[str, Any],
    identity: Mapping[str, str],
    task_id: str,
    namespace: str,
) -> None:
    """Before joining a Job found by reading it: refuse another run's, and fail a Role that is too narrow for
    the rest of the lifecycle here, naming every missing permission, before any write."""
    refuse_foreign_run(job, identity, task_id, namespace)
    check_permissions(hook, requirements, task_id=task_id, job_name=job["metadata"]["name"])


def _epoch(timestamp: str | None) -> float:
    parsed = job_state.parse_time(timestamp)
    return parsed.timestamp() if parsed is not None else time.time()


class DruidK8sTaskOperator(BaseOperator):
    """Run a Druid task as a Kubernetes Job (MiddleManager-less Druid) and report its outcome.

    Runner settings are layered: the Overlord ``runtime.properties`` file, then the ``[druid_k8s]`` Airflow
    config section, then this operator's arguments (later wins).

    :param druid_task: the task JSON as a dict, a JSON string, or a path to a ``.json`` file (templated; a
        relative path is looked up in the DAG folder and ``template_searchpath``). Without an ``id`` the id is
        derived from the task instance (dag, task, run, map index), so every try maps to the same Job.
    :param runner_properties: Druid runner properties (``druid.indexer.runner.*`` names) as a dict or JSON.
    :param runtime_properties_file: an Overlord ``runtime.properties`` file to start from.
    :param overlord_pod_name: the pod whose spec is the peon template (overlord adapters).
    :param overlord_pod_selector: label selector of that pod; the first Running match is used.
    :param pod_template_file: a ``v1/PodTemplate`` file: selects the custom template adapter with this base.
    :param execution_config: Druid's task runner execution config (dict or JSON), whose
        ``podTemplateSelectStrategy`` (``taskType`` or ``selectorBased``) picks the custom adapter's pod
        template; default ``[druid_k8s] execution_config``, else by task type.
    :param kubernetes_conn_id: the Airflow connection to Kubernetes.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param task_logs_location: object-storage URL where peons push ``status.json`` (Druid's task logs).
    :param image_pull_grace_seconds: how long ErrImagePull/ImagePullBackOff may last before failing fast.
    :param poll_interval: seconds between fallback polls while waiting (the watch does the real work).
    :param sidecar_grace_seconds: how long the peon pod may run on after its main container ended (a sidecar
        nothing stops) before the main container's exit code decides and the Job is deleted.
    """

    template_fields: Sequence[str] = (
        "druid_task",
        "runner_properties",
        "runtime_properties_file",
        "overlord_pod_name",
        "overlord_pod_selector",
        "pod_template_file",
        "execution_config",
        "kubernetes_conn_id",
        "task_logs_location",
    )
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {
        "druid_task": "json",
        "runner_properties": "json",
        "execution_config": "json",
    }
    ui_color = "#29b6f6"

    def __init__(
        self,
        *,
        druid_task: dict[str, Any] | str,
        runner_properties: dict[str, Any] | str | None = None,
        runtime_properties_file: str | None = None,
        overlord_pod_name: str | None = None,
        overlord_pod_selector: str | None = None,
        pod_template_file: str | None = None,
        execution_config: dict[str, Any] | str | None = None,
        kubernetes_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        task_logs_location: str | None = None,
        image_pull_grace_seconds: float = 60.0,
        poll_interval: float = 60.0,
        sidecar_grace_seconds: float = SIDECAR_GRACE_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not poll_interval > 0:
            raise DruidK8sConfigError(
                "poll_interval",
                f"must be a positive number of seconds, got {poll_interval!r}",
                "leave the default (60); the watch does the real work, this is only the fallback poll",
            )
        if not image_pull_grace_seconds >= 0:
            raise DruidK8sConfigError(
                "image_pull_grace_seconds",
                f"must be zero or more seconds, got {image_pull_grace_seconds!r}",
                "give how long ErrImagePull/ImagePullBackOff may last before the task fails (default 60)",
            )
        if not sidecar_grace_seconds >= 0:
            raise DruidK8sConfigError(
                "sidecar_grace_seconds",
                f"must be zero or more seconds, got {sidecar_grace_seconds!r}",
                "give how long a pod may run on after its main container ended (default 30)",
            )
        if isinstance(druid_task, str) and druid_task.endswith(".json") and os.path.isabs(druid_task):
            # Jinja's loader only finds paths relative to the DAG folder; read absolute ones here.
            druid_task = self._read_task_file(druid_task)
        self.druid_task = druid_task
        self.runner_properties = runner_properties
        self.runtime_properties_file = runtime_properties_file
        self.overlord_pod_name = overlord_pod_name
        self.overlord_pod_selector = overlord_pod_selector
        self.pod_template_file = pod_template_file
        self.execution_config = execution_config
        self.kubernetes_conn_id = kubernetes_conn_id
        self.deferrable = deferrable
        self.task_logs_location = task_logs_location
        self.image_pull_grace_seconds = image_pull_grace_seconds
        self.poll_interval = poll_interval
        self.sidecar_grace_seconds = sidecar_grace_seconds
        self._running: dict[str, Any] | None = None
        self._wait: tuple[asyncio.AbstractEventLoop, asyncio.Task[dict[str, Any]]] | None = None
        self._kill_verdict: str | None = None
        self._stop_requested = False

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
        ti = context["ti"]
        derived = derive_task_id(
            ti.dag_id,
            ti.task_id,
            ti.run_id,
            ti.map_index if ti.map_index is not None else -1,
            str(document.get("type") or "task"),
        )
        return DruidTask.from_spec(document, default_id=derived)

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

    def _logs_location(self) -> str | None:
        return self.task_logs_location or conf.get(CONFIG_SECTION, "task_logs_location", fallback="") or None

    # -- execution ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Launch or join the Job, then wait for it here or in the triggerer."""
        self._mask_task_secrets()
        config = self.runner_config()
        task = self.druid_task_for(context)
        hook = DruidK8sHook(self._conn_id(), config.namespace, config.disable_client_proxy)
        name = peon_job_name(task.id, config)
        requirements = operator_requirements(config)
        details = {
            "druid_task_id": task.id,
            "job_name": name,
            "namespace": config.namespace,
            "debug_jobs": config.debug_jobs,
            "disable_client_proxy": config.disable_client_proxy,
            "kubernetes_conn_id": self._conn_id(),
        }
        retry = int(getattr(context["ti"], "try_number", 1) or 1) > 1
        job: dict[str, Any] | None = None
        if retry:
            # A retry usually finds its Job (the worker died while it ran): join it without reading the
            # template pod, which may be gone by now.
            namespace = config.namespace
            job = self._explaining_refusals(
                hook, requirements, task.id, name, lambda: hook.get_job(name, namespace, task_id=task.id)
            )
            if job is not None and task_id_of(job) == task.id and job_state.being_deleted(job):
                # An earlier try's Job on its way out (stopped by a person, the reaper): joining it would
                # report that try's outcome. Once it is gone, this try goes on as if it had found none.
                hook.wait_for_job_release(job, task_id=task.id)
                job = None
            recorded = self._recorded_outcome(job, task.id)
            if recorded is not None:
                return self._report(context, recorded, details, None)
        identity = airflow_identity(context)
        if job is not None and task_id_of(job) == task.id:
            _check_join(hook, requirements, job, identity, task.id, config.namespace)
            created = False
        else:
            job, created = self._create_or_join(hook, requirements, task, config, identity, retry)
        self.log.info(
            "%s Job %s in namespace %s for Druid task %s",
            "Created" if created else "Joined the existing",
            name,
            config.namespace,
            task.id,
        )
        created_at = _epoch(job["metadata"].get("creationTimestamp"))
        launch_deadline = created_at + config.k8s_job_launch_timeout.total_seconds()
        completion_deadline = (
            launch_deadline + config.max_task_duration.total_seconds() + COMPLETION_SLACK_SECONDS
        )
        trigger = DruidK8sJobTrigger(
            job_name=name,
            namespace=config.namespace,
            druid_task_id=task.id,
            kubernetes_conn_id=self._conn_id(),
            launch_deadline=launch_deadline,
            completion_deadline=completion_deadline,
            image_pull_grace_seconds=self.image_pull_grace_seconds,
            poll_interval=self.poll_interval,
            disable_client_proxy=config.disable_client_proxy,
            sidecar_grace_seconds=self.sidecar_grace_seconds,
        )
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete", kwargs={"details": details})
        self._running = {**details, "context": context}
        follower = trigger.follower()
        follower.hook = DruidK8sAsyncHook(
            self._conn_id(),
            disable_client_proxy=config.disable_client_proxy,
            connection_extras=dict(hook.conn_extras),
        )
        follower.emit_line = self._emit_peon_line
        follower.own_job = OwnJob(job, created)
        event = self._wait_in_process(follower)
        return self._finish(context, event, details)

    def _create_or_join(
        self,
        hook: DruidK8sHook,
        requirements: Requirements,
        task: DruidTask,
        config: RunnerConfig,
        identity: Mapping[str, str],
        retry: bool,
    ) -> tuple[dict[str, Any], bool]:
        """Create the Job, or join the one already there: (job, created).

        A first try creates straight away (the usual case, and one request fewer than looking first); a Job
        that already exists answers ``409`` and is then read, so a re-execution joins it and a Job of
        another run with the same Druid task id is refused, with nothing changed on the cluster. Bad input
        is refused while building, before any request that writes.
        """
        name = peon_job_name(task.id, config)
        try:
            manifest = self._explaining_refusals(
                hook, requirements, task.id, name, lambda: self._build(hook, task, config)
            )
        except TemplatePodNotFound:
            if retry:
                raise
            # The Overlord pod is gone, but this task instance may have launched its Job already.
            existing = hook.get_job(name, config.namespace, task_id=task.id)
            if existing is None or task_id_of(existing) != task.id or job_state.being_deleted(existing):
                raise
            _check_join(hook, requirements, existing, identity, task.id, config.namespace)
            return existing, False
        # A Role that is too narrow fails here, naming every missing permission, before any write.
        check_permissions(hook, requirements, task_id=task.id, job_name=name)
        annotate(manifest, identity)
        job, created = hook.create_or_join_job(manifest)
        if not created:  # the create was refused (409), so the permissions were checked already
            refuse_foreign_run(job, identity, task.id, config.namespace)
        return job, created

    def _recorded_outcome(self, job: dict[str, Any] | None, task_id: str) -> job_state.Outcome | None:
        """On a retry whose Job is gone, the outcome the peon pushed to task logs, if it finished.

        A worker may die after the Job finished and was deleted but before Airflow recorded the result;
        launching the task again would, for an append ingestion, load its data twice. Only ``status.json``
        remembers a finished-and-deleted task, so this needs ``task_logs_location`` (or ``debugJobs``, which
        leaves deleting to the reaper). A first try always launches, even when an explicit id was used before.
        """
        location = self._logs_location()
        if job is not None or not location:
            return None
        report = self._read_status_report(location, task_id)
        if report is None:
            return None
        self.log.info(
            "Druid task %s already finished (status.json found under %s and its Job was cleaned up): "
            "reporting that outcome instead of launching the task again",
            task_id,
            location,
        )
        return self._outcome_from_report(report, None, None)

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

    def _build(self, hook: DruidK8sHook, task: DruidTask, config: RunnerConfig) -> dict[str, Any]:
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
        return build_job(task, template, config)

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

    def _emit_peon_line(self, line: str) -> None:
        self.log.info("%s", line)

    def _wait_in_process(self, follower: JobFollower) -> dict[str, Any]:
        """Run the same waiting logic as the trigger, on a private loop, cancellable by ``on_kill``."""

        async def wait() -> dict[str, Any]:
            task = asyncio.current_task()
            assert task is not None
            self._wait = (asyncio.get_running_loop(), task)
            if self._stop_requested:  # on_kill came between the create and this wait
                raise asyncio.CancelledError
            return await follower.outcome()

        try:
            return asyncio.run(wait())
        except asyncio.CancelledError:
            self._wait = None
            if self._kill_verdict is None:
                self._decide_on_stop()
            running = self._running or {}
            if self._kill_verdict == "deleted":
                raise JobFailed(
                    "the Airflow task was stopped by a user; the Job was deleted",
                    task_id=running.get("druid_task_id"),
                    job_name=running.get("job_name"),
                ) from None
            raise DruidK8sTaskError(
                "the worker is shutting down; the Job keeps running and the next try of this task "
                "re-attaches to it",
                task_id=running.get("druid_task_id"),
                job_name=running.get("job_name"),
            ) from None
        finally:
            self._wait = None

    def execute_complete(
        self, context: Context, event: dict[str, Any], details: dict[str, Any] | None = None
    ) -> Any:
        """Resume after the trigger fired: catch up the log, report the outcome, clean up.

        ``details`` come from the deferral; when a runner drops them (``dag.test()`` passes only the
        event), the event and the operator's own configuration say the same.
        """
        if details is None:
            details = {
                key: event[key]
                for key in (
                    "druid_task_id",
                    "job_name",
                    "namespace",
                    "kubernetes_conn_id",
                    "disable_client_proxy",
                )
            }
            details["debug_jobs"] = self.runner_config().debug_jobs
        return self._finish(context, event, details)

    # -- outcome -----------------------------------------------------------------------------------------

    def _finish(self, context: Context, event: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
        hook = DruidK8sHook(
            details["kubernetes_conn_id"], details["namespace"], details["disable_client_proxy"]
        )
        task_id, name, namespace = details["druid_task_id"], details["job_name"], details["namespace"]
        status = event.get("status")
        pod = event.get("pod")
        if status == FINISHED and pod is not None and not event.get("log_complete"):
            self._catch_up_log(hook, pod["metadata"]["name"], namespace, event.get("log_cursor"))
        if status == LAUNCH_FAILED:
            hook.delete_job(name, namespace, task_id=task_id)
            raise JobLaunchTimeout(
                f"{event.get('reason')}. Recent events: {event.get('events')}. The Job was deleted. Fix the "
                "cause (image, resources, quota or LimitRange, node capacity, secrets) and clear the task",
                task_id=task_id,
                job_name=name,
            )
        if status == MISSING:
            raise JobFailed(
                "the Job disappeared before it finished (deleted by a person, the reaper or a TTL); clear "
                "the task to run it again",
                task_id=task_id,
                job_name=name,
            )
        if status == ERROR:
            raise KubernetesApiError(
                f"waiting for the Job failed: {event.get('error')}; the Job was left as it is and the next "
                "try re-attaches to it",
                task_id=task_id,
                job_name=name,
            )
        if status == TIMED_OUT:
            hook.delete_job(name, namespace, task_id=task_id)
            outcome = job_state.Outcome(
                job_state.FAILED,
                "the Job did not finish within maxTaskDuration (plus K8sjobLaunchTimeout); it was deleted",
                None,
            )
        else:
            outcome = self._outcome(event["job"], pod, task_id)
            if event.get("held_by") is not None:
                self.log.warning(
                    "Container(s) %s kept pod %s running after the peon's main container ended: the outcome "
                    "is the main container's; deleting Job %s (also with debugJobs: it would run on until "
                    "maxTaskDuration)",
                    ", ".join(event["held_by"]) or "(none named)",
                    pod["metadata"]["name"] if pod else "?",
                    name,
                )
                hook.delete_job(name, namespace, task_id=task_id)
            elif details.get("debug_jobs"):
                self.log.info(
                    "debugJobs is set: keeping Job %s for inspection (the reaper removes it later)", name
                )
            else:
                hook.delete_job(name, namespace, task_id=task_id)
        return self._report(context, outcome, details, pod["metadata"]["name"] if pod else None)

    def _report(
        self, context: Context, outcome: job_state.Outcome, details: dict[str, Any], pod_name: str | None
    ) -> dict[str, Any]:
        """The XCom summary; a FAILED outcome is pushed too, then fails the Airflow task saying why.

        The error may quote the peon's last log lines (``FallbackToLogsOnError`` termination messages), and
        XCom is stored and shown unmasked: the task's credentials are scrubbed from it first.
        """
        secrets: list[str] = []
        with contextlib.suppress(DruidK8sConfigError):
            secrets = sensitive_values(self._task_document())
        outcome = dataclasses.replace(outcome, error=scrub(outcome.error, secrets))
        result = {
            "druid_task_id": details["druid_task_id"],
            "job_name": details["job_name"],
            "namespace": details["namespace"],
            "pod_name": pod_name,
            "status": outcome.status,
            "duration_ms": outcome.duration_ms,
            "error": outcome.error,
        }
        if outcome.status != job_state.SUCCESS:
            context["ti"].xcom_push(key="return_value", value=result)
            raise JobFailed(
                outcome.error or "the Druid task failed",
                task_id=details["druid_task_id"],
                job_name=details["job_name"],
            )
        self.log.info("Druid task %s succeeded in %s ms", details["druid_task_id"], outcome.duration_ms)
        return result

    def _outcome(self, job: dict[str, Any], pod: dict[str, Any] | None, task_id: str) -> job_state.Outcome:
        location = self._logs_location()
        if not location:
            return job_state.outcome_from_state(job, pod)
        report = self._read_status_report(location, task_id)
        if report is None:
            state = job_state.outcome_from_state(job, pod)
            return job_state.Outcome(
                job_state.FAILED,
                f"Peon did not report status successfully (no status.json under {location}); "
                + (state.error or "the peon exited without error"),
                state.duration_ms,
            )
        return self._outcome_from_report(report, job, pod)

    @staticmethod
    def _outcome_from_report(
        report: dict[str, Any], job: dict[str, Any] | None, pod: dict[str, Any] | None
    ) -> job_state.Outcome:
        """Druid's TaskStatus decides; the Job and pod (when still there) explain a FAILED without message."""
        status = str(report.get("status") or report.get("statusCode") or job_state.FAILED).upper()
        duration = report.get("duration")
        error = report.get("errorMsg")
        if status != job_state.SUCCESS and not error:
            explained = job_state.outcome_from_state(job, pod).error if job is not None else None
            error = explained or "the peon reported FAILED without a message"
        return job_state.Outcome(
            job_state.SUCCESS if status == job_state.SUCCESS else job_state.FAILED,
            None if status == job_state.SUCCESS else str(error),
            int(duration) if isinstance(duration, int | float) and duration >= 0 else None,
        )

    def _read_status_report(self, location: str, task_id: str) -> dict[str, Any] | None:
        """Druid's TaskStatus at ``<location>/<id>/status.json`` (S3 ...) or ``<id>.status.json`` (file)."""
        base = ObjectStoragePath(location)
        for candidate in (base / task_id / "status.json", base / f"{task_id}.status.json"):
            with contextlib.suppress(FileNotFoundError):
                if candidate.exists():
                    return dict(json.loads(candidate.read_text()))
        return None

    def _catch_up_log(
        self, hook: DruidK8sHook, pod_name: str, namespace: str, cursor_data: dict[str, Any] | None
    ) -> None:
        """Show the log lines the waiter had not shown yet (none, usually)."""
        cursor = LogCursor.from_dict(cursor_data)
        cursor.begin_read()
        for raw in hook.read_pod_log(pod_name, namespace, since_time=cursor.since_time()):
            timestamp, text = split_line(raw)
            if cursor.admit(timestamp):
                self._emit_peon_line(text)

    # -- stopping ----------------------------------------------------------------------------------------

    def on_kill(self) -> None:
        """Delete the Job if a person stopped the task; leave it running if the worker is going away.

        Airflow calls this from its SIGTERM handler, where starting threads or taking locks the interrupted
        code may hold can deadlock. So while the operator waits in the worker, this only cancels the wait;
        ``execute`` then decides, in ordinary context, before the supervisor's SIGKILL escalation.
        """
        self._stop_requested = True
        if self._wait is not None:
            loop, task = self._wait
            loop.call_soon_threadsafe(task.cancel)
            return
        if self._running is not None and self._kill_verdict is None:
            self._decide_on_stop()

    def _decide_on_stop(self) -> None:
        """Ask the API server whether the task instance still runs; delete the Job only if it does not."""
        running = self._running
        if running is None:
            return
        state = self._state_on_server(running["context"])
        if state is not None and state != "running":
            self.log.info(
                "The task instance is %s on the API server (stopped by a user): deleting Job %s",
                state,
                running["job_name"],
            )
            DruidK8sHook(
                running["kubernetes_conn_id"], running["namespace"], running["disable_client_proxy"]
            ).delete_job(running["job_name"], running["namespace"], task_id=running["druid_task_id"])
            self._kill_verdict = "deleted"
        else:
            self.log.warning(
                "Worker shutdown (task instance still %s on the API server): Job %s keeps running and "
                "the next try re-attaches to it",
                state or "unknown",
                running["job_name"],
            )
            self._kill_verdict = "kept"

    def _state_on_server(self, context: Context) -> str | None:
        """The task instance's state as the API server sees it, or None when it cannot be learned."""
        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None
        try:
            states = ti.get_task_states(
                dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
            )
        except Exception as exc:
            self.log.warning("Could not learn the task instance's state from the API server: %s", exc)
            return None
        key = ti.task_id if map_index is None else f"{ti.task_id}_{map_index}"
        value = (states.get(ti.run_id) or {}).get(key)
        return str(getattr(value, "value", value)) if value is not None else "none"
