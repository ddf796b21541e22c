"""A new leader joins the labelled Jobs and shuts down the unknown ones; 503 without a leader; basic auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import build_job
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import never_exits
from druid_k8s_provider.testing.tasks import index_parallel_task

from .conftest import NAMESPACE, Druid, overlord_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def logged_in_order(druid: Druid, *texts: str) -> bool:
    """Whether the Overlord's log holds the texts on successive lines, in this order."""
    position = 0
    for text in texts:
        position = next(
            (i + 1 for i, line in enumerate(druid.overlord.log_lines[position:], position) if text in line),
            -1,
        )
        if position < 0:
            return False
    return True


def test_restart_deletes_an_unregistered_labelled_job_after_the_start_delay(druid: Druid) -> None:
    """A labelled Job whose task was never submitted (a worker that would run forever) is joined, then shut
    down once the start delay is over."""
    druid.kube.register_image("example/worker*", never_exits())
    template = druid.kube.store.get("pods", NAMESPACE, "druid-overlord-0")
    template["spec"]["containers"][0]["image"] = "example/worker:1"
    task = index_parallel_task("index_parallel_wikipedia_stray")
    config = RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE})
    druid.kube.store.create("jobs", NAMESPACE, build_job(task, template, config))

    druid.overlord.restart()
    wait_until(lambda: job_name(task["id"]) not in druid.job_names(), what="the stray Job's deletion")
    assert logged_in_order(
        druid,
        f"Joined Job of task[{task['id']}] at startup",
        f"Shutting down task[{task['id']}]: it is not in the task queue",
    )
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404


def test_restart_joins_the_job_of_a_submitted_task_which_then_completes(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_joined", standinDurationSeconds=3)
    druid.submit(task)
    druid.wait_for(task["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
    restarted = druid.http.post("/emulator/v1/restart")
    assert restarted.status_code == 200 and restarted.json() == {"leader": True}
    assert logged_in_order(druid, "No longer leader", f"Joined Job of task[{task['id']}] at startup")
    assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"
    assert druid.kube.metrics.creates("jobs") == 1  # joined, never created again
    assert not logged_in_order(druid, f"Shutting down task[{task['id']}]")


def test_without_a_leader_the_api_answers_503(druid: Druid) -> None:
    druid.overlord.set_leader(False)
    try:
        response = druid.submit(index_parallel_task("index_parallel_wikipedia_no_leader"))
        assert response.status_code == 503 and response.content == b""
        assert druid.http.get("/druid/indexer/v1/tasks").status_code == 503
        assert druid.http.get("/druid/indexer/v1/isLeader").json() == {"leader": False}
        assert druid.http.get("/status").status_code == 200
    finally:
        druid.overlord.set_leader(True)
    assert druid.submit(index_parallel_task("index_parallel_wikipedia_leader_again")).status_code == 200


@pytest.fixture
def secured(kube: KubeEmulator) -> Iterator[Druid]:
    with overlord_for(kube, basic_auth=("admin", "s3cret")) as overlord:
        yield Druid(kube, overlord, auth=("admin", "s3cret"))


@pytest.mark.parametrize("auth", [None, ("admin", "wrong")], ids=["no-credentials", "wrong-password"])
def test_basic_auth_refuses_requests_without_the_right_credentials(secured: Druid, auth: Any) -> None:
    with httpx.Client(base_url=secured.overlord.url, auth=auth, trust_env=False) as client:
        assert client.get("/druid/indexer/v1/tasks").status_code == 401
        assert client.post("/druid/indexer/v1/task", json=index_parallel_task("x")).status_code == 401
        assert client.get("/status/health").status_code == 200


def test_with_basic_auth_a_submitted_task_still_runs_its_peon_authenticated(secured: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_secured")
    assert secured.submit(task).status_code == 200
    assert secured.wait_complete(task["id"])["statusCode"] == "SUCCESS"


def test_a_labelled_job_without_a_readable_task_is_a_logged_startup_error(druid: Druid) -> None:
    druid.kube.store.create(
        "jobs",
        NAMESPACE,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "mystery", "labels": {"druid.k8s.peons": "true"}},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]}
                },
            },
        },
    )
    druid.overlord.restart()
    assert logged_in_order(druid, "Failed to restore task from Job[mystery] at startup")
    task = index_parallel_task("index_parallel_wikipedia_after_mystery")
    assert druid.submit(task).status_code == 200
    assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"


def test_with_overlord_namespace_set_a_restart_joins_the_pod_template_job_it_labelled(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    """With ``overlordNamespace`` set, Druid's restore lists only Jobs labelled with it; Druid 33's pod
    template adapter sets that label, so the running task's Job is joined, not missed."""
    template = tmp_path / "base.yaml"
    properties = {
        "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
        "druid.indexer.runner.k8s.podTemplate.base": str(template),
        "druid.indexer.runner.overlordNamespace": NAMESPACE,
    }
    with overlord_for(kube, runner_properties=properties) as overlord:
        # The template carries what the Overlord pod's container does (task logs, the Overlord's URL):
        # with a pod template nothing is cloned, so a real one must say it too.
        druid_container = overlord.overlord_pod()["spec"]["containers"][0]
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "base"},
            "template": {"spec": {"containers": [{**druid_container, "args": ["peon"]}]}},
        }
        template.write_text(yaml.safe_dump(pod_template), encoding="utf-8")
        druid = Druid(kube, overlord)
        task = index_parallel_task("index_parallel_wikipedia_template_joined", standinDurationSeconds=3)
        druid.submit(task)
        druid.wait_for(task["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
        [job] = druid.jobs()
        assert job["metadata"]["labels"]["druid.overlord.namespace"] == NAMESPACE
        overlord.restart()
        assert logged_in_order(druid, "No longer leader", f"Joined Job of task[{task['id']}] at startup")
        assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"
        assert kube.metrics.creates("jobs") == 1


def test_a_pod_template_the_adapter_cannot_read_fails_the_task_with_nothing_created(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    properties = {
        "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
        "druid.indexer.runner.k8s.podTemplate.base": str(tmp_path / "missing.yaml"),
    }
    with overlord_for(kube, runner_properties=properties) as overlord:
        druid = Druid(kube, overlord)
        task = index_parallel_task("index_parallel_wikipedia_no_template")
        druid.submit(task)
        status = druid.wait_complete(task["id"])
        assert (status["statusCode"], status["errorMsg"]) == (
            "FAILED",
            "Failed to run task. See overlord logs for more details.",
        )
        assert logged_in_order(druid, f"Task [{task['id']}] failed to run: building the Job failed")
        assert kube.metrics.creates("jobs") == 0
