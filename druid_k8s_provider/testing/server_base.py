"""What the API server's request handlers share: the JSON wire encoding, query helpers, and the
collaborators every handler reaches (the store, pod logs, metrics, faults and the authorizer)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from druid_k8s_provider.testing.api_errors import ApiError, bad_request
from druid_k8s_provider.testing.faults import FaultInjector
from druid_k8s_provider.testing.logs import LogStore
from druid_k8s_provider.testing.metrics import RequestMetrics
from druid_k8s_provider.testing.rbac import Authorizer
from druid_k8s_provider.testing.store import ObjectStore

JSON = "application/json"
PROTOBUF = "application/vnd.kubernetes.protobuf"
UNKNOWN_FORMAT = (
    "the body of the request was in an unknown format - accepted media types include: application/json"
)


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


class HandlerBase:
    """The state the handler mixins of :class:`~druid_k8s_provider.testing.server.ApiServer` work on."""

    store: ObjectStore
    logs: LogStore
    metrics: RequestMetrics
    faults: FaultInjector
    authorizer: Authorizer
    bookmark_interval: float

    @staticmethod
    def _error(error: ApiError) -> web.Response:
        return web.Response(
            status=error.status, body=dumps(error.to_status()), content_type=JSON, headers=error.headers
        )

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=dumps(obj), content_type=JSON, headers=headers)


def wants_table(request: web.Request) -> bool:
    """kubectl's human output asks for server-side printing: ``Accept: application/json;as=Table;...``."""
    return "as=Table" in request.headers.get("Accept", "")


def optional_int(value: str | None, name: str) -> int | None:
    """The integer query parameter ``name`` (None when absent); 400 when it is not an integer."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{value}": must be an integer') from None
