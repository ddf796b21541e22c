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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import aiohttp
import tenacity
import urllib3
from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from kubernetes.client import ApiClient as SyncApiClient
from kubernetes.client.exceptions import ApiException as SyncApiException
from kubernetes_asyncio.client import ApiClient as AsyncApiClient

from druid_k8s_provider.errors import (
    DruidK8sConfigError,
    DruidK8sTaskError,
    JobLaunchTimeout,
    KubernetesApiError,
    MissingPermission,
    TemplatePodNotFound,
)
from druid_k8s_provider.hooks import job_state
from druid_k8s_provider.naming import PEON_LABEL, TASK_ID_ANNOTATION

log = logging.getLogger(__name__)

PEON_SELECTOR = f"{PEON_LABEL}=true"
JOB_NAME_LABEL = "job-name"
#: How long a Job being deleted may take to go away beyond its pods' termination grace period (the garbage
#: collector removing the pods and the ``foregroundDeletion`` finalizer) before a new launch gives up.
JOB_RELEASE_SLACK_SECONDS = 60.0
#: Kubernetes' default ``terminationGracePeriodSeconds``.
DEFAULT_POD_GRACE_SECONDS = 30

_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
#: The content type of a JSON merge patch (RFC 7386), which the API server applies to any resource.
MERGE_PATCH = "application/merge-patch+json"
_AUTH = ["BearerToken"]


def jobs_path(namespace: str, name: str | None = None) -> str:
    """REST path of the Jobs of a namespace, or of one Job."""
    base = f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs"
    return f"{base}/{quote(name)}" if name else base


def pods_path(namespace: str, name: str | None = None) -> str:
    """REST path of the pods of a namespace, or of one pod."""
    base = f"/api/v1/namespaces/{quote(namespace)}/pods"
    return f"{base}/{quote(name)}" if name else base


def events_path(namespace: str) -> str:
    """REST path of the (core/v1) events of a namespace."""
    return f"/api/v1/namespaces/{quote(namespace)}/events"


def events_query(object_name: str) -> dict[str, str]:
    """The query for the events about one object (the server's field selector)."""
    return {"fieldSelector": f"involvedObject.name={object_name}"}


