"""The reaper's rules, without I/O: which Jobs a sweep deletes, and why each other one stays.

Druid's cleanup rule (the cleanup thread of its Kubernetes task runner): a Job labelled
``druid.k8s.peons=true`` that finished (condition ``Complete`` or ``Failed``) longer than ``taskCleanupDelay``
ago goes. On top of it, a Job whose task the Overlord still holds is kept (spec ``druid-overlord.md``
section 6).

The provider's own leftovers (:func:`select_suspended_leftovers`): with ``launch_mode="airflow"`` a Job is
created suspended and without that label before its task is submitted. One whose submission never went
through (a worker that died, an Overlord that could not be reached) never finishes, so neither its
``ttlSecondsAfterFinished`` nor Druid's cleanup removes it: it goes once it is older than
:func:`suspended_leftover_age`, unless the Overlord holds its task.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.naming import (
    AIRFLOW_DAG_ID_ANNOTATION,
    PEON_LABEL,
    TASK_ID_ANNOTATION,
    TASK_ID_LABEL,
)

if TYPE_CHECKING:
    from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus

_FINISHED_CONDITION_TYPES = ("Complete", "Failed")
#: The Jobs the first pass of a sweep lists: the peon Jobs.
LABELLED_SELECTOR = f"{PEON_LABEL}=true"
#: The Jobs the second pass of a sweep lists: those of a Druid task (Druid's task-id label, which the
#: provider's Jobs carry from their create on) without the ``druid.k8s.peons`` label.
UNLABELLED_SELECTOR = f"!{PEON_LABEL},{TASK_ID_LABEL}"
#: The least age of a suspended leftover the reaper deletes, whatever ``taskCleanupDelay`` says: far longer
#: than the seconds between a Job's create and its task's submission (the submission's retries included).
SUSPENDED_LEFTOVER_MIN_AGE = dt.timedelta(hours=1)


class Verdict(enum.Enum):
    """What the reaper does with one Job, and the reason; the value is the summary counter's name."""

    DELETE = "deleted"
    KEEP_RUNNING = "kept_running"
    KEEP_YOUNG = "kept_young"
    KEEP_UNLABELLED = "kept_unlabelled"
    KEEP_BEING_DELETED = "kept_being_deleted"
    KEEP_NO_FINISH_TIME = "kept_no_finish_time"
    KEEP_TASK_ACTIVE = "kept_task_active"
    KEEP_OVERLORD_UNREACHABLE = "kept_overlord_unreachable"
    KEEP_SUSPENDED_YOUNG = "kept_suspended_young"


@dataclass(frozen=True)
class JobDecision:
    """The reaper's decision about one Job, with a sentence a person reading the log can act on."""

    name: str
    namespace: str | None
    task_id: str | None
    verdict: Verdict
    explanation: str
    #: The Job's uid: a delete of this decision never takes a newer Job that got the same name since.
    uid: str | None = None
    #: A suspended leftover's version as listed: its delete is refused once the Job changed (released).
    resource_version: str | None = None

    @property
    def delete(self) -> bool:
        return self.verdict is Verdict.DELETE


@dataclass(frozen=True)
class ReapPlan:
    """Decisions for a batch of Jobs, in input order."""

    decisions: tuple[JobDecision, ...]

    @property
    def to_delete(self) -> tuple[JobDecision, ...]:
        return tuple(decision for decision in self.decisions if decision.delete)

    @property
    def to_keep(self) -> tuple[JobDecision, ...]:
        return tuple(decision for decision in self.decisions if not decision.delete)


