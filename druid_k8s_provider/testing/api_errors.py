"""The errors of the emulated API server, with the ``Status`` bodies, codes and wording a real one sends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from druid_k8s_provider.testing.validation import Cause

if TYPE_CHECKING:
    from druid_k8s_provider.testing.resources import Obj, ResourceType


class ApiError(Exception):
    """A failed API call, carrying what the server puts in its ``Status`` body."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def to_status(self) -> Obj:
        """The ``kind: Status`` body a real API server sends for this error."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details:
            body["details"] = self.details
        body["code"] = self.status
        return body


def error_details(rt: ResourceType, name: str, kind: str | None = None) -> dict[str, Any]:
    """The ``details`` of a Status about ``name``: its name, group and kind (the plural unless given)."""
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind or rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    """404 NotFound for ``name``: ``jobs.batch "x" not found``."""
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', error_details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    """409 AlreadyExists: ``jobs.batch "x" already exists``."""
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', error_details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    """409 Conflict for a stale resourceVersion, worded as the server words it."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        error_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid with one cause per field problem."""
    described = [cause.describe() for cause in causes]
    summary = described[0] if len(described) == 1 else "[" + ", ".join(described) + "]"
    details = error_details(rt, name, kind=rt.kind)
    details["causes"] = [cause.to_api() for cause in causes]
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    """410 Expired: the requested resourceVersion is older than the retained history."""
    return ApiError(410, "Expired", message)
