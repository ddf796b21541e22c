"""When an emulated Job has met its end, as the Kubernetes 1.32 Job controller decides it: the backoff limit,
``activeDeadlineSeconds`` and completions, and what the controller remembers about each Job meanwhile."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from druid_k8s_provider.testing.controllers.common import Obj, condition, find_condition

_BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
_DEADLINE_MESSAGE = "Job was active longer than specified deadline"
SUCCESS_REASON = "CompletionsReached"
SUCCESS_MESSAGE = "Reached expected number of succeeded pods"


@dataclass
class JobTracking:
    """What the controller remembers about one Job (by uid) between reconciliations."""

    outcomes: dict[str, str] = field(default_factory=dict)
    base_succeeded: int = 0
    base_failed: int = 0
    last_failure: float | None = None
    started_at: float | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    backoff_timer: asyncio.TimerHandle | None = None
    finished_at: float | None = None
    create_failures: int = 0
    create_retry_timer: asyncio.TimerHandle | None = None

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    def cancel_timers(self) -> None:
        for timer in (self.deadline_timer, self.backoff_timer, self.create_retry_timer):
            if timer is not None:
                timer.cancel()


def is_finished(job: Obj) -> bool:
    """Whether the Job has its terminal ``Complete`` or ``Failed`` condition."""
    status = job.get("status")
    return any(
        (find_condition(status, kind) or {}).get("status") == "True" for kind in ("Complete", "Failed")
    )


def is_job_pod(pod: Obj) -> bool:
    """Whether a Job controls the pod (a controlling ownerReference of kind Job)."""
    return any(
        ref.get("controller") and ref.get("kind") == "Job"
        for ref in pod["metadata"].get("ownerReferences") or ()
    )


def interim_condition(
    job: Obj,
    conditions: list[Obj],
    active: list[Obj],
    succeeded: int,
    failed: int,
    tracking: JobTracking,
) -> Obj | None:
    """The FailureTarget / SuccessCriteriaMet condition, added now if the Job just met its end."""
    for cond in conditions:
        if cond.get("type") in ("FailureTarget", "SuccessCriteriaMet") and cond.get("status") == "True":
            return cond
    spec = job.get("spec") or {}
    new: Obj | None = None
    if past_backoff_limit(spec, active, failed):
        new = condition("FailureTarget", True, "BackoffLimitExceeded", _BACKOFF_MESSAGE)
    elif past_deadline(spec, tracking):
        new = condition("FailureTarget", True, "DeadlineExceeded", _DEADLINE_MESSAGE)
    elif completions_reached(spec, active, succeeded):
        new = condition("SuccessCriteriaMet", True, SUCCESS_REASON, SUCCESS_MESSAGE)
    if new is not None:
        conditions.append(new)
    return new


def past_backoff_limit(spec: Obj, active: list[Obj], failed: int) -> bool:
    """Whether the failed pods (or, with ``OnFailure``, the restarts) passed ``backoffLimit``."""
    limit = int(spec.get("backoffLimit", 6))
    if failed > limit:
        return True
    if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = sum(
        int(container.get("restartCount") or 0)
        for pod in active
        for group in ("initContainerStatuses", "containerStatuses")
        for container in (pod.get("status") or {}).get(group) or ()
    )
    return restarts > 0 if limit == 0 else restarts >= limit


def past_deadline(spec: Obj, tracking: JobTracking) -> bool:
    """Whether ``activeDeadlineSeconds`` ran out since the Job (last) started."""
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is None or tracking.started_at is None:
        return False
    return time.time() >= tracking.started_at + int(deadline)


def completions_reached(spec: Obj, active: list[Obj], succeeded: int) -> bool:
    """Whether enough pods succeeded (a work-queue Job: one, and none still running)."""
    completions = spec.get("completions")
    if completions is None:  # work-queue Job: done when one pod succeeded and no other is still running
        return succeeded > 0 and not active
    return succeeded >= int(completions)