def parse_kubernetes_time(value: str) -> dt.datetime:
    """Parse an API timestamp (RFC 3339, e.g. ``2024-05-01T10:00:00Z``) into an aware datetime."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def finished_at(job: Mapping[str, Any]) -> tuple[str, dt.datetime | None] | None:
    """Return ``(condition type, finish time)`` when the Job has finished, else ``None``.

    A Job has finished when its ``Complete`` or ``Failed`` condition has status ``True`` (Kubernetes 1.31+
    first sets ``SuccessCriteriaMet``/``FailureTarget``; those are not terminal yet and do not count). The
    finish time is the latest of that condition's ``lastTransitionTime`` and ``status.completionTime``: the
    same clock the TTL controller uses, and taking the latest one never deletes a Job early. The time is
    ``None`` when the API gave neither, which the caller treats as "age unknown".
    """
    status = job.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") in _FINISHED_CONDITION_TYPES and condition.get("status") == "True":
            stamps = [
                parse_kubernetes_time(stamp)
                for stamp in (condition.get("lastTransitionTime"), status.get("completionTime"))
                if stamp
            ]
            return str(condition["type"]), max(stamps) if stamps else None
    return None


def _decision(
    metadata: Mapping[str, Any], verdict: Verdict, explanation: str, resource_version: str | None = None
) -> JobDecision:
    annotations = metadata.get("annotations") or {}
    return JobDecision(
        name=str(metadata.get("name", "")),
        namespace=metadata.get("namespace"),
        task_id=annotations.get(TASK_ID_ANNOTATION),
        verdict=verdict,
        explanation=explanation,
        uid=metadata.get("uid"),
        resource_version=resource_version,
    )


def decide(job: Mapping[str, Any], now: dt.datetime, cleanup_delay: dt.timedelta) -> JobDecision:
    """Decide what to do with one Job (see :func:`select_jobs_to_reap`)."""
    metadata = job.get("metadata") or {}
    labels = metadata.get("labels") or {}

    def decision(verdict: Verdict, explanation: str) -> JobDecision:
        return _decision(metadata, verdict, explanation)

    if labels.get(PEON_LABEL) != "true":
        return decision(Verdict.KEEP_UNLABELLED, f"not a peon Job (no label {PEON_LABEL}=true)")
    if metadata.get("deletionTimestamp"):
        return decision(
            Verdict.KEEP_BEING_DELETED, f"already being deleted since {metadata['deletionTimestamp']}"
        )
    finish = finished_at(job)
    if finish is None:
        return decision(Verdict.KEEP_RUNNING, "still running (no Complete or Failed condition)")
    condition, when = finish
    if when is None:
        return decision(
            Verdict.KEEP_NO_FINISH_TIME,
            f"{condition} but the API gave no finish time, so its age is unknown",
        )
    age = now - when
    if age <= cleanup_delay:
        return decision(
            Verdict.KEEP_YOUNG,
            f"{condition} {human_duration(age)} ago, within taskCleanupDelay {human_duration(cleanup_delay)}",
        )
    return decision(
        Verdict.DELETE,
        f"{condition} {human_duration(age)} ago, older than taskCleanupDelay {human_duration(cleanup_delay)}",
    )


def select_jobs_to_reap(
    jobs: Iterable[Mapping[str, Any]], now: dt.datetime, cleanup_delay: dt.timedelta
) -> ReapPlan:
    """Decide, for each Job, whether the reaper deletes it.

    Deleted: Jobs labelled ``druid.k8s.peons=true`` that finished (``Complete`` or ``Failed``) more than
    ``cleanup_delay`` before ``now``. Kept, each with its reason: running Jobs, Jobs finished within the
    delay, Jobs without the label, Jobs already being deleted (they carry a ``deletionTimestamp``), and
    finished Jobs whose finish time the API did not report. ``now`` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise DruidK8sConfigError(
            "now", "is a naive datetime", "pass a timezone-aware time, e.g. pendulum.now('UTC')"
        )
    if cleanup_delay < dt.timedelta(0):
        raise DruidK8sConfigError(
            "druid.indexer.runner.taskCleanupDelay",
            f"is negative ({cleanup_delay})",
            "use a positive ISO-8601 period",
        )
    return ReapPlan(tuple(decide(job, now, cleanup_delay) for job in jobs))


def suspended_leftover_age(cleanup_delay: dt.timedelta) -> dt.timedelta:
    """How old a suspended leftover must be before the reaper deletes it: ``taskCleanupDelay`` (the delay
    finished Jobs get), and at least :data:`SUSPENDED_LEFTOVER_MIN_AGE`."""
    return max(cleanup_delay, SUSPENDED_LEFTOVER_MIN_AGE)


