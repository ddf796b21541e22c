"""The Overlord's HTTP API as data: each operation is an :class:`OverlordCall` (method, Druid path, body) with
the function that reads Druid's answer, shared by the blocking and the asynchronous client.

Paths, shapes and status codes are Druid's (``OverlordResource`` and ``StatusResource`` in apache/druid):

- ``POST /druid/indexer/v1/task`` → 200 ``{"task": id}``; an id the Overlord already has → 400 with
  ``errorCode`` ``entryAlreadyExists`` (:class:`TaskAlreadySubmitted`).
- ``GET /druid/indexer/v1/task/{id}/status`` → ``{"task", "status": {statusCode, runnerStatusCode, ...}}``;
  an unknown id → 404 (or 400 "Cannot find any task with id" from the permission filter, which looks the task
  up first).
- ``POST /druid/indexer/v1/taskStatus`` with a list of ids → ``{id: {id, status, duration, errorMsg,
  location}}`` without the runner status; unknown ids left out; an empty list → 400, so it is never sent.
- ``GET /druid/indexer/v1/tasks?state=waiting|pending|running|complete[&datasource=]`` → a list of
  ``TaskStatusPlus`` (each with ``runnerStatusCode``), filtered to the datasources the caller may read.
- ``POST /task/{id}/shutdown``, ``GET /task/{id}/reports``, ``GET /task/{id}/log?offset=``,
  ``GET /task/{id}`` (``{"task", "payload"}``), ``GET /status`` (``{"version", ...}``), ``GET
  /status/properties`` (the runtime properties as one JSON object of strings, less those matching
  ``druid.server.hiddenProperties``; Druid asks for CONFIG READ).

Answers are read by :mod:`druid_k8s_provider.hooks.overlord_answer`: Druid's error shapes become one line of
an error naming the connection and the request, and a successful answer that is not Druid's JSON or shape is
an :class:`~druid_k8s_provider.errors.OverlordAnswerUnreadable`, never a guess. Each call names its
``endpoint`` (the hook method it serves), which labels the Overlord request error metric.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from druid_k8s_provider.errors import DruidK8sConfigError, TaskAlreadySubmitted
from druid_k8s_provider.hooks.overlord_answer import OverlordAnswer
from druid_k8s_provider.hooks.secrets import sensitive_values

INDEXER = "/druid/indexer/v1"
TASK_LIST_STATES = ("waiting", "pending", "running", "complete")
ENTRY_ALREADY_EXISTS = "entryAlreadyExists"
_UNKNOWN_TASK = re.compile(r"Cannot find any task with id", re.IGNORECASE)

T = TypeVar("T")


class WrongShape(ValueError):
    """A JSON answer of Druid's endpoint lacks a field, or has one of another type; the message says which."""


