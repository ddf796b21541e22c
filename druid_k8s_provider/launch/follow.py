"""The wait for a Druid task launched through the Overlord, the same in the triggerer and in a worker.

:func:`follow_task` releases the provider's suspended Job once the Overlord has handed the task to its runner
(``airflow`` mode, :func:`~druid_k8s_provider.launch.release.release_job`), or waits for the Job the Overlord
makes (``overlord`` mode, found by its ``task.id`` annotation), then follows that Job with
:class:`~druid_k8s_provider.triggers.job.JobFollower` (launch fail-fast, log streaming, sidecars) and takes
the outcome from the Overlord (:class:`~druid_k8s_provider.triggers.overlord_board.OverlordBoard`, one
batched status request per interval for every task of the process).

Rules from the spec (``druid-overlord.md`` sections 4 and 6):

- The Overlord deletes the Job when the task completes (unless ``debugJobs``): a Job that vanishes is normal,
  the Overlord is asked.
- ``K8sjobLaunchTimeout`` counts from the release (``airflow``) or from the Job's appearance (``overlord``):
  time spent WAITING for locks or PENDING for runner room has no pod and is no launch failure.
- A launch that cannot succeed (image, quota, hopeless pod) or a task past ``maxTaskDuration`` is ended
  through the Overlord (``POST /task/{id}/shutdown``), which records FAILED and deletes its Job; the
  provider never deletes a Job the Overlord may still join.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pendulum

from druid_k8s_provider import metrics
from druid_k8s_provider.errors import OverlordApiError, OverlordTaskUnknown
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s_async import DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import task_id_of
from druid_k8s_provider.hooks.log_cursor import LogCursor
from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook
from druid_k8s_provider.hooks.overlord_api import INDEXER, OverlordTaskStatus
from druid_k8s_provider.launch.release import release_job
from druid_k8s_provider.launch.suspended import never_started
from druid_k8s_provider.triggers.job import (
    ERROR,
    FINISHED,
    LAUNCH_FAILED,
    SIDECAR_GRACE_SECONDS,
    TIMED_OUT,
    JobFollower,
    OwnJob,
    shared_watch,
)
from druid_k8s_provider.triggers.overlord_board import OverlordBoard

log = logging.getLogger(__name__)

#: Waiting beyond maxTaskDuration, so Kubernetes' own DeadlineExceeded is what the task reports.
COMPLETION_SLACK_SECONDS = 60.0
#: How often the cached peon Jobs are looked through for the task's Job while none is found (no request).
JOB_SCAN_SECONDS = 1.0
#: How long the Overlord may take to record a task's outcome once its Job ended (it takes moments; an
#: Overlord failover with its restore, a minute or two).
OUTCOME_WAIT_SECONDS = 900.0
#: Event status: the task completed in the Overlord before a Job of it was followed (failed while waiting, a
#: stop from Druid's console, or completed while nobody watched).
COMPLETED = "completed"


@dataclass
class FollowSpec:
    """What the wait needs, all JSON-serializable (the trigger's kwargs).

    ``job_name`` is the provider's Job (``airflow`` mode) or the name Druid is expected to give it
    (``overlord`` mode; the Job is found by its ``task.id`` annotation whatever its name). ``log_offset`` is
    how many bytes of the peon's log were shown, where the Overlord's task log is read from when the pod is
    gone before its log was read to the end.
    """

    mode: str
    druid_task_id: str
    job_name: str
    namespace: str
    druid_ingest_conn_id: str
    kubernetes_conn_id: str
    disable_client_proxy: bool = False
    release_pending: bool = False
    launch_timeout_seconds: float = 3600.0
    max_task_duration_seconds: float = 14400.0
    image_pull_grace_seconds: float = 60.0
    poll_interval: float = 60.0
    sidecar_grace_seconds: float = SIDECAR_GRACE_SECONDS
    log_cursor: dict[str, Any] | None = None
    log_offset: int = 0
    connection_extras: dict[str, Any] | None = field(default=None, repr=False)

    def to_kwargs(self) -> dict[str, Any]:
        """The fields as trigger kwargs (the connection extras stay in the worker)."""
        kwargs = dataclasses.asdict(self)
        kwargs.pop("connection_extras")
        return kwargs

    def kube_hook(self) -> DruidK8sAsyncHook:
        """The asynchronous Kubernetes hook of this wait."""
        if self.connection_extras is not None:
            return DruidK8sAsyncHook(
                self.kubernetes_conn_id,
                disable_client_proxy=self.disable_client_proxy,
                connection_extras=self.connection_extras,
            )
        return DruidK8sAsyncHook(self.kubernetes_conn_id, disable_client_proxy=self.disable_client_proxy)


def status_dict(status: OverlordTaskStatus) -> dict[str, Any]:
    """The Overlord's status as an event field."""
    return {
        "task_id": status.task_id,
        "status_code": status.status_code,
        "duration_ms": status.duration_ms,
        "error_msg": status.error_msg,
    }


async def follow_task(
    spec: FollowSpec,
    *,
    emit_line: Callable[[str], None],
    say: Callable[[str], None],
    alone: bool = False,
) -> dict[str, Any]:
    """Wait until the Druid task completed in the Overlord; the event payload describing how.

    ``alone``: the only wait of its event loop (a worker). A Job this wait released is then watched by
    itself (its name, and its pods by ``job-name``) from the version the release returned, instead of a
    list and a watch of every peon Job and pod in the namespace, which nothing else would share.

    The payload is :class:`JobFollower`'s (``status`` FINISHED / LAUNCH_FAILED / TIMED_OUT / MISSING / ERROR,
    the Job and pod summaries, ``log_complete``) or ``status`` :data:`COMPLETED` when no Job was followed,
    plus ``overlord`` (the terminal status, absent for ERROR), ``job_name`` (the Job followed) and
    ``log_offset``. ``say`` receives the lines for the task's log (release, foreign Job, shutdown).

    An Overlord answer the wait cannot use (refused, unreadable, still unavailable after the retries) ends it
    with an ERROR payload naming the request and the connection (``overlord_request``): the task is left as
    it is, and the next try re-attaches to it. An Overlord that does not know the task at all raises
    :class:`OverlordTaskUnknown` (the next try submits it again). Emits the peon startup time and, after a
    release, the time spent WAITING for locks (:mod:`druid_k8s_provider.metrics`).
    """
    try:
        return await _follow(spec, emit_line=emit_line, say=say, alone=alone)
    except OverlordTaskUnknown:
        raise
    except OverlordApiError as exc:
        log.warning("Waiting for Druid task %s ended on an Overlord error: %s", spec.druid_task_id, exc)
        return {
            "status": ERROR,
            "mode": spec.mode,
            "druid_task_id": spec.druid_task_id,
            "job_name": spec.job_name,
            "namespace": spec.namespace,
            "error": str(exc),
            "overlord_request": exc.path,
            "log_complete": False,
            "log_offset": spec.log_offset,
        }


async def _follow(
    spec: FollowSpec, *, emit_line: Callable[[str], None], say: Callable[[str], None], alone: bool
) -> dict[str, Any]:
    kube = spec.kube_hook()
    board = OverlordBoard.shared(spec.druid_ingest_conn_id)
    job_name = spec.job_name
    own_job: OwnJob | None = None
    if spec.release_pending:
        released = await release_job(
            kube, board, namespace=spec.namespace, job_name=job_name, task_id=spec.druid_task_id, log=say
        )
        if released.status is not None and not released.status.active:
            return _completed(spec, released.status, None)
        created = released.status.created_time if released.status is not None else None
        waited = metrics.lock_wait_ms(created, pendulum.now("UTC"))
        if waited is not None:
            metrics.emit_lock_wait(waited, namespace=spec.namespace)
        job_name = released.job_name
        if alone and released.job is not None:
            # A Job that had not started before its release has no pod older than the release's version.
            own_job = OwnJob(released.job, created=never_started(released.job))
    else:
        found = await _job_of_task(kube, board, spec)
        if isinstance(found, OverlordTaskStatus):
            return _completed(spec, found, None)
        job_name = found
    shown = [spec.log_offset]

    def show(line: str) -> None:
        shown[0] += len(line.encode("utf-8")) + 1
        emit_line(line)

    launch_deadline = time.time() + spec.launch_timeout_seconds
    follower = JobFollower(
        job_name=job_name,
        namespace=spec.namespace,
        druid_task_id=spec.druid_task_id,
        hook=kube,
        launch_deadline=launch_deadline,
        completion_deadline=launch_deadline + spec.max_task_duration_seconds + COMPLETION_SLACK_SECONDS,
        image_pull_grace_seconds=spec.image_pull_grace_seconds,
        poll_interval=spec.poll_interval,
        log_cursor=LogCursor.from_dict(spec.log_cursor),
        sidecar_grace_seconds=spec.sidecar_grace_seconds,
        emit_line=show,
        startup=metrics.PeonStartup(launch_mode=spec.mode, namespace=spec.namespace),
        own_job=own_job,
    )
    event = await follower.outcome()
    event["log_offset"] = shown[0]
    event["mode"] = spec.mode
    if event["status"] == ERROR:
        return event
    if event["status"] == FINISHED and event.get("held_by") is not None:
        # Kubernetes completes the Job only when every container ended: without this the Overlord would
        # wait for maxTaskDuration. Its runner already joined the Job and reads the peon's status.json.
        async with kube.session() as session:
            await session.delete_job(job_name, spec.namespace)
    if event["status"] in (LAUNCH_FAILED, TIMED_OUT):
        say(
            f"Shutting down Druid task {spec.druid_task_id} through the Overlord ({event['status']}); the "
            "Overlord records it FAILED and deletes its Job"
        )
        async with DruidOverlordAsyncHook(spec.druid_ingest_conn_id) as overlord:
            await overlord.shutdown_task(spec.druid_task_id)
    board.check_soon()
    event["overlord"] = status_dict(await _outcome_after_the_job(board, spec, job_name))
    return event


async def _outcome_after_the_job(board: OverlordBoard, spec: FollowSpec, job_name: str) -> OverlordTaskStatus:
    """The Overlord's terminal status once the peon's Job ended, waited for at most
    :data:`OUTCOME_WAIT_SECONDS`: the Overlord records it within moments (log push, ``status.json``), and one
    that never does (a runner stuck pushing the log, a metadata store down) must fail the try rather than hold
    it forever. The task is left as it is, so the next try re-attaches to it.

    :raises OverlordApiError: the bound passed (naming ``POST /druid/indexer/v1/taskStatus``).
    """
    try:
        async with asyncio.timeout(OUTCOME_WAIT_SECONDS):
            return await board.wait_complete(spec.druid_task_id)
    except TimeoutError:
        raise OverlordApiError(
            f"the peon's Job {job_name} ended, but after {OUTCOME_WAIT_SECONDS:g}s the Overlord still "
            f"reports Druid task {spec.druid_task_id} active instead of recording its outcome (its runner "
            "pushes the task log and reads the peon's status.json first): see the Overlord's log",
            conn_id=spec.druid_ingest_conn_id,
            path=f"{INDEXER}/taskStatus",
            task_id=spec.druid_task_id,
        ) from None


def _completed(spec: FollowSpec, status: OverlordTaskStatus, job_name: str | None) -> dict[str, Any]:
    return {
        "status": COMPLETED,
        "mode": spec.mode,
        "druid_task_id": spec.druid_task_id,
        "job_name": job_name or spec.job_name,
        "namespace": spec.namespace,
        "kubernetes_conn_id": spec.kubernetes_conn_id,
        "disable_client_proxy": spec.disable_client_proxy,
        "log_complete": False,
        "log_offset": spec.log_offset,
        "overlord": status_dict(status),
    }


async def _job_of_task(
    kube: DruidK8sAsyncHook, board: OverlordBoard, spec: FollowSpec
) -> str | OverlordTaskStatus:
    """The name of the peon Job of the task once one exists, or the task's terminal status if it completes
    first. The Job is recognised by its ``task.id`` annotation in the shared watch's cache (Druid names it
    from its own ``k8sTaskPodNamePrefix``, which may differ from ours); no request per look."""
    completion = asyncio.ensure_future(board.wait_complete(spec.druid_task_id))
    try:
        async with shared_watch(kube, spec.namespace, "jobs") as jobs:
            wake = asyncio.Event()
            jobs.subscribe(spec.job_name, wake)
            try:
                while True:
                    found = _task_job(jobs.objects, spec.job_name, spec.druid_task_id)
                    if found is not None:
                        return found
                    wake.clear()
                    waker = asyncio.ensure_future(wake.wait())
                    await asyncio.wait(
                        [completion, waker], timeout=JOB_SCAN_SECONDS, return_when="FIRST_COMPLETED"
                    )
                    waker.cancel()
                    if completion.done():
                        return completion.result()
            finally:
                jobs.unsubscribe(spec.job_name, wake)
    finally:
        if not completion.done():
            completion.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await completion


def _task_job(jobs: dict[str, dict[str, Any]], expected_name: str, task_id: str) -> str | None:
    """The name of the live Job of ``task_id`` among the cached peon Jobs: under the name expected (Druid's,
    computed alike) first, one look instead of a scan of every peon Job of the namespace (thousands in a busy
    triggerer) per waiter and second; else whatever its name."""
    expected = jobs.get(expected_name)
    for job in itertools.chain([expected] if expected is not None else [], jobs.values()):
        if task_id_of(job) == task_id and not job_state.being_deleted(job):
            return str(job["metadata"]["name"])
    return None
