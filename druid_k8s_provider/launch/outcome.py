"""The outcome of a Druid task launched through the Overlord, without I/O.

The Overlord's status decides (spec ``druid-overlord.md`` section 4: only the peon's ``status.json`` counts
for Druid, and the Overlord reads it): SUCCESS, or FAILED with its ``errorMsg``. When the peon's pod died
(OOMKilled, eviction, ``activeDeadlineSeconds``, an exit code) its reason is added, since Druid's own message
is then only "Peon did not report status successfully.".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from druid_k8s_provider.hooks import job_state

#: Druid's row counters of an ingestion report (``RowIngestionMeters``), as they are shown and kept in XCom.
ROW_COUNTERS = ("processed", "processedWithError", "thrownAway", "unparseable")
#: The ``errorMsg`` Druid records for every ``POST /task/{id}/shutdown`` (``TaskQueue.shutdown``), whoever
#: sent it.
DRUID_SHUTDOWN_MESSAGE = "Shutdown request from user"
#: Added to that message: the shutdown may have been the provider's own, whose reason only its log gives.
SHUTDOWN_NOTE = (
    " (Druid records every shutdown so: a stop from Druid's web console or API, or the provider's own "
    "shutdown of a launch that could not succeed or of a task past maxTaskDuration, whose reason the task's "
    "log gives above)"
)


def overlord_outcome(
    status: Mapping[str, Any], job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None
) -> job_state.Outcome:
    """The outcome from the Overlord's terminal status (``status_code``, ``error_msg``, ``duration_ms``),
    with the pod's reason added to a FAILED one when the Job and pod tell how the peon died. Druid's
    "Shutdown request from user" gets :data:`SHUTDOWN_NOTE`: a try that reports a shutdown it did not see
    (its trigger or worker was replaced after the provider shut a hopeless launch down) must not blame a
    user."""
    duration = status.get("duration_ms")
    duration_ms = int(duration) if isinstance(duration, int | float) and duration >= 0 else None
    if status.get("status_code") == job_state.SUCCESS:
        return job_state.Outcome(job_state.SUCCESS, None, duration_ms)
    error = str(status.get("error_msg") or "the Druid task FAILED without a message from the Overlord")
    if error == DRUID_SHUTDOWN_MESSAGE:
        error += SHUTDOWN_NOTE
    pod_reason = _peon_death(job, pod)
    if pod_reason is not None and pod_reason not in error:
        error = f"{error} (the peon pod: {pod_reason})"
    return job_state.Outcome(job_state.FAILED, error, duration_ms)


def _peon_death(job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None) -> str | None:
    """Why the peon's pod failed, when the Job finished badly or the pod ended with a failure; else None."""
    if job is None and pod is None:
        return None
    state = job_state.outcome_from_state(job or {}, pod)
    if state.status == job_state.SUCCESS:
        return None
    finished = job is not None and job_state.is_finished(job)
    main_end = ((job_state.main_container_status(pod or {}) or {}).get("state") or {}).get("terminated")
    evicted = ((pod or {}).get("status") or {}).get("reason") == "Evicted"
    return state.error if finished or main_end or evicted else None


def report_summary(reports: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The rows and segments of ``GET /task/{id}/reports`` (``ingestionStatsAndErrors``), or None.

    Row counters come from the build phase (``rowStats.buildSegments``; a flat ``rowStats`` as some task types
    report it is read as it is); ``segmentsPublished`` when the Druid version reports it. Parts of another
    shape are left out (the report is an extra: it never fails the task).
    """
    stats = (reports or {}).get("ingestionStatsAndErrors")
    payload = stats.get("payload") if isinstance(stats, Mapping) else None
    if not isinstance(payload, Mapping):
        return None
    row_stats = payload.get("rowStats")
    row_stats = row_stats if isinstance(row_stats, Mapping) else {}
    build = row_stats.get("buildSegments")
    phase = build if isinstance(build, Mapping) else row_stats
    summary: dict[str, Any] = {
        counter: phase[counter] for counter in ROW_COUNTERS if isinstance(phase.get(counter), int)
    }
    if isinstance(payload.get("segmentsPublished"), int):
        summary["segmentsPublished"] = payload["segmentsPublished"]
    if isinstance(payload.get("ingestionState"), str):
        summary["ingestionState"] = payload["ingestionState"]
    return summary or None


def describe_report(summary: Mapping[str, Any]) -> str:
    """One log line, e.g. ``rows processed 2, with errors 0, thrown away 0, unparseable 0``."""
    rows = ", ".join(
        f"{label} {summary[key]}"
        for key, label in zip(
            ROW_COUNTERS, ("processed", "with errors", "thrown away", "unparseable"), strict=True
        )
        if key in summary
    )
    text = f"rows {rows}" if rows else "no row counts"
    if "segmentsPublished" in summary:
        text += f"; segments published {summary['segmentsPublished']}"
    return text
