"""What a peon Job's and pod's state means: started, stuck, finished, and with which outcome.

Pure functions over API-form dicts (camelCase), shared by the operator, the trigger and the sensor, so the
three can never disagree on when a task started, when it is hopeless, or why it failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pendulum

MAIN_CONTAINER = "main"

#: Waiting reasons no amount of waiting cures: the kubelet will never start the container.
HOPELESS_WAITING_REASONS = frozenset(
    {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}
)
#: Waiting reasons that may be transient (a registry hiccup) and are fatal only once they persist.
IMAGE_PULL_WAITING_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})
#: What the Job controller's ``FailedCreate`` event says when admission refused the pod itself, which the
#: controller's retries meet again: a ResourceQuota or LimitRange (``pods "x" is forbidden: exceeded quota``,
#: ``maximum memory usage per Container``), Pod Security, a missing service account (``is forbidden``), a
#: validating webhook (``denied the request``) or a pod the API server finds invalid (``is invalid``). Druid
#: fails such a task instead of waiting for its pod (apache/druid PRs 18159 and 18351); a FailedCreate that
#: says anything else (an API server timeout) is left to the controller's retries.
POD_CREATE_REFUSALS = (" is forbidden: ", " is invalid: ", " denied the request")

SUCCESS = "SUCCESS"
FAILED = "FAILED"


def finished_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Job's ``Complete`` or ``Failed`` condition with status True, or None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def is_finished(job: Mapping[str, Any]) -> bool:
    """True once Kubernetes has decided the Job's fate (the condition ``kubectl wait`` uses)."""
    return finished_condition(job) is not None


def succeeded(job: Mapping[str, Any]) -> bool:
    """True once the Job is ``Complete``: its pod exited 0, so the pod has nothing more to explain."""
    return (finished_condition(job) or {}).get("type") == "Complete"


def being_deleted(obj: Mapping[str, Any]) -> bool:
    """True once a delete was accepted (``metadata.deletionTimestamp``): the object only waits for its
    finalizers (``foregroundDeletion`` while its pods terminate, or another controller's) to go away."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def deletion_holders(job: Mapping[str, Any]) -> str:
    """What keeps a Job that is being deleted from going away: its finalizers and terminating pods."""
    finalizers = list((job.get("metadata") or {}).get("finalizers") or ())
    status = job.get("status") or {}
    pods = int(status.get("terminating") or 0) + int(status.get("active") or 0)
    held = [f"finalizers {finalizers}" if finalizers else "no finalizer"]
    if pods:
        held.append(f"{pods} pod(s) not gone yet")
    return " and ".join(held)


def _container_statuses(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    status = pod.get("status") or {}
    yield from status.get("initContainerStatuses") or ()
    yield from status.get("containerStatuses") or ()


def main_container_status(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The status of the Druid container ``main`` (None before the kubelet reported it)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == MAIN_CONTAINER:
            return status  # type: ignore[no-any-return]
    return None


def running_containers(pod: Mapping[str, Any]) -> list[str]:
    """Names of the pod's containers other than ``main`` that have not terminated (sidecars, native or not,
    that keep the pod running)."""
    return [
        str(status.get("name"))
        for status in _container_statuses(pod)
        if status.get("name") != MAIN_CONTAINER and "terminated" not in (status.get("state") or {})
    ]


def has_started(pod: Mapping[str, Any]) -> bool:
    """True once the pod left Pending: the launch phase of Druid's runner is over."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Running", "Succeeded", "Failed"):
        return True
    main = main_container_status(pod) or {}
    state = main.get("state") or {}
    return "running" in state or "terminated" in state


def waiting_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of the first container stuck waiting for a reason that is worth reporting."""
    for status in _container_statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in HOPELESS_WAITING_REASONS or reason in IMAGE_PULL_WAITING_REASONS:
            return reason, f"container {status.get('name')!r}: {waiting.get('message') or reason}"
    return None


def pending_reason(pod: Mapping[str, Any] | None) -> str:
    """A one-line account of why a pod has not started yet, for launch-timeout errors."""
    if pod is None:
        return "no pod was created for the Job (check the Job's events: quota, admission, service account)"
    problem = waiting_problem(pod)
    if problem:
        return f"{problem[0]}: {problem[1]}"
    for status in _container_statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".rstrip(
                ": "
            )
    return f"pod phase {(pod.get('status') or {}).get('phase') or 'Pending'}"


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def pod_create_refusal(events: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the latest Warning ``FailedCreate`` event of a Job whose pod admission refused
    (see :data:`POD_CREATE_REFUSALS`), or None: such a Job never gets its pod, however long one waits."""
    for event in sorted(events, key=_event_time, reverse=True):
        involved = event.get("involvedObject") or {}
        if event.get("reason") != "FailedCreate" or involved.get("kind", "Job") != "Job":
            continue
        message = str(event.get("message") or "")
        if event.get("type") == "Warning" and any(marker in message for marker in POD_CREATE_REFUSALS):
            return "FailedCreate", message
    return None


