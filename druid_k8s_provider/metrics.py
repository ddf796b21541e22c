"""The provider's Airflow metrics (``Stats``): what operators of Druid on Kubernetes watch.

Names carry the provider's prefix ``druid_k8s.``, as Airflow providers name their metrics; each is emitted
with tags (for StatsD with tags, Datadog and OpenTelemetry), and the two counters also under a name that
carries their tags' values (``druid_k8s.task.outcome.<task_type>.<status>``), for plain StatsD, which drops
tags. Timers are in milliseconds. docs/operations.md ("Metrics") lists them.

- :data:`PEON_STARTUP_TIME`: Druid's ``k8s/peon/startup/time`` (``KubernetesPeonClient``: from the Job's
  launch to its pod running), here read from Kubernetes' own timestamps, so a wait resumed in another
  process measures the same: from the Job's ``status.startTime`` (set when the Job controller starts the
  Job, and again when a suspended Job is resumed; else its creation, or the pod's once the Overlord deleted
  the Job) to the ``startedAt`` of the pod's ``main`` container. Kubernetes writes both to the second.
- :data:`TASK_OUTCOME`: one per Druid task whose outcome an Airflow task reports, by task type and status.
- :data:`LOCK_WAIT`: ``launch_mode="airflow"`` only: from the submission (the Overlord's ``createdTime`` of
  the task) to the release of its Job, the time the task spent WAITING for its locks.
- :data:`OVERLORD_REQUEST_ERRORS`: one per Overlord request attempt that failed (retried ones included), by
  endpoint and status.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import Stats

from druid_k8s_provider.hooks import job_state

PEON_STARTUP_TIME = "druid_k8s.peon.startup_time"
TASK_OUTCOME = "druid_k8s.task.outcome"
LOCK_WAIT = "druid_k8s.task.lock_wait"
OVERLORD_REQUEST_ERRORS = "druid_k8s.overlord.request_errors"

#: ``status`` of :data:`OVERLORD_REQUEST_ERRORS` besides an HTTP status code.
CONNECTION_ERROR, TIMEOUT, TLS_ERROR = "connection_error", "timeout", "tls_error"
INVALID_ANSWER = "invalid_answer"

_NOT_A_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")


def name_part(value: object) -> str:
    """``value`` as one segment of a metric name (StatsD allows letters, digits, ``_`` and ``-``; a dot
    would start another segment)."""
    return _NOT_A_NAME_CHARACTER.sub("_", str(value)) or "unknown"


def peon_startup_ms(job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None) -> float | None:
    """Milliseconds from the Job's start (``status.startTime``, else its ``metadata.creationTimestamp``; the
    pod's own creation when the Job is gone) to the start of the pod's ``main`` container
    (``state.running.startedAt`` or ``state.terminated.startedAt``); None while either is unknown. Never
    negative (the two come from different clocks of the cluster)."""
    if pod is None:
        return None
    job = job or {}
    start = (
        job_state.parse_time((job.get("status") or {}).get("startTime"))
        or job_state.parse_time((job.get("metadata") or {}).get("creationTimestamp"))
        or job_state.parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    )
    state = (job_state.main_container_status(pod) or {}).get("state") or {}
    running = (state.get("running") or state.get("terminated") or {}).get("startedAt")
    started = job_state.parse_time(running)
    if start is None or started is None:
        return None
    return max(0.0, (started - start).total_seconds() * 1000.0)


@dataclass
class PeonStartup:
    """:data:`PEON_STARTUP_TIME` (timer, ms, tagged ``launch_mode`` and ``namespace``) of one wait: emitted
    the first time a look at the Job and its pod (:meth:`observe`) shows the pod started. A wait resumed
    in another process emits it again, with the same value (it is read from Kubernetes' timestamps)."""

    launch_mode: str
    namespace: str
    emitted: bool = False

    def observe(self, job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None) -> None:
        """One look at the Job (None once it is gone) and its newest pod (None before there is one)."""
        if self.emitted or pod is None or not job_state.has_started(pod):
            return
        milliseconds = peon_startup_ms(job, pod)
        if milliseconds is None:
            return
        self.emitted = True
        Stats.timing(
            PEON_STARTUP_TIME,
            dt.timedelta(milliseconds=milliseconds),
            tags={"launch_mode": self.launch_mode, "namespace": self.namespace},
        )


def emit_task_outcome(task_type: str, status: str, *, launch_mode: str | None) -> None:
    """:data:`TASK_OUTCOME` (counter), tagged ``task_type``, ``status`` (SUCCESS / FAILED) and
    ``launch_mode``, and ``<name>.<task_type>.<status>``."""
    tags = {"task_type": task_type, "status": status, "launch_mode": launch_mode or "unknown"}
    Stats.incr(TASK_OUTCOME, tags=tags)
    Stats.incr(f"{TASK_OUTCOME}.{name_part(task_type)}.{name_part(status)}")


def lock_wait_ms(created_time: str | None, released_at: dt.datetime) -> float | None:
    """Milliseconds from the Overlord's ``createdTime`` of a task (ISO-8601) to ``released_at``; None when
    the Overlord gave no readable time."""
    if not created_time:
        return None
    try:
        created = pendulum.parse(created_time)
    except ValueError:  # pendulum's ParserError is one
        return None
    if not isinstance(created, dt.datetime):
        return None
    return max(0.0, (released_at - created).total_seconds() * 1000.0)


def emit_lock_wait(milliseconds: float, *, namespace: str) -> None:
    """:data:`LOCK_WAIT` (timer, ms), tagged ``namespace``."""
    Stats.timing(LOCK_WAIT, dt.timedelta(milliseconds=milliseconds), tags={"namespace": namespace})


def count_overlord_request_error(endpoint: str, status: str) -> None:
    """:data:`OVERLORD_REQUEST_ERRORS` (counter), tagged ``endpoint`` (the hook method: ``submit_task``,
    ``task_statuses`` ...) and ``status`` (an HTTP status, or :data:`CONNECTION_ERROR`, :data:`TIMEOUT`,
    :data:`TLS_ERROR`, :data:`INVALID_ANSWER`), and ``<name>.<endpoint>.<status>``."""
    Stats.incr(OVERLORD_REQUEST_ERRORS, tags={"endpoint": endpoint, "status": status})
    Stats.incr(f"{OVERLORD_REQUEST_ERRORS}.{name_part(endpoint)}.{name_part(status)}")
