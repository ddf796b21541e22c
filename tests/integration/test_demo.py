"""`make demo` end to end: what a first-time user sees from `python -m druid_k8s_provider.testing.demo`, with
both emulators (Kubernetes and the Overlord) and every task submitted to the Overlord."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_both_dags_and_prints_what_happened(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    demo = subprocess.run(
        [sys.executable, "-m", "druid_k8s_provider.testing.demo", "--workdir", str(tmp_path / ".demo")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )

    output = demo.stdout
    assert demo.returncode == 0, output[-3000:] + demo.stderr[-3000:]
    assert "DAG run example_druid_k8s: success" in output
    assert "DAG run druid_k8s_reaper: success" in output
    assert "Overlord emulator (Druid 38.0.0)" in output
    assert "Jobs created by example_druid_k8s: 2, with the Overlord's view of each task" in output
    assert output.count("Job Complete  (task.id=") == 2
    # Beside each Job, what the Overlord says about its task: status, duration and the report's rows.
    assert re.search(r"Overlord: SUCCESS in [\d.]+s; rows processed 5, with errors 0, thrown away 0", output)
    assert output.count("    Overlord: SUCCESS in ") == 2
    assert output.count("; segments published 1") == 2  # each task published its day's segment
    assert "Phase: reading input, inline input source (5 rows)" in output
    assert "Reaper: examined 2, deleted 2" in output
    assert "Jobs left in namespace 'druid': 0" in output
    status_files = sorted((tmp_path / ".demo" / "task-logs").glob("*.status.json"))
    assert [json.loads(path.read_text())["status"] for path in status_files] == ["SUCCESS", "SUCCESS"]
    # The demo sets nothing the operator would warn about (settings the Overlord decides, unused options).
    airflow_log = (tmp_path / ".demo" / "logs" / "example_druid_k8s.log").read_text()
    assert "has no effect" not in airflow_log
