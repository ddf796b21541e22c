"""What a Job's and pod's state means to the operator: started, hopeless, finished, and why it failed."""

from __future__ import annotations

from typing import Any

from druid_k8s_provider.hooks import job_state


def job(condition: str | None = None, reason: str = "", message: str = "", **status: Any) -> dict[str, Any]:
    conditions = (
        [{"type": condition, "status": "True", "reason": reason, "message": message}] if condition else []
    )
    return {"spec": {"activeDeadlineSeconds": 600}, "status": {"conditions": conditions, **status}}


def pod(phase: str = "Pending", main_state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    statuses = [{"name": "main", "state": main_state}] if main_state is not None else []
    return {"metadata": {"name": "p"}, "status": {"phase": phase, "containerStatuses": statuses, **status}}


def test_a_job_is_finished_only_with_a_true_complete_or_failed_condition() -> None:
    assert not job_state.is_finished(job())
    assert not job_state.is_finished({"status": {"conditions": [{"type": "Complete", "status": "False"}]}})
    assert job_state.is_finished(job("Complete"))
    assert job_state.is_finished(job("Failed"))


def test_started_means_the_pod_left_pending_or_main_runs() -> None:
    assert not job_state.has_started(pod())
    assert job_state.has_started(pod("Running"))
    assert job_state.has_started(pod("Pending", {"running": {"startedAt": "2026-01-01T00:00:00Z"}}))


def test_hopeless_and_image_pull_waiting_reasons_are_reported_with_the_container() -> None:
    stuck = pod(main_state={"waiting": {"reason": "InvalidImageName", "message": "bad ref"}})
    assert job_state.waiting_problem(stuck) == ("InvalidImageName", "container 'main': bad ref")
    assert job_state.waiting_problem(pod(main_state={"waiting": {"reason": "ContainerCreating"}})) is None


def test_pending_reason_names_unschedulable_pods_and_missing_pods() -> None:
    unschedulable = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes: cpu",
            }
        ]
    )
    assert job_state.pending_reason(unschedulable) == "Unschedulable: 0/1 nodes: cpu"
    assert "no pod was created" in job_state.pending_reason(None)


def test_outcomes_say_why_a_task_failed() -> None:
    done = pod(
        "Succeeded",
        {
            "terminated": {
                "exitCode": 0,
                "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": "2026-01-01T00:00:02Z",
            }
        },
    )
    success = job_state.outcome_from_state(job("Complete"), done)
    assert (success.status, success.error, success.duration_ms) == ("SUCCESS", None, 2000)

    exit_1 = job_state.outcome_from_state(job("Failed"), pod("Failed", {"terminated": {"exitCode": 1}}))
    assert exit_1.status == "FAILED" and "exited with code 1" in (exit_1.error or "")

    oom = job_state.outcome_from_state(
        job("Failed"), pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    )
    assert "OOMKilled" in (oom.error or "")

    deadline = job_state.outcome_from_state(job("Failed", "DeadlineExceeded"), None)
    assert "maxTaskDuration" in (deadline.error or "") and "600" in (deadline.error or "")

    evicted = job_state.outcome_from_state(
        job("Failed"), pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    )
    assert "evicted" in (evicted.error or "") and "low on resource" in (evicted.error or "")


def test_events_are_formatted_oldest_first_and_bounded() -> None:
    events = [
        {
            "type": "Warning",
            "reason": f"R{i}",
            "message": f"m{i}",
            "lastTimestamp": f"2026-01-01T00:00:{i:02d}Z",
            "involvedObject": {"kind": "Pod"},
        }
        for i in (3, 1, 2)
    ]
    text = job_state.format_events(events, limit=2)
    assert text == "Warning R2 (Pod): m2; Warning R3 (Pod): m3"
    assert job_state.format_events([]) == "(no events)"


def test_a_job_being_deleted_names_what_holds_it() -> None:
    live = {"metadata": {"name": "j"}}
    assert not job_state.being_deleted(live)
    held = {
        "metadata": {"name": "j", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x.io/keep"]},
        "status": {"active": 1, "terminating": 1},
    }
    assert job_state.being_deleted(held)
    assert job_state.deletion_holders(held) == "finalizers ['x.io/keep'] and 2 pod(s) not gone yet"
    assert job_state.deletion_holders({"metadata": {"deletionTimestamp": "t"}}) == "no finalizer"


def event(message: str, reason: str = "FailedCreate", kind: str = "Job", when: str = "1") -> dict[str, Any]:
    return {
        "type": "Warning",
        "reason": reason,
        "message": message,
        "involvedObject": {"kind": kind, "name": "j"},
        "lastTimestamp": f"2026-01-01T00:00:0{when}Z",
    }


def test_only_admission_refusals_of_the_pod_create_count_as_hopeless() -> None:
    quota = 'Error creating: pods "j-abcde" is forbidden: exceeded quota: q, requested: cpu=4, used: cpu=0'
    limit_range = 'Error creating: pods "j-abcde" is forbidden: maximum memory usage per Container is 1Gi'
    webhook = 'Error creating: admission webhook "policy.example.com" denied the request: no root'
    invalid = 'Error creating: Pod "j-abcde" is invalid: spec.containers[0].image: Required value'
    for message in (quota, limit_range, webhook, invalid):
        assert job_state.pod_create_refusal([event(message)]) == ("FailedCreate", message)
    timeout = "Error creating: Timeout: request did not complete within requested timeout"
    assert job_state.pod_create_refusal([event(timeout)]) is None
    assert job_state.pod_create_refusal([event(quota, reason="FailedScheduling", kind="Pod")]) is None
    assert job_state.pod_create_refusal([event(quota, when="1"), event(webhook, when="2")]) == (
        "FailedCreate",
        webhook,
    )


def test_a_running_job_whose_main_container_ended_is_decided_by_its_exit_code() -> None:
    """A sidecar holds the pod: main's end is the outcome, and the containers still running are named."""
    ended = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    held = pod("Running", ended)
    held["status"]["initContainerStatuses"] = [{"name": "istio-proxy", "state": {"running": {}}}]
    held["status"]["containerStatuses"].append({"name": "log-shipper", "state": {"running": {}}})
    assert job_state.running_containers(held) == ["istio-proxy", "log-shipper"]
    assert job_state.outcome_from_state(job(), held).status == job_state.SUCCESS
    crashed = pod("Running", {"terminated": {"exitCode": 2, "reason": "Error"}})
    outcome = job_state.outcome_from_state(job(), crashed)
    assert outcome.status == job_state.FAILED and "exited with code 2" in (outcome.error or "")
    assert job_state.outcome_from_state(job(), pod("Running", {"running": {}})).status == job_state.FAILED
