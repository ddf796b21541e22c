"""Server-side printing, so ``kubectl get`` shows the columns users know (STATUS, READY, COMPLETIONS...):
``meta.k8s.io/v1`` Tables of pods, Jobs, namespaces, ConfigMaps, Secrets and events."""

from __future__ import annotations

from typing import Any

import pendulum

from druid_k8s_provider.testing.api_errors import bad_request
from druid_k8s_provider.testing.resources import ResourceType


def human_duration(seconds: float) -> str:
    """A duration as kubectl prints ages (``45s``, ``3m20s``, ``5h``, ``2d3h``)."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def parse_time(timestamp: str) -> pendulum.DateTime:
    moment = pendulum.parse(timestamp)
    if not isinstance(moment, pendulum.DateTime):
        raise bad_request(f"not a timestamp: {timestamp!r}")
    return moment


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    return human_duration((pendulum.now("UTC") - parse_time(timestamp)).total_seconds())


def _pod_status(pod: dict[str, Any]) -> tuple[str, str, int]:
    """READY, STATUS and RESTARTS as kubectl computes them from a pod's status."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    restarts = 0
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for index, container in enumerate(init_statuses):
        restarts += int(container.get("restartCount", 0))
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            detail = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
            reason = f"Init:{detail}"
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    ready = 0
    has_running = False
    container_statuses = status.get("containerStatuses") or []
    if not initializing:
        for container in reversed(container_statuses):
            restarts += int(container.get("restartCount", 0))
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated:
                reason = f"ExitCode:{terminated.get('exitCode')}"
            elif state.get("running") and container.get("ready"):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return f"{ready}/{len(spec.get('containers') or [])}", reason, restarts


def _job_columns(job: dict[str, Any]) -> list[Any]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if job["metadata"].get("deletionTimestamp"):
        state = "Terminating"
    elif conditions.get("Complete") == "True":
        state = "Complete"
    elif conditions.get("Failed") == "True":
        state = "Failed"
    elif conditions.get("FailureTarget") == "True":
        state = "FailureTarget"
    elif spec.get("suspend"):
        state = "Suspended"
    else:
        state = "Running"
    completions = spec.get("completions")
    succeeded = int(status.get("succeeded", 0))
    shown = (
        f"{succeeded}/{completions}"
        if completions is not None
        else f"{succeeded}/1 of {spec.get('parallelism', 1)}"
    )
    duration = ""
    if status.get("startTime"):
        start = parse_time(status["startTime"])
        end = parse_time(status["completionTime"]) if status.get("completionTime") else pendulum.now("UTC")
        duration = human_duration((end - start).total_seconds())
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = ",".join(
        f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()
    )
    return [
        job["metadata"]["name"],
        state,
        shown,
        duration,
        _age(job["metadata"].get("creationTimestamp")),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        selector,
    ]


_Column = tuple[str, str, int]  # name, type, priority (1: only with -o wide)
_TABLE_COLUMNS: dict[str, tuple[_Column, ...]] = {
    "pods": (
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        ("Age", "string", 0),
        ("IP", "string", 1),
        ("Node", "string", 1),
    ),
    "jobs": (
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Completions", "string", 0),
        ("Duration", "string", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ),
    "namespaces": (("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)),
    "configmaps": (("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)),
    "secrets": (("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)),
    "events": (
        ("Last Seen", "string", 0),
        ("Type", "string", 0),
        ("Reason", "string", 0),
        ("Object", "string", 0),
        ("Message", "string", 0),
    ),
    "selfsubjectaccessreviews": (("Name", "string", 0),),
    "selfsubjectrulesreviews": (("Name", "string", 0),),
}


def _cells(rt: ResourceType, obj: dict[str, Any]) -> list[Any]:
    metadata = obj["metadata"]
    age = _age(metadata.get("creationTimestamp"))
    if rt.plural == "pods":
        ready, status, restarts = _pod_status(obj)
        pod_status = obj.get("status") or {}
        node = (obj.get("spec") or {}).get("nodeName") or "<none>"
        return [
            metadata["name"],
            ready,
            status,
            str(restarts),
            age,
            pod_status.get("podIP") or "<none>",
            node,
        ]
    if rt.plural == "jobs":
        return _job_columns(obj)
    if rt.plural == "namespaces":
        return [metadata["name"], (obj.get("status") or {}).get("phase", "Active"), age]
    if rt.plural == "configmaps":
        return [metadata["name"], len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age]
    if rt.plural == "secrets":
        return [metadata["name"], obj.get("type", "Opaque"), len(obj.get("data") or {}), age]
    if rt.plural == "events":
        involved = obj.get("involvedObject") or {}
        seen = obj.get("lastTimestamp") or obj.get("eventTime") or metadata.get("creationTimestamp")
        return [
            _age(seen),
            obj.get("type", ""),
            obj.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
            obj.get("message", ""),
        ]
    return [metadata.get("name", "")]


def table(rt: ResourceType, items: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``items`` with the resource's kubectl columns."""
    columns = _TABLE_COLUMNS[rt.plural]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": f"{name} of the {rt.singular}",
                "priority": priority,
            }
            for name, kind, priority in columns
        ],
        "rows": [
            {
                "cells": _cells(rt, item),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }
