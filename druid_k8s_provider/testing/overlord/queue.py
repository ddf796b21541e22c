"""The Overlord's task queue and task storage: what was submitted, in which state, and the JSON Druid shows.

Rules (apache/druid ``TaskQueue``, ``OverlordResource``, ``TaskStatusPlus``):

- A task is known only once submitted (:meth:`TaskQueue.add`); a known id is refused with
  :class:`EntryAlreadyExists` (HTTP 400, error code ``entryAlreadyExists``), even after it completed.
- Active = submitted and not complete. The runner state of an active task is WAITING until the queue hands it
  to the runner (its locks taken), then PENDING, then RUNNING once its pod is up; a complete task's list
  entries say NONE.
- Only the runner's outcome or a shutdown completes a task; nothing else changes a status.

Pure bookkeeping: the scheduling (locks, runner) lives in :mod:`.emulator`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.lockbox import joda_time

WAITING, PENDING, RUNNING, NONE = "WAITING", "PENDING", "RUNNING", "NONE"
#: ``GET /druid/indexer/v1/tasks?state=`` values Druid accepts (``OverlordResource.API_TASK_STATES``).
API_TASK_STATES = ("pending", "waiting", "running", "complete")


class EntryAlreadyExists(Exception):
    """The task id is already known (Druid's ``EntryAlreadyExists``: persona USER, category INVALID_INPUT)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task[{task_id}] already exists")

    def to_json(self) -> dict[str, Any]:
        """Druid's ``ErrorResponse`` body for a ``DruidException``."""
        return {
            "error": "druidException",
            "errorCode": "entryAlreadyExists",
            "persona": "USER",
            "category": "INVALID_INPUT",
            "errorMessage": str(self),
            "context": {},
        }


def unknown_location() -> dict[str, Any]:
    """``TaskLocation.unknown()``."""
    return {"host": None, "port": -1, "tlsPort": -1}


@dataclass
class TaskEntry:
    """One submitted task and everything the API shows about it."""

    task: DruidTask
    created: dt.datetime
    status_code: str = RUNNING
    runner_state: str = WAITING
    duration: int = -1
    error_msg: str | None = None
    location: dict[str, Any] = field(default_factory=unknown_location)

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def active(self) -> bool:
        return self.status_code == RUNNING

    def status_json(self) -> dict[str, Any]:
        """``TaskStatus`` JSON: ``{id, status, duration, errorMsg, location}``."""
        return {
            "id": self.id,
            "status": self.status_code,
            "duration": self.duration,
            "errorMsg": self.error_msg,
            "location": dict(self.location),
        }

    def status_plus(self, runner_state: str) -> dict[str, Any]:
        """``TaskStatusPlus`` JSON, as the status endpoint and the task lists show it."""
        return {
            "id": self.id,
            "groupId": self.task.group_id,
            "type": self.task.type,
            "createdTime": joda_time(self.created),
            "queueInsertionTime": "1970-01-01T00:00:00.000Z",
            "statusCode": self.status_code,
            "status": self.status_code,
            "runnerStatusCode": runner_state,
            "duration": self.duration,
            "location": dict(self.location),
            "dataSource": self.task.data_source,
            "errorMsg": self.error_msg,
        }


class TaskQueue:
    """Submitted tasks in submission order; the storage of their statuses."""

    def __init__(self) -> None:
        self._entries: dict[str, TaskEntry] = {}
        self._active: dict[str, TaskEntry] = {}  # the active entries, in submission order

    def add(self, task: DruidTask) -> TaskEntry:
        """Store a submitted task as RUNNING/WAITING; :class:`EntryAlreadyExists` for a known id."""
        if task.id in self._entries:
            raise EntryAlreadyExists(task.id)
        entry = TaskEntry(task=task, created=dt.datetime.now(dt.UTC))
        self._entries[task.id] = entry
        self._active[task.id] = entry
        return entry

    def get(self, task_id: str) -> TaskEntry | None:
        return self._entries.get(task_id)

    def active(self) -> list[TaskEntry]:
        """Active entries in submission order."""
        return list(self._active.values())

    def complete(self, task_id: str, status_code: str, duration: int, error_msg: str | None) -> bool:
        """Record the outcome of an active task; False (and no change) if it is unknown or complete."""
        entry = self._entries.get(task_id)
        if entry is None or not entry.active:
            return False
        entry.status_code, entry.duration, entry.error_msg = status_code, duration, error_msg
        entry.runner_state = NONE
        del self._active[task_id]
        return True

    def status_response(self, task_id: str) -> dict[str, Any] | None:
        """``GET /task/{id}/status`` body, or None for an unknown id.

        As ``OverlordResource.getTaskStatus``: the runner's state while the runner knows the task, WAITING
        otherwise (also for a complete task).
        """
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        state = entry.runner_state if entry.runner_state in (PENDING, RUNNING) else WAITING
        return {"task": task_id, "status": entry.status_plus(state)}

    def statuses(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``POST /taskStatus`` body: known ids only, ``TaskStatus`` JSON each."""
        return {
            task_id: self._entries[task_id].status_json() for task_id in task_ids if task_id in self._entries
        }

    def listing(self, state: str | None, data_source: str | None) -> list[dict[str, Any]]:
        """``GET /tasks`` body: active tasks first (by state), then complete ones, newest complete first."""
        wanted = state.lower() if state else None
        listed: list[dict[str, Any]] = []
        for entry in self._entries.values():
            if data_source is not None and entry.task.data_source != data_source:
                continue
            api_state = entry.runner_state.lower() if entry.active else "complete"
            if wanted is None or wanted == api_state:
                listed.append(entry.status_plus(entry.runner_state))
        active = [item for item in listed if item["statusCode"] == RUNNING]
        complete = [item for item in listed if item["statusCode"] != RUNNING]
        return active + complete[::-1]
