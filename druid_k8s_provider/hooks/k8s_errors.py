"""Failed Kubernetes calls: the API's error answers, the failures that heal by themselves (429, 5xx, a
refused or dropped connection), and the error a call that does not heal becomes, naming the call, the Druid
task, the Job and the fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping

import aiohttp
import urllib3

from druid_k8s_provider.errors import (
    DruidK8sConfigError,
    DruidK8sTaskError,
    KubernetesApiError,
    MissingPermission,
)


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


def is_transient(exc: BaseException) -> bool:
    """429, 5xx and connection failures heal by themselves; everything else needs a person."""
    if isinstance(exc, ApiCallFailed):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, CONNECTION_ERRORS)


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