def events_about(object_name: str, page: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events of a listed page that are about ``object_name`` (whatever else a server returned)."""
    return [
        event
        for event in page.get("items") or ()
        if (event.get("involvedObject") or {}).get("name") == object_name
    ]


class ApiCallFailed(Exception):
    """A Kubernetes API call answered with an error status (internal; callers translate it)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"HTTP {status} {reason}: {message}")

    @classmethod
    def from_response(
        cls, status: int, reason: str | None, body: bytes | str | None, headers: Mapping[str, str] | None
    ) -> ApiCallFailed:
        """Build from a response, reading the Kubernetes ``Status`` body when there is one."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        message, status_reason = text.strip(), reason or ""
        with contextlib.suppress(ValueError, AttributeError):
            document = json.loads(text)
            message = document.get("message") or message
            status_reason = document.get("reason") or status_reason
        retry_after: float | None = None
        raw_retry_after = (headers or {}).get("Retry-After")
        if raw_retry_after:
            with contextlib.suppress(ValueError):
                retry_after = float(raw_retry_after)
        return cls(status, status_reason, message, retry_after)


#: Exceptions that mean "the connection, not the request, failed": retried like a 503.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)


_EXPLAINABLE: tuple[type[BaseException], ...] = (ApiCallFailed, *CONNECTION_ERRORS)


def is_transient(exc: BaseException) -> bool:
    """429, 5xx and connection failures heal by themselves; everything else needs a person."""
    if isinstance(exc, ApiCallFailed):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, CONNECTION_ERRORS)


#: A retry loop without an attempt limit logs its first attempts and then only every this many, so an outage
#: of minutes leaves a few lines in a task log instead of one every couple of seconds.
LOG_EVERY_NTH_RETRY = 10

RetrySleep = Callable[[float], Awaitable[None]]
BeforeSleep = Callable[[tenacity.RetryCallState], None]


def worth_logging(state: tenacity.RetryCallState, attempts: int | None) -> bool:
    """Whether a retry loop should log this failed attempt: every one of a bounded loop, the first three
    and then every :data:`LOG_EVERY_NTH_RETRY`-th of an unbounded one."""
    number = state.attempt_number
    return attempts is not None or number <= 3 or number % LOG_EVERY_NTH_RETRY == 0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient failures (429, 5xx, a refused or dropped connection).

    Pauses grow exponentially (with jitter) from ``initial_wait`` to at most ``max_wait`` seconds, so a
    call that is retrying resumes within about ``max_wait`` of the API server answering again; a 429's
    ``Retry-After`` is honoured up to ``max_retry_after`` seconds. A call gives up after ``attempts``
    attempts; with ``attempts=None`` (see :meth:`until`) it retries until ``deadline`` (epoch seconds) or,
    without one, until it is cancelled.
    """

    attempts: int | None = 10
    initial_wait: float = 0.2
    max_wait: float = 2.0
    max_retry_after: float = 30.0
    deadline: float | None = None

    def until(self, deadline: float | None) -> RetryPolicy:
        """The same back-off without an attempt limit, for reads while a task waits.

        An API server outage (a control-plane upgrade, an etcd election; tens of seconds on a real cluster)
        changes nothing about a running peon, so a waiting read must outlast it rather than give up and
        leave the outcome to a slow fallback poll. ``deadline`` (epoch seconds, None: none) still ends it,
        and so does cancelling the caller (a user stopping the task).
        """
        return replace(self, attempts=None, deadline=deadline)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiCallFailed) and exc.status == 429 and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after)
        backoff = tenacity.wait_exponential_jitter(initial=self.initial_wait, max=self.max_wait, jitter=0.2)
        return float(backoff(state))

    def _stop(self) -> tenacity.stop.stop_base:
        stop: tenacity.stop.stop_base = tenacity.stop_never
        if self.attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.attempts)
        if self.deadline is not None:
            stop = stop | tenacity.stop_before_delay(max(0.0, self.deadline - time.time()))
        return stop

    def _kwargs(
        self, call: str, retry_on: Callable[[BaseException], bool], before_sleep: BeforeSleep | None
    ) -> dict[str, Any]:
        def warn(state: tenacity.RetryCallState) -> None:
            if not worth_logging(state, self.attempts):
                return
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "Kubernetes API call %s failed (%s); attempt %d%s, retrying in %.1fs",
                call,
                exc,
                state.attempt_number,
                f" of {self.attempts}" if self.attempts is not None else "",
                wait,
            )

        return {
            "stop": self._stop(),
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(retry_on),
            "reraise": True,
            "before_sleep": before_sleep or warn,
        }

    def sync(self, call: str) -> tenacity.Retrying:
        """A tenacity controller for blocking calls; ``call`` names the request in retry warnings."""
        return tenacity.Retrying(**self._kwargs(call, is_transient, None))

    def asynchronous(
        self,
        call: str,
        *,
        retry_on: Callable[[BaseException], bool] = is_transient,
        sleep: RetrySleep | None = None,
        before_sleep: BeforeSleep | None = None,
    ) -> tenacity.AsyncRetrying:
        """A tenacity controller for coroutines; ``call`` names the request in retry warnings.

        ``retry_on`` says which failures to retry (default: the transient ones); ``sleep`` replaces the
        pause (e.g. one that a watch event cuts short); ``before_sleep`` replaces the warning logged before
        each pause.
        """
        kwargs = self._kwargs(call, retry_on, before_sleep)
        if sleep is not None:
            kwargs["sleep"] = sleep
        return tenacity.AsyncRetrying(**kwargs)


def translate_failure(
    exc: BaseException, action: str, *, conn_id: str | None, task_id: str | None, job_name: str | None
) -> DruidK8sTaskError:
    """Turn a failed call into an error that says what was attempted, what Kubernetes said and what to do."""
    if isinstance(exc, ApiCallFailed):
        said = f"{action} failed: HTTP {exc.status} {exc.reason}: {exc.message}"
        if exc.status == 401:
            return KubernetesApiError(
                f"{said}. Fix: check the credentials of Airflow connection {conn_id!r}",
                task_id=task_id,
                job_name=job_name,
            )
        if exc.status == 403:
            return MissingPermission(
                f"{said}. Fix: grant the identity of connection {conn_id!r} the Role documented for the "
                "provider (batch/jobs get/list/watch/create/patch/delete, pods get/list/watch, pods/log get, "
                "events list) in the runner namespace",
                task_id=task_id,
                job_name=job_name,
            )
        if exc.status == 410:
            return KubernetesApiError(
                f"{said}. The resourceVersion or continue token expired (etcd compaction). Fix: retry the "
                "task; a running Job is re-attached, not duplicated",
                task_id=task_id,
                job_name=job_name,
            )
        if is_transient(exc):
            return KubernetesApiError(
                f"{said} (still failing after retries). Fix: check the API server's health and load, "
                "then clear the Airflow task to retry; a running Job is re-attached, not duplicated",
                task_id=task_id,
                job_name=job_name,
            )
        return KubernetesApiError(
            f"{said}. Fix: correct the input Kubernetes rejected (runner properties, template pod, "
            "namespace) and retry",
            task_id=task_id,
            job_name=job_name,
        )
    return KubernetesApiError(
        f"{action} failed: cannot reach the Kubernetes API ({type(exc).__name__}: {exc}). Fix: check "
        f"the server address of connection {conn_id!r} and the network; the task retries re-attach",
        task_id=task_id,
        job_name=job_name,
    )


