"""A small Overlord double for the hook's tests: real HTTP on 127.0.0.1, Druid's paths, shapes, error bodies.

It keeps submitted tasks (so a duplicate id gets Druid's ``entryAlreadyExists``, statuses and lists answer
from them) and lets a test script answers for a path first (a 503 before the real answer, an HTML page, a
proxy's garbage). It is not the Overlord emulator: no runner, no locks; it exists so the hook's own
behaviour (retries, errors, auth, TLS) is tested without it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from druid_k8s_provider.testing.certificates import self_signed_certificate

INDEXER = "/druid/indexer/v1"
#: Jetty's answer when Druid's basic authenticator refuses a request.
UNAUTHORIZED_PAGE = (
    "<html><head><title>Error 401 Unauthorized</title></head>"
    "<body><h2>HTTP ERROR 401 Unauthorized</h2></body></html>"
)


@dataclass
class Scripted:
    """One scripted answer: status, body (JSON-encoded unless bytes/str) and content type."""

    status: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class OverlordDouble:
    """Serve in a background thread; ``url``/``port`` once started; use as a context manager."""

    def __init__(self, *, credentials: tuple[str, str] | None = None, tls: bool = False) -> None:
        self.credentials = credentials
        self.tls = tls
        self.version: str | None = "35.0.0"
        self.tasks: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.requests: list[Recorded] = []
        self._scripts: dict[tuple[str, str], deque[Scripted]] = defaultdict(deque)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="overlord-double", daemon=True)
        self.port = 0
        self.certificate_file: Path | None = None

    # -- control -------------------------------------------------------------------------------------

    def script(self, method: str, path: str, *answers: Scripted) -> None:
        """Answer the next requests to ``method path`` with ``answers`` in order, then normally again."""
        self._scripts[(method, path)].extend(answers)

    def set_status(self, task_id: str, status_code: str, runner_status: str = "NONE", **extra: Any) -> None:
        task = self.tasks.get(task_id, {})
        self.statuses[task_id] = {
            "id": task_id,
            "type": task.get("type"),
            "dataSource": task.get("dataSource"),
            "statusCode": status_code,
            "status": status_code,
            "runnerStatusCode": runner_status,
            "duration": -1 if status_code == "RUNNING" else 1200,
            "location": {"host": None, "port": -1, "tlsPort": -1},
            "errorMsg": None,
            **extra,
        }

    def __enter__(self) -> OverlordDouble:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        context = None
        if self.tls:
            certificate, key = self_signed_certificate()
            directory = Path(tempfile.mkdtemp(prefix="overlord-double-"))
            self.certificate_file = directory / "ca.crt"
            self.certificate_file.write_bytes(certificate)
            (directory / "tls.key").write_bytes(key)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certificate_file, directory / "tls.key")
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- serving -------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        if self.credentials and not self._authenticated(request):
            return web.Response(status=401, text=UNAUTHORIZED_PAGE, content_type="text/html")
        scripted = self._scripts.get((request.method, request.path))
        if scripted:
            return self._render(scripted.popleft())
        return self._render(self._answer(request.method, request.path, dict(request.query), body))

    def _authenticated(self, request: web.Request) -> bool:
        assert self.credentials is not None
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    @staticmethod
    def _render(answer: Scripted) -> web.Response:
        body = answer.body
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        response = web.Response(status=answer.status, body=data, headers=answer.headers)
        response.content_type = answer.content_type
        return response

    def _answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> Scripted:
        if (method, path) == ("GET", "/status"):
            return Scripted(200, {"version": self.version, "modules": [], "memory": {}})
        if (method, path) == ("POST", f"{INDEXER}/task"):
            return self._submit(json.loads(body))
        if (method, path) == ("POST", f"{INDEXER}/taskStatus"):
            ids = json.loads(body)
            if not ids:
                return Scripted(400, "No Task IDs provided.", "text/plain")
            return Scripted(200, {i: self._task_status(i) for i in ids if i in self.statuses})
        if (method, path) == ("GET", f"{INDEXER}/tasks"):
            wanted = query.get("state", "").upper()
            entries = [
                status
                for status in self.statuses.values()
                if (
                    status["runnerStatusCode"] == wanted
                    if wanted != "COMPLETE"
                    else status["statusCode"] != "RUNNING"
                )
                and query.get("datasource") in (None, status["dataSource"])
            ]
            return Scripted(200, entries)
        if path.startswith(f"{INDEXER}/task/"):
            return self._task_resource(method, path.removeprefix(f"{INDEXER}/task/"), query)
        return Scripted(404, "<html><body>Not Found</body></html>", "text/html")

    def _submit(self, task: dict[str, Any]) -> Scripted:
        task_id = task["id"]
        if task_id in self.tasks:
            return Scripted(
                400,
                {
                    "error": "druidException",
                    "errorCode": "entryAlreadyExists",
                    "persona": "USER",
                    "category": "INVALID_INPUT",
                    "errorMessage": f"Task[{task_id}] already exists",
                    "context": {},
                },
            )
        self.tasks[task_id] = task
        self.set_status(task_id, "RUNNING", "WAITING")
        return Scripted(200, {"task": task_id})

    def _task_status(self, task_id: str) -> dict[str, Any]:
        status = self.statuses[task_id]
        keys = ("id", "duration", "errorMsg", "location")
        return {"status": status["statusCode"], **{key: status[key] for key in keys}}

    def _task_resource(self, method: str, rest: str, query: dict[str, str]) -> Scripted:
        task_id, _, action = rest.partition("/")
        if task_id not in self.tasks:
            # Druid's TaskResourceFilter looks the task up before the resource answers.
            return Scripted(400, f"Cannot find any task with id: [{task_id}]", "text/plain")
        if (method, action) == ("GET", "status"):
            return Scripted(200, {"task": task_id, "status": self.statuses[task_id]})
        if (method, action) == ("GET", ""):
            return Scripted(200, {"task": task_id, "payload": self.tasks[task_id]})
        if (method, action) == ("POST", "shutdown"):
            if self.statuses[task_id]["statusCode"] == "RUNNING":
                self.set_status(task_id, "FAILED", errorMsg="Shutdown request from user")
            return Scripted(200, {"task": task_id})
        if (method, action) == ("GET", "reports"):
            if task_id not in self.reports:
                return Scripted(404, "No task reports were found for this task.", "text/plain")
            return Scripted(200, self.reports[task_id])
        if (method, action) == ("GET", "log"):
            text = self.logs.get(task_id)
            if text is None:
                return Scripted(404, "No log was found for this task.", "text/plain")
            return Scripted(200, text.encode()[int(query.get("offset", "0")) :], "text/plain")
        return Scripted(404, "<html><body>Not Found</body></html>", "text/html")
