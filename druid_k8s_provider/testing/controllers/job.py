"""The emulated Job controller (batch/v1, NonIndexed Jobs).

It follows the Kubernetes 1.32 controller: pods from the template with ``generateName`` and the job labels and
a controlling ownerReference; ``status.active/ready/terminating/succeeded/failed/startTime/completionTime``;
back-off between failed pods; ``backoffLimit`` and ``activeDeadlineSeconds``. Since 1.31 a finishing Job first
gets the interim condition (``SuccessCriteriaMet`` or ``FailureTarget``), its remaining pods are terminated,
and only when none is left does it get the terminal ``Complete`` / ``Failed`` condition (and, for success,
``completionTime``). Pod outcomes are remembered per pod uid, so a pod deleted after it finished still counts
once, and a pod deleted before it finished counts as failed, as the real controller's tracking finalizer
guarantees.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import TYPE_CHECKING

from druid_k8s_provider.testing.controllers.common import (
    Key,
    Obj,
    backoff_delay,
    condition,
    controller_uid,
    find_condition,
    is_not_found,
    now_rfc3339,
    object_key,
    parse_rfc3339,
    pod_is_terminal,
    pod_phase,
    set_condition,
)
from druid_k8s_provider.testing.controllers.job_rules import (
    SUCCESS_MESSAGE,
    SUCCESS_REASON,
    JobTracking,
    interim_condition,
    is_finished,
    is_job_pod,
)

if TYPE_CHECKING:
    from druid_k8s_provider.testing.cluster import Cluster

log = logging.getLogger(__name__)

_COMPONENT = "job-controller"
#: After a refused pod create the Job is synced again with this back-off (the controller's
#: DefaultJobApiBackOff and MaxJobApiBackOff), each refusal recorded as a FailedCreate event.
_API_BACKOFF_SECONDS = 1.0
_MAX_API_BACKOFF_SECONDS = 60.0


class JobController:
    """Keeps each Job's pods and status in line with its spec; reconciles a dirty Job once per loop turn."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._jobs: dict[Key, Obj] = {}
        self._job_keys: dict[str, Key] = {}
        self._pods: dict[str, dict[Key, Obj]] = {}
        self._tracking: dict[str, JobTracking] = {}
        self._dirty: dict[Key, None] = {}
        self._drain_scheduled = False

    def stop(self) -> None:
        for tracking in self._tracking.values():
            tracking.cancel_timers()

    # ------------------------------------------------------------------ informer side (listener context)

    def on_job(self, event_type: str, job: Obj) -> None:
        key = object_key(job)
        uid = str(job["metadata"]["uid"])
        if event_type == "DELETED":
            self._jobs.pop(key, None)
            self._job_keys.pop(uid, None)
            tracking = self._tracking.pop(uid, None)
            if tracking is not None:
                tracking.cancel_timers()
            self.cluster.ttl.forget(uid)
            return
        self._jobs[key] = job
        self._job_keys[uid] = key
        if uid not in self._tracking:
            status = job.get("status") or {}
            self._tracking[uid] = JobTracking(
                base_succeeded=int(status.get("succeeded") or 0), base_failed=int(status.get("failed") or 0)
            )
        self._enqueue(key)

    def on_pod(self, event_type: str, pod: Obj) -> None:
        if not is_job_pod(pod):
            return
        owner = controller_uid(pod)
        if owner is None:
            return
        key = object_key(pod)
        pods = self._pods.setdefault(owner, {})
        pod_uid = str(pod["metadata"]["uid"])
        tracking = self._tracking.get(owner)
        if event_type == "DELETED":
            pods.pop(key, None)
            if not pods:
                self._pods.pop(owner, None)
            outcome = "Succeeded" if pod_phase(pod) == "Succeeded" else "Failed"
            if tracking is not None:
                self._record_outcome(tracking, pod_uid, outcome)
        else:
            pods[key] = pod
            if tracking is not None and pod_is_terminal(pod):
                self._record_outcome(tracking, pod_uid, pod_phase(pod))
        job_key = self._job_keys.get(owner)
        if job_key is not None:
            self._enqueue(job_key)

    @staticmethod
    def _record_outcome(tracking: JobTracking, pod_uid: str, outcome: str) -> None:
        if pod_uid in tracking.outcomes:
            return
        tracking.outcomes[pod_uid] = outcome
        if outcome == "Failed":
            tracking.last_failure = time.monotonic()

    def _enqueue(self, key: Key) -> None:
        self._dirty[key] = None
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if not self.cluster.running:
            return
        keys = list(self._dirty)
        self._dirty.clear()
        for key in keys:
            try:
                self._reconcile(key)
            except Exception:
                log.exception("job controller failed on %s/%s", *key)

    # ------------------------------------------------------------------ reconciliation

    def _reconcile(self, key: Key) -> None:
        job = self._jobs.get(key)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        uid = str(job["metadata"]["uid"])
        tracking = self._tracking.get(uid)
        if tracking is None:
            return  # deleted while this reconcile was queued (a listener's delete inside the dispatch)
        if is_finished(job):
            self.cluster.ttl.track(job, tracking.finished_at)
            return
        spec = job.get("spec") or {}
        status: Obj = copy.deepcopy(job.get("status") or {})
        conditions: list[Obj] = list(status.get("conditions") or [])
        pods = list(self._pods.get(uid, {}).values())
        active = [
            pod for pod in pods if not pod_is_terminal(pod) and not pod["metadata"].get("deletionTimestamp")
        ]
        terminating = [
            pod for pod in pods if not pod_is_terminal(pod) and pod["metadata"].get("deletionTimestamp")
        ]
        succeeded = tracking.base_succeeded + tracking.count("Succeeded")
        failed = tracking.base_failed + tracking.count("Failed")

        if spec.get("suspend"):
            self._suspend(job, status, conditions, active, tracking)
            self._write_status(job, status, conditions, active, terminating, succeeded, failed)
            return
        if not status.get("startTime"):
            status["startTime"] = now_rfc3339()
            tracking.started_at = time.time()
        elif tracking.started_at is None:
            tracking.started_at = parse_rfc3339(status["startTime"])
        if (find_condition(status, "Suspended") or {}).get("status") == "True":
            set_condition(conditions, condition("Suspended", False, "JobResumed", "Job resumed"))
            self.cluster.events.record(job, "Resumed", "Job resumed", component=_COMPONENT)

        interim = interim_condition(job, conditions, active, succeeded, failed, tracking)
        if interim is not None:
            for pod in active:
                self._delete_pod(job, pod)
            terminating = [*terminating, *active]
            active = []
            if not terminating:
                self._finish(job, status, conditions, interim, tracking)
        else:
            self._arm_deadline(key, job, tracking)
            active = [*active, *self._create_missing(key, job, active, succeeded, failed, tracking)]
        self._write_status(job, status, conditions, active, terminating, succeeded, failed)

    def _finish(
        self, job: Obj, status: Obj, conditions: list[Obj], interim: Obj, tracking: JobTracking
    ) -> None:
        now = now_rfc3339()
        tracking.finished_at = time.time()
        tracking.cancel_timers()
        if interim["type"] == "SuccessCriteriaMet":
            set_condition(conditions, condition("Complete", True, SUCCESS_REASON, SUCCESS_MESSAGE, when=now))
            status["completionTime"] = now
            self.cluster.events.record(job, "Completed", "Job completed", component=_COMPONENT)
        else:
            set_condition(
                conditions, condition("Failed", True, interim["reason"], interim["message"], when=now)
            )
            self.cluster.events.record(
                job, str(interim["reason"]), str(interim["message"]), component=_COMPONENT, warning=True
            )

    def _suspend(
        self, job: Obj, status: Obj, conditions: list[Obj], active: list[Obj], tracking: JobTracking
    ) -> None:
        """Suspended: no pods, and the deadline clock stops (it restarts from zero on resume)."""
        tracking.cancel_timers()
        tracking.deadline_timer = tracking.backoff_timer = None
        tracking.started_at = None
        for pod in active:
            self._delete_pod(job, pod)
        active.clear()
        suspended = find_condition(status, "Suspended")
        if suspended is None or suspended.get("status") != "True":
            set_condition(conditions, condition("Suspended", True, "JobSuspended", "Job suspended"))
            status.pop("startTime", None)
            self.cluster.events.record(job, "Suspended", "Job suspended", component=_COMPONENT)

    def _arm_deadline(self, key: Key, job: Obj, tracking: JobTracking) -> None:
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is None or tracking.started_at is None or tracking.deadline_timer is not None:
            return
        delay = max(0.0, tracking.started_at + int(deadline) - time.time())
        tracking.deadline_timer = asyncio.get_running_loop().call_later(delay, self._enqueue, key)

    def _create_missing(
        self, key: Key, job: Obj, active: list[Obj], succeeded: int, failed: int, tracking: JobTracking
    ) -> list[Obj]:
        spec = job.get("spec") or {}
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is None:
            wanted = parallelism if succeeded == 0 else 0
        else:
            wanted = min(parallelism, int(completions) - succeeded)
        missing = wanted - len(active)
        if missing <= 0:
            return []
        if failed and tracking.last_failure is not None:
            timings = self.cluster.timings
            wait = backoff_delay(timings.job_backoff, timings.job_backoff_cap, failed) - (
                time.monotonic() - tracking.last_failure
            )
            if wait > 0:
                if tracking.backoff_timer is None or tracking.backoff_timer.cancelled():
                    tracking.backoff_timer = asyncio.get_running_loop().call_later(
                        wait, self._backoff_over, key
                    )
                return []
        created = [pod for pod in (self._create_pod(job) for _ in range(missing)) if pod is not None]
        if len(created) < missing:
            self._retry_create(key, tracking)
        else:
            tracking.create_failures = 0
        return created

    def _retry_create(self, key: Key, tracking: JobTracking) -> None:
        """A pod create was refused (quota, LimitRange, admission webhook): sync the Job again later."""
        tracking.create_failures += 1
        if tracking.create_retry_timer is not None and not tracking.create_retry_timer.cancelled():
            return
        delay = backoff_delay(_API_BACKOFF_SECONDS, _MAX_API_BACKOFF_SECONDS, tracking.create_failures)

        def retry() -> None:
            tracking.create_retry_timer = None
            self._enqueue(key)

        tracking.create_retry_timer = asyncio.get_running_loop().call_later(delay, retry)

    def _backoff_over(self, key: Key) -> None:
        job = self._jobs.get(key)
        if job is not None:
            tracking = self._tracking.get(str(job["metadata"]["uid"]))
            if tracking is not None:
                tracking.backoff_timer = None
        self._enqueue(key)

    def _create_pod(self, job: Obj) -> Obj | None:
        meta = job["metadata"]
        name = str(meta["name"])
        uid = str(meta["uid"])
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        pod_meta = template.get("metadata") or {}
        labels = dict(pod_meta.get("labels") or {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{name}-",
                "namespace": meta.get("namespace"),
                "labels": labels,
                "annotations": dict(pod_meta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        try:
            created = self.cluster.store.create("pods", str(meta.get("namespace")), pod)
        except Exception as error:
            self.cluster.events.record(
                job, "FailedCreate", f"Error creating: {error}", component=_COMPONENT, warning=True
            )
            return None
        self.cluster.events.record(
            job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component=_COMPONENT
        )
        return created

    def _delete_pod(self, job: Obj, pod: Obj) -> None:
        namespace, name = object_key(pod)
        try:
            self.cluster.store.delete("pods", namespace, name)
        except Exception as error:
            if not is_not_found(error):
                log.exception("job controller could not delete pod %s/%s", namespace, name)
            return
        self.cluster.events.record(job, "SuccessfulDelete", f"Deleted pod: {name}", component=_COMPONENT)

    def _write_status(
        self,
        job: Obj,
        status: Obj,
        conditions: list[Obj],
        active: list[Obj],
        terminating: list[Obj],
        succeeded: int,
        failed: int,
    ) -> None:
        ready = sum(
            1 for pod in active if (find_condition(pod.get("status"), "Ready") or {}).get("status") == "True"
        )
        for field_name, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[field_name] = value
            else:
                status.pop(field_name, None)  # omitempty on the real API
        status["ready"] = ready
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        if conditions:
            status["conditions"] = conditions
        if status == job.get("status"):
            return
        namespace, name = object_key(job)

        def apply(obj: Obj) -> None:
            obj["status"] = status

        try:
            updated = self.cluster.store.mutate("jobs", namespace, name, apply, subresource="status")
        except Exception as error:
            if not is_not_found(error):
                log.exception("job controller could not update job %s/%s", namespace, name)
            return
        self._jobs[(namespace, name)] = updated
        if is_finished(updated):
            tracking = self._tracking.get(str(updated["metadata"]["uid"]))
            self.cluster.ttl.track(updated, tracking.finished_at if tracking else None)
