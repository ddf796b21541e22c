"""``druid-k8s-emulator serve --overlord``: both emulators in a subprocess, over HTTP, stopped by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from druid_k8s_provider.naming import job_name
from druid_k8s_provider.testing import cli
from druid_k8s_provider.testing.tasks import index_parallel_task

from .conftest import NAMESPACE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the emulator exited early: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.05)
    return path.read_text()


def test_serve_with_overlord_runs_a_submitted_task_with_the_given_runner_properties(tmp_path: Path) -> None:
    kubeconfig, url_file = tmp_path / "kubeconfig", tmp_path / "overlord-url"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "druid_k8s_provider.testing.cli",
            "serve",
            "--overlord",
            "--druid-version",
            "34.0.0",
            "--kubeconfig",
            str(kubeconfig),
            "--overlord-url-file",
            str(url_file),
            "--runner-property",
            "druid.indexer.runner.debugJobs=true",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = wait_for_file(url_file, process)
        assert text.endswith("\n") and text.count("\n") == 1
        url = text.strip()
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
            assert http.get("/status").json()["version"] == "34.0.0"
            task = index_parallel_task("index_parallel_wikipedia_cli")
            assert http.post("/druid/indexer/v1/task", json=task).json() == {"task": task["id"]}
            deadline = time.monotonic() + 60
            status = http.get(f"/druid/indexer/v1/task/{task['id']}/status").json()["status"]
            while status["statusCode"] == "RUNNING" and time.monotonic() < deadline:
                time.sleep(0.1)
                status = http.get(f"/druid/indexer/v1/task/{task['id']}/status").json()["status"]
            assert status["statusCode"] == "SUCCESS"
        batch = client.BatchV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        kept = [job.metadata.name for job in batch.list_namespaced_job(NAMESPACE).items]
        assert kept == [job_name(task["id"])]  # debugJobs=true from the command line
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Druid Overlord emulator on http://127.0.0.1:" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--overlord"], "--overlord needs --overlord-url-file"),
        (
            ["--overlord", "--overlord-url-file", "u", "--runner-property", "druid.indexer.runner.capacity"],
            "is not KEY=VALUE",
        ),
        (
            ["--overlord", "--overlord-url-file", "u", "--runner-property", "druid.indexer.runner.capacty=2"],
            "unknown runner property",
        ),
    ],
)
def test_serve_refuses_bad_overlord_arguments_before_starting(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["serve", "--kubeconfig", str(tmp_path / "k"), *arguments]) == 2
    assert message in capsys.readouterr().err