@dataclass(frozen=True)
class OverlordTaskStatus:
    """A task as the Overlord reports it.

    ``status_code`` is Druid's ``TaskState``: RUNNING (active: waiting for locks, pending in the runner or
    running), SUCCESS or FAILED. ``runner_status_code`` (WAITING / PENDING / RUNNING / NONE) comes only from
    the single-task status and the task lists; None from the batched ``taskStatus``. It means something only
    while the task is active: for a task its runner no longer holds (complete), Druid's single-task status
    falls back to WAITING. ``duration_ms`` is -1
    while the task runs; ``location`` is ``{"host", "port", "tlsPort"}`` once the peon is up. ``created_time``
    (ISO-8601, from the task lists and the single status) is when the Overlord accepted the submission.
    """

    task_id: str
    status_code: str
    runner_status_code: str | None = None
    duration_ms: int | None = None
    error_msg: str | None = None
    location: Mapping[str, Any] | None = None
    data_source: str | None = None
    type: str | None = None
    created_time: str | None = None

    @property
    def active(self) -> bool:
        """Not complete: the Overlord still holds the task (any state but SUCCESS and FAILED)."""
        return self.status_code not in ("SUCCESS", "FAILED")

    @property
    def handed_to_runner(self) -> bool:
        """Active and held by the Overlord's runner (``runnerStatusCode`` PENDING or RUNNING): its locks are
        taken. Druid's Kubernetes runner reports the state the ``?state=pending|running`` task lists are made
        of (``KubernetesWorkItem.getRunnerTaskState``); False for WAITING, NONE, and the batched status."""
        return self.active and self.runner_status_code in ("PENDING", "RUNNING")

    @classmethod
    def from_json(cls, document: Mapping[str, Any], task_id: str | None = None) -> OverlordTaskStatus:
        """Read a ``TaskStatusPlus`` (``statusCode``) or a ``TaskStatus`` (``status``) object.

        ``task_id`` is the id the entry is known under (the key of the batched status); without it the entry
        must carry its ``id``. Raises :class:`WrongShape` for an entry without a string id or status code.
        """
        status_code = document.get("statusCode") or document.get("status")
        if not isinstance(status_code, str) or not status_code:
            raise WrongShape(f"the status of task {document.get('id') or task_id!r} has no statusCode")
        own_id = document.get("id")
        if not isinstance(own_id, str) or not own_id:
            if task_id is None:
                raise WrongShape(f"an entry has no task id (id: {own_id!r})")
            own_id = task_id
        duration = document.get("duration")
        location = document.get("location")
        created = document.get("createdTime")
        return cls(
            task_id=own_id,
            status_code=status_code,
            runner_status_code=_text_or_none(document.get("runnerStatusCode")),
            duration_ms=int(duration) if isinstance(duration, int | float) else None,
            error_msg=_text_or_none(document.get("errorMsg")),
            location=location if isinstance(location, Mapping) else None,
            data_source=_text_or_none(document.get("dataSource")),
            type=_text_or_none(document.get("type")),
            created_time=created if isinstance(created, str) else None,
        )


def _text_or_none(value: Any) -> str | None:
    return value if value is None else str(value)


@dataclass(frozen=True)
class OverlordCall(Generic[T]):
    """One Overlord operation: the request, and ``read``, which turns the final answer into the result.

    ``read`` sees every answer that is not retried (retries are the client's: 429, 5xx, connection
    errors) and raises :class:`OverlordApiError` for one it does not accept. ``endpoint`` names the
    operation (``submit_task``, ``task_statuses`` ...: the hook method it serves). ``secrets`` are scrubbed
    from error messages (Druid may quote the submitted task back); ``task_id`` goes into errors.
    """

    method: str
    path: str
    read: Callable[[OverlordAnswer], T]
    endpoint: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: Any = field(default=None, repr=False)
    secrets: Sequence[str] = field(default=(), repr=False)
    task_id: str | None = None


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"{INDEXER}/task/{quote(task_id, safe='')}{suffix}"


def _unknown_task(answer: OverlordAnswer) -> bool:
    """Whether Druid says it does not know the task: 404, or the 400 of its permission filter's lookup."""
    return answer.status == 404 or (answer.status == 400 and bool(_UNKNOWN_TASK.search(answer.text())))


def _statuses(answer: OverlordAnswer, entries: Iterable[tuple[str | None, Any]]) -> list[OverlordTaskStatus]:
    """Task statuses from ``(known id or None, entry)`` pairs; a malformed entry makes the whole answer
    unreadable (deciding on a guessed status could run a task twice or lose one)."""
    statuses = []
    for task_id, entry in entries:
        if not isinstance(entry, Mapping):
            raise answer.wrong_shape(f"a task status is {type(entry).__name__}, not a JSON object")
        try:
            statuses.append(OverlordTaskStatus.from_json(entry, task_id))
        except WrongShape as problem:
            raise answer.wrong_shape(str(problem)) from None
    return statuses


