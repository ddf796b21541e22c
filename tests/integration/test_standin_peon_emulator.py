"""The stand-in peon inside the emulated cluster: Jobs built by the job builder run it, for every adapter."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import build_job, load_pod_template
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.standin_peon import (
    LOGS_DIRECTORY_ENV,
    LOGS_TYPE_ENV,
    register_standin_peon,
)

pytestmark = pytest.mark.integration

NAMESPACE = "druid"


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        register_standin_peon(emulator)
        emulator.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        yield emulator


def overlord_pod(task_logs_directory: Path) -> dict[str, Any]:
    """A pod shaped like a Druid Overlord with file task logs, and no Overlord URL: the stand-in peon runs
    on its own (it takes no locks), as these tests of the Jobs themselves want."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "druid-overlord-0", "namespace": NAMESPACE, "labels": {"component": "overlord"}},
        "spec": {
            "containers": [
                {
                    "name": "druid",
                    "image": "apache/druid:35.0.0",
                    "args": ["overlord"],
                    "env": [
                        {"name": LOGS_TYPE_ENV, "value": "file"},
                        {"name": LOGS_DIRECTORY_ENV, "value": str(task_logs_directory)},
                    ],
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                }
            ],
        },
    }


def kill_task(task_id: str, **context: Any) -> DruidTask:
    return DruidTask.from_spec(
        {
            "type": "kill",
            "id": task_id,
            "dataSource": "wikipedia",
            "interval": "2026-01-01/2026-02-01",
            "context": {"standinDurationSeconds": 0.1, **context},
        }
    )


def finished_job(kube: KubeEmulator, name: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = kube.store.get("jobs", NAMESPACE, name)
        conditions = (job.get("status") or {}).get("conditions") or []
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
            return job
        time.sleep(0.05)
    raise AssertionError(f"Job {name} did not finish within {timeout}s: {job.get('status')}")


def main_container_log(kube: KubeEmulator, job_name: str) -> str:
    [pod] = kube.store.list("pods", NAMESPACE, label_selector=f"job-name={job_name}")
    return kube.logs.text(NAMESPACE, pod["metadata"]["name"], "main")


def condition_of(job: dict[str, Any]) -> str:
    return next(c["type"] for c in job["status"]["conditions"] if c["type"] in ("Complete", "Failed"))


@pytest.mark.parametrize(("outcome", "condition"), [("SUCCESS", "Complete"), ("FAILED", "Failed")])
def test_overlord_single_container_job_runs_the_stand_in_with_the_tasks_outcome(
    kube: KubeEmulator, tmp_path: Path, outcome: str, condition: str
) -> None:
    kube.store.create("pods", NAMESPACE, overlord_pod(tmp_path))
    template = kube.store.get("pods", NAMESPACE, "druid-overlord-0")
    config = RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE})
    task = kill_task(f"kill_wikipedia_{outcome.lower()}", standinOutcome=outcome)
    job = kube.store.create("jobs", NAMESPACE, build_job(task, template, config))

    name = job["metadata"]["name"]
    assert condition_of(finished_job(kube, name)) == condition
    log = main_container_log(kube, name)
    assert f"Running task[{task.id}] of type[kill] for datasource[wikipedia]" in log
    assert "Task directory: /tmp/persistent/task" in log
    status = json.loads((tmp_path / f"{task.id}.status.json").read_text())
    assert status["status"] == outcome


def test_custom_template_adapter_job_gets_its_task_through_the_annotation_field_ref(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    template_file = tmp_path / "base.yaml"
    template_file.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "peon",
                                "image": "apache/druid:33.0.0",
                                "command": ["sh", "-c", "/peon.sh /druid/data 1"],
                                "env": [
                                    {"name": "druid_indexer_logs_type", "value": "file"},
                                    {"name": "druid_indexer_logs_directory", "value": str(tmp_path / "logs")},
                                ],
                            }
                        ]
                    }
                },
            }
        )
    )
    config = RunnerConfig.from_properties(
        {
            "druid.indexer.runner.namespace": NAMESPACE,
            "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
            "druid.indexer.runner.k8s.podTemplate.base": str(template_file),
        }
    )
    task = kill_task("kill_wikipedia_custom")
    manifest = build_job(task, load_pod_template(config, task), config)
    main_env = {env["name"]: env for env in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "fieldRef" in main_env["TASK_JSON"]["valueFrom"]

    name = kube.store.create("jobs", NAMESPACE, manifest)["metadata"]["name"]

    assert condition_of(finished_job(kube, name)) == "Complete"
    assert f"Running task[{task.id}] of type[kill]" in main_container_log(kube, name)
    assert json.loads((tmp_path / "logs" / f"{task.id}.status.json").read_text())["status"] == "SUCCESS"
