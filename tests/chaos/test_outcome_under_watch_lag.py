"""A failed task must say why it failed even when the pods watch lags behind the Jobs watch.

The waiter follows Jobs and pods on two separate watch streams. Under load, or while the pods watch is
reconnecting, the Job's ``Failed`` condition can arrive before the pod's terminated state. The chaos suite
saw it (two failed tasks reported only "the Job failed (BackoffLimitExceeded)"); here it is made
deterministic on an API server without controllers: the Job is marked Failed first, the pod's
``exit code 1`` lands a moment later, as the lagging watch would deliver it. The outcome the operator
reports (the Overlord's FAILED "Peon did not report status successfully.", with the pod's reason added)
must still name the peon's exit code, the one fact a person needs to start looking. The follower the
operator and the trigger wait with runs here on its own (the Job is not a task of an Overlord).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from emulated_cluster import NAMESPACE, PEON_LABELS, connected_emulator, peon_like_job

from druid_k8s_provider.hooks.druid_k8s import DruidK8sAsyncHook
from druid_k8s_provider.launch.outcome import overlord_outcome
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.triggers.job import FINISHED, JobFollower

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

TASK_ID = "lagging_pods_watch"
JOB = job_name(TASK_ID)
POD = f"{JOB}-x7k2p"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    with connected_emulator(monkeypatch, cluster=False) as emulator:
        job = peon_like_job(JOB, TASK_ID)
        emulator.store.create("jobs", NAMESPACE, job)
        pod_labels = {**PEON_LABELS, "job-name": JOB}
        pod = {"metadata": {"name": POD, "labels": pod_labels}, "spec": job["spec"]["template"]["spec"]}
        emulator.store.create("pods", NAMESPACE, pod)
        emulator.logs.mark_started(NAMESPACE, POD, "main")
        emulator.logs.append(NAMESPACE, POD, "main", "Exception: segment push failed")
        set_pod_status(emulator, {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, "Running")
        yield emulator


def set_pod_status(kube: KubeEmulator, state: dict[str, Any], phase: str) -> None:
    def change(pod: dict[str, Any]) -> None:
        pod["status"] = {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "image": "peon",
                    "imageID": "",
                    "state": state,
                }
            ],
        }

    kube.store.mutate("pods", NAMESPACE, POD, change, subresource="status")


def fail_job(job: dict[str, Any]) -> None:
    job["status"] = {
        "startTime": "2026-01-01T00:00:00Z",
        "failed": 1,
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ],
    }


def test_the_error_names_the_exit_code_when_the_pod_update_arrives_after_the_job_update(
    api: KubeEmulator,
) -> None:
    events: list[dict[str, Any]] = []
    follower = JobFollower(
        job_name=JOB, namespace=NAMESPACE, druid_task_id=TASK_ID, hook=DruidK8sAsyncHook(), poll_interval=30.0
    )

    def run() -> None:
        events.append(asyncio.run(follower.outcome()))

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)  # the operator joined the Job and waits on its watches
    api.store.mutate("jobs", NAMESPACE, JOB, fail_job, subresource="status")
    time.sleep(0.3)  # the pods watch lags: the pod's end arrives after the Job's
    api.logs.close(NAMESPACE, POD, "main")
    terminated = {
        "exitCode": 1,
        "reason": "Error",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:09Z",
    }
    set_pod_status(api, {"terminated": terminated}, "Failed")
    worker.join(timeout=30)
    assert not worker.is_alive()
    [event] = events
    assert event["status"] == FINISHED
    druid = {"status_code": "FAILED", "error_msg": "Peon did not report status successfully."}
    outcome = overlord_outcome(druid, event["job"], event["pod"])
    assert outcome.error is not None and "Peon did not report status successfully" in outcome.error
    assert "exited with code 1" in outcome.error, f"the failure reason was lost: {outcome.error}"
