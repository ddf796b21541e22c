"""Every Kubernetes call of the provider: template pod, Job create-or-join, watch, logs, events, delete.

Built on the cncf provider's ``KubernetesHook`` / ``AsyncKubernetesHook`` so the ``kubernetes_default``
connection (``kube_config_path``, ``in_cluster``, ``cluster_context``, ``namespace`` extras) works as it does
for the KubernetesPodOperator. Two things are added on top:

- **Plain dicts.** Calls go through the client's ``call_api`` with ``_preload_content=False`` and return
  API-form JSON (camelCase), the form the pure core builds and reads; no generated model classes.
- **Retries and clear errors.** 429 (honouring ``Retry-After``), 5xx and connection errors are retried with
  exponential back-off capped at a couple of seconds (tenacity, :class:`RetryPolicy`): a bounded number of
  times for a single call, and without an attempt limit, until a deadline, for the reads of a task that
  waits; anything else becomes a :class:`DruidK8sTaskError` naming the call, the Druid task, the Job and
  what to do.

``disable_client_proxy`` (Druid's ``druid.indexer.runner.disableClientProxy``) makes both clients ignore
``HTTP(S)_PROXY``: the sync client reads those variables into its configuration, aiohttp reads them per
request when ``trust_env`` is on.

The connection, the call and its errors are in ``kube_client`` (failures in ``k8s_errors``, retries in
``k8s_retry``), the REST paths in ``k8s_api``, and the coroutine counterpart in ``druid_k8s_async``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException as SyncApiException

from druid_k8s_provider.errors import JobLaunchTimeout, KubernetesApiError, TemplatePodNotFound
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.hooks.druid_k8s_async import DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import (
    AUTH_SETTINGS,
    JOB_NAME_LABEL,
    PEON_SELECTOR,
    events_about,
    events_path,
    events_query,
    first_running,
    jobs_path,
    newest,
    pods_path,
    task_id_of,
)
from druid_k8s_provider.hooks.k8s_errors import ApiCallFailed
from druid_k8s_provider.hooks.k8s_retry import RetryPolicy
from druid_k8s_provider.hooks.kube_client import KubeClientHook

#: The provider's hook module: both hooks, the retry policy they take, and this module's constants.
__all__ = [
    "DEFAULT_POD_GRACE_SECONDS",
    "JOB_RELEASE_SLACK_SECONDS",
    "DruidK8sAsyncHook",
    "DruidK8sHook",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

#: How long a Job being deleted may take to go away beyond its pods' termination grace period (the garbage
#: collector removing the pods and the ``foregroundDeletion`` finalizer) before a new launch gives up.
JOB_RELEASE_SLACK_SECONDS = 60.0
#: Kubernetes' default ``terminationGracePeriodSeconds``.
DEFAULT_POD_GRACE_SECONDS = 30


class DruidK8sHook(KubeClientHook):
    """Blocking Kubernetes calls for the operator (before deferral), the sensor and the reaper.

    :param kubernetes_conn_id: the Airflow connection (cncf ``kubernetes`` type).
    :param namespace: namespace used when a method is given none; else the connection's ``namespace``
        extra, else ``default``.
    :param disable_client_proxy: ignore ``HTTP(S)_PROXY`` (Druid's ``disableClientProxy``).
    :param retry_policy: how transient failures are retried.
    """

    # -- contract methods (also used by the reaper) --------------------------------------------------

    def get_template_pod(
        self, namespace: str, pod_name: str | None = None, selector: str | None = None
    ) -> dict[str, Any]:
        """The Overlord pod whose spec becomes the peon's: by name, or the first Running one matching."""
        namespace = self.resolve_namespace(namespace)
        if not pod_name and not selector:
            raise TemplatePodNotFound(
                "no template pod given. Fix: set overlord_pod_name or overlord_pod_selector (or "
                "[druid_k8s] overlord_pod_selector), or use customTemplateAdapter with a pod template file"
            )
        with self._explained(f"reading the template pod in namespace {namespace!r}"):
            if pod_name:
                try:
                    return dict(self.request("GET", pods_path(namespace, pod_name)))
                except ApiCallFailed as exc:
                    if exc.status == 404:
                        raise TemplatePodNotFound(
                            f"template pod {pod_name!r} not found in namespace {namespace!r}. Fix: set "
                            "overlord_pod_name to a pod that exists there (the Overlord pod)"
                        ) from None
                    raise
            pods = self.request("GET", pods_path(namespace), query={"labelSelector": selector})["items"]
        pod = first_running(pods)
        if pod is None:
            raise TemplatePodNotFound(
                f"no Running pod matches selector {selector!r} in namespace {namespace!r} "
                f"({len(pods)} pod(s) match but none is Running). Fix: check overlord_pod_selector and "
                "that the Overlord is up"
            )
        return pod

    def create_or_join_job(self, manifest: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or join the one that exists for the same Druid task: (job, created).

        Joining is what makes the operator restorable: a retry after a worker crash, or a second execution
        of the same task instance, finds the Job by its deterministic name and checks its ``task.id``.
        A Job of that name that belongs to another task is an error, never joined.
        """
        metadata = manifest["metadata"]
        name, task_id = metadata["name"], task_id_of(manifest)
        namespace = self.resolve_namespace(metadata.get("namespace"))
        with self._explained(
            f"creating Job {name!r} in namespace {namespace!r}", task_id=task_id, job_name=name
        ):
            while True:
                try:
                    return dict(self.request("POST", jobs_path(namespace), body=dict(manifest))), True
                except ApiCallFailed as exc:
                    if exc.status != 409:
                        raise
                existing = self.get_job(name, namespace, task_id=task_id)
                if existing is None:
                    continue  # deleted between our create and read (e.g. a reaper): creating again is safe
                if not job_state.being_deleted(existing) or task_id_of(existing) != task_id:
                    break
                # An earlier try's Job on its way out: its outcome is not this launch's, wait for the name.
                self.wait_for_job_release(existing, task_id=task_id)
        if task_id_of(existing) != task_id:
            raise KubernetesApiError(
                f"a Job named {name!r} already exists in namespace {namespace!r} for another Druid task "
                f"({task_id_of(existing)!r}). Fix: give this task a distinct id, or delete that Job",
                task_id=task_id,
                job_name=name,
            )
        return existing, False

    def wait_for_job_release(self, job: Mapping[str, Any], *, task_id: str | None = None) -> None:
        """Block until a Job that is being deleted is gone, watching it (no polling).

        The bound is the pods' ``terminationGracePeriodSeconds`` plus :data:`JOB_RELEASE_SLACK_SECONDS`: a
        Job held longer is held by something that will not let go by itself (a finalizer whose controller is
        gone). Then :class:`JobLaunchTimeout` names the Job and what holds it. A Job of the same name with
        another uid means the old one is gone.
        """
        metadata = job["metadata"]
        name, uid = metadata["name"], metadata.get("uid")
        namespace = self.resolve_namespace(metadata.get("namespace"))
        pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        grace = pod_spec.get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_SECONDS)
        bound = float(grace) + JOB_RELEASE_SLACK_SECONDS
        deadline = time.monotonic() + bound
        log.info(
            "Job %s is being deleted (%s): waiting up to %.0fs for it to go before launching the task",
            name,
            job_state.deletion_holders(job),
            bound,
        )
        current: Mapping[str, Any] | None = job
        with self._explained(f"waiting for Job {name!r} to be deleted", task_id=task_id, job_name=name):
            while current is not None and current["metadata"].get("uid") == uid:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobLaunchTimeout(
                        f"Job {name!r} in namespace {namespace!r} is still being deleted "
                        f"{bound:.0f}s after it was found deleting (deletionTimestamp "
                        f"{current['metadata'].get('deletionTimestamp')}), held by "
                        f"{job_state.deletion_holders(current)}; the task cannot be launched under its "
                        "name until it is gone. Fix: find out why the finalizer is not removed (its "
                        "controller may be down), or remove it: "
                        f"kubectl patch job {name} -n {namespace} --type=merge "
                        """-p '{"metadata":{"finalizers":null}}'""",
                        task_id=task_id,
                        job_name=name,
                    )
                version = str(current["metadata"].get("resourceVersion") or "")
                for kind, obj in self._watch_job(namespace, name, version, remaining):
                    if kind == "DELETED":
                        return
                    current = obj
                    if current["metadata"].get("uid") != uid:
                        return
                # The watch timed out or expired: look again (and watch on from there).
                current = self.get_job(name, namespace, task_id=task_id)

    def _watch_job(
        self, namespace: str, name: str, resource_version: str, timeout: float
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, Job) events of one Job from ``resource_version`` until the server ends the stream or sends
        an ``ERROR`` (an expired version): the caller reads the Job again."""
        query: dict[str, Any] = {
            "fieldSelector": f"metadata.name={name}",
            "watch": "true",
            "timeoutSeconds": max(1, math.ceil(timeout)),
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        try:
            response = self.api_client.call_api(
                jobs_path(namespace),
                "GET",
                query_params=list(query.items()),
                header_params={"Accept": "application/json"},
                auth_settings=AUTH_SETTINGS,
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=(10.0, timeout + 15.0),
            )
        except SyncApiException as exc:
            if exc.status == 410:  # the version is too old already (etcd compaction): read the Job again
                return
            raise ApiCallFailed.from_response(exc.status or 0, exc.reason, exc.body, exc.headers) from None
        try:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    return
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    yield str(event["type"]), dict(event["object"])
        finally:
            response.release_conn()

    def get_job(self, name: str, namespace: str, *, task_id: str | None = None) -> dict[str, Any] | None:
        """The Job, or None when it does not exist."""
        namespace = self.resolve_namespace(namespace)
        with self._explained(f"reading Job {name!r}", task_id=task_id, job_name=name):
            try:
                return dict(self.request("GET", jobs_path(namespace, name)))
            except ApiCallFailed as exc:
                if exc.status == 404:
                    return None
                raise

    def list_peon_jobs(
        self, namespace: str, page_size: int = 500, *, selector: str = PEON_SELECTOR
    ) -> Iterator[dict[str, Any]]:
        """Every Job labelled ``druid.k8s.peons=true`` (or matching the label ``selector``) in the namespace,
        fetched a page at a time."""
        namespace = self.resolve_namespace(namespace)
        continue_token: str | None = None
        seen: set[str] = set()
        while True:
            query: dict[str, Any] = {"labelSelector": selector, "limit": page_size}
            if continue_token:
                query["continue"] = continue_token
            with self._explained(f"listing peon Jobs in namespace {namespace!r}"):
                try:
                    page = self.request("GET", jobs_path(namespace), query=query)
                except ApiCallFailed as exc:
                    if exc.status != 410 or not continue_token:
                        raise
                    # etcd compacted past the continue token (every few minutes on a real cluster): list
                    # again from the start; Jobs already handed out are not handed out twice.
                    log.info("The paged list of peon Jobs expired (410); listing again from the start")
                    continue_token = None
                    continue
            for job in page.get("items") or ():
                uid = job["metadata"].get("uid") or job["metadata"]["name"]
                if uid not in seen:
                    seen.add(uid)
                    yield job
            continue_token = (page.get("metadata") or {}).get("continue")
            if not continue_token:
                return

    def delete_job(
        self,
        name: str,
        namespace: str,
        grace_period_seconds: int | None = None,
        *,
        task_id: str | None = None,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """Delete the Job and (background propagation) its pods; False when it was already gone.

        The pods get their own ``terminationGracePeriodSeconds`` (Druid's ``graceTerminationPeriodSeconds``)
        unless ``grace_period_seconds`` overrides it. With ``uid`` only that very Job is deleted: when the
        name now belongs to a newer Job (the same task launched again), the API server refuses (``409``)
        and this returns False, as the Job that was meant is gone. With ``resource_version`` too, only that
        version of it: a Job changed since it was read (e.g. released) is refused the same way.
        """
        namespace = self.resolve_namespace(namespace)
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        preconditions = {"uid": uid, "resourceVersion": resource_version}
        if uid is not None or resource_version is not None:
            body["preconditions"] = {key: value for key, value in preconditions.items() if value is not None}
        with self._explained(f"deleting Job {name!r}", task_id=task_id, job_name=name):
            try:
                self.request("DELETE", jobs_path(namespace, name), body=body)
            except ApiCallFailed as exc:
                if exc.status == 404 or (exc.status == 409 and "preconditions" in body):
                    return False
                raise
        return True

    def find_job_pod(self, job_name: str, namespace: str) -> dict[str, Any] | None:
        """The (newest) pod of a Job, found by the ``job-name`` label the API server puts on it."""
        namespace = self.resolve_namespace(namespace)
        with self._explained(f"listing the pods of Job {job_name!r}", job_name=job_name):
            pods = self.request(
                "GET", pods_path(namespace), query={"labelSelector": f"{JOB_NAME_LABEL}={job_name}"}
            )
        return newest(list(pods.get("items") or ()))

    # -- more reads for the operator ------------------------------------------------------------------

    def list_events(self, namespace: str, object_names: list[str]) -> list[dict[str, Any]]:
        """Events about the given objects (the Job and its pod), for launch-failure messages."""
        namespace = self.resolve_namespace(namespace)
        events: list[dict[str, Any]] = []
        with self._explained(f"listing events of {', '.join(object_names)}"):
            for name in object_names:
                page = self.request("GET", events_path(namespace), query=events_query(name))
                events.extend(events_about(name, page))
        return events

    def read_pod_log(
        self, pod_name: str, namespace: str, container: str = "main", since_time: str | None = None
    ) -> list[str]:
        """The container's log so far, each line prefixed by its timestamp (``timestamps=true``)."""
        namespace = self.resolve_namespace(namespace)
        query: dict[str, Any] = {"container": container, "timestamps": "true"}
        if since_time:
            query["sinceTime"] = since_time
        with self._explained(f"reading the log of pod {pod_name!r}"):
            try:
                text = self._read_text(f"{pods_path(namespace, pod_name)}/log", query)
            except ApiCallFailed as exc:
                if exc.status in (400, 404):  # container never started, or pod gone: nothing to show
                    return []
                raise
        return text.splitlines()
