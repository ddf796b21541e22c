"""``DruidK8sTaskSensor``: wait until the peon Job of a Druid task succeeds.

For DAGs that launch a Druid task elsewhere (another DAG, the Overlord itself) and need to wait for it. The
Job is found by the name Druid derives from the task id and checked by its ``task.id`` annotation; a task
with no Job fails at once with a message saying so, rather than waiting out the sensor timeout. A Job that
ends ``Failed`` fails the sensor with the reason, in every mode, so downstream tasks do not run after a
failed ingestion (``any_end=True`` restores "any end counts").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from druid_k8s_provider.errors import DruidK8sConfigError, DruidK8sTaskError, JobFailed
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook, RetryPolicy, task_id_of
from druid_k8s_provider.hooks.secrets import job_task_secrets, scrub
from druid_k8s_provider.naming import job_name as job_name_for
from druid_k8s_provider.settings import CONFIG_SECTION
from druid_k8s_provider.triggers.job import FINISHED, MISSING, DruidK8sJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


def configured_runner_namespace() -> str | None:
    """The runner namespace from ``[druid_k8s]`` (and its runtime.properties file), where the operator
    puts Jobs; None when none is configured (then the connection's namespace is used)."""
    from druid_k8s_provider.reaper import resolve_runner_config

    with contextlib.suppress(DruidK8sConfigError):
        return resolve_runner_config().namespace
    return None


#: Why a sensor fails when the Job it waited for is gone (deleted by a person, the reaper or a TTL).
DISAPPEARED = (
    "the Job disappeared before it finished (deleted by a person, the reaper or a TTL); the Druid task's "
    "outcome is unknown"
)


class DruidK8sTaskSensor(BaseSensorOperator):
    """Succeed when the Job of ``druid_task_id`` has succeeded; its outcome goes to XCom.

    A Job that ends ``Failed`` (the peon's exit code, OOMKilled, ``DeadlineExceeded``...) fails the sensor
    with that reason (:class:`~druid_k8s_provider.errors.JobFailed`), after pushing the same summary to XCom.

    :param druid_task_id: the Druid task id (templated).
    :param namespace: the Job's namespace (templated); default: the runner namespace configured in
        ``[druid_k8s]``, else the connection's namespace.
    :param kubernetes_conn_id: the Airflow connection to Kubernetes (default ``[druid_k8s]``'s).
    :param deferrable: wait in the triggerer instead of poking.
    :param any_end: succeed on any end of the Job, ``Failed`` included (the outcome is then only in the XCom
        summary's ``status``); default False: only a succeeded Job lets the sensor succeed.
    """

    template_fields: Sequence[str] = ("druid_task_id", "namespace")
    ui_color = "#4fc3f7"

    def __init__(
        self,
        *,
        druid_task_id: str,
        namespace: str | None = None,
        kubernetes_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        any_end: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.druid_task_id = druid_task_id
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id or conf.get(
            CONFIG_SECTION, "kubernetes_conn_id", fallback="kubernetes_default"
        )
        self.deferrable = deferrable
        self.any_end = any_end
        # Set once a poke found the Job running: it existed, so its absence later means it was deleted.
        self._seen_running = False

    @property
    def job_name(self) -> str:
        """The Job name Druid's runner gives this task."""
        return job_name_for(self.druid_task_id)

    def _hook(self) -> DruidK8sHook:
        # A sensor waits: an API server outage must not fail it, only its own timeout may. Its reads retry
        # with the capped back-off until then, so a poke resumes within moments of the server's return.
        patient = RetryPolicy().until(time.time() + self.timeout)
        return DruidK8sHook(
            self.kubernetes_conn_id, self.namespace or configured_runner_namespace(), retry_policy=patient
        )

    def _summary(
        self,
        context: Context,
        job: dict[str, Any],
        pod: dict[str, Any] | None,
        namespace: str,
        secrets: list[str],
    ) -> dict[str, Any]:
        """The XCom summary of the ended Job; a failed Job fails the sensor (unless ``any_end``) saying why.

        The summary is pushed to XCom before the failure, as the operator does, so the reason can be read
        there too.
        """
        outcome = job_state.outcome_from_state(job, pod)
        summary = {
            "druid_task_id": self.druid_task_id,
            "job_name": self.job_name,
            "namespace": namespace,
            "pod_name": pod["metadata"]["name"] if pod else None,
            "status": outcome.status,
            "duration_ms": outcome.duration_ms,
            "error": scrub(outcome.error, secrets),  # XCom is stored unmasked
        }
        if outcome.status != job_state.SUCCESS and not self.any_end:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise JobFailed(
                f"the Druid task's Job ended Failed: {summary['error'] or 'no reason recorded'}. The sensor "
                "waits for success; pass any_end=True to accept any end",
                task_id=self.druid_task_id,
                job_name=self.job_name,
            )
        return summary

    def _disappeared(self) -> JobFailed:
        return JobFailed(DISAPPEARED, task_id=self.druid_task_id, job_name=self.job_name)

    def _existing_job(self, hook: DruidK8sHook, namespace: str, seen_before: bool = False) -> dict[str, Any]:
        """The task's Job; a missing one fails the sensor, as "disappeared" when it was seen before."""
        job = hook.get_job(self.job_name, namespace, task_id=self.druid_task_id)
        if job is None and seen_before:
            raise self._disappeared()
        if job is None or task_id_of(job) != self.druid_task_id:
            raise DruidK8sTaskError(
                f"no Job exists for this Druid task in namespace {namespace!r}"
                + (f" (Job {self.job_name!r} belongs to task {task_id_of(job)!r})" if job else "")
                + ". Fix: check the task id and the namespace; a finished Job may already have been "
                "deleted (debugJobs off, or the reaper)",
                task_id=self.druid_task_id,
                job_name=self.job_name,
            )
        return job

    def poke(self, context: Context) -> PokeReturnValue:
        """One look at the Job: done when it has a Complete condition (or, with ``any_end``, Failed).

        A Job that a previous poke found running (in this process, or in reschedule mode an earlier try of
        the sensor, which only reschedules while the Job runs) and that is gone now disappeared before it
        finished.
        """
        hook = self._hook()
        namespace = hook.resolve_namespace(self.namespace)
        seen_before = self._seen_running or self._rescheduled_before(context)
        job = self._existing_job(hook, namespace, seen_before)
        if not job_state.is_finished(job):
            self._seen_running = True
            self.log.info("Job %s of Druid task %s is still running", self.job_name, self.druid_task_id)
            return PokeReturnValue(False)
        pod = hook.find_job_pod(self.job_name, namespace)
        return PokeReturnValue(True, self._summary(context, job, pod, namespace, job_task_secrets(job)))

    @staticmethod
    def _rescheduled_before(context: Context) -> bool:
        """Whether an earlier run of this try was rescheduled (reschedule mode: the Job was running then)."""
        first = getattr(context["ti"], "get_first_reschedule_date", None)
        return first is not None and first(context) is not None

    def execute(self, context: Context) -> Any:
        """Poke or reschedule as configured; deferrable mode hands the wait to the shared watch."""
        if not self.deferrable:
            return super().execute(context)
        hook = self._hook()
        namespace = hook.resolve_namespace(self.namespace)
        job = self._existing_job(hook, namespace)
        if job_state.is_finished(job):
            pod = hook.find_job_pod(self.job_name, namespace)
            return self._summary(context, job, pod, namespace, job_task_secrets(job))
        self.defer(
            trigger=DruidK8sJobTrigger(
                job_name=self.job_name,
                namespace=namespace,
                druid_task_id=self.druid_task_id,
                kubernetes_conn_id=self.kubernetes_conn_id,
                wait_for=FINISHED,
                stream_logs=False,
                poll_interval=max(float(self.poke_interval), 1.0),  # only the fallback of the watch
            ),
            method_name="execute_complete",
            timeout=self.timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """The trigger fired: report the finished Job or say why it could not be waited for."""
        if event.get("status") == MISSING:
            raise self._disappeared()
        if event.get("status") != FINISHED:
            raise DruidK8sTaskError(
                f"waiting for the Job ended with {event.get('status')!r}: "
                f"{event.get('reason') or event.get('error')}",
                task_id=self.druid_task_id,
                job_name=self.job_name,
            )
        full_job = self._hook().get_job(self.job_name, event["namespace"], task_id=self.druid_task_id)
        secrets = job_task_secrets(full_job) if full_job else []
        return self._summary(context, event["job"], event.get("pod"), event["namespace"], secrets)
