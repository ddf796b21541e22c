"""A final answer of the Overlord's HTTP API and the error it carries: :class:`OverlordAnswer` (status, body,
the error that explains it) and :func:`druid_error_text`.

Druid's errors come as ``{"error": "druidException", "errorCode", "errorMessage", ...}``, as a legacy
``{"error": message}``, as ``{"Access-Check-Result": ...}`` (403), or as plain text; a proxy may answer with
an HTML page. :func:`druid_error_text` reads all of them, so an error always says what the server said.

A successful answer whose body is not the JSON Druid sends, or JSON of another shape (a proxy's login page
answered with 200, a status without its ``statusCode``, a version that is a number), is never guessed at:
it is an :class:`~druid_k8s_provider.errors.OverlordAnswerUnreadable` naming the connection, the request and
what is wrong (:meth:`OverlordAnswer.json`, :meth:`OverlordAnswer.wrong_shape`), so nothing is decided on an
answer the provider cannot read.
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
