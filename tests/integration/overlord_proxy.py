"""A reverse proxy in front of the Overlord emulator that can spoil its answers, as a broken proxy, an ingress
serving a login page or a load balancer's error page would: the request still reaches the Overlord (a
submission is stored), but the client reads an HTML page, garbage, or JSON of another shape.

``spoil(method, path_pattern, body, after=n)`` replaces the answers to matching requests, from the
``n``-th one on (0: all), until ``heal()``. ``forwarded`` counts what reached the Overlord.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiohttp import web

LOGIN_PAGE = "<html><head><title>Sign in - Corporate SSO</title></head><body>password?</body></html>"


@dataclass
class Spoiler:
    method: str
    pattern: re.Pattern[str]
    body: bytes | str
    content_type: str
    after: int
    seen: int = 0


class OverlordProxy:
    """Serve on 127.0.0.1 in a background thread; ``url`` once started; use as a context manager."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.forwarded: Counter[tuple[str, str]] = Counter()
        self.spoiled: Counter[tuple[str, str]] = Counter()
        self._spoilers: list[Spoiler] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="overlord-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def spoil(
        self,
        method: str,
        path_pattern: str,
        body: bytes | str = LOGIN_PAGE,
        content_type: str = "text/html",
        after: int = 0,
    ) -> None:
        """Answer matching requests with ``body`` (status 200) from the ``after``-th match on."""
        with self._lock:
            self._spoilers.append(Spoiler(method, re.compile(path_pattern), body, content_type, after))

    def heal(self) -> None:
        with self._lock:
            self._spoilers.clear()

    def __enter__(self) -> OverlordProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _spoiler_for(self, method: str, path: str) -> Spoiler | None:
        with self._lock:
            for spoiler in self._spoilers:
                if spoiler.method == method and spoiler.pattern.fullmatch(path):
                    spoiler.seen += 1
                    return spoiler if spoiler.seen > spoiler.after else None
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {key: value for key, value in request.headers.items() if key.lower() != "host"}
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            answer = await upstream.read()
            status, content_type = upstream.status, upstream.headers.get("Content-Type", "")
        self.forwarded[(request.method, request.path)] += 1
        spoiler = self._spoiler_for(request.method, request.path)
        if spoiler is not None:
            self.spoiled[(request.method, request.path)] += 1
            data = spoiler.body.encode() if isinstance(spoiler.body, str) else spoiler.body
            return web.Response(status=200, body=data, content_type=spoiler.content_type)
        response = web.Response(status=status, body=answer)
        response.headers["Content-Type"] = content_type or "application/octet-stream"
        return response
