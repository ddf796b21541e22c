"""The reaper's sweep: list the peon Jobs of a namespace page by page, ask the Overlord about the tasks of
each page's deletion candidates in one batched request, delete what is left, count everything; then the same
for the provider's suspended leftovers (unlabelled Jobs)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from druid_k8s_provider.errors import DruidK8sConfigError, OverlordApiError
from druid_k8s_provider.reaper.rules import (
    LABELLED_SELECTOR,
    UNLABELLED_SELECTOR,
    ReapPlan,
    Verdict,
    human_duration,
    keep_active_tasks,
    select_jobs_to_reap,
    select_suspended_leftovers,
    withhold_deletions,
)

if TYPE_CHECKING:
    from druid_k8s_provider.hooks.overlord import DruidOverlordHook
    from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus

log = logging.getLogger(__name__)


class PeonJobClient(Protocol):
    """The part of ``DruidK8sHook`` the reaper needs; tests may pass anything with these two methods."""

    def list_peon_jobs(
        self, namespace: str, page_size: int = 500, *, selector: str = LABELLED_SELECTOR
    ) -> Iterator[dict[str, Any]]: ...

    def delete_job(
        self,
        name: str,
        namespace: str,
        grace_period_seconds: int | None = None,
        *,
        task_id: str | None = None,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool: ...


class TaskStatusReader(Protocol):
    """The part of ``DruidOverlordHook`` the reaper needs: one batched status request for many task ids."""

    def task_statuses(self, task_ids: Sequence[str]) -> Mapping[str, OverlordTaskStatus]: ...


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
    longer holds, then the provider's suspended leftovers; return what happened.

    Leftovers (:func:`~druid_k8s_provider.reaper.rules.select_suspended_leftovers`) are listed in a second
    pass (label selector ``!druid.k8s.peons,druid.task.id``): Jobs of ``launch_mode="airflow"`` still
    suspended and unlabelled more than ``cleanup_delay`` (and at least an hour) after their create, whose
    task the Overlord does not hold. Each is deleted only while unchanged since the list (a precondition on
    its ``resourceVersion``), so a Job released meanwhile stays; a refused delete counts as
    ``already_gone``.

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
        human_duration(cleanup_delay),
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
    passes: tuple[tuple[str, Callable[[Iterable[Mapping[str, Any]]], ReapPlan]], ...] = (
        (LABELLED_SELECTOR, lambda page: select_jobs_to_reap(page, sweep_time, cleanup_delay)),
        (UNLABELLED_SELECTOR, lambda page: select_suspended_leftovers(page, sweep_time, cleanup_delay)),
    )
    unreachable: str | None = None
    pages = (
        (page, plan_of)
        for selector, plan_of in passes
        for page in _pages(hook.list_peon_jobs(namespace, page_size=page_size, selector=selector), page_size)
    )
    for page, plan_of in pages:
        plan = plan_of(page)
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
            elif hook.delete_job(
                decision.name,
                namespace,
                task_id=decision.task_id,
                uid=decision.uid,
                resource_version=decision.resource_version,
            ):
                counts[Verdict.DELETE.value] += 1
                log.info(
                    "Deleted Job %s (task.id=%s): %s", decision.name, decision.task_id, decision.explanation
                )
            else:
                counts["already_gone"] += 1
                log.info(
                    "Job %s (task.id=%s) was already gone (or had changed since the list) when deleting it",
                    decision.name,
                    decision.task_id,
                )


def _statuses_of_candidates(reader: TaskStatusReader, plan: ReapPlan) -> Mapping[str, OverlordTaskStatus]:
    """One batched status request about the tasks of the plan's deletions (none when there are none)."""
    task_ids = sorted({decision.task_id for decision in plan.to_delete if decision.task_id})
    return reader.task_statuses(task_ids) if task_ids else {}


def _pages(jobs: Iterator[dict[str, Any]], page_size: int) -> Iterator[list[dict[str, Any]]]:
    """Cut the hook's Job stream into lists of at most ``page_size`` (the hook pages the API the same way)."""
    while page := list(itertools.islice(jobs, page_size)):
        yield page
