"""Every benchmark script runs end to end at the smallest size and the performance page is written from it.

The figures of such a run mean nothing (the benchmarks run at once, with tiny N and T); what a user of
``make bench`` notices, and this checks, is that each script finishes, writes its result file, and that the
page and plot come out with a table for every benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def test_every_benchmark_runs_at_tiny_size_and_the_page_is_written(tmp_path: Path) -> None:
    results, page, image = (
        tmp_path / "results",
        tmp_path / "docs" / "performance.md",
        tmp_path / "docs" / "img" / "bench.png",
    )
    completed = subprocess.run(
        [
            sys.executable,
            "bench/run_all.py",
            "--tiny",
            "--results-dir",
            str(results),
            "--page",
            str(page),
            "--image",
            str(image),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    triggerer = json.loads((results / "triggerer.json").read_text())
    assert {(phase["side"], phase["detected"]) for phase in triggerer["phases"]} == {
        ("ours", 3),
        ("druid", 3),
    }
    ours = next(phase for phase in triggerer["phases"] if phase["side"] == "ours")
    druid = next(phase for phase in triggerer["phases"] if phase["side"] == "druid")
    # Ours followed tasks the Overlord ran, deferred (no worker slot), and asked the Overlord in batches;
    # DruidOperator held a worker slot per task and polled each task's status.
    assert any("SUCCESS" in status for status in ours["statuses"]) and ours["worker_slots_held"] == 0
    assert set(ours["overlord_requests_by_kind"]) <= {"POST /druid/indexer/v1/taskStatus"}
    assert druid["statuses"] == ["SUCCESS"]
    assert druid["overlord_requests_by_kind"]["POST /druid/indexer/v1/task"] == 3
    assert druid["overlord_requests_by_kind"]["GET /druid/indexer/v1/task/{id}/status"] >= 3
    assert ours["profile"]
    lifecycle = json.loads((results / "lifecycle.json").read_text())
    assert {(mode["side"], mode["launch_mode"], mode["mode"]) for mode in lifecycle["modes"]} == {
        ("ours", "airflow", "non-deferrable"),
        ("ours", "airflow", "deferrable"),
        ("ours", "overlord", "non-deferrable"),
        ("ours", "overlord", "deferrable"),
        ("druid", None, "non-deferrable"),
        ("peer", None, "non-deferrable"),
        ("peer", None, "deferrable"),
    }
    assert set(lifecycle["fixed_cost"]) == {"ours (airflow)", "ours (overlord)", "peer"}
    # Ours launched each task through the Overlord: submitted there once, and its Job gone with the task.
    for mode in lifecycle["modes"]:
        if mode["side"] == "ours":
            assert mode["overlord_requests_per_task_by_kind"]["POST /druid/indexer/v1/task"] == 1
            assert mode["jobs_left"] == 0
    crash = {side["side"]: side for side in json.loads((results / "crash_retry.json").read_text())["sides"]}
    assert (crash["ours"]["druid_tasks"], crash["ours"]["jobs_created"]) == (1, 1)
    assert crash["ours"]["retry_succeeded"] and crash["druid"]["druid_tasks"] == 2
    reaper = json.loads((results / "reaper.json").read_text())
    assert all(
        sweep["deleted"] == sweep["finished_jobs"] and sweep["jobs_left"] == sweep["running_jobs"]
        for sweep in reaper["sweeps"]
    )
    build_job = json.loads((results / "build_job.json").read_text())
    assert all(adapter["manifests_per_second"] > 0 for adapter in build_job["adapters"])

    text = page.read_text()
    headings = ("## Machine", "## Targets", "## Triggerer", "## Lifecycle", "## Worker crash", "## Reaper")
    for heading in (*headings, "## build_job"):
        assert heading in text
    assert "Not measured" not in text
    assert "Overlord requests / task" in text and "DruidOperator" in text
    assert "](img/bench.png)" in text
    assert image.read_bytes().startswith(b"\x89PNG")
