"""The shipped DAG files load in Airflow as users see them: ids, schedules, errors that say what to fix."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


def load(path: Path) -> DagBag:
    return DagBag(dag_folder=str(path), safe_mode=False)


@pytest.fixture
def runner_properties(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    properties = {"druid.indexer.runner.namespace": "druid"}
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", json.dumps(properties))
    return properties


def test_reaper_dag_runs_every_task_cleanup_interval_one_run_at_a_time(
    runner_properties: dict[str, str],
) -> None:
    bag = load(DAGS / "druid_k8s_reaper.py")
    assert bag.import_errors == {}
    dag = bag.dags["druid_k8s_reaper"]
    assert dag.schedule == dt.timedelta(minutes=10)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert list(dag.task_dict) == ["reap_finished_peon_jobs"]
    assert "'druid'" in (dag.description or "")


def test_reaper_dag_follows_the_configured_interval(
    runner_properties: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_properties["druid.indexer.runner.taskCleanupInterval"] = "PT1h"
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", json.dumps(runner_properties))
    dag = load(DAGS / "druid_k8s_reaper.py").dags["druid_k8s_reaper"]
    assert dag.schedule == dt.timedelta(hours=1)


def test_reaper_dag_without_a_namespace_is_a_broken_dag_naming_the_property(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", raising=False)
    monkeypatch.delenv("AIRFLOW__DRUID_K8S__RUNTIME_PROPERTIES_FILE", raising=False)
    bag = load(DAGS / "druid_k8s_reaper.py")
    assert "druid_k8s_reaper" not in bag.dags
    [error] = bag.import_errors.values()
    assert "druid.indexer.runner.namespace" in error


def test_reaper_dag_refuses_runner_properties_that_are_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", "namespace=druid")
    [error] = load(DAGS / "druid_k8s_reaper.py").import_errors.values()
    assert "[druid_k8s] runner_properties: not valid JSON" in error


def test_every_shipped_dag_file_imports(runner_properties: dict[str, str]) -> None:
    bag = load(DAGS)
    assert bag.import_errors == {}
    assert {"druid_k8s_reaper", "example_druid_k8s"} <= set(bag.dag_ids)
