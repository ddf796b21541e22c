"""A worker killed after the operator cleaned up a finished Job must not make the retry run the task again.

The last window of the lifecycle: the peon finished and reported its status to the task logs, the operator
deleted the Job, and the worker dies before Airflow records the try's success (OOM, node drain, SIGKILL).
Airflow retries the task. The Job is gone, so nothing in Kubernetes says the task already ran; launching a
new peon would run the Druid task twice (an append ingestion would load its data twice). With task logs
configured the record is there: ``<task logs>/<task id>.status.json``. The retry must report that outcome
and create nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_workers import ForkServer, wait_for
from emulated_cluster import NAMESPACE, OVERLORD, connected_emulator

from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

TASK_ID = "append_orders_2026-01-01"


@pytest.fixture
def task_logs(tmp_path: Path) -> Path:
    directory = tmp_path / "task-logs"
    directory.mkdir()
    return directory


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch, task_logs: Path) -> Iterator[KubeEmulator]:
    async def peon_pushing_its_status(ctx: ContainerContext) -> int:
        """Runs the task, then pushes its status beside the task log, as Druid peons do."""
        ctx.log(f"Running task[{ctx.env['TASK_ID']}]")
        status = {"id": ctx.env["TASK_ID"], "status": "SUCCESS", "duration": 1200}
        (task_logs / f"{ctx.env['TASK_ID']}.status.json").write_text(json.dumps(status))
        return 0

    images = {"peon:*": peon_pushing_its_status}
    with connected_emulator(monkeypatch, images=images, overlords={OVERLORD: "peon:1"}) as emulator:
        yield emulator


def test_a_retry_after_the_job_was_cleaned_up_reports_the_recorded_outcome_without_relaunching(
    kube: KubeEmulator, tmp_path: Path, task_logs: Path
) -> None:
    jobs_created: Counter[str] = Counter()

    def count_creates(event_type: str, plural: str, obj: dict[str, Any]) -> None:
        if plural == "jobs" and event_type == "ADDED":
            jobs_created[obj["metadata"]["annotations"]["task.id"]] += 1

    kube.store.add_listener(count_creates)
    operator = {
        "druid_task": {"type": "index_parallel", "id": TASK_ID, "spec": {}},
        "runner_properties": {"druid.indexer.runner.namespace": NAMESPACE},
        "overlord_pod_name": OVERLORD,
        "task_logs_location": task_logs.as_uri(),
        "poll_interval": 2.0,
    }
    reports = []
    with ForkServer(tmp_path) as server:
        for try_number, freeze_at in ((1, "after_delete"), (2, None)):
            attempt = tmp_path / f"try{try_number}"
            attempt.mkdir()
            spec = {
                "operator": operator,
                "log_file": str(attempt / "task.log"),
                "report_file": str(attempt / "report.json"),
                "try_number": try_number,
                "freeze_at": freeze_at,
            }
            (attempt / "spec.json").write_text(json.dumps(spec))
            pid, events = server.start(attempt / "spec.json")
            if freeze_at:
                while wait_for(events, "PHASE", 60) != freeze_at:
                    pass
                server.kill(pid)
                assert wait_for(events, "EXITED", 30) == "-9"
            else:
                assert wait_for(events, "EXITED", 60) == "0"
                reports.append(json.loads((attempt / "report.json").read_text()))
    assert (task_logs / f"{TASK_ID}.status.json").exists()
    (retry,) = reports
    assert retry.get("error") is None, retry.get("traceback")
    assert retry["return_value"]["status"] == "SUCCESS"
    assert jobs_created[TASK_ID] == 1, (
        f"the retry launched the Druid task again: {jobs_created[TASK_ID]} Jobs were created for {TASK_ID!r}"
    )
