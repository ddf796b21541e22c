"""Errors of the provider.

Configuration errors are raised before anything is sent to Kubernetes, so a user can fix their input without
cleaning anything up. Runtime errors carry the Druid task id and the Job name, because that is what a person
reading a failed task's log needs to find the Job with ``kubectl``.
"""

from __future__ import annotations


class DruidK8sConfigError(ValueError):
    """Bad input (task spec, runner property, template, argument): raised before any Kubernetes write.

    ``field`` names the offending input (a Druid property name, a JSON path in the task, an operator
    argument) so tests and users can tell what to fix.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class DruidK8sTaskError(RuntimeError):
    """A Druid task failed or could not be run; the message says which task, which Job and why."""

    def __init__(self, message: str, *, task_id: str | None = None, job_name: str | None = None) -> None:
        self.task_id = task_id
        self.job_name = job_name
        prefix = []
        if task_id:
            prefix.append(f"Druid task {task_id!r}")
        if job_name:
            prefix.append(f"Job {job_name!r}")
        super().__init__(f"{' / '.join(prefix)}: {message}" if prefix else message)


class JobLaunchTimeout(DruidK8sTaskError):
    """The peon pod did not start within ``K8sjobLaunchTimeout`` (or hit a reason waiting will not cure)."""


class JobFailed(DruidK8sTaskError):
    """The peon ran and the task's outcome is FAILED."""


class TemplatePodNotFound(DruidK8sTaskError):
    """The Overlord pod used as the template could not be found."""


class MissingPermission(DruidK8sTaskError):
    """Preflight found that the Kubernetes identity lacks a permission the lifecycle needs."""


class KubernetesApiError(DruidK8sTaskError):
    """A Kubernetes API call failed for a reason retrying will not fix."""


class OverlordApiError(DruidK8sTaskError):
    """A request to the Druid Overlord failed for a reason retrying will not fix, or still failed after the
    retries; the message names the Airflow connection, the request path and what Druid answered.

    ``status`` is the HTTP status (None when the Overlord could not be reached); ``druid_message`` is Druid's
    own error text, as far as the answer carried one.
    """

    def __init__(
        self,
        message: str,
        *,
        conn_id: str,
        path: str,
        status: int | None = None,
        druid_message: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.path = path
        self.status = status
        self.druid_message = druid_message
        super().__init__(message, task_id=task_id)


class OverlordAnswerUnreadable(OverlordApiError):
    """The Overlord (or what answers in its place: a proxy, a login page) accepted a request but its answer is
    not the JSON Druid sends, or not of the shape Druid's endpoint answers with. Nothing is decided on it;
    after a submission the hook asks the Overlord whether it stored the task."""


class TaskAlreadySubmitted(OverlordApiError):
    """``POST /druid/indexer/v1/task`` answered 400 ``entryAlreadyExists``: the Overlord already has this id.

    Druid never accepts an id twice, even for a finished task. For a provider-derived id this means an
    earlier try submitted it and lost the answer (a crash, a timeout): re-attach to that task, never submit
    it under another id.
    """


class OverlordTaskUnknown(OverlordApiError):
    """The Overlord kept leaving a task id out of its batched status (``POST /druid/indexer/v1/taskStatus``
    answers only for ids it knows): it never had the task, or lost it. Waiting longer would wait forever."""
