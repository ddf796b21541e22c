"""``DruidK8sTaskSensor``: wait until a Druid task, by its id, has succeeded.

For DAGs that wait for a task they did not launch: one launched by another DAG, or one Druid's own
supervisors or the Coordinator (auto-compaction) submitted. The Overlord's status is asked first: it decides
the outcome (SUCCESS, or FAILED with its ``errorMsg``) and it knows the task while it is WAITING for locks
(no Job yet) and after its Job was deleted at completion. The task's Job comes second: once the task ended,
its pod says why a peon died (OOMKilled, deadline, eviction), which is added to the failure. An id the
Overlord does not know fails the sensor at once, naming the id and the connection, rather than waiting out
the sensor timeout. A FAILED task fails the sensor, in every mode, so downstream tasks do not run after a
failed ingestion (``any_end=True`` restores "any end counts").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from druid_k8s_provider.errors import (
    DruidK8sConfigError,
    DruidK8sTaskError,
    JobFailed,
    KubernetesApiError,
    MissingPermission,
)
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.hooks.k8s_api import PEON_SELECTOR, jobs_path, task_id_of
from druid_k8s_provider.hooks.k8s_errors import CONNECTION_ERRORS, ApiCallFailed, translate_failure
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.hooks.secrets import job_task_secrets, scrub
from druid_k8s_provider.job_builder import peon_job_name
from druid_k8s_provider.launch.outcome import overlord_outcome, report_summary
from druid_k8s_provider.naming import TASK_ID_LABEL, id_label_value
from druid_k8s_provider.settings import CONFIG_SECTION, configured_overlord_conn_id
from druid_k8s_provider.triggers.task_status import COMPLETE, DruidTaskStatusTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from druid_k8s_provider.config import RunnerConfig


def configured_runner_namespace() -> str | None:
    """The runner namespace from ``[druid_k8s]`` (and its runtime.properties file), where the operator
    puts Jobs; None when none is configured (then the connection's namespace is used)."""
    from druid_k8s_provider.reaper import resolve_runner_config

    with contextlib.suppress(DruidK8sConfigError):
        return resolve_runner_config().namespace
    return None


def job_of_task(hook: DruidK8sHook, namespace: str, task_id: str) -> dict[str, Any] | None:
    """The ``druid.k8s.peons`` Job whose ``task.id`` annotation is ``task_id``, whatever its name (the first
    by name if there are several), or None. Listed by the ``druid.task.id`` label every peon Job carries,
    so the answer holds only that task's Jobs (one request).

    Raises :class:`~druid_k8s_provider.errors.KubernetesApiError` (or ``MissingPermission``) when the list
    fails after the hook's retries.
    """
    selector = f"{PEON_SELECTOR},{TASK_ID_LABEL}={id_label_value(task_id)}"
    failures: tuple[type[BaseException], ...] = (ApiCallFailed, *CONNECTION_ERRORS)
    try:
        page = hook.request("GET", jobs_path(namespace), query={"labelSelector": selector})
    except failures as exc:
        raise translate_failure(
            exc,
            f"listing the Jobs of Druid task {task_id!r}",
            conn_id=hook.kubernetes_conn_id,
            task_id=task_id,
            job_name=None,
        ) from exc
    jobs = [job for job in (page or {}).get("items") or () if task_id_of(job) == task_id]
    return min(jobs, key=lambda job: str(job["metadata"]["name"])) if jobs else None


class DruidK8sTaskSensor(BaseSensorOperator):
    """Succeed when the Druid task ``druid_task_id`` has succeeded; its outcome goes to XCom.

    Each poke reads the task's status from the Overlord (``GET /druid/indexer/v1/task/{id}/status``); while it
    is WAITING, PENDING or RUNNING the sensor waits. Once it completed, the sensor reads its Job and pod (if
    the Overlord kept them: ``debugJobs``) and its ingestion report, and pushes the summary ``{druid_task_id,
    job_name, namespace, pod_name, status, duration_ms, error, report}`` (``report``: the rows processed /
    processedWithError / thrownAway / unparseable and segmentsPublished, as the operator's; None without an
    ingestion report). A FAILED task fails the sensor
    (:class:`~druid_k8s_provider.errors.JobFailed`) with Druid's ``errorMsg`` and the pod's reason, after
    pushing the same summary to XCom. In deferrable mode the triggerer asks the Overlord about every task
    waited on in the process in one batched request per interval.

    :param druid_task_id: the Druid task id (templated).
    :param namespace: the Job's namespace (templated); default: the runner namespace configured in
        ``[druid_k8s]``, else the Kubernetes connection's namespace.
    :param druid_ingest_conn_id: the Overlord connection (default ``[druid_k8s] druid_ingest_conn_id``, else
        ``druid_ingest_default``).
    :param kubernetes_conn_id: the Airflow connection to Kubernetes (default ``[druid_k8s]``'s).
    :param deferrable: wait in the triggerer instead of poking.
    :param any_end: succeed on any end of the task, FAILED included (the outcome is then only in the XCom
        summary's ``status``); default False: only a succeeded task lets the sensor succeed.
    :raises DruidK8sConfigError: no Overlord connection (naming ``druid_ingest_conn_id``).
    :raises DruidK8sTaskError: the Overlord does not know the id (naming the id and the connection).
    """

    template_fields: Sequence[str] = ("druid_task_id", "namespace")
    ui_color = "#4fc3f7"

    def __init__(
        self,
        *,
        druid_task_id: str,
        namespace: str | None = None,
        druid_ingest_conn_id: str | None = None,
        kubernetes_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        any_end: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.druid_task_id = druid_task_id
        self.namespace = namespace
        self.druid_ingest_conn_id = druid_ingest_conn_id or configured_overlord_conn_id()
        self.kubernetes_conn_id = kubernetes_conn_id or conf.get(
            CONFIG_SECTION, "kubernetes_conn_id", fallback="kubernetes_default"
        )
        self.deferrable = deferrable
        self.any_end = any_end

    # -- the Overlord first --------------------------------------------------------------------------

    def _overlord_status(self) -> OverlordTaskStatus:
        """The task's status with its runner status; an id the Overlord does not know is an error."""
        with DruidOverlordHook(self.druid_ingest_conn_id) as overlord:
            status = overlord.task_status(self.druid_task_id)
        if status is None:
            raise DruidK8sTaskError(
                f"the Overlord of connection {self.druid_ingest_conn_id!r} does not know Druid task "
                f"{self.druid_task_id!r}. Fix: check the task id, and that druid_ingest_conn_id points at "
                "the Overlord of the cluster that runs it",
                task_id=self.druid_task_id,
            )
        return status

    def poke(self, context: Context) -> PokeReturnValue:
        """One look at the task: done when the Overlord reports it complete (then its summary is returned)."""
        status = self._overlord_status()
        if status.active:
            self.log.info(
                "Druid task %s is %s (%s)",
                self.druid_task_id,
                status.status_code,
                status.runner_status_code or "runner status unknown",
            )
            return PokeReturnValue(False)
        return PokeReturnValue(True, self._finish(context, status))

    # -- the Job second ------------------------------------------------------------------------------

    def _kubernetes(self) -> tuple[DruidK8sHook, str, RunnerConfig]:
        """The Kubernetes hook, the resolved namespace and the layered runner configuration (for the name)."""
        from druid_k8s_provider.reaper import resolve_runner_config

        hook = DruidK8sHook(self.kubernetes_conn_id, self.namespace or configured_runner_namespace())
        namespace = hook.resolve_namespace(self.namespace)
        return hook, namespace, resolve_runner_config(namespace)

    def _job_and_pod(self) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
        """Where the task's Job is (``job_name``, ``namespace``) and the Job and its pod; both None once the
        Overlord deleted them (it does at completion, unless ``debugJobs``).

        The Job is read under the name the provider computes; when no Job of the task has that name (the
        Overlord names its Jobs after its own ``k8sTaskPodNamePrefix``, which may differ from the one
        configured here), it is found by its ``task.id`` annotation, as the operator finds the Overlord's
        Job. A Kubernetes error here does not hide the Overlord's verdict: it is logged and the Job left out.
        """
        where: dict[str, Any] = {"job_name": None, "namespace": self.namespace}
        try:
            hook, namespace, config = self._kubernetes()
            where = {"job_name": peon_job_name(self.druid_task_id, config), "namespace": namespace}
            job = hook.get_job(where["job_name"], namespace, task_id=self.druid_task_id)
            if job is None or task_id_of(job) != self.druid_task_id:
                job = job_of_task(hook, namespace, self.druid_task_id)
                if job is None:
                    return where, None, None
                where["job_name"] = job["metadata"]["name"]
            return where, job, hook.find_job_pod(where["job_name"], namespace)
        except (KubernetesApiError, MissingPermission) as exc:
            self.log.warning("Could not read the Job of Druid task %s: %s", self.druid_task_id, exc)
            return where, None, None

    def _finish(self, context: Context, status: OverlordTaskStatus) -> dict[str, Any]:
        """The XCom summary of the completed task; a FAILED task fails the sensor (unless ``any_end``).

        The summary is pushed to XCom before the failure, as the operator does, so the reason can be read
        there too.
        """
        where, job, pod = self._job_and_pod()
        outcome = overlord_outcome(asdict(status), job, pod)
        with DruidOverlordHook(self.druid_ingest_conn_id) as overlord:
            report = report_summary(overlord.task_report(self.druid_task_id))
        summary = {
            "druid_task_id": self.druid_task_id,
            **where,
            "pod_name": pod["metadata"]["name"] if pod else None,
            "status": outcome.status,
            "duration_ms": outcome.duration_ms,
            "error": scrub(outcome.error, job_task_secrets(job) if job else []),  # XCom is stored unmasked
            "report": report,
        }
        if outcome.status != job_state.SUCCESS and not self.any_end:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise JobFailed(
                f"the Druid task ended {outcome.status}: {summary['error']}. The sensor waits for success; "
                "pass any_end=True to accept any end",
                task_id=self.druid_task_id,
                job_name=where["job_name"],
            )
        return summary

    # -- deferrable ----------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Poke or reschedule as configured; deferrable mode waits in the triggerer's batched poll."""
        if not self.deferrable:
            return super().execute(context)
        status = self._overlord_status()
        if not status.active:
            return self._finish(context, status)
        _, namespace, config = self._kubernetes()
        self.defer(
            trigger=DruidTaskStatusTrigger(
                druid_task_id=self.druid_task_id,
                druid_ingest_conn_id=self.druid_ingest_conn_id,
                kubernetes_conn_id=self.kubernetes_conn_id,
                namespace=namespace,
                job_name=peon_job_name(self.druid_task_id, config),
                status_interval=max(float(self.poke_interval), 1.0),
            ),
            method_name="execute_complete",
            timeout=self.timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """The trigger fired: report the completed task or say why it could not be waited for."""
        if event.get("status") != COMPLETE:
            raise DruidK8sTaskError(
                f"waiting for the Druid task in the triggerer failed: {event.get('error')}",
                task_id=self.druid_task_id,
            )
        return self._finish(context, OverlordTaskStatus(**event["overlord"]))
