"""The Kubernetes API as the provider addresses it: REST paths, the peon selector and labels, and small
readers of the API objects it gets back (plain API-form dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from druid_k8s_provider.naming import PEON_LABEL, TASK_ID_ANNOTATION

PEON_SELECTOR = f"{PEON_LABEL}=true"
JOB_NAME_LABEL = "job-name"
#: The content type of a JSON merge patch (RFC 7386), which the API server applies to any resource.
MERGE_PATCH = "application/merge-patch+json"
#: The client's authentication settings for every call: the connection's bearer token.
AUTH_SETTINGS = ["BearerToken"]


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
