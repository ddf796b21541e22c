"""How the provider reads one answer of the Overlord: :class:`OverlordAnswer` (status, body, the error that
explains it), :class:`OverlordTaskStatus` (a task as Druid reports it) and :func:`druid_error_text`.

Druid's errors come as ``{"error": "druidException", "errorCode", "errorMessage", ...}``, as a legacy
``{"error": message}``, as ``{"Access-Check-Result": ...}`` (403), or as plain text; a proxy may answer with
an HTML page. :func:`druid_error_text` reads all of them, so an error always says what the server said.

A successful answer whose body is not the JSON Druid sends, or JSON of another shape (a proxy's login page
answered with 200, a status without its ``statusCode``, a version that is a number), is never guessed at:
it is an :class:`~druid_k8s_provider.errors.OverlordAnswerUnreadable` naming the connection, the request and
what is wrong, so nothing is decided on an answer the provider cannot read.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from druid_k8s_provider.errors import OverlordAnswerUnreadable, OverlordApiError
from druid_k8s_provider.hooks.secrets import scrub

#: How much of an error body goes into a message: enough for Druid's sentences, not a whole HTML page.
_MAX_ERROR_TEXT = 500
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
#: The fix for an answer the provider cannot read.
_READABLE_FIX = (
    "check that host, port and the endpoint extra of the connection reach the Overlord (or the Router) and "
    "not another server or a proxy's login page"
)


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
class OverlordAnswer:
    """A final (non-retried) HTTP answer of the Overlord, with what is needed to explain it."""

    conn_id: str
    method: str
    path: str
    status: int
    content_type: str
    body: bytes = field(repr=False)
    secrets: Sequence[str] = field(default=(), repr=False)
    task_id: str | None = None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The decoded JSON body, or an :class:`OverlordAnswerUnreadable` saying the answer was not Druid's
        JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise self.error(
                "the answer is not the JSON Druid sends", _READABLE_FIX, OverlordAnswerUnreadable
            ) from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (:class:`OverlordAnswerUnreadable` for anything else)."""
        document = self.json()
        if not isinstance(document, dict):
            raise self.wrong_shape("the answer is not a JSON object")
        return document

    def json_list(self) -> list[Any]:
        """The body as a JSON list (:class:`OverlordAnswerUnreadable` for anything else)."""
        document = self.json()
        if not isinstance(document, list):
            raise self.wrong_shape("the answer is not a JSON list")
        return document

    def wrong_shape(self, problem: str) -> OverlordApiError:
        """The error for JSON that is not of the shape Druid's endpoint answers with."""
        return self.error(
            f"{problem}, not the shape Druid answers with", _READABLE_FIX, OverlordAnswerUnreadable
        )

    def error(
        self, problem: str, fix: str, error_class: type[OverlordApiError] = OverlordApiError
    ) -> OverlordApiError:
        """An error naming the connection, the request, the HTTP status and what Druid said."""
        said = druid_error_text(self.content_type, self.body)
        said = scrub(said, list(self.secrets)) or ""
        message = (
            f"Overlord request {self.method} {self.path} (Airflow connection {self.conn_id!r}) answered "
            f"HTTP {self.status}: {problem}" + (f"; Druid said: {said}" if said else "") + f". Fix: {fix}"
        )
        return error_class(
            message,
            conn_id=self.conn_id,
            path=self.path,
            status=self.status,
            druid_message=said or None,
            task_id=self.task_id,
        )

    def refused(self) -> OverlordApiError:
        """The error for a status the call does not expect, with the fix that status usually needs."""
        if self.status == 401:
            return self.error(
                "the Overlord did not accept the credentials",
                f"check the login and password of Airflow connection {self.conn_id!r} (Druid basic security)",
            )
        if self.status == 403:
            return self.error(
                "the Druid user lacks a permission",
                f"grant the Druid user of connection {self.conn_id!r} what the Quickstart lists: WRITE on "
                "the task's datasource to submit and stop it, READ to follow it, STATE READ and WRITE for "
                "the version and the batched task status",
            )
        if self.status == 404:
            return self.error(
                "the path does not exist on that server",
                f"check host, port and the endpoint extra of connection {self.conn_id!r}: they must reach "
                "the Overlord or the Router (a proxy's path prefix goes in front of druid/indexer/v1/task)",
            )
        if self.status in (307, 308):
            return self.error(
                "the Overlord kept redirecting (a redirect loop between Overlords)",
                f"point connection {self.conn_id!r} at the leader Overlord or the Router",
            )
        if self.status == 429 or self.status >= 500:
            return self.error(
                "the Overlord was still unavailable after the retries",
                "check the Overlord's health and leadership, then clear the Airflow task: a submitted task "
                "is re-attached, not submitted twice",
            )
        return self.error("Druid refused the request", "correct what Druid's message names, then retry")


def druid_error_text(content_type: str, body: bytes) -> str:
    """The error a Druid answer carries, in one line: Druid's JSON error forms, plain text, or an HTML page
    (a proxy, a login page) described by its title. Empty for an empty body."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if text[0] in '{["':
        with contextlib.suppress(ValueError):
            return _json_error_text(json.loads(text))
    if "html" in content_type.lower() or text.lower().startswith(("<!doctype", "<html", "<?xml")):
        title = _HTML_TITLE.search(text)
        shown = title.group(1) if title else _TAGS.sub(" ", text)
        return f"an HTML page: {_one_line(shown)}"
    if sum(1 for character in text[:200] if not character.isprintable() and character not in "\r\n\t") > 10:
        return f"{len(body)} bytes that are not text"
    return _one_line(text)


def _json_error_text(document: Any) -> str:
    if isinstance(document, Mapping):
        for key in ("errorMessage", "error", "Access-Check-Result", "message"):
            value = document.get(key)
            if isinstance(value, str) and value and value != "druidException":
                return _one_line(value)
    if isinstance(document, str):
        return _one_line(document)
    return _one_line(json.dumps(document, separators=(",", ":")))


def _one_line(text: str) -> str:
    collapsed = " ".join(text.split())
    return collapsed if len(collapsed) <= _MAX_ERROR_TEXT else f"{collapsed[:_MAX_ERROR_TEXT]}..."
