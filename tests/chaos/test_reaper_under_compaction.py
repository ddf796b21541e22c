"""A reaper sweep that outlives the API server's history must finish, not give up half-way.

The reaper lists peon Jobs a page at a time (``limit``/``continue``). A continue token names a point of the
API server's history; once etcd compacts past it (every five minutes on a real cluster), the next page is
answered ``410 Expired`` and the client must start a fresh list. A large sweep on a busy cluster will meet
that sooner or later. Here the emulator keeps only a short history, so the sweep's own deletions compact
past its continue token after a few pages: every finished Job must still be deleted, each counted once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from emulated_cluster import NAMESPACE, connected_emulator, peon_like_job

from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.reaper import reap
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

FINISHED_JOBS = 40
PAGE_SIZE = 5
LONG_AGO = "2020-01-01T00:00:00Z"


def finished_long_ago(job: dict[str, Any]) -> None:
    job["status"] = {
        "startTime": LONG_AGO,
        "completionTime": LONG_AGO,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": LONG_AGO}],
    }


class OverlordWithoutTheseTasks:
    """The Overlord's batched status for tasks it no longer knows (their Jobs are Druid's to clean up)."""

    def task_statuses(self, task_ids: Sequence[str]) -> dict[str, OverlordTaskStatus]:
        return {}


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    with connected_emulator(monkeypatch, cluster=False, history_window=20) as emulator:
        for number in range(FINISHED_JOBS):
            name = f"peon-{number:03d}"
            emulator.store.create("jobs", NAMESPACE, peon_like_job(name, name))
            emulator.store.mutate("jobs", NAMESPACE, name, finished_long_ago, subresource="status")
        yield emulator


def test_a_sweep_whose_continue_token_expires_starts_over_and_deletes_every_finished_job(
    kube: KubeEmulator,
) -> None:
    summary = reap(
        DruidK8sHook(namespace=NAMESPACE),
        NAMESPACE,
        dt.timedelta(days=2),
        page_size=PAGE_SIZE,
        overlord=OverlordWithoutTheseTasks(),
    )
    left = [job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)]
    assert kube.metrics.count(verb="list", resource="jobs", status=410) >= 1, "the sweep never met a 410"
    assert left == [], f"{len(left)} finished Jobs were left behind"
    assert summary["deleted"] == FINISHED_JOBS and summary["examined"] == FINISHED_JOBS, summary
