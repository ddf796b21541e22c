"""``DruidK8sTaskOperator``: run one Druid task through the Overlord as a Kubernetes Job, and report it.

The Airflow shell of the launch protocol in :mod:`druid_k8s_provider.launch` (spec ``druid-overlord.md``):
every task is submitted to the Overlord, which holds its locks, publishes its segments and records its
outcome. ``launch_mode`` picks who creates the Job: ``airflow`` (Druid 35.0.0 and later) builds it here with
every runner semantic (template pod, adapters, sidecars), creates it suspended and unlabelled, submits the
task and releases the Job once the Overlord has handed the task to its runner; ``overlord`` only submits and
follows the Job the Overlord makes; ``auto`` chooses from the Overlord's version. A retry asks the Overlord
about the attempts so far and re-attaches, reports, or submits the next attempt. The Overlord's status
decides the outcome; the ingestion report goes to the log and XCom.

Stopping follows Druid's promise that restarts do not affect tasks in flight: ``on_kill`` shuts the task down
in the Overlord only when a person stopped it (the API server no longer says it is running); when only the
worker is going away, the task keeps running and the next try re-attaches to it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow.sdk import conf

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import DruidK8sConfigError, DruidK8sTaskError, JobFailed
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.hooks.druid_k8s_async import DruidK8sAsyncHook
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.job_builder import peon_job_name
from druid_k8s_provider.launch import airflow_mode
from druid_k8s_provider.launch.follow import COMPLETED, FollowSpec, follow_task, status_dict
from druid_k8s_provider.launch.stop import stop_task
from druid_k8s_provider.launch.worker import plan_launch, submit
from druid_k8s_provider.launch_protocol import AttemptAction, written_id_failed
from druid_k8s_provider.operators.inputs import airflow_identity, annotate, refuse_foreign_run
from druid_k8s_provider.operators.outcome import DruidTaskOutcome
from druid_k8s_provider.preflight import check_permissions, operator_requirements
from druid_k8s_provider.settings import CONFIG_SECTION
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.triggers.job import SIDECAR_GRACE_SECONDS
from druid_k8s_provider.triggers.overlord_task import DruidOverlordTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class DruidK8sTaskOperator(DruidTaskOutcome):
    """Run a Druid task through the Overlord as a Kubernetes Job (MiddleManager-less Druid); report it.

    Runner settings are layered: the Overlord ``runtime.properties`` file, then the ``[druid_k8s]`` Airflow
    config section, then this operator's arguments (later wins).

    :param druid_task: the task JSON as a dict, a JSON string, or a path to a ``.json`` file (templated; a
        relative path is looked up in the DAG folder and ``template_searchpath``). Without an ``id`` the id is
        derived from the task instance (dag, task, run, map index) plus an attempt number, so a try after a
        crash re-attaches and a try after a failure runs the next attempt.
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
    :param task_logs_location: no longer used: the Overlord reads the peon's ``status.json`` and its status
        decides the outcome (a warning says so when it is set).
    :param launch_mode: who creates the Job: ``"auto"`` (default ``[druid_k8s] launch_mode``, else auto:
        chosen from the Overlord's version), ``"airflow"`` (the provider builds it; Druid 35.0.0 and later)
        or ``"overlord"`` (the Overlord builds it from its own configuration; the template and adapter
        arguments then have no effect).
    :param druid_ingest_conn_id: the Airflow connection to the Overlord (default
        ``[druid_k8s] druid_ingest_conn_id``, else ``druid_ingest_default``); required: the Overlord must hold
        every task's locks.
    :param image_pull_grace_seconds: how long ErrImagePull/ImagePullBackOff may last before failing fast.
    :param poll_interval: seconds between fallback polls while waiting (the watch does the real work).
    :param sidecar_grace_seconds: how long the peon pod may run on after its main container ended (a sidecar
        nothing stops) before the Job is deleted, so the Overlord completes the task from the peon's status.
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
        "launch_mode",
        "druid_ingest_conn_id",
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
        launch_mode: str | None = None,
        druid_ingest_conn_id: str | None = None,
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
        # Checked when it is resolved (it is templated): _requested_mode, before any request.
        self.launch_mode = launch_mode
        self.druid_ingest_conn_id = druid_ingest_conn_id
        self.image_pull_grace_seconds = image_pull_grace_seconds
        self.poll_interval = poll_interval
        self.sidecar_grace_seconds = sidecar_grace_seconds
        self._running: dict[str, Any] | None = None
        self._wait: tuple[asyncio.AbstractEventLoop, asyncio.Task[dict[str, Any]]] | None = None
        self._kill_verdict: str | None = None
        self._stop_requested = False

    # -- execution ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Submit the task to the Overlord (and, in ``airflow`` mode, create its suspended Job), then wait
        for it here or in the triggerer."""
        self._mask_task_secrets()
        config = self.runner_config()
        document = self._task_document()
        ingest_conn_id = self._ingest_conn_id()
        if self.task_logs_location or conf.get(CONFIG_SECTION, "task_logs_location", fallback=""):
            self.log.warning(
                "task_logs_location has no effect: the Overlord reads the peon's status.json and its task "
                "status decides the outcome"
            )
        with DruidOverlordHook(ingest_conn_id) as overlord:
            plan = plan_launch(
                overlord,
                requested_mode=self._requested_mode(),
                config=config,
                document=document,
                derived_base_id=self._derived_base_id(context, document),
                try_number=int(getattr(context["ti"], "try_number", 1) or 1),
                say=self.log.info,
            )
            task, action = plan.task, plan.decision.action
            if action is AttemptAction.REFUSE:
                # The written id's task FAILED in Druid (the try that ran it may have died first): show its
                # log here, then refuse to run it again.
                self._catch_up_log(overlord, task.id, 0)
                raise written_id_failed(task.id)
            name = peon_job_name(task.id, config, druid_version=plan.druid_version)
            details = {
                "druid_task_id": task.id,
                "job_name": name,
                "namespace": config.namespace,
                "kubernetes_conn_id": self._conn_id(),
                "druid_ingest_conn_id": ingest_conn_id,
                "mode": plan.choice.mode,
            }
            if action is AttemptAction.REPORT:
                assert plan.status is not None
                # The try that ran it may have died before its log was shown: show it from the Overlord's
                # task log, so the try that reports the outcome also holds the peon's whole log.
                event = {
                    "status": COMPLETED,
                    "overlord": status_dict(plan.status),
                    "log_complete": False,
                    "log_offset": 0,
                }
                return self._finish(context, {**details, **event})
            hook = DruidK8sHook(self._conn_id(), config.namespace, config.disable_client_proxy)
            release_pending = False
            self._warn_ignored_options(plan.choice.mode)
            if plan.choice.mode == "overlord":
                if action is AttemptAction.SUBMIT:
                    submit(overlord, task, self.log.info)
            elif action is AttemptAction.SUBMIT:
                to_submit = self._create_suspended(hook, overlord, task, config, plan.druid_version, context)
                self._running = {**details, "context": context}
                if to_submit:
                    airflow_mode.submit_suspended(
                        overlord, hook, task, job_name=name, namespace=config.namespace, say=self.log.info
                    )
                release_pending = True
            else:
                release_pending = airflow_mode.reattach(hook, task, name, config.namespace, self.log.warning)
        self._publish_console_link(context, overlord.endpoint, task.id)
        spec = FollowSpec(
            mode=plan.choice.mode,
            druid_task_id=task.id,
            job_name=name,
            namespace=config.namespace,
            druid_ingest_conn_id=ingest_conn_id,
            kubernetes_conn_id=self._conn_id(),
            disable_client_proxy=config.disable_client_proxy,
            release_pending=release_pending,
            launch_timeout_seconds=config.k8s_job_launch_timeout.total_seconds(),
            max_task_duration_seconds=config.max_task_duration.total_seconds(),
            image_pull_grace_seconds=self.image_pull_grace_seconds,
            poll_interval=self.poll_interval,
            sidecar_grace_seconds=self.sidecar_grace_seconds,
        )
        if self.deferrable:
            self.defer(
                trigger=DruidOverlordTaskTrigger(**spec.to_kwargs()),
                method_name="execute_complete",
                kwargs={"details": details},
            )
        self._running = {**details, "context": context}
        spec.connection_extras = dict(hook.conn_extras)
        return self._finish(context, {**details, **self._wait_in_process(spec)})

    def _create_suspended(
        self,
        hook: DruidK8sHook,
        overlord: DruidOverlordHook,
        task: DruidTask,
        config: RunnerConfig,
        druid_version: str | None,
        context: Context,
    ) -> bool:
        """``airflow`` mode: build the Job as the Overlord's adapter would and create it suspended and
        unlabelled (or reuse this attempt's, left by a crash); whether the task is still to be submitted. A
        Role that is too narrow, or bad input, is refused here, before any write."""
        requirements = operator_requirements(config)
        name = peon_job_name(task.id, config, druid_version=druid_version)
        build = partial(self._build, hook, task, config, druid_version)
        explained = partial(self._explaining_refusals, hook, requirements, task.id, name, build)
        manifest = airflow_mode.build_or_follow(explained, overlord, task, self.log.info)
        if manifest is None:  # the template pod is gone, and the Overlord has the task: follow it
            return False
        check_permissions(hook, requirements, task_id=task.id, job_name=name)
        identity = airflow_identity(context)
        annotate(manifest, identity)
        check = partial(refuse_foreign_run, identity=identity, task_id=task.id, namespace=config.namespace)
        return airflow_mode.create_suspended(
            hook, overlord, manifest, task, check_joined=check, say=self.log.info, warn=self.log.warning
        )

    def _wait_in_process(self, spec: FollowSpec) -> dict[str, Any]:
        """Run the same waiting logic as the trigger, on a private loop, cancellable by ``on_kill``."""

        async def wait() -> dict[str, Any]:
            task = asyncio.current_task()
            assert task is not None
            self._wait = (asyncio.get_running_loop(), task)
            if self._stop_requested:  # on_kill came between the submit and this wait
                raise asyncio.CancelledError
            return await follow_task(spec, emit_line=self._emit_peon_line, say=self.log.info, alone=True)

        try:
            return asyncio.run(wait())
        except asyncio.CancelledError:
            self._wait = None
            if self._kill_verdict is None:
                self._decide_on_stop()
            if self._kill_verdict == "stopped":
                raise JobFailed(
                    "the Airflow task was stopped by a user; the Druid task was shut down in the Overlord "
                    "(FAILED: Shutdown request from user), which deletes its Job",
                    task_id=spec.druid_task_id,
                    job_name=spec.job_name,
                ) from None
            raise DruidK8sTaskError(
                "the worker is shutting down; the Druid task keeps running and the next try of this task "
                "re-attaches to it",
                task_id=spec.druid_task_id,
                job_name=spec.job_name,
            ) from None
        finally:
            self._wait = None

    def execute_complete(
        self, context: Context, event: dict[str, Any], details: dict[str, Any] | None = None
    ) -> Any:
        """Resume after the trigger fired: catch up the log, report the outcome.

        ``details`` come from the deferral; when a runner drops them (``dag.test()`` passes only the
        event), the event says the same.
        """
        merged = {**(details or {}), **event}
        merged.setdefault("druid_ingest_conn_id", self._ingest_conn_id())
        return self._finish(context, merged)

    # -- stopping ----------------------------------------------------------------------------------------

    def on_kill(self) -> None:
        """Shut the Druid task down if a person stopped the Airflow task; leave it running if the worker is
        going away.

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
        """Ask the API server whether the task instance still runs; stop the Druid task only if not."""
        running = self._running
        if running is None:
            return
        state = self._state_on_server(running["context"])
        if state is not None and state != "running":
            self.log.info(
                "The task instance is %s on the API server (stopped by a user): shutting down Druid task %s",
                state,
                running["druid_task_id"],
            )
            asyncio.run(
                stop_task(
                    druid_ingest_conn_id=running["druid_ingest_conn_id"],
                    kube=DruidK8sAsyncHook(running["kubernetes_conn_id"]),
                    namespace=running["namespace"],
                    task_id=running["druid_task_id"],
                    own_job_name=running["job_name"] if running["mode"] == "airflow" else None,
                    say=self.log.info,
                )
            )
            self._kill_verdict = "stopped"
        else:
            self.log.warning(
                "Worker shutdown (task instance still %s on the API server): Druid task %s keeps running and "
                "the next try re-attaches to it",
                state or "unknown",
                running["druid_task_id"],
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
