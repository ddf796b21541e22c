"""Scriptable failures of the emulated Overlord, per step of a client's conversation with it.

The same shape as the Kubernetes emulator's :class:`~druid_k8s_provider.testing.faults.FaultInjector`: a
fault matches requests by ``step`` (None: every step) and fires with a probability ``rate`` (drawn from a
seeded generator, so a failing run replays identically), for the next ``count`` matching requests, or, with
neither, on every match. What it does to the request:

- ``status=503`` (with no ``message``): the Overlord is not the leader, answered as Druid's non-leader does
  (503, empty body); another 4xx/5xx answers Druid's ``{"error": message}``, a 429 with ``Retry-After``.
  Nothing is done.
- ``reset_connection=True``: the Overlord is unreachable: the connection is closed before the request is
  handled, nothing is done and no answer comes (the client sees a dropped connection). For connections
  refused by the whole Overlord, see ``OverlordEmulator.restart(refuse_connections=True)``.
- ``latency=N``: the request is handled N seconds late (a slow Overlord), also when the client gave up
  waiting meanwhile; combined with the others, the wait comes first.
- ``lose_answer=True``: the request is handled (a submit stores the task) and the connection is then reset,
  so the answer never arrives: the client must find out what happened (``entryAlreadyExists``).

Steps (:data:`STEPS`) are the Overlord requests a client makes: ``submit`` (``POST /druid/indexer/v1/task``),
``task_lists`` (``GET /tasks?state=`` and the older ``waitingTasks`` ... ``completeTasks``: the release
check), ``task_statuses`` (the batched ``POST /taskStatus``), ``task_status`` (``GET /task/{id}/status``),
``reports``, ``log``, ``shutdown``, ``payload`` (``GET /task/{id}``), ``version`` (``GET /status``),
``properties`` (``GET /status/properties``) and ``action`` (a peon's ``POST /action``).
``/status/health``, ``isLeader`` and the emulator's control path are never faulted.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from druid_k8s_provider.testing.faults import check_schedule, fires

_INDEXER = "/druid/indexer/v1"
STEPS = (
    "submit",
    "task_lists",
    "task_statuses",
    "task_status",
    "reports",
    "log",
    "shutdown",
    "payload",
    "version",
    "properties",
    "action",
)
_TASK_LISTS = frozenset({"tasks", "waitingTasks", "pendingTasks", "runningTasks", "completeTasks"})
_TASK_SUFFIXES = {"status": "task_status", "reports": "reports", "log": "log", "shutdown": "shutdown"}
#: Recorded as the status of a request whose connection a fault closed (nginx's "client closed request").
CONNECTION_CLOSED = 499


def step_of(method: str, path: str) -> str | None:
    """The step a request belongs to (see :data:`STEPS`), or None for a path no fault applies to."""
    if path == "/status":
        return "version"
    if path == "/status/properties":
        return "properties"
    if not path.startswith(_INDEXER + "/"):
        return None
    parts = path[len(_INDEXER) + 1 :].split("/")
    if parts == ["task"] and method == "POST":
        return "submit"
    if len(parts) == 1 and parts[0] in _TASK_LISTS:
        return "task_lists"
    if parts == ["taskStatus"]:
        return "task_statuses"
    if parts == ["action"]:
        return "action"
    if len(parts) == 2 and parts[0] == "task":
        return "payload"
    if len(parts) == 3 and parts[0] == "task":
        return _TASK_SUFFIXES.get(parts[2])
    return None


@dataclass
class OverlordFault:
    """One scripted fault; ``remaining`` counts down for count-based faults (None: rate-based or always)."""

    step: str | None
    status: int | None
    retry_after: int | None
    rate: float | None
    remaining: int | None
    reset_connection: bool
    lose_answer: bool
    latency: float
    message: str
    fired: int = 0

    def to_json(self) -> dict[str, Any]:
        """The fault as the control path lists it (``GET /emulator/v1/faults``)."""
        return asdict(self)


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: wait ``latency`` seconds, then answer ``status``, close the connection, or
    handle it (and lose its answer when ``lose_answer``)."""

    latency: float = 0.0
    status: int | None = None
    message: str = ""
    retry_after: int | None = None
    reset_connection: bool = False
    lose_answer: bool = False

    @property
    def kind(self) -> str:
        """One word for the request log: ``reset_connection``, ``status``, ``lose_answer`` or ``latency``."""
        if self.reset_connection:
            return "reset_connection"
        if self.status is not None:
            return "status"
        return "lose_answer" if self.lose_answer else "latency"