def decide_suspended(job: Mapping[str, Any], now: dt.datetime, min_age: dt.timedelta) -> JobDecision:
    """Decide what to do with one unlabelled Job (see :func:`select_suspended_leftovers`)."""
    metadata = job.get("metadata") or {}
    annotations = metadata.get("annotations") or {}

    def decision(verdict: Verdict, explanation: str) -> JobDecision:
        # A leftover is deleted only at the version judged: released meanwhile, it is no longer one.
        return _decision(metadata, verdict, explanation, metadata.get("resourceVersion"))

    labels = metadata.get("labels") or {}
    suspended = bool((job.get("spec") or {}).get("suspend"))
    if labels.get(PEON_LABEL) or not suspended or AIRFLOW_DAG_ID_ANNOTATION not in annotations:
        return decision(
            Verdict.KEEP_UNLABELLED,
            "not a peon Job, nor a suspended Job the provider created (no label "
            f"{PEON_LABEL}=true, not suspended or without the {AIRFLOW_DAG_ID_ANNOTATION} annotation)",
        )
    if metadata.get("deletionTimestamp"):
        return decision(
            Verdict.KEEP_BEING_DELETED, f"already being deleted since {metadata['deletionTimestamp']}"
        )
    created = metadata.get("creationTimestamp")
    if not created:
        return decision(Verdict.KEEP_SUSPENDED_YOUNG, "suspended, but the API gave no creation time")
    age = now - parse_kubernetes_time(created)
    if age <= min_age:
        return decision(
            Verdict.KEEP_SUSPENDED_YOUNG,
            f"suspended and unlabelled since its create {human_duration(age)} ago, within "
            f"{human_duration(min_age)} (its task may be about to be submitted)",
        )
    return decision(
        Verdict.DELETE,
        f"suspended and never released since its create {human_duration(age)} ago, older than "
        f"{human_duration(min_age)} (taskCleanupDelay, and at least an hour)",
    )


def select_suspended_leftovers(
    jobs: Iterable[Mapping[str, Any]], now: dt.datetime, cleanup_delay: dt.timedelta
) -> ReapPlan:
    """Decide, for each unlabelled Job (listed with :data:`UNLABELLED_SELECTOR`), whether to delete it.

    Deleted: Jobs still suspended, without the ``druid.k8s.peons`` label, carrying the provider's
    ``airflow.apache.org/dag-id`` annotation, created more than :func:`suspended_leftover_age` before
    ``now``; the sweep then keeps those whose task the Overlord reports active (:func:`keep_active_tasks`:
    the operator releases such a Job once the Overlord hands its task over) and deletes the rest only while
    unchanged (the decision's ``resource_version``). Kept: anything else (a Job of someone else, a Job being
    deleted, a younger one).
    """
    min_age = suspended_leftover_age(cleanup_delay)
    return ReapPlan(tuple(decide_suspended(job, now, min_age) for job in jobs))


def keep_active_tasks(plan: ReapPlan, statuses: Mapping[str, OverlordTaskStatus]) -> ReapPlan:
    """``plan`` with every deletion whose task ``statuses`` reports active turned into
    :attr:`Verdict.KEEP_TASK_ACTIVE`.

    ``statuses`` is the Overlord's answer to a batched ``taskStatus`` about the plan's candidates: a task it
    left out is unknown to it (never submitted, or forgotten), so its finished Job is as Druid's own cleanup
    would treat it and may go.
    """
    decisions = []
    for decision in plan.decisions:
        status = statuses.get(decision.task_id or "") if decision.delete else None
        if status is not None and status.active:
            who = (
                "the operator releases the Job once the Overlord hands the task to its runner"
                if decision.resource_version is not None
                else "the Overlord deletes the Job when the task completes"
            )
            decision = replace(
                decision,
                verdict=Verdict.KEEP_TASK_ACTIVE,
                explanation=f"its task is still {status.status_code} in the Overlord "
                f"({decision.explanation}); {who}",
            )
        decisions.append(decision)
    return ReapPlan(tuple(decisions))


def withhold_deletions(plan: ReapPlan, why: str) -> ReapPlan:
    """``plan`` with every deletion turned into :attr:`Verdict.KEEP_OVERLORD_UNREACHABLE`, saying ``why``."""
    return ReapPlan(
        tuple(
            replace(decision, verdict=Verdict.KEEP_OVERLORD_UNREACHABLE, explanation=why)
            if decision.delete
            else decision
            for decision in plan.decisions
        )
    )


def human_duration(delta: dt.timedelta) -> str:
    """Render a duration the way a person reads it in a log: ``2d 3h 4m 5s``."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if value]
    if secs or not parts:
        parts.append(f"{secs}s")
    return sign + " ".join(parts)