def submit_task(task: Mapping[str, Any]) -> OverlordCall[str]:
    """``POST /druid/indexer/v1/task``: the id the Overlord accepted the task under.

    Raises :class:`TaskAlreadySubmitted` when the Overlord already has the task's id (400
    ``entryAlreadyExists``): it was submitted before, re-attach to it. An accepting answer the provider
    cannot read is an :class:`~druid_k8s_provider.errors.OverlordAnswerUnreadable` (the task may have been
    stored: the hook then asks the Overlord).
    """
    task_id = task.get("id") if isinstance(task.get("id"), str) else None

    def read(answer: OverlordAnswer) -> str:
        if answer.status == 200:
            accepted = answer.json_object().get("task")
            if not isinstance(accepted, str) or not accepted:
                raise answer.wrong_shape("the answer names no task id")
            return accepted
        if answer.status == 400 and _is_entry_already_exists(answer):
            raise answer.error(
                "the Overlord already has a task with this id",
                "re-attach to that task: Druid never accepts an id twice",
                TaskAlreadySubmitted,
            )
        raise answer.refused()

    return OverlordCall(
        "POST",
        f"{INDEXER}/task",
        read,
        "submit_task",
        body=dict(task),
        secrets=sensitive_values(task),
        task_id=task_id,
    )


def _is_entry_already_exists(answer: OverlordAnswer) -> bool:
    with contextlib.suppress(ValueError):
        document = json.loads(answer.body)
        if isinstance(document, Mapping):
            if document.get("errorCode") == ENTRY_ALREADY_EXISTS:
                return True
            # Druid before the DruidException errors: {"error": "Task[<id>] already exists!"}
            legacy = document.get("error")
            return isinstance(legacy, str) and "already exists" in legacy
    return False


def task_status(task_id: str) -> OverlordCall[OverlordTaskStatus | None]:
    """``GET /druid/indexer/v1/task/{id}/status``: the status with the runner status; None if unknown."""

    def read(answer: OverlordAnswer) -> OverlordTaskStatus | None:
        if _unknown_task(answer):
            return None
        if answer.status != 200:
            raise answer.refused()
        status = answer.json_object().get("status")
        if status is None:
            return None
        return _statuses(answer, [(task_id, status)])[0]

    return OverlordCall("GET", _task_path(task_id, "/status"), read, "task_status", task_id=task_id)


def task_statuses(task_ids: Sequence[str]) -> OverlordCall[dict[str, OverlordTaskStatus]]:
    """``POST /druid/indexer/v1/taskStatus``: id → status for the ids the Overlord knows (others absent).

    The statuses carry no runner status. Callers never send an empty list (Druid answers it with 400).
    """

    def read(answer: OverlordAnswer) -> dict[str, OverlordTaskStatus]:
        if answer.status != 200:
            raise answer.refused()
        known = answer.json_object()
        statuses = _statuses(answer, known.items())
        return {str(task_id): status for task_id, status in zip(known, statuses, strict=True)}

    return OverlordCall(
        "POST", f"{INDEXER}/taskStatus", read, "task_statuses", body=list(dict.fromkeys(task_ids))
    )


def tasks(state: str, data_source: str | None = None) -> OverlordCall[list[OverlordTaskStatus]]:
    """``GET /druid/indexer/v1/tasks?state=...``: the tasks in one state, each with its runner status.

    Druid leaves out the tasks of datasources the caller may not read. Raises :class:`DruidK8sConfigError`
    for a state Druid does not list.
    """
    if state not in TASK_LIST_STATES:
        raise DruidK8sConfigError(
            "state", f"{state!r} is not a task list state", f"use one of {', '.join(TASK_LIST_STATES)}"
        )
    params = {"state": state} | ({"datasource": data_source} if data_source else {})

    def read(answer: OverlordAnswer) -> list[OverlordTaskStatus]:
        if answer.status != 200:
            raise answer.refused()
        return _statuses(answer, ((None, entry) for entry in answer.json_list()))

    return OverlordCall("GET", f"{INDEXER}/tasks", read, "tasks", params=params)


