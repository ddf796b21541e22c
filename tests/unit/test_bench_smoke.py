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
    assert {(phase["side"], phase["fired"]) for phase in triggerer["phases"]} == {("ours", 2), ("peer", 2)}
    assert all(phase["requests_total"] > 0 for phase in triggerer["phases"])
    # Ours follows tasks the Overlord ran: its verdict is in the events, its status was asked.
    ours = next(phase for phase in triggerer["phases"] if phase["side"] == "ours")
    assert ours["statuses"] == ["finished (SUCCESS)"]
    assert ours["overlord_requests_per_task"] > 0
    lifecycle = json.loads((results / "lifecycle.json").read_text())
    assert {(mode["side"], mode["mode"]) for mode in lifecycle["modes"]} == {
        ("ours", "non-deferrable"),
        ("ours", "deferrable"),
        ("peer", "non-deferrable"),
        ("peer", "deferrable"),
    }
    assert set(lifecycle["fixed_cost"]) == {"ours", "peer"}
    # Ours launched each task through the Overlord: submitted there, and its Job gone with the task.
    for mode in lifecycle["modes"]:
        if mode["side"] == "ours":
            assert mode["overlord_requests_per_task_by_kind"]["POST /druid/indexer/v1/task"] == 1
            assert mode["jobs_left"] == 0
    reaper = json.loads((results / "reaper.json").read_text())
    assert all(
        sweep["deleted"] == sweep["finished_jobs"] and sweep["jobs_left"] == sweep["running_jobs"]
        for sweep in reaper["sweeps"]
    )
    build_job = json.loads((results / "build_job.json").read_text())
    assert all(adapter["manifests_per_second"] > 0 for adapter in build_job["adapters"])

    text = page.read_text()
    for heading in ("## Machine", "## Targets", "## Triggerer", "## Lifecycle", "## Reaper", "## build_job"):
        assert heading in text
    assert "Not measured" not in text
    assert "Overlord requests / task" in text
    assert "](img/bench.png)" in text
    assert image.read_bytes().startswith(b"\x89PNG")