def format_events(events: Iterable[Mapping[str, Any]], limit: int = 10) -> str:
    """The most recent events, oldest first, as ``kubectl describe`` prints them (type reason: message)."""
    recent = sorted(events, key=_event_time)[-limit:]
    if not recent:
        return "(no events)"
    return "; ".join(
        f"{event.get('type', 'Normal')} {event.get('reason', '')} "
        f"({(event.get('involvedObject') or {}).get('kind', '?')}): {event.get('message', '')}"
        for event in recent
    )


def parse_time(value: str | None) -> pendulum.DateTime | None:
    """An API timestamp (RFC 3339) as a pendulum DateTime, None when absent."""
    if not value:
        return None
    parsed = pendulum.parse(value)
    assert isinstance(parsed, pendulum.DateTime)
    return parsed


def summary(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Job or pod reduced to what outcome decisions read: name, times, deadline and status.

    Event payloads carry this instead of the whole object, because the pod spec holds ``TASK_JSON`` (the
    task, credentials included) and the triggerer logs every event it fires.
    """
    if obj is None:
        return None
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    reduced: dict[str, Any] = {
        "metadata": {
            key: metadata[key] for key in ("name", "namespace", "uid", "creationTimestamp") if key in metadata
        },
        "status": obj.get("status") or {},
    }
    if "activeDeadlineSeconds" in spec:
        reduced["spec"] = {"activeDeadlineSeconds": spec["activeDeadlineSeconds"]}
    return reduced


@dataclass(frozen=True)
class Outcome:
    """The result of a finished Druid task as the operator reports it (XCom ``status`` and ``error``)."""

    status: str
    error: str | None
    duration_ms: int | None


def _duration_ms(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> int | None:
    terminated = ((main_container_status(pod or {}) or {}).get("state") or {}).get("terminated") or {}
    started = parse_time(terminated.get("startedAt"))
    finished = parse_time(terminated.get("finishedAt"))
    if started is None or finished is None:
        status = job.get("status") or {}
        started = parse_time(status.get("startTime"))
        condition = finished_condition(job) or {}
        finished = parse_time(status.get("completionTime") or condition.get("lastTransitionTime"))
    if started is None or finished is None:
        return None
    return max(0, int((finished - started).total_seconds() * 1000))


def outcome_from_state(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> Outcome:
    """Decide SUCCESS or FAILED from a finished Job and its pod, with a reason a person can act on.

    Used when no ``status.json`` is configured: the Job's conditions say whether it finished well, the pod
    says why it did not (exit code, OOMKilled, eviction), the Job condition covers the rest
    (DeadlineExceeded, BackoffLimitExceeded). A Job still running whose main container ended (a sidecar
    holding the pod) is decided by that container's exit code, as Kubernetes would once the pod ended.
    """
    duration = _duration_ms(job, pod)
    if succeeded(job):
        return Outcome(SUCCESS, None, duration)
    condition = finished_condition(job)
    main_end = ((main_container_status(pod or {}) or {}).get("state") or {}).get("terminated")
    if condition is None and main_end and main_end.get("exitCode") == 0:
        return Outcome(SUCCESS, None, duration)
    reason = (condition or {}).get("reason") or ""
    if reason == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return Outcome(
            FAILED,
            f"the Job ran longer than maxTaskDuration (activeDeadlineSeconds={deadline}) and Kubernetes "
            "stopped it (DeadlineExceeded); raise druid.indexer.runner.maxTaskDuration or speed up the task",
            duration,
        )
    pod_status = (pod or {}).get("status") or {}
    if pod_status.get("reason") == "Evicted":
        return Outcome(
            FAILED,
            f"the peon pod was evicted: {pod_status.get('message') or 'no message'}; the node ran short "
            "of resources, retry the task or give the peon more requests",
            duration,
        )
    terminated = ((main_container_status(pod or {}) or {}).get("state") or {}).get("terminated")
    if terminated:
        exit_code = terminated.get("exitCode")
        if terminated.get("reason") == "OOMKilled":
            return Outcome(
                FAILED,
                f"the peon container 'main' was OOMKilled (exit code {exit_code}); raise the memory limit "
                "(-Xmx / -XX:MaxDirectMemorySize in javaOptsArray) or reduce the task's memory use",
                duration,
            )
        detail = terminated.get("message") or terminated.get("reason") or ""
        return Outcome(
            FAILED,
            f"the peon exited with code {exit_code}"
            + (f" ({detail.strip()})" if detail else "")
            + "; see the peon log above for the cause",
            duration,
        )
    message = (condition or {}).get("message") or "the Job failed without a pod outcome"
    return Outcome(FAILED, f"the Job failed ({reason or 'Failed'}): {message}", duration)
