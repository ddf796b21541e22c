"""``airflow dags test`` of a DAG using the provider, against both emulators (the cluster and a stand-in
Overlord): what CI runs for users' DAGs.

The DAG (tests/integration/dags/druid_k8s_emulator_dag.py) runs one task in the worker, one deferred (the
trigger runs inline, as ``dags test`` does) and a sensor on the deferred task's Job. Airflow gets its runner
settings from the ``[druid_k8s]`` section through environment variables, its connections from
``AIRFLOW_CONN_KUBERNETES_DEFAULT`` and ``AIRFLOW_CONN_DRUID_INGEST_DEFAULT``, and a fresh SQLite metadata
database. The Overlord keeps finished Jobs (``debugJobs``) for the sensor downstream.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.standin_peon import decode_task_payload, standin_peon, task_payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
SECRET = "AKIA-TEST-1234567"
Druid = Any  # tests/integration/conftest.py DruidCluster


async def peon_that_echoes_its_credential(ctx: Any) -> int:
    """A careless peon that prints the credential of its input source (real ones sometimes do)."""
    task = decode_task_payload(task_payload(ctx))
    input_source = task["spec"]["ioConfig"].get("inputSource") or {}
    if "accessKey" in input_source:
        ctx.log(f"Connecting to S3 with accessKey={input_source['accessKey']}")
    return int(await standin_peon(ctx))


def test_airflow_dags_test_runs_the_dag_against_the_emulator(
    kube: KubeEmulator, druid: Druid, tmp_path: Path
) -> None:
    druid.start(peon_that_echoes_its_credential, runner_properties={"druid.indexer.runner.debugJobs": "true"})
    connections = ("AIRFLOW_CONN_KUBERNETES_DEFAULT", "AIRFLOW_CONN_DRUID_INGEST_DEFAULT")
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW") or key in connections
    }
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES": json.dumps({"druid.indexer.runner.namespace": "druid"}),
            "AIRFLOW__DRUID_K8S__OVERLORD_POD_SELECTOR": "component=overlord",
        }
    )
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    run = subprocess.run(
        [AIRFLOW, "dags", "test", "druid_k8s_emulator"], env=env, capture_output=True, text=True, timeout=180
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "state=success" in output
    for task_id in ("ingest_in_worker", "ingest_deferred", "wait_for_deferred"):
        assert f"end task task_id={task_id}" in output
    assert "Stand-in peon done" in output  # the peon's log reached the task log
    assert "Connecting to S3 with accessKey=" in output  # the peon's own lines reach the task log
    with sqlite3.connect(tmp_path / "airflow.db") as database:
        rendered = " ".join(
            str(row[0])
            for row in database.execute("select rendered_fields from rendered_task_instance_fields")
        )
        links = {
            task_id: str(value)
            for task_id, value in database.execute(
                "select task_id, value from xcom where key = '_link_DruidConsoleLink'"
            )
        }
    # The "Druid console" extra link, as Airflow stored it for the UI: the task in Druid's web console.
    for task_id in ("ingest_in_worker", "ingest_deferred"):
        assert f"{druid.overlord.url}/unified-console.html#tasks/task_id=" in links.get(task_id, ""), links
    # The rendered fields the UI shows are stored masked. (``dags test`` prints the console log unmasked:
    # in a deployment the worker's supervisor masks task logs with the secrets the operator registered.)
    assert "druid_task" in rendered and "AKIA" not in rendered
    assert kube.metrics.creates("jobs") == 2
