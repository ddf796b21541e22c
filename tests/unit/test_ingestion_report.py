"""Row counts read from Druid's ingestion report, as the sensor and the demo show them."""

from __future__ import annotations

from typing import Any

from druid_k8s_provider.ingestion_report import row_counts, segments_published


def report(row_stats: Any, **payload: Any) -> dict[str, Any]:
    return {
        "ingestionStatsAndErrors": {
            "type": "ingestionStatsAndErrors",
            "payload": {"rowStats": row_stats, **payload},
        }
    }


def test_the_build_segments_phase_counts_the_rows_and_missing_counters_are_zero() -> None:
    stats = {
        "determinePartitions": {"processed": 99, "processedWithError": 9},
        "buildSegments": {"processed": 5, "processedWithError": 1, "thrownAway": 2},
    }
    assert row_counts(report(stats)) == {
        "processed": 5,
        "processedWithError": 1,
        "thrownAway": 2,
        "unparseable": 0,
    }


def test_a_single_phase_row_stats_object_is_read_as_is() -> None:
    counts = row_counts(report({"processed": 7, "unparseable": 3}))
    assert counts == {"processed": 7, "processedWithError": 0, "thrownAway": 0, "unparseable": 3}


def test_no_ingestion_report_gives_none() -> None:
    assert row_counts(None) is None
    assert row_counts({"killUnusedSegments": {}}) is None
    assert row_counts(report(None)) is None


def test_segments_published_when_the_report_says() -> None:
    assert segments_published(report({}, segmentsPublished=3)) == 3
    assert segments_published(report({})) is None
