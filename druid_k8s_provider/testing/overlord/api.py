"""The Overlord's HTTP API (aiohttp): Druid's paths, status codes, JSON shapes and messages.

From apache/druid ``OverlordResource`` and ``StatusResource``:

- ``POST /druid/indexer/v1/task`` → 200 ``{"task": id}``; a known id → 400 ``ErrorResponse`` with
  ``errorCode`` ``entryAlreadyExists``; a body that is not a task, or a task type no module of this
  Overlord registers (Jackson's "Could not resolve type id"), → 400 ``{"error": ...}``; see also
  :mod:`.submission`.
- ``GET /druid/indexer/v1/task/{id}`` → ``{"task", "payload"}`` (404 with ``payload`` null);
  ``GET .../status`` → ``{"task", "status": TaskStatusPlus}`` (404 with ``status`` null);
  ``POST .../shutdown`` → 200 ``{"task": id}`` always; ``GET .../log?offset=N`` (text; 404 with Druid's
  sentence); ``GET .../reports`` (404 with Druid's sentence).
- ``POST /druid/indexer/v1/taskStatus`` (list of ids) → map id → ``TaskStatus``; empty list → 400.
- ``GET /druid/indexer/v1/tasks?state=&datasource=`` (bad state → 400 text), and the older
  ``waitingTasks`` / ``pendingTasks`` / ``runningTasks`` / ``completeTasks``.
- ``POST /druid/indexer/v1/action`` → ``{"result": ...}``; refused → 500 ``{"error": message}``.
- ``GET /status`` (``version``, ``modules``, ``memory``), ``GET /status/health`` → ``true``,
  ``GET /status/properties`` → the runtime properties as one JSON object of strings, less every one whose
  name contains (ignoring case) an entry of ``druid.server.hiddenProperties`` (Druid guards it with CONFIG
  READ; the emulator's one user has every permission: script a 403 with a fault on step ``properties``).
- Not leader: every ``/druid/indexer/v1`` path answers 503 with an empty body, except ``isLeader`` (404
  ``{"leader": false}``).
- Basic auth (Druid basic security) when credentials are configured: 401 without or with wrong ones; as in
  Druid ``/status/health`` stays open. ``/emulator/v1/*`` is the emulator's control path, not Druid's
  (``restart``, and ``faults``: see :mod:`.faults`, whose scripted faults apply before anything else).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import KNOWN_TASK_TYPES, DruidTask
from druid_k8s_provider.testing.overlord.actions import ActionRefused, UnknownAction
from druid_k8s_provider.testing.overlord.faults import OverlordFaults, apply_fault, control_routes, step_of
from druid_k8s_provider.testing.overlord.queue import API_TASK_STATES, EntryAlreadyExists
from druid_k8s_provider.testing.overlord.service import Overlord
from druid_k8s_provider.testing.overlord.submission import SubmissionRefused

PREFIX = "/druid/indexer/v1"
LEADER_PATH = PREFIX + "/isLeader"
NO_LOG = "No log was found for this task. The task may not exist, or it may not have begun running yet."
NO_REPORTS = (
    "No task reports were found for this task. The task may not exist, or it may not have completed yet."
)
_OPEN_PATHS = ("/status/health", "/emulator/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``restart(downtime, refuse_connections)``: see ``OverlordEmulator.restart_async``.
Restart = Callable[[float, bool], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the Overlord answered: method, path, query parameters and the HTTP status; ``fault`` is
    the kind of scripted fault that fired on it, empty for none: ``reset_connection`` (closed unanswered,
    status 499), ``status`` (answered with the scripted error, not handled), ``latency`` (handled and
    answered late) or ``lose_answer`` (handled, its answer never arrived)."""

    method: str
    path: str
    query: Mapping[str, str]
    status: int
    fault: str = ""


@dataclass
class RequestLog:
    """Every request the emulated Overlord answered (also those refused with 401 or 503), in order, so tests
    can pin what a client asked; the emulator's control path is not recorded."""

    requests: list[RecordedRequest] = field(default_factory=list)

    def count(self, method: str, path: str, **query: str) -> int:
        """How many ``method path`` requests had at least the given query parameters (e.g.
        ``count("GET", "/druid/indexer/v1/tasks", state="pending")``)."""
        return sum(
            1
            for request in self.requests
            if request.method == method
            and request.path == path
            and all(request.query.get(key) == value for key, value in query.items())
        )

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.requests.clear()


