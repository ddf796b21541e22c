"""Release the suspended Job of ``launch_mode="airflow"`` once the Overlord's runner has its task.

The Job was created suspended and without the ``druid.k8s.peons`` label
(:func:`~druid_k8s_provider.launch.suspended.suspended_unlabelled`), then the task was submitted. Once the
Overlord hands the task to its Kubernetes runner (its locks are taken) the runner (Druid 35.0.0 and later)
tries to create the Job, takes the 409 as "already there" and looks for the Job's pod with a bounded retry
(10 lookups, about four minutes, in ``DirectKubernetesPeonClient``), failing the task if none appears. So
the release follows promptly: :meth:`OverlordBoard.wait_handed_to_runner` polls the runner's task lists
every few seconds, then one merge patch labels the Job and its pod template and resumes it.

Never is a Job deleted that the runner may still join (a Job gone before the runner's create would make it
launch the ingestion a second time): ours is deleted only when the Overlord runs the task in a Job of its
own, or when the task completed before its hand-over, and only while ours is still suspended (the delete is
conditional on the version read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from druid_k8s_provider.errors import DruidK8sTaskError
from druid_k8s_provider.hooks.druid_k8s_async import AsyncKubeSession, DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import PEON_SELECTOR, jobs_path, task_id_of
from druid_k8s_provider.hooks.k8s_errors import ApiCallFailed, translate_failure
from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.launch.suspended import deletable_while_suspended, is_suspended, release_patch
from druid_k8s_provider.naming import TASK_ID_LABEL, id_label_value
from druid_k8s_provider.triggers.overlord_board import OverlordBoard


@dataclass(frozen=True)
class Release:
    """What :func:`release_job` did.

    ``job_name``: the Job to follow from now on (ours, or the Overlord's own). ``resumed``: whether our Job
    was released (labelled and resumed). ``status``: the Overlord's view of the task when the release was
    decided (its task-list entry, PENDING or RUNNING; or its final status when it completed first).
    ``reason``: one sentence for the task's log. ``job``: our Job as the release's patch returned it (None
    when it was not resumed).
    """

    job_name: str
    resumed: bool
    status: OverlordTaskStatus | None
    reason: str
    job: dict[str, Any] | None = field(default=None, repr=False, compare=False)


async def release_job(
    kube: DruidK8sAsyncHook,
    board: OverlordBoard,
    *,
    namespace: str,
    job_name: str,
    task_id: str,
    log: Callable[[str], None],
) -> Release:
    """Wait until the Overlord hands ``task_id`` to its runner, then release our suspended Job
    ``job_name`` in ``namespace`` and say which Job runs the task (the reason also goes to ``log``).

    - The task completed before that (e.g. shut down while WAITING): nothing is released;
      ``resumed`` False with the final status. Our Job, still suspended, is deleted (no runner joins it now).
    - The Overlord runs the task in another Job (a ``druid.k8s.peons`` Job with our task's ``task.id``
      annotation under another name: its ``k8sTaskPodNamePrefix`` differs from ours, or it created its own
      first): ours is deleted if it is still suspended; ``job_name`` is theirs, ``resumed`` False.
    - Otherwise one merge patch (:func:`~druid_k8s_provider.launch.suspended.release_patch`) labels our
      Job and its pod template ``druid.k8s.peons: "true"`` and resumes it; ``resumed`` True. Releasing a
      Job released before (a retry after a crash) changes nothing.

    Raises what the board raises (:class:`~druid_k8s_provider.errors.OverlordTaskUnknown`,
    :class:`~druid_k8s_provider.errors.OverlordApiError`), and :class:`DruidK8sTaskError` when our Job is
    gone (nothing can run the task: the runner fails it once its pod lookups run out) or Kubernetes refuses.
    """
    handed = await board.wait_handed_to_runner(task_id)
    action = f"releasing Job {job_name!r} in namespace {namespace!r}"
    try:
        async with kube.session() as session:
            if not handed.active:
                release = await _never_released(session, namespace, job_name, task_id, handed)
            else:
                release = await _release(session, namespace, job_name, task_id, handed)
    except ApiCallFailed as exc:
        raise translate_failure(
            exc, action, conn_id=kube.kubernetes_conn_id, task_id=task_id, job_name=job_name
        ) from None
    log(release.reason)
    return release


async def _never_released(
    session: AsyncKubeSession, namespace: str, job_name: str, task_id: str, completed: OverlordTaskStatus
) -> Release:
    """The task completed before its hand-over: no runner will join our Job now, and a suspended Job never
    finishes (``ttlSecondsAfterFinished`` would never remove it), so it is deleted while still suspended."""
    try:
        ours = await session.get(jobs_path(namespace, job_name))
        deleted = (
            ours is not None
            and deletable_while_suspended(ours, task_id)
            and await session.delete_job_version(ours)
        )
        fate = " and was deleted" if deleted else ""
    except ApiCallFailed as exc:  # the task's outcome matters more; the reaper deletes the Job later
        fate = f"; it could not be deleted ({exc}), the reaper deletes it later"
    # Without Druid's errorMsg: a triggerer logs this line, and it cannot mask the task's credentials that
    # message may quote; the operator reports the outcome with it, masked.
    reason = (
        f"Druid task {task_id!r} completed ({completed.status_code}) before the Overlord handed it "
        f"to its runner; Job {job_name!r} was not released{fate}"
    )
    return Release(job_name, resumed=False, status=completed, reason=reason)


async def _release(
    session: AsyncKubeSession, namespace: str, job_name: str, task_id: str, handed: OverlordTaskStatus
) -> Release:
    theirs = await _overlord_job(session, namespace, job_name, task_id)
    if theirs is not None:
        their_name = theirs["metadata"]["name"]
        ours = await session.get(jobs_path(namespace, job_name))
        if ours is not None and is_suspended(ours) and await session.delete_job_version(ours):
            done = f"our suspended Job {job_name!r} was deleted"
        elif ours is None:
            done = f"our Job {job_name!r} is gone"
        else:
            done = f"our Job {job_name!r} was left alone: it is no longer suspended"
        reason = (
            f"The Overlord runs Druid task {task_id!r} in its own Job {their_name!r} (its name differs from "
            f"ours: the Overlord's k8sTaskPodNamePrefix differs from ours, or it created its Job first); "
            f"{done}; following the Overlord's Job"
        )
        return Release(their_name, resumed=False, status=handed, reason=reason)
    released = await session.patch_job(job_name, namespace, release_patch())
    if released is None:
        raise DruidK8sTaskError(
            f"the suspended Job is gone from namespace {namespace!r} before its release (deleted by someone "
            "else), and the Overlord's runner, which now has the task, will fail it when no pod appears. "
            "Fix: find what deletes unlabelled peon Jobs; then clear the Airflow task to run it again",
            task_id=task_id,
            job_name=job_name,
        )
    reason = (
        f"The Overlord handed Druid task {task_id!r} to its runner ({handed.runner_status_code}): Job "
        f"{job_name!r} labelled druid.k8s.peons and resumed"
    )
    return Release(job_name, resumed=True, status=handed, reason=reason, job=released)


async def _overlord_job(
    session: AsyncKubeSession, namespace: str, job_name: str, task_id: str
) -> dict[str, Any] | None:
    """A ``druid.k8s.peons`` Job of ``task_id`` (by its ``task.id`` annotation) other than ``job_name``,
    listed by the task-id label every peon Job carries, so the answer holds only that task's Jobs."""
    selector = f"{PEON_SELECTOR},{TASK_ID_LABEL}={id_label_value(task_id)}"
    jobs, _ = await session.list_objects(jobs_path(namespace), selector)
    others = [job for job in jobs if task_id_of(job) == task_id and job["metadata"]["name"] != job_name]
    return min(others, key=lambda job: job["metadata"]["name"]) if others else None
