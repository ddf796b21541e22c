"""What a person wants from a Druid task's ingestion report: the row counts (pure, no I/O).

``GET /druid/indexer/v1/task/{id}/reports`` answers ``{"ingestionStatsAndErrors": {"payload": {...}}}``
(Druid's ``IngestionStatsAndErrorsTaskReport``). Its ``rowStats`` holds one object per phase of the task
(``determinePartitions``, ``buildSegments``); the ``buildSegments`` phase is the one that counts every row the
task ingested, the other phases read the input again to plan partitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The row counters of a phase, in the order Druid's web console shows them.
ROW_COUNTERS = ("processed", "processedWithError", "thrownAway", "unparseable")
_COUNTING_PHASE = "buildSegments"


def row_counts(report: Mapping[str, Any] | None) -> dict[str, int] | None:
    """``{"processed", "processedWithError", "thrownAway", "unparseable"}`` from a task's reports.

    Reads ``ingestionStatsAndErrors.payload.rowStats.buildSegments`` (or ``rowStats`` itself when it is a
    single phase's counters, as some task types write it); a counter Druid left out counts 0. None when the
    task wrote no ingestion report (it has not completed, or it is not an ingestion task, e.g. ``kill``).
    """
    payload = _mapping(_mapping(_mapping(report).get("ingestionStatsAndErrors")).get("payload"))
    row_stats = _mapping(payload.get("rowStats"))
    phase = _mapping(row_stats.get(_COUNTING_PHASE)) or (row_stats if "processed" in row_stats else {})
    if not phase:
        return None
    return {counter: int(phase.get(counter) or 0) for counter in ROW_COUNTERS}


def segments_published(report: Mapping[str, Any] | None) -> int | None:
    """``ingestionStatsAndErrors.payload.segmentsPublished``; None when the report does not say."""
    value = _mapping(_mapping(_mapping(report).get("ingestionStatsAndErrors")).get("payload")).get(
        "segmentsPublished"
    )
    return int(value) if isinstance(value, int | float) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
