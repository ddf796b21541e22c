"""What the Overlord's runner reads from a peon Job: its task, and whether and when it finished."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.hooks.job_state import finished_condition
from druid_k8s_provider.job_builder import MAIN_CONTAINER_NAME, decompress_task
from druid_k8s_provider.task import DruidTask


def read_task_from_job(job: Mapping[str, Any]) -> DruidTask:
    """The task a peon Job runs, read back as Druid's adapters do; ValueError when it cannot be read."""
    template = (job.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    main = next((c for c in containers if c.get("name") == MAIN_CONTAINER_NAME), None)
    payload = next(
        (var.get("value") for var in (main or {}).get("env") or [] if var.get("name") == "TASK_JSON"), None
    )
    payload = payload or ((template.get("metadata") or {}).get("annotations") or {}).get("task")
    if not payload:
        raise ValueError("no TASK_JSON env in container [main] and no [task] annotation")
    try:
        return DruidTask.from_spec(decompress_task(payload))
    except (ValueError, OSError, EOFError, DruidK8sConfigError) as error:
        raise ValueError(f"the task payload cannot be read: {error}") from error


def job_finish_time(job: Mapping[str, Any]) -> float | None:
    """When the Job finished (completionTime, else its Complete/Failed condition), as a POSIX time."""
    status = job.get("status") or {}
    stamp = status.get("completionTime") or (finished_condition(job) or {}).get("lastTransitionTime")
    if not stamp:
        return None
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
