"""The launch checks of a Job's waiter: failures waiting will not cure, and a pod create the cluster refused.

:class:`LaunchChecks` is mixed into :class:`~druid_k8s_provider.triggers.follower.JobFollower`, whose fields
these are: a hopeless waiting reason of the pod (``InvalidImageName``...), image pull trouble past its
grace, ``K8sjobLaunchTimeout``, and the Job's events read (with back-off) while it stays without a pod.
"""

from __future__ import annotations

from typing import Any

from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s_async import AsyncKubeSession

#: How long a Job may be without a pod before its events are read for a refused pod create (the Job
#: controller makes the pod within moments; a refusal is recorded as a FailedCreate event on the Job). Later
#: looks back off, doubling up to :data:`MAX_EVENTS_LOOK_SECONDS`, until the pod appears.
POD_CREATE_GRACE_SECONDS = 2.0
MAX_EVENTS_LOOK_SECONDS = 30.0


class LaunchChecks:
    """What a waiter decides about a peon that has not started (mixed into ``JobFollower``)."""

    job_name: str
    namespace: str
    launch_deadline: float | None
    image_pull_grace_seconds: float
    _pull_problem_since: float | None
    _podless_since: float | None
    _next_events_look: float | None
    _events_interval: float

    async def _events_of_podless_job(
        self, session: AsyncKubeSession, now: float
    ) -> list[dict[str, Any]] | None:
        """The Job's events once its pod is overdue (then again with back-off), else None.

        No request while the pod comes as it should: only a Job still without a pod
        :data:`POD_CREATE_GRACE_SECONDS` after it was first seen so has its events read.
        """
        if self._podless_since is None or self._next_events_look is None:
            self._podless_since = now
            self._events_interval = POD_CREATE_GRACE_SECONDS
            self._next_events_look = now + POD_CREATE_GRACE_SECONDS
        if now < self._next_events_look:
            return None
        self._events_interval = min(self._events_interval * 2, MAX_EVENTS_LOOK_SECONDS)
        self._next_events_look = now + self._events_interval
        return await session.list_events(self.namespace, [self.job_name])

    def _launch_failure(self, pod: dict[str, Any] | None, now: float) -> str | None:
        problem = job_state.waiting_problem(pod) if pod is not None else None
        if problem is not None and problem[0] in job_state.HOPELESS_WAITING_REASONS:
            return f"the peon pod cannot start: {problem[0]}: {problem[1]}"
        if problem is not None:  # image pull trouble: fatal once it persists past the grace
            if self._pull_problem_since is None:
                self._pull_problem_since = now
            if now - self._pull_problem_since >= self.image_pull_grace_seconds:
                return (
                    f"the peon image cannot be pulled ({problem[0]} for over "
                    f"{self.image_pull_grace_seconds:g}s): {problem[1]}"
                )
        else:
            self._pull_problem_since = None
        if self.launch_deadline is not None and now >= self.launch_deadline:
            return (
                "the peon pod did not start within K8sjobLaunchTimeout; it is waiting: "
                + job_state.pending_reason(pod)
            )
        return None