def build_app(
    overlord: Overlord,
    version: str | None,
    credentials: tuple[str, str] | None,
    restart: Restart,
    request_log: RequestLog | None = None,
    faults: OverlordFaults | None = None,
    runtime_properties: Callable[[], Mapping[str, str]] = dict,
) -> web.Application:
    """The aiohttp application serving ``overlord``; ``restart(downtime, refuse_connections)`` backs the
    control path; ``faults`` fire on the steps they match; every answered request goes into
    ``request_log``."""
    faults = faults if faults is not None else OverlordFaults()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        status, fault = 500, ""
        try:
            step = step_of(request.method, request.path)
            decision = faults.decide(step) if step is not None else None
            if decision is None:
                response = await _guarded(request, handler)
            else:
                fault = decision.kind
                response = await apply_fault(decision, request, lambda: _guarded(request, handler))
            status = response.status
            return response
        except web.HTTPException as error:  # the router's 404 / 405
            status = error.status
            raise
        finally:
            if request_log is not None and not request.path.startswith("/emulator/"):
                record = RecordedRequest(request.method, request.path, dict(request.query), status, fault)
                request_log.requests.append(record)

    async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            credentials is not None
            and not request.path.startswith(_OPEN_PATHS)
            and not _authorized(request.headers.get("Authorization", ""), credentials)
        ):
            return web.Response(status=401, text="Unauthorized")
        if request.path.startswith(PREFIX) and request.path != LEADER_PATH and not overlord.leader:
            return web.Response(status=503)
        return await handler(request)

    app = web.Application(middlewares=[guard])
    routes = _Routes(overlord, version, restart, runtime_properties)
    app.add_routes(
        [
            web.post(PREFIX + "/task", routes.submit),
            web.get(PREFIX + "/task/{id}", routes.payload),
            web.get(PREFIX + "/task/{id}/status", routes.status),
            web.post(PREFIX + "/task/{id}/shutdown", routes.shutdown),
            web.get(PREFIX + "/task/{id}/log", routes.task_log),
            web.get(PREFIX + "/task/{id}/reports", routes.reports),
            web.post(PREFIX + "/taskStatus", routes.statuses),
            web.get(PREFIX + "/tasks", routes.tasks),
            web.get(PREFIX + "/waitingTasks", routes.fixed_state("waiting")),
            web.get(PREFIX + "/pendingTasks", routes.fixed_state("pending")),
            web.get(PREFIX + "/runningTasks", routes.fixed_state("running")),
            web.get(PREFIX + "/completeTasks", routes.fixed_state("complete")),
            web.post(PREFIX + "/action", routes.action),
            web.get(LEADER_PATH, routes.is_leader),
            web.get("/status", routes.service_status),
            web.get("/status/health", routes.health),
            web.get("/status/properties", routes.properties),
            web.post("/emulator/v1/restart", routes.restart),
            *control_routes(faults),
        ]
    )
    return app


def _authorized(header: str, credentials: tuple[str, str]) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return secrets.compare_digest(user, credentials[0]) and secrets.compare_digest(password, credentials[1])