def shutdown_task(task_id: str) -> OverlordCall[bool]:
    """``POST /task/{id}/shutdown``: True when the Overlord took the request (it then records an active task
    FAILED "Shutdown request from user" and deletes its Job; a complete one is left as it is), False when it
    says it does not know the task (the 400 of Druid's permission filter; an Overlord that answers 200 for
    an unknown id gives True and changes nothing)."""

    def read(answer: OverlordAnswer) -> bool:
        if _unknown_task(answer):
            return False
        if answer.status != 200:
            raise answer.refused()
        return True

    return OverlordCall("POST", _task_path(task_id, "/shutdown"), read, "shutdown_task", task_id=task_id)


def task_report(task_id: str) -> OverlordCall[dict[str, Any] | None]:
    """``GET /task/{id}/reports``: the task's reports (``ingestionStatsAndErrors`` ...), None while there are
    none (the task has not completed, or it writes no report)."""

    def read(answer: OverlordAnswer) -> dict[str, Any] | None:
        if _unknown_task(answer):
            return None
        if answer.status != 200:
            raise answer.refused()
        return answer.json_object()

    return OverlordCall("GET", _task_path(task_id, "/reports"), read, "task_report", task_id=task_id)


def task_log(task_id: str, offset: int = 0) -> OverlordCall[str | None]:
    """``GET /task/{id}/log?offset=``: the task's log from byte ``offset`` (a negative offset counts from the
    end), None when there is none yet. While the task runs Druid streams the whole live log and ignores
    ``offset``; after completion it serves the pushed log from ``offset``."""

    def read(answer: OverlordAnswer) -> str | None:
        if _unknown_task(answer):
            return None
        if answer.status != 200:
            raise answer.refused()
        return answer.text()

    return OverlordCall(
        "GET",
        _task_path(task_id, "/log"),
        read,
        "task_log",
        params={"offset": str(offset)},
        task_id=task_id,
    )


def task_payload(task_id: str) -> OverlordCall[dict[str, Any] | None]:
    """``GET /task/{id}``: the task JSON the Overlord holds, None if unknown. It may carry credentials:
    never log it."""

    def read(answer: OverlordAnswer) -> dict[str, Any] | None:
        if _unknown_task(answer):
            return None
        if answer.status != 200:
            raise answer.refused()
        payload = answer.json_object().get("payload")
        return payload if isinstance(payload, dict) else None

    return OverlordCall("GET", _task_path(task_id), read, "task_payload", task_id=task_id)


def overlord_version() -> OverlordCall[str | None]:
    """``GET /status``: the Overlord's Druid version (``"35.0.0"``), None when it reports none (a build
    without a manifest). A version that is no string is an unreadable answer, not a version below 35."""

    def read(answer: OverlordAnswer) -> str | None:
        if answer.status != 200:
            raise answer.refused()
        version = answer.json_object().get("version")
        if version is not None and not isinstance(version, str):
            raise answer.wrong_shape(f"the version is {json.dumps(version)[:40]}, not a string")
        return version

    return OverlordCall("GET", "/status", read, "overlord_version")


def runtime_properties() -> OverlordCall[dict[str, str]]:
    """``GET /status/properties``: the Overlord's runtime properties (name → value, both strings), without
    those ``druid.server.hiddenProperties`` hides. Druid's ``StatusResource`` serves it behind the CONFIG
    READ permission (403 without it); any refusal raises :class:`OverlordApiError`. Values may hold
    secrets a cluster did not hide: never log the answer."""

    def read(answer: OverlordAnswer) -> dict[str, str]:
        if answer.status != 200:
            raise answer.refused()
        return {str(name): str(value) for name, value in answer.json_object().items()}

    return OverlordCall("GET", "/status/properties", read, "runtime_properties")
