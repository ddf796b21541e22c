"""The Kubernetes runner's rules: existing Jobs by Druid version, bounded pod lookup, capacity, debugJobs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import build_job
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task

from .conftest import NAMESPACE, Druid, overlord_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@contextlib.contextmanager
def druid_at(kube: KubeEmulator, **kwargs: Any) -> Iterator[Druid]:
    with overlord_for(kube, **kwargs) as overlord:
        yield Druid(kube, overlord)


@pytest.fixture
def druid_34(kube: KubeEmulator) -> Iterator[Druid]:
    with druid_at(kube, druid_version="34.0.0") as druid:
        yield druid


@pytest.fixture
def druid_35(kube: KubeEmulator) -> Iterator[Druid]:
    with druid_at(kube, druid_version="35.0.0", pod_lookup_scale=0.05) as druid:
        yield druid


def suspended_job_for(druid: Druid, task: dict[str, Any]) -> str:
    """The task's Job as Druid would build it, created (suspended) before the task is submitted."""
    template = druid.kube.store.get("pods", NAMESPACE, "druid-overlord-0")
    job = build_job(
        task, template, RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE})
    )
    job["spec"]["suspend"] = True
    druid.kube.store.create("jobs", NAMESPACE, job)
    return str(job["metadata"]["name"])


def resume(druid: Druid, name: str) -> None:
    def change(job: dict[str, Any]) -> None:
        job["spec"]["suspend"] = False

    druid.kube.store.mutate("jobs", NAMESPACE, name, change)


def logged(druid: Druid, text: str) -> bool:
    return any(text in line for line in druid.overlord.log_lines)


def test_before_35_an_existing_job_fails_the_task_and_is_deleted(druid_34: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_exists_34")
    name = suspended_job_for(druid_34, task)
    druid_34.submit(task)
    status = druid_34.wait_complete(task["id"])
    assert status["statusCode"] == "FAILED"
    assert status["errorMsg"] == "Failed to run task. See overlord logs for more details."
    assert logged(druid_34, f"Job[{name}] already exists (409 Conflict)")
    wait_until(lambda: name not in druid_34.job_names(), what="the existing Job's deletion")


def test_from_35_an_existing_job_is_joined_and_runs_the_task(druid_35: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_exists_35")
    name = suspended_job_for(druid_35, task)
    druid_35.submit(task)
    wait_until(lambda: logged(druid_35, f"Job[{name}] for task[{task['id']}] already exists: joining it"))
    resume(druid_35, name)
    assert druid_35.wait_complete(task["id"])["statusCode"] == "SUCCESS"
    # The Overlord's one create got 409 Conflict; the Job the test created is what ran.
    assert druid_35.kube.metrics.count("create", "jobs", status=409) == 1
    assert druid_35.kube.metrics.creates("jobs") == 0


def test_a_joined_job_whose_pod_never_comes_fails_after_the_bounded_lookups(druid_35: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_no_pod")
    name = suspended_job_for(druid_35, task)
    druid_35.submit(task)
    status = druid_35.wait_complete(task["id"], timeout=60)
    assert status["errorMsg"] == "Failed to run task. See overlord logs for more details."
    assert logged(druid_35, f"no pod of Job[{name}] after 10 lookups")
    assert job_name(task["id"]) not in druid_35.job_names()


def test_capacity_keeps_the_extra_task_pending_without_a_job(kube: KubeEmulator) -> None:
    with druid_at(kube, runner_properties={"druid.indexer.runner.capacity": "1"}) as druid:
        check_capacity(druid)


def check_capacity(druid: Druid) -> None:
    first = index_parallel_task("index_parallel_wikipedia_slot", standinDurationSeconds=1.5)
    second = index_parallel_task("index_parallel_wikipedia_queued", "2026-03-01/2026-03-02")
    druid.submit(first)
    druid.wait_for(first["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
    druid.submit(second)
    druid.wait_for(second["id"], lambda s: s["runnerStatusCode"] == "PENDING")
    assert job_name(second["id"]) not in druid.job_names()
    pending = druid.http.get("/druid/indexer/v1/tasks", params={"state": "pending"}).json()
    assert [entry["id"] for entry in pending] == [second["id"]]
    assert druid.wait_complete(second["id"])["statusCode"] == "SUCCESS"


def test_debug_jobs_keeps_the_job_after_completion(kube: KubeEmulator) -> None:
    properties = {"druid.indexer.runner.debugJobs": "true", "druid.indexer.runner.taskCleanupDelay": "PT1H"}
    with druid_at(kube, runner_properties=properties) as druid:
        task = index_parallel_task("index_parallel_wikipedia_debug")
        druid.submit(task)
        assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"
        assert druid.job_names() == [job_name(task["id"])]


def test_periodic_cleanup_deletes_finished_labelled_jobs_older_than_the_cleanup_delay(
    kube: KubeEmulator,
) -> None:
    properties = {
        "druid.indexer.runner.taskCleanupDelay": "PT1H",
        "druid.indexer.runner.taskCleanupInterval": "PT1S",
    }
    with druid_at(kube, runner_properties=properties) as druid:
        old = {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        for name, completed in (("old-peon", "2026-01-01T00:00:00Z"), ("other-job", "2026-01-01T00:00:00Z")):
            labels = {"druid.k8s.peons": "true"} if name == "old-peon" else {}
            kube.store.create(
                "jobs",
                NAMESPACE,
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "suspend": True,
                        "template": {
                            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]}
                        },
                    },
                },
            )

            def finish(job: dict[str, Any], completed: str = completed) -> None:
                job["status"] = {"conditions": [old], "completionTime": completed, "succeeded": 1}

            kube.store.mutate("jobs", NAMESPACE, name, finish, subresource="status")
        wait_until(lambda: logged(druid, "Deleted finished Job[old-peon] (older than taskCleanupDelay)"))
        remaining = [job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)]
        assert remaining == ["other-job"]  # only labelled peon Jobs are the runner's


def test_no_status_json_fails_the_task_with_druids_message(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_silent", standinOutcome="NO_STATUS")
    druid.submit(task)
    status = druid.wait_complete(task["id"])
    assert status["statusCode"] == "FAILED"
    assert status["errorMsg"] == "Peon did not report status successfully."


def test_a_pod_without_an_ip_within_the_launch_timeout_fails_the_task(kube: KubeEmulator) -> None:
    properties = {
        "druid.indexer.runner.K8sjobLaunchTimeout": "PT1S",
        "druid.indexer.runner.cpuCoreInMicro": "100000",  # 100 CPUs: the pod is never scheduled
    }
    with druid_at(kube, runner_properties=properties) as druid:
        task = index_parallel_task("index_parallel_wikipedia_unschedulable")
        druid.submit(task)
        status = druid.wait_complete(task["id"])
        assert status["errorMsg"] == "Failed to run task. See overlord logs for more details."
        assert logged(druid, "got no IP within 1 s (K8sjobLaunchTimeout)")
        wait_until(lambda: druid.job_names() == [], what="the Job's deletion")