def undefined_connection(conn_id: str) -> DruidK8sConfigError:
    """The error for a connection id that names no Airflow connection."""
    return DruidK8sConfigError(
        "kubernetes_conn_id",
        f"the Airflow connection {conn_id!r} is not defined",
        "create it (Admin > Connections, or an AIRFLOW_CONN_<ID> environment variable), or point "
        "kubernetes_conn_id / [druid_k8s] kubernetes_conn_id at an existing kubernetes connection",
    )


def task_id_of(obj: Mapping[str, Any]) -> str | None:
    """The Druid task id a Job or pod belongs to (annotation ``task.id``; never parsed from the name)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(TASK_ID_ANNOTATION)
    return str(value) if value is not None else None


def first_running(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first Running pod (by name, so the choice is stable), ignoring pods being deleted."""
    running = [
        pod
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Running"
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    ]
    return min(running, key=lambda pod: pod["metadata"]["name"]) if running else None


def newest(objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recently created object (a Job with backoffLimit 0 has one pod, but be safe)."""
    if not objects:
        return None
    return max(
        objects, key=lambda obj: (obj["metadata"].get("creationTimestamp") or "", obj["metadata"]["name"])
    )


class DruidK8sHook(KubernetesHook):
    """Blocking Kubernetes calls for the operator (before deferral), the sensor and the reaper.

    :param kubernetes_conn_id: the Airflow connection (cncf ``kubernetes`` type).
    :param namespace: namespace used when a method is given none; else the connection's ``namespace``
        extra, else ``default``.
    :param disable_client_proxy: ignore ``HTTP(S)_PROXY`` (Druid's ``disableClientProxy``).
    :param retry_policy: how transient failures are retried.
    """

    def __init__(
        self,
        kubernetes_conn_id: str = "kubernetes_default",
        namespace: str | None = None,
        disable_client_proxy: bool = False,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(conn_id=kubernetes_conn_id)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.default_namespace = namespace
        self.disable_client_proxy = disable_client_proxy
        self.retry_policy = retry_policy or RetryPolicy()

    # -- client ------------------------------------------------------------------------------------

    def get_conn(self) -> SyncApiClient:
        """The cncf client, rebuilt without a proxy when ``disable_client_proxy`` is set."""
        try:
            api = super().get_conn()
        except AirflowNotFoundException:
            raise undefined_connection(self.kubernetes_conn_id) from None
        if self.disable_client_proxy and api.configuration.proxy:
            configuration = api.configuration
            configuration.proxy = None
            configuration.no_proxy = None
            api.close()
            api = type(api)(configuration=configuration)
        return api

    def resolve_namespace(self, namespace: str | None) -> str:
        """The namespace to use: the argument, the hook's, the connection's, or ``default``."""
        return namespace or self.default_namespace or self.get_namespace() or "default"

    def _request_once(
        self, method: str, path: str, query: Mapping[str, Any] | None, body: Any, timeout: float
    ) -> Any:
        try:
            response = self.api_client.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=dict(_JSON_HEADERS),
                body=body,
                auth_settings=_AUTH,
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=timeout,
            )
        except SyncApiException as exc:
            raise ApiCallFailed.from_response(exc.status or 0, exc.reason, exc.body, exc.headers) from None
        data = response.data
        return json.loads(data) if data else None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float = 60.0,
    ) -> Any:
        """One API call with retries on transient failures; raises :class:`ApiCallFailed` otherwise."""
        for attempt in self.retry_policy.sync(f"{method} {path}"):
            with attempt:
                return self._request_once(method, path, query, body, timeout)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    @contextlib.contextmanager
    def _explained(
        self, action: str, *, task_id: str | None = None, job_name: str | None = None
    ) -> Iterator[None]:
        try:
            yield
        except DruidK8sTaskError:
            raise
        except _EXPLAINABLE as exc:
            raise translate_failure(
                exc, action, conn_id=self.kubernetes_conn_id, task_id=task_id, job_name=job_name
            ) from exc

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
                auth_settings=_AUTH,
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

    def _read_text(self, path: str, query: Mapping[str, Any]) -> str:
        for attempt in self.retry_policy.sync(f"GET {path}"):
            with attempt:
                try:
                    response = self.api_client.call_api(
                        path,
                        "GET",
                        query_params=list(query.items()),
                        header_params={"Accept": "*/*"},
                        auth_settings=_AUTH,
                        _preload_content=False,
                        _return_http_data_only=True,
                        _request_timeout=60.0,
                    )
                except SyncApiException as exc:
                    raise ApiCallFailed.from_response(
                        exc.status or 0, exc.reason, exc.body, exc.headers
                    ) from None
                return str(response.data.decode("utf-8", "replace"))
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


class DruidK8sAsyncHook(AsyncKubernetesHook):
    """Coroutine counterpart for the trigger (and the operator's in-process wait): watches and log streams.

    Use :meth:`session` to hold one HTTP client for a series of calls.
    """

    def __init__(
        self,
        kubernetes_conn_id: str = "kubernetes_default",
        disable_client_proxy: bool = False,
        retry_policy: RetryPolicy | None = None,
        connection_extras: dict[str, Any] | None = None,
    ) -> None:
        # Extras handed over by a worker that already read the connection spare an async lookup.
        super().__init__(conn_id=kubernetes_conn_id, connection_extras=connection_extras)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.disable_client_proxy = disable_client_proxy
        self.retry_policy = retry_policy or RetryPolicy()

    @contextlib.asynccontextmanager
    async def session(self, retry_policy: RetryPolicy | None = None) -> AsyncIterator[AsyncKubeSession]:
        """An open client for a series of calls (shared, see :meth:`_client`), retrying as ``retry_policy``
        says (default: the hook's)."""
        try:
            await self.get_conn_extras()
        except AirflowNotFoundException:
            raise undefined_connection(self.kubernetes_conn_id) from None
        async with self._client() as api:
            yield AsyncKubeSession(api, retry_policy or self.retry_policy, self.kubernetes_conn_id)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[AsyncApiClient]:
        """One client per (connection, proxy setting, event loop), shared by every waiter and watch.

        Building a client loads the CA bundle into a new SSL context (tens of milliseconds of CPU on the
        event loop); a triggerer with a thousand deferred tasks would spend most of a minute doing only that.
        Its connection pool is unbounded: every waiter may hold a log stream open. With exec-plugin
        credentials (EKS, GKE), whose tokens expire, each session gets a fresh client, as the cncf hook does.
        """
        key = (self.kubernetes_conn_id, self.disable_client_proxy)
        clients = _SHARED_CLIENTS.setdefault(asyncio.get_running_loop(), {})
        shared = clients.get(key)
        if shared is None:
            await self._load_config()  # type: ignore[no-untyped-call]
            if self._is_exec_auth:
                async with self.get_conn() as fresh:
                    self._ignore_proxy(fresh)
                    yield fresh
                return
            shared = clients.get(key)  # another waiter may have built it while the config loaded
            if shared is None:
                assert self.client_configuration is not None
                self.client_configuration.connection_pool_maxsize = 0  # aiohttp: no limit
                shared = _SharedClient(AsyncApiClient(configuration=self.client_configuration))
                clients[key] = shared
                self._ignore_proxy(shared.api)
        shared.users += 1
        try:
            yield shared.api
        finally:
            shared.users -= 1
            if shared.users == 0 and clients.get(key) is shared:
                del clients[key]
                await shared.api.close()

    def _ignore_proxy(self, api: AsyncApiClient) -> None:
        if self.disable_client_proxy:
            api.rest_client.proxy = None  # type: ignore[assignment]
            # kubernetes_asyncio always builds its aiohttp session with trust_env=True, which reads
            # HTTP(S)_PROXY on every request; turning it off is the only way to ignore them.
            api.rest_client.pool_manager._trust_env = False


@dataclass(eq=False)
class _SharedClient:
    api: AsyncApiClient
    users: int = 0


_SHARED_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, bool], _SharedClient]
] = weakref.WeakKeyDictionary()


class AsyncKubeSession:
    """API calls over one open async client; see :class:`DruidK8sAsyncHook`."""

    def __init__(self, api: AsyncApiClient, retry_policy: RetryPolicy, conn_id: str) -> None:
        self.api = api
        self.retry_policy = retry_policy
        self.conn_id = conn_id

    async def _open(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        timeout: aiohttp.ClientTimeout,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=_AUTH,
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        if not 200 <= response.status <= 299:
            try:
                body_bytes = await response.read()
            finally:
                response.release()
            raise ApiCallFailed.from_response(response.status, response.reason, body_bytes, response.headers)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call with retries on transient failures; raises :class:`ApiCallFailed` otherwise."""
        async for attempt in self.retry_policy.asynchronous(f"{method} {path}"):
            with attempt:
                timeout = aiohttp.ClientTimeout(total=60)
                response = await self._open(method, path, query, body, timeout, content_type=content_type)
                try:
                    data = await response.read()
                finally:
                    response.release()
                return json.loads(data) if data else None
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def get(self, path: str) -> dict[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            return dict(await self.request("GET", path))
        except ApiCallFailed as exc:
            if exc.status == 404:
                return None
            raise

    async def list_objects(
        self, path: str, selector: str, field_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """(items, resourceVersion) of a collection filtered by a label (and field) selector."""
        query = {"labelSelector": selector}
        if field_selector:
            query["fieldSelector"] = field_selector
        page = await self.request("GET", path, query=query)
        return list(page.get("items") or ()), str((page.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(
        self,
        path: str,
        selector: str,
        resource_version: str,
        timeout_seconds: int,
        field_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) from a resourceVersion, with bookmarks, until the server
        ends the stream. Not retried here: the caller resumes or relists."""
        query: dict[str, Any] = {
            "labelSelector": selector,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        if field_selector:
            query["fieldSelector"] = field_selector
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + 15, sock_connect=10)
        response = await self._open("GET", path, query, None, timeout)
        try:
            async for raw in response.content:
                if raw.strip():
                    yield json.loads(raw)
        finally:
            response.release()

    async def follow_log(
        self, pod_name: str, namespace: str, container: str, since_time: str | None, follow: bool = True
    ) -> AsyncIterator[str]:
        """Lines of a container log (timestamped), following it until the container ends."""
        query: dict[str, Any] = {"container": container, "timestamps": "true", "follow": str(follow).lower()}
        if since_time:
            query["sinceTime"] = since_time
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        response = await self._open(
            "GET", f"{pods_path(namespace, pod_name)}/log", query, None, timeout, "*/*"
        )
        try:
            async for raw in response.content:
                yield raw.decode("utf-8", "replace").rstrip("\r\n")
        finally:
            response.release()

    async def delete_job(self, name: str, namespace: str) -> bool:
        """Delete a Job and (background propagation) its pods; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self.request("DELETE", jobs_path(namespace, name), body=body)
        except ApiCallFailed as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_job(self, name: str, namespace: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply a JSON merge patch (RFC 7386) to a Job; the patched Job, or None when it does not exist.

        Retried like any call (a merge patch is idempotent); a refusal (422 ``field is immutable``) raises
        :class:`ApiCallFailed`.
        """
        try:
            return dict(
                await self.request(
                    "PATCH", jobs_path(namespace, name), body=dict(patch), content_type=MERGE_PATCH
                )
            )
        except ApiCallFailed as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_job_version(self, job: Mapping[str, Any]) -> bool:
        """Delete exactly this version of a Job (preconditions ``uid`` and ``resourceVersion``) and its pods;
        False when it is gone or has changed since it was read (the API server's 404 / 409)."""
        metadata = job["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
            "preconditions": {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]},
        }
        try:
            await self.request("DELETE", jobs_path(metadata["namespace"], metadata["name"]), body=body)
        except ApiCallFailed as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def list_events(self, namespace: str, object_names: list[str]) -> list[dict[str, Any]]:
        """Events about the given objects."""
        events: list[dict[str, Any]] = []
        for name in object_names:
            page = await self.request("GET", events_path(namespace), query=events_query(name))
            events.extend(events_about(name, page))
        return events
