"""The reaper: periodic deletion of finished peon Jobs, as Druid's Kubernetes task runner does it.

Druid deletes, every ``taskCleanupInterval``, the Jobs labelled ``druid.k8s.peons=true`` that finished
(condition ``Complete`` or ``Failed``) longer than ``taskCleanupDelay`` ago. Jobs kept by ``debugJobs``, Jobs
of Airflow tasks whose worker died before cleaning up, and Jobs on clusters without a TTL controller all end
up here. A Job whose task the Overlord still holds (RUNNING: waiting, pending or running) is never deleted,
whatever its Kubernetes state: the Overlord may still join it or read its pod, and a Job gone before the
runner's create makes it launch the ingestion a second time (spec ``druid-overlord.md`` section 6).

The module has three layers, so each can be tested on its own:

- :func:`select_jobs_to_reap` is pure: given Job dicts and the current time it says, for every Job, whether
  to delete it and why. It never deletes a running Job, a Job finished less than ``taskCleanupDelay`` ago, a
  Job without the peon label or a Job already being deleted.
- :func:`keep_active_tasks` is pure too: it turns the deletions of a plan whose task the Overlord reports
  active into "kept" decisions.
- :func:`reap` walks the peon Jobs of a namespace page by page through a hook, asks the Overlord about the
  tasks of a page's deletion candidates in ONE batched ``POST /druid/indexer/v1/taskStatus``, deletes what
  is left and returns counts. Memory stays flat in the number of Jobs: one page is held at a time. An
  Overlord that cannot be asked stops every deletion of the sweep (never delete blind).
- :func:`create_reaper_dag` builds the Airflow DAG that runs :func:`reap` every ``taskCleanupInterval``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from druid_k8s_provider.errors import DruidK8sConfigError, OverlordApiError
from druid_k8s_provider.naming import PEON_LABEL, TASK_ID_ANNOTATION

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.hooks.overlord import DruidOverlordHook
    from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus

log = logging.getLogger(__name__)

_FINISHED_CONDITION_TYPES = ("Complete", "Failed")
_NAMESPACE_PROPERTY = "druid.indexer.runner.namespace"


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


class PeonJobClient(Protocol):
    """The part of ``DruidK8sHook`` the reaper needs; tests may pass anything with these two methods."""

    def list_peon_jobs(self, namespace: str, page_size: int = 500) -> Iterator[dict[str, Any]]: ...

    def delete_job(
        self,
        name: str,
        namespace: str,
        grace_period_seconds: int | None = None,
        *,
        task_id: str | None = None,
        uid: str | None = None,
    ) -> bool: ...


class TaskStatusReader(Protocol):
    """The part of ``DruidOverlordHook`` the reaper needs: one batched status request for many task ids."""

    def task_statuses(self, task_ids: Sequence[str]) -> Mapping[str, OverlordTaskStatus]: ...


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


def decide(job: Mapping[str, Any], now: dt.datetime, cleanup_delay: dt.timedelta) -> JobDecision:
    """Decide what to do with one Job (see :func:`select_jobs_to_reap`)."""
    metadata = job.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}

    def decision(verdict: Verdict, explanation: str) -> JobDecision:
        return JobDecision(
            name=str(metadata.get("name", "")),
            namespace=metadata.get("namespace"),
            task_id=annotations.get(TASK_ID_ANNOTATION),
            verdict=verdict,
            explanation=explanation,
            uid=metadata.get("uid"),
        )

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
            f"{condition} {_human(age)} ago, within taskCleanupDelay {_human(cleanup_delay)}",
        )
    return decision(
        Verdict.DELETE,
        f"{condition} {_human(age)} ago, older than taskCleanupDelay {_human(cleanup_delay)}",
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
            decision = replace(
                decision,
                verdict=Verdict.KEEP_TASK_ACTIVE,
                explanation=f"its task is still {status.status_code} in the Overlord "
                f"({decision.explanation}); the Overlord deletes the Job when the task completes",
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


def _check_reaper_permissions(hook: PeonJobClient, namespace: str) -> None:
    """Fail before the first list when the identity cannot list or delete Jobs (one rules review).

    Only a real Kubernetes hook can be asked; a test double of the list/delete calls has no API behind it.
    """
    from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
    from druid_k8s_provider.preflight import check_permissions, reaper_requirements

    if isinstance(hook, DruidK8sHook):
        check_permissions(hook, reaper_requirements(namespace))


def reap(
    hook: PeonJobClient,
    namespace: str,
    cleanup_delay: dt.timedelta,
    page_size: int = 500,
    now: dt.datetime | None = None,
    *,
    overlord: TaskStatusReader | None = None,
) -> dict[str, Any]:
    """Delete the finished peon Jobs of ``namespace`` older than ``cleanup_delay`` whose task the Overlord no
    longer holds; return what happened.

    Jobs are listed through the hook in pages of ``page_size`` (``limit``/``continue``), decided and deleted
    one page at a time, so memory does not grow with the number of Jobs. A Job that disappears between the
    list and the delete (deleted by its operator, by the TTL controller, by a person) is counted as
    ``already_gone``, not as an error. ``now`` is fixed for the whole sweep (default: the time it starts),
    so one run makes consistent decisions. Every decision is logged with the Job name and its Druid task id.
    A missing permission is found before anything is listed (preflight). Any other failure (an API error
    that retries did not cure) stops the sweep with the hook's error, which names the Job and the task; the
    Jobs deleted so far stay deleted.

    ``overlord`` (default: a ``DruidOverlordHook`` on ``[druid_k8s] druid_ingest_conn_id``, else
    ``druid_ingest_default``) is asked once per page, about the tasks of that page's deletion candidates only
    (no request for a page without any); their Jobs are kept while the task is active
    (``kept_task_active``). When the Overlord cannot be asked (down, not leader, refused: an
    :class:`OverlordApiError` after the hook's retries), the sweep deletes nothing more, logs why and counts
    the Jobs it would have deleted as ``kept_overlord_unreachable``; a missing connection is a
    :class:`DruidK8sConfigError` naming ``druid_ingest_conn_id``, raised before any deletion.

    The summary has ``examined``, ``deleted``, ``already_gone`` and one ``kept_<reason>`` count per reason to
    keep a Job (see :class:`Verdict`), plus the ``namespace`` and ``cleanup_delay_seconds`` used.
    """
    if page_size < 1:
        raise DruidK8sConfigError("page_size", f"must be at least 1, got {page_size}", "pass e.g. 500")
    _check_reaper_permissions(hook, namespace)
    sweep_time = now or dt.datetime.now(dt.UTC)
    counts: Counter[str] = Counter(dict.fromkeys(("examined", Verdict.DELETE.value, "already_gone"), 0))
    counts.update(dict.fromkeys((verdict.value for verdict in Verdict), 0))
    log.info(
        "Reaping peon Jobs in namespace %r finished more than %s ago (as of %s)",
        namespace,
        _human(cleanup_delay),
        sweep_time.isoformat(),
    )
    with contextlib.ExitStack() as closing:
        reader = overlord if overlord is not None else closing.enter_context(_configured_overlord())
        _sweep(hook, namespace, cleanup_delay, page_size, sweep_time, reader, counts)
    summary: dict[str, Any] = {
        "namespace": namespace,
        "cleanup_delay_seconds": int(cleanup_delay.total_seconds()),
        **counts,
    }
    log.info("Reaper summary: %s", json.dumps(summary, sort_keys=True))
    return summary


def _configured_overlord() -> DruidOverlordHook:
    """The Overlord of ``[druid_k8s] druid_ingest_conn_id`` (else ``druid_ingest_default``)."""
    from druid_k8s_provider.hooks.overlord import DruidOverlordHook
    from druid_k8s_provider.settings import configured_overlord_conn_id

    return DruidOverlordHook(configured_overlord_conn_id())


def _sweep(
    hook: PeonJobClient,
    namespace: str,
    cleanup_delay: dt.timedelta,
    page_size: int,
    sweep_time: dt.datetime,
    reader: TaskStatusReader,
    counts: Counter[str],
) -> None:
    """Decide and delete page by page (see :func:`reap`), counting into ``counts``."""
    unreachable: str | None = None
    for page in _pages(hook.list_peon_jobs(namespace, page_size=page_size), page_size):
        plan = select_jobs_to_reap(page, sweep_time, cleanup_delay)
        if unreachable is None:
            try:
                plan = keep_active_tasks(plan, _statuses_of_candidates(reader, plan))
            except OverlordApiError as exc:
                unreachable = "not deleted: the Overlord could not be asked whether its task is still active"
                log.error(
                    "Skipping every deletion of this sweep: the Overlord could not be asked which tasks are "
                    "still active, and a Job whose task is active must not be deleted (%s)",
                    exc,
                )
        if unreachable is not None:
            plan = withhold_deletions(plan, unreachable)
        counts["examined"] += len(plan.decisions)
        for decision in plan.decisions:
            if not decision.delete:
                counts[decision.verdict.value] += 1
                log.info(
                    "Keeping Job %s (task.id=%s): %s", decision.name, decision.task_id, decision.explanation
                )
            elif hook.delete_job(decision.name, namespace, task_id=decision.task_id, uid=decision.uid):
                counts[Verdict.DELETE.value] += 1
                log.info(
                    "Deleted Job %s (task.id=%s): %s", decision.name, decision.task_id, decision.explanation
                )
            else:
                counts["already_gone"] += 1
                log.info(
                    "Job %s (task.id=%s) was already gone when deleting it", decision.name, decision.task_id
                )


def _statuses_of_candidates(reader: TaskStatusReader, plan: ReapPlan) -> Mapping[str, OverlordTaskStatus]:
    """One batched status request about the tasks of the plan's deletions (none when there are none)."""
    task_ids = sorted({decision.task_id for decision in plan.to_delete if decision.task_id})
    return reader.task_statuses(task_ids) if task_ids else {}


def _pages(jobs: Iterator[dict[str, Any]], page_size: int) -> Iterator[list[dict[str, Any]]]:
    """Cut the hook's Job stream into lists of at most ``page_size`` (the hook pages the API the same way)."""
    while page := list(itertools.islice(jobs, page_size)):
        yield page


def _human(delta: dt.timedelta) -> str:
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


def resolve_runner_config(
    namespace: str | None = None,
    runner_properties: Mapping[str, Any] | None = None,
    runtime_properties_file: str | None = None,
) -> RunnerConfig:
    """Build the runner configuration the way the operator does: file, then Airflow config, then arguments.

    Layers, later wins: the Overlord ``runtime.properties`` (``runtime_properties_file``, else
    ``[druid_k8s] runtime_properties_file``), the JSON object in ``[druid_k8s] runner_properties``, the
    ``runner_properties`` argument, and finally ``namespace`` when given.
    """
    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.settings import layered_runner_properties

    properties = layered_runner_properties(runtime_properties_file, runner_properties)
    if namespace:
        properties[_NAMESPACE_PROPERTY] = namespace
    return RunnerConfig.from_properties(properties)


def create_reaper_dag(
    dag_id: str = "druid_k8s_reaper",
    kubernetes_conn_id: str | None = None,
    namespace: str | None = None,
    druid_ingest_conn_id: str | None = None,
    runner_properties: Mapping[str, Any] | None = None,
    runtime_properties_file: str | None = None,
    page_size: int = 500,
    start_date: dt.datetime | None = None,
    tags: Iterable[str] = ("druid", "kubernetes", "maintenance"),
) -> DAG:
    """Create the reaper DAG: one task deleting finished peon Jobs, every ``taskCleanupInterval``.

    The runner configuration is resolved when the DAG file is parsed (see :func:`resolve_runner_config`), so
    a missing namespace or a bad property shows up as an import error naming the property. The schedule is
    ``taskCleanupInterval``, without catchup and with one active run at a time (an overlapping sweep would
    only race the first one). The task's return value, pushed to XCom, is :func:`reap`'s summary.
    ``kubernetes_conn_id`` defaults to ``[druid_k8s] kubernetes_conn_id`` (itself ``kubernetes_default``),
    ``druid_ingest_conn_id`` (the Overlord asked which tasks are still active) to ``[druid_k8s]
    druid_ingest_conn_id`` (itself ``druid_ingest_default``).
    """
    from airflow.configuration import conf
    from airflow.sdk import DAG, task

    config = resolve_runner_config(namespace, runner_properties, runtime_properties_file)
    from druid_k8s_provider.settings import configured_overlord_conn_id

    conn_id = kubernetes_conn_id or conf.get("druid_k8s", "kubernetes_conn_id", fallback="kubernetes_default")
    overlord_conn_id = druid_ingest_conn_id or configured_overlord_conn_id()
    cleanup_delay = dt.timedelta(seconds=config.task_cleanup_delay.total_seconds())
    interval = dt.timedelta(seconds=config.task_cleanup_interval.total_seconds())
    if interval <= dt.timedelta(0):
        raise DruidK8sConfigError(
            "druid.indexer.runner.taskCleanupInterval", f"must be positive, got {interval}", "use e.g. PT10M"
        )

    with DAG(
        dag_id=dag_id,
        description=(
            f"Delete finished Druid peon Jobs in namespace {config.namespace!r} older than "
            f"taskCleanupDelay ({_human(cleanup_delay)})"
        ),
        schedule=interval,
        start_date=start_date or dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=list(tags),
        doc_md=__doc__,
    ) as dag:

        @task(task_id="reap_finished_peon_jobs", multiple_outputs=False)
        def reap_finished_peon_jobs() -> dict[str, Any]:
            from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
            from druid_k8s_provider.hooks.overlord import DruidOverlordHook

            hook = DruidK8sHook(
                kubernetes_conn_id=conn_id,
                namespace=config.namespace,
                disable_client_proxy=config.disable_client_proxy,
            )
            with DruidOverlordHook(overlord_conn_id) as overlord:
                return reap(hook, config.namespace, cleanup_delay, page_size=page_size, overlord=overlord)

        reap_finished_peon_jobs()
    return dag
