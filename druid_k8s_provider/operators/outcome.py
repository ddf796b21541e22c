"""How ``DruidK8sTaskOperator`` reports a Druid task: its link in Druid's web console, and once it finished
the rest of the peon's log, the ingestion report, the outcome the Overlord recorded (with the pod's reason),
XCom, the outcome metric, and the error that fails the Airflow task.

The report and the log are extras around the outcome: an Overlord that cannot give them (unavailable, or
answering something that is not Druid's) is logged as a warning naming the connection, and the outcome is
reported without them, not lost. The outcome itself is the Overlord's status: without it nothing is
reported, and the error says the next try re-attaches.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from druid_k8s_provider import metrics
from druid_k8s_provider.errors import (
    DruidK8sConfigError,
    JobFailed,
    JobLaunchTimeout,
    KubernetesApiError,
    OverlordApiError,
)
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.overlord_connection import OverlordEndpoint
from druid_k8s_provider.hooks.secrets import scrub, sensitive_values
from druid_k8s_provider.launch.outcome import describe_report, overlord_outcome, report_summary
from druid_k8s_provider.links import CONSOLE_URL_ATTRIBUTE, DruidConsoleLink, console_task_url
from druid_k8s_provider.operators.inputs import DruidTaskInputs
from druid_k8s_provider.triggers.job import ERROR, LAUNCH_FAILED, TIMED_OUT

if TYPE_CHECKING:
    from airflow.sdk import Context

T = TypeVar("T")


class DruidTaskOutcome(DruidTaskInputs):
    """The end of a task's wait, turned into the Airflow task's result; the task's link in Druid's console."""

    operator_extra_links = (DruidConsoleLink(),)
    #: The task's page in Druid's web console, once it is in the Overlord (the extra link).
    druid_console_url: str | None = None

    def _emit_peon_line(self, line: str) -> None:
        self.log.info("%s", line)

    def _publish_console_link(self, context: Context, endpoint: OverlordEndpoint, task_id: str) -> None:
        """Record the Druid console link of ``task_id`` (submitted or re-attached): on the operator and in
        XCom, where Airflow's UI reads it while the task runs."""
        url = console_task_url(endpoint.console_url, task_id)
        if url != getattr(self, CONSOLE_URL_ATTRIBUTE):
            setattr(self, CONSOLE_URL_ATTRIBUTE, url)
            context["ti"].xcom_push(key=DruidConsoleLink().xcom_key, value=url)

    # -- outcome -----------------------------------------------------------------------------------------

    def _finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Decide from the Overlord's status, with the rest of the log and the ingestion report."""
        task_id, name, status = event["druid_task_id"], event["job_name"], event.get("status")
        waiting_failed = (
            f"waiting for the Druid task failed: {event.get('error')}; the task was left as it is and the "
            "next try re-attaches to it"
        )
        if status == ERROR and event.get("overlord_request"):
            raise OverlordApiError(
                waiting_failed,
                conn_id=event["druid_ingest_conn_id"],
                path=event["overlord_request"],
                task_id=task_id,
            )
        if status == ERROR:
            raise KubernetesApiError(waiting_failed, task_id=task_id, job_name=name)
        with DruidOverlordHook(event["druid_ingest_conn_id"]) as overlord:
            self._publish_console_link(context, overlord.endpoint, task_id)
            offset = int(event.get("log_offset") or 0)
            if not event.get("log_complete"):
                self._besides_the_outcome(
                    "The rest of the peon's log",
                    task_id,
                    lambda: self._catch_up_log(overlord, task_id, offset),
                )
            reports = self._besides_the_outcome(
                "The ingestion report", task_id, lambda: overlord.task_report(task_id)
            )
            report = report_summary(reports)
        if report is not None:
            self.log.info("Ingestion report of Druid task %s: %s", task_id, describe_report(report))
        if status == LAUNCH_FAILED:
            metrics.emit_task_outcome(self._task_type(), job_state.FAILED, launch_mode=event.get("mode"))
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
        metrics.emit_task_outcome(self._task_type(), outcome.status, launch_mode=details.get("mode"))
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

    def _besides_the_outcome(self, what: str, task_id: str, read: Callable[[], T]) -> T | None:
        """``read()``; None, with a warning, when the Overlord cannot give it: the outcome does not depend
        on it and is reported all the same."""
        try:
            return read()
        except OverlordApiError as exc:
            self.log.warning("%s of Druid task %s is missing: %s", what, task_id, exc)
            return None

    def _task_type(self) -> str:
        """The Druid task's ``type`` (the outcome metric's tag), ``unknown`` when the task JSON has none."""
        with contextlib.suppress(DruidK8sConfigError):
            return str(self._task_document().get("type") or "unknown")
        return "unknown"
