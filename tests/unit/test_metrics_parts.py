"""The pure parts of the provider's metrics: the peon start time read from Kubernetes' timestamps, the lock
wait from the Overlord's ``createdTime``, metric name segments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from druid_k8s_provider import metrics


def pod(created: str = "2026-01-01T00:00:01Z", **state: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "peon-abcde", "creationTimestamp": created},
        "status": {"phase": "Running", "containerStatuses": [{"name": "main", "state": state}]},
    }


def job(start: str | None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    status = {"startTime": start} if start else {}
    return {"metadata": {"name": "peon", "creationTimestamp": created}, "status": status}


def test_the_startup_runs_from_the_jobs_start_to_the_main_containers_start() -> None:
    running = pod(running={"startedAt": "2026-01-01T00:00:07Z"})
    assert metrics.peon_startup_ms(job("2026-01-01T00:00:02Z"), running) == 5000
    # A Job released from suspension: Kubernetes reset its startTime then, long after its creation.
    assert metrics.peon_startup_ms(job("2026-01-01T00:00:06Z", "2025-12-31T23:00:00Z"), running) == 1000
    ended = pod(terminated={"startedAt": "2026-01-01T00:00:04Z", "finishedAt": "2026-01-01T00:00:09Z"})
    assert metrics.peon_startup_ms(job(None), ended) == 4000  # no startTime: the Job's creation


def test_once_the_job_is_gone_the_pods_creation_stands_for_its_start() -> None:
    ended = pod(terminated={"startedAt": "2026-01-01T00:00:04Z"})
    assert metrics.peon_startup_ms(None, ended) == 3000


@pytest.mark.parametrize(
    "the_pod", [None, pod(waiting={"reason": "ContainerCreating"}), {"metadata": {}, "status": {}}]
)
def test_no_startup_before_the_main_container_started(the_pod: dict[str, Any] | None) -> None:
    assert metrics.peon_startup_ms(job("2026-01-01T00:00:00Z"), the_pod) is None


def test_a_pod_stamped_before_its_job_by_another_clock_gives_zero_not_a_negative_time() -> None:
    early = pod(running={"startedAt": "2025-12-31T23:59:59Z"})
    assert metrics.peon_startup_ms(job("2026-01-01T00:00:00Z"), early) == 0


def test_the_lock_wait_runs_from_the_overlords_created_time() -> None:
    released = dt.datetime(2026, 1, 1, 0, 0, 3, 250000, tzinfo=dt.UTC)
    assert metrics.lock_wait_ms("2026-01-01T00:00:00.000Z", released) == 3250
    assert metrics.lock_wait_ms(None, released) is None
    assert metrics.lock_wait_ms("yesterday", released) is None


def test_tag_values_become_one_segment_of_a_statsd_name() -> None:
    assert metrics.name_part("index_parallel") == "index_parallel"
    assert metrics.name_part("index.hadoop/v2") == "index_hadoop_v2"
    assert metrics.name_part("") == "unknown"