@dataclass
class OverlordFaults:
    """The fault script of one emulated Overlord; thread-safe, reproducible for a given ``seed``."""

    seed: int = 0
    _faults: list[OverlordFault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(
        self,
        *,
        step: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        rate: float | None = None,
        count: int | None = None,
        reset_connection: bool = False,
        lose_answer: bool = False,
        latency: float = 0.0,
        message: str | None = None,
    ) -> OverlordFault:
        """Script a fault on ``step`` (None: every step); give ``rate`` (0..1) or ``count`` (the next N
        matching requests), neither: every match. Raises ValueError for an unknown step or a fault that does
        nothing or two things that exclude each other."""
        if step is not None and step not in STEPS:
            raise ValueError(f"overlord faults.add: step must be one of {', '.join(STEPS)}, got {step!r}")
        check_schedule("overlord faults.add", rate, count)
        if latency < 0:
            raise ValueError(f"overlord faults.add: latency must be seconds >= 0, got {latency}")
        effects = [status is not None, reset_connection, lose_answer]
        if sum(effects) > 1:
            raise ValueError("overlord faults.add: give one of status=, reset_connection=, lose_answer=")
        if not any(effects) and latency <= 0:
            raise ValueError(
                "overlord faults.add: give status=, reset_connection=True, lose_answer=True or latency="
            )
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"overlord faults.add: status must be an HTTP error code (4xx/5xx): {status}")
        fault = OverlordFault(
            step=step,
            status=status,
            retry_after=retry_after,
            rate=rate,
            remaining=count,
            reset_connection=reset_connection,
            lose_answer=lose_answer,
            latency=float(latency),
            message=message if message is not None else _default_message(status),
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def decide(self, step: str) -> FaultDecision | None:
        """The first matching fault that fires for a request of ``step``, if any (consumes count-based
        faults)."""
        with self._lock:
            for fault in self._faults:
                if (fault.step is not None and fault.step != step) or not fires(fault, self._random):
                    continue
                return FaultDecision(
                    latency=fault.latency,
                    status=fault.status,
                    message=fault.message,
                    retry_after=fault.retry_after,
                    reset_connection=fault.reset_connection,
                    lose_answer=fault.lose_answer,
                )
        return None

    def clear(self) -> None:
        """Remove every scripted fault; random draws restart from the seed."""
        with self._lock:
            self._faults.clear()
            self._random = random.Random(self.seed)

    @property
    def faults(self) -> list[OverlordFault]:
        """The scripted faults, with how often each fired."""
        with self._lock:
            return list(self._faults)

    def fired(self, step: str | None = None) -> int:
        """How many requests (of ``step``, or of any step) a fault fired on."""
        return sum(fault.fired for fault in self.faults if step is None or fault.step == step)


def _default_message(status: int | None) -> str:
    if status is None or status == 503:
        return ""  # Druid's non-leader answer has no body
    if status == 429:
        return "Too many requests"
    return "injected fault"


def _closed(request: web.Request) -> web.Response:
    """Close the request's connection without an answer (what reaches the client is a dropped connection)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=CONNECTION_CLOSED)


async def apply_fault(
    decision: FaultDecision, request: web.Request, handle: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer ``request`` as ``decision`` says; ``handle()`` is its normal handling."""
    if decision.latency > 0:
        # The request arrived whole: a client that gives up meanwhile does not stop its handling.
        await request.read()
        await asyncio.sleep(decision.latency)
    if decision.reset_connection:
        return _closed(request)
    if decision.status is not None:
        headers = {"Retry-After": str(decision.retry_after)} if decision.retry_after is not None else {}
        if not decision.message:
            return web.Response(status=decision.status, headers=headers)
        return web.json_response({"error": decision.message}, status=decision.status, headers=headers)
    response = await handle()
    if decision.lose_answer:
        _closed(request)
    return response


def control_routes(faults: OverlordFaults) -> list[web.RouteDef]:
    """``/emulator/v1/faults``: ``POST`` adds a fault (the keyword arguments of :meth:`OverlordFaults.add`
    as a JSON object), ``GET`` lists them with how often each fired, ``DELETE`` clears them."""

    async def add(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            fault = faults.add(**body)
        except (ValueError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"fault": fault.to_json()})

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"faults": [fault.to_json() for fault in faults.faults]})

    async def clear(request: web.Request) -> web.Response:
        faults.clear()
        return web.json_response({"faults": []})

    path = "/emulator/v1/faults"
    return [web.post(path, add), web.get(path, listing), web.delete(path, clear)]
