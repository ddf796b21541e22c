"""How ``DruidK8sTaskOperator`` reports a finished Druid task: the rest of the peon's log, the ingestion
report, the outcome the Overlord recorded (with the pod's reason), XCom, and the error that fails the
Airflow task."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from druid_k8s_provider.errors import DruidK8sConfigError, JobFailed, JobLaunchTimeout, KubernetesApiError
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.secrets import scrub, sensitive_values
from druid_k8s_provider.launch.outcome import describe_report, overlord_outcome, report_summary
from druid_k8s_provider.operators.inputs import DruidTaskInputs
from druid_k8s_provider.triggers.job import ERROR, LAUNCH_FAILED, TIMED_OUT

if TYPE_CHECKING:
    from airflow.sdk import Context


class DruidTaskOutcome(DruidTaskInputs):
    """The end of a task's wait, turned into the Airflow task's result."""

    def _emit_peon_line(self, line: str) -> None:
        self.log.info("%s", line)

    # -- outcome -----------------------------------------------------------------------------------------

    def _finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Decide from the Overlord's status, with the rest of the log and the ingestion report."""
        task_id, name, status = event["druid_task_id"], event["job_name"], event.get("status")
        if status == ERROR:
            raise KubernetesApiError(
                f"waiting for the Druid task failed: {event.get('error')}; the task was left as it is and "
                "the next try re-attaches to it",
                task_id=task_id,
                job_name=name,
            )
        with DruidOverlordHook(event["druid_ingest_conn_id"]) as overlord:
            if not event.get("log_complete"):
                self._catch_up_log(overlord, task_id, int(event.get("log_offset") or 0))
            report = report_summary(overlord.task_report(task_id))
        if report is not None:
            self.log.info("Ingestion report of Druid task %s: %s", task_id, describe_report(report))
        if status == LAUNCH_FAILED:
            raise JobLaunchTimeout(
                f"{event.get('reason')}. Recent events: {event.get('events')}. The task was shut down in the "
                "Overlord, which deletes its Job. Fix the cause (image, resources, quota or LimitRange, node "
                "capacity, secrets) and clear the task",
                task_id=task_id,
                job_name=name,
            )
        outcome = overlord_outcome(event["overlord"], event.get("job"), event.get("pod"))
        if status == TIMED_OUT:
            outcome = job_state.Outcome(
                job_state.FAILED,
                "the Job did not finish within maxTaskDuration (plus K8sjobLaunchTimeout); the task was shut "
                f"down in the Overlord ({outcome.error})",
                outcome.duration_ms,
            )
        if event.get("held_by") is not None:
            self.log.warning(
                "Container(s) %s kept the peon pod running after its main container ended: Job %s was "
                "deleted so the Overlord could complete the task",
                ", ".join(event["held_by"]) or "(none named)",
                name,
            )
        pod = event.get("pod")
        return self._report(context, outcome, event, pod["metadata"]["name"] if pod else None, report)

    def _report(
        self,
        context: Context,
        outcome: job_state.Outcome,
        details: Mapping[str, Any],
        pod_name: str | None,
        report: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The XCom summary; a FAILED outcome is pushed too, then fails the Airflow task saying why.

        The error may quote the peon's last log lines, and XCom is stored and shown unmasked: the task's
        credentials are scrubbed from it first.
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
            "launch_mode": details.get("mode"),
            "report": report,
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

    def _catch_up_log(self, overlord: DruidOverlordHook, task_id: str, offset: int) -> None:
        """Show the rest of the peon's log from the Overlord's task log (the pod may be gone): from byte
        ``offset``, which the Overlord honours once the task completed, so each line shows once."""
        text = overlord.task_log(task_id, offset)
        for line in (text or "").splitlines():
            self._emit_peon_line(line)