def _json(body: Any, status: int = 200) -> web.Response:
    """A JSON answer as Jackson writes it (no spaces)."""
    return web.Response(
        text=json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


class _Routes:
    def __init__(
        self,
        overlord: Overlord,
        version: str | None,
        restart: Restart,
        runtime_properties: Callable[[], Mapping[str, str]],
    ) -> None:
        self.overlord = overlord
        self.version = version
        self.runtime_properties = runtime_properties
        self._restart = restart
        self._restarts: set[asyncio.Task[None]] = set()

    async def submit(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if isinstance(body, dict) and "id" not in body and isinstance(body.get("type"), str):
                body["id"] = _generated_id(body)
            task = DruidTask.from_spec(body)
        except (ValueError, DruidK8sConfigError) as error:
            return _error(400, f"Cannot construct instance of `Task`: {error}")
        if task.type not in KNOWN_TASK_TYPES:  # core and bundled extensions are loaded, nothing else
            known = ", ".join(sorted(KNOWN_TASK_TYPES))
            return _error(
                400,
                f"Could not resolve type id '{task.type}' as a subtype of "
                f"`org.apache.druid.indexing.common.task.Task`: known type ids = [{known}]",
            )
        try:
            self.overlord.submit(task)
        except EntryAlreadyExists as error:
            return _json(error.to_json(), status=400)
        except SubmissionRefused as refused:
            return _json(refused.body, status=refused.status)
        return _json({"task": task.id})

    async def payload(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        entry = self.overlord.queue.get(task_id)
        payload = entry.task.spec if entry is not None else None
        return _json({"task": task_id, "payload": payload}, status=200 if payload else 404)

    async def status(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        entry = self.overlord.queue.get(task_id)
        if entry is not None:
            self.overlord.refreshed(entry)
        body = self.overlord.queue.status_response(task_id)
        if body is None:
            return _json({"task": task_id, "status": None}, status=404)
        return _json(body)

    async def shutdown(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        await self.overlord.shutdown(task_id)
        return _json({"task": task_id})

    async def task_log(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        try:
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return web.Response(status=404, text=f"HTTP 404 Not Found: offset [{request.query['offset']}]")
        runner = self.overlord.runner
        live = await runner.live_log(task_id) if runner is not None else None
        if live is not None:
            return web.Response(text=live, content_type="text/plain", charset="utf-8")
        path = self.overlord.task_log_dir / f"{task_id}.log"
        try:
            data = path.read_bytes()
        except OSError:
            return web.Response(status=404, text=NO_LOG)
        # FileTaskLogs/LogUtils: a negative offset counts back from the end.
        start = max(len(data) + offset, 0) if offset < 0 else min(offset, len(data))
        return web.Response(body=data[start:], content_type="text/plain", charset="utf-8")

    async def reports(self, request: web.Request) -> web.Response:
        path = self.overlord.task_log_dir / f"{request.match_info['id']}.report.json"
        try:
            return web.Response(body=path.read_bytes(), content_type="application/json")
        except OSError:
            return web.Response(status=404, text=NO_REPORTS)

    async def statuses(self, request: web.Request) -> web.Response:
        try:
            ids = await request.json()
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not ids:
            return web.Response(status=400, text="No Task IDs provided.")
        self.overlord.refresh_all()
        return _json(self.overlord.queue.statuses(str(task_id) for task_id in ids))

    async def tasks(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state is not None and state.lower() not in API_TASK_STATES:
            return web.Response(
                status=400,
                text=f"Invalid task state[{state}]. Must be one of [{', '.join(API_TASK_STATES)}].",
            )
        self.overlord.refresh_all()
        return _json(self.overlord.queue.listing(state, request.query.get("datasource")))

    def fixed_state(self, state: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            self.overlord.refresh_all()
            return _json(self.overlord.queue.listing(state, None))

        return handler

    async def action(self, request: web.Request) -> web.Response:
        try:
            holder = await request.json()
            task = DruidTask.from_spec(holder["task"])
            action = dict(holder["action"])
        except (ValueError, KeyError, TypeError, DruidK8sConfigError) as error:
            return _error(400, f"Cannot construct instance of `TaskActionHolder`: {error}")
        try:
            result = self.overlord.action(task, action)
        except ActionRefused as error:
            self.overlord.log(f"WARN Failed to perform task action: {error}")
            return _error(500, str(error))
        except UnknownAction as error:
            return _error(400, str(error))
        return _json({"result": result})

    async def is_leader(self, request: web.Request) -> web.Response:
        leading = self.overlord.leader
        return _json({"leader": leading}, status=200 if leading else 404)

    async def service_status(self, request: web.Request) -> web.Response:
        return _json(
            {
                "version": self.version,
                "modules": [
                    {
                        "name": "org.apache.druid.k8s.overlord.KubernetesOverlordModule",
                        "artifact": "druid-kubernetes-overlord-extensions",
                        "version": self.version,
                    }
                ],
                "memory": {
                    "maxMemory": 1073741824,
                    "totalMemory": 1073741824,
                    "freeMemory": 536870912,
                    "usedMemory": 536870912,
                    "directMemory": 1073741824,
                },
            }
        )

    async def properties(self, request: web.Request) -> web.Response:
        return _json(dict(self.runtime_properties()))

    async def health(self, request: web.Request) -> web.Response:
        return _json(True)

    async def restart(self, request: web.Request) -> web.Response:
        downtime, refuse_connections = 0.0, False
        if request.can_read_body:
            try:
                body = await request.json()
                downtime = float(body.get("downtime", 0.0))
                refuse_connections = bool(body.get("refuse_connections", False))
            except (ValueError, AttributeError, TypeError):
                return _error(400, 'body must be {"downtime": <seconds>, "refuse_connections": <bool>}')
        if refuse_connections:
            # This answer's own connection is about to be cut: answer first, restart right after.
            restarting = asyncio.create_task(self._restart(downtime, True), name="overlord-restart")
            self._restarts.add(restarting)
            restarting.add_done_callback(self._restarts.discard)
            return _json({"leader": False, "restarting": True}, status=202)
        await self._restart(downtime, False)
        return _json({"leader": self.overlord.leader})


def _generated_id(body: dict[str, Any]) -> str:
    """An id for a task submitted without one, shaped like Druid's ``<type>_<dataSource>_<random>_<time>``."""
    data_source = DruidTask.from_spec({**body, "id": "probe"}).data_source or "none"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return f"{body['type']}_{data_source}_{uuid.uuid4().hex[:8]}_{stamp}"
