"""Test-session setup shared by every suite.

Airflow reads its configuration at import time, so AIRFLOW_HOME and friends are set here, before any test
module imports Airflow, to a throwaway directory: tests never touch a user's Airflow installation.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="druid-k8s-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parent.parent / "dags"))


@pytest.fixture(autouse=True)
def _each_test_reads_its_overlord_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker reads an Overlord's version and runner settings once per process, keyed by its URL; tests
    start an Overlord emulator each, on ports the system hands out again, so a later test's Overlord (of
    another version or prefix) must not be taken for an earlier one's."""
    from druid_k8s_provider.launch import worker

    monkeypatch.setattr(worker, "_VERSIONS", {})
    monkeypatch.setattr(worker, "_RUNNER_SETTINGS", {})
