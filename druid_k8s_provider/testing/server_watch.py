"""Watch streams of the API server: the store's events fanned out to each open watch, filtered by its
selectors, with bookmarks, resumption from a resource version, and the abrupt end of a dropped stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from druid_k8s_provider.testing.api_errors import ApiError, bad_request, expired
from druid_k8s_provider.testing.rbac import User
from druid_k8s_provider.testing.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from druid_k8s_provider.testing.server_base import JSON, HandlerBase, dumps, optional_int, wants_table
from druid_k8s_provider.testing.server_routing import ResourceRequest
from druid_k8s_provider.testing.store_events import WatchEvent
from druid_k8s_provider.testing.tables import table

log = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT_SECONDS = 1800


@dataclass(eq=False)
class _Watcher:
    """One open watch stream: its filter and the queue the store's fan-out feeds."""

    plural: str
    namespace: str
    labels: LabelSelector
    fields: FieldSelector
    name: str | None = None  # an exact metadata.name from the field selector: indexed for fan-out
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    matched: set[tuple[str, str]] = field(default_factory=set)
    track_membership: bool = False


class WatchStreams(HandlerBase):
    """The watch verb, and the fan-out of the store's events to every open watch."""

    _loop: asyncio.AbstractEventLoop | None
    _watchers: dict[str, set[_Watcher]]
    _named_watchers: dict[tuple[str, str], set[_Watcher]]
    _encoded_lines: OrderedDict[tuple[int, str], bytes]
    _watch_responses: set[web.StreamResponse]

    def drop_watches(self) -> int:
        """Abort every open watch connection (from any thread); returns how many were cut."""
        count = len(self._watch_responses)
        loop = self._loop
        if loop is None or loop.is_closed():
            return 0
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._abort_watches()
        else:
            loop.call_soon_threadsafe(self._abort_watches)
        return count

    def _abort_watches(self) -> None:
        for response in list(self._watch_responses):
            request = getattr(response, "_req", None)
            transport = request.transport if request is not None else None
            if transport is not None:
                transport.abort()
        for registry in (*self._watchers.values(), *self._named_watchers.values()):
            for watcher in registry:
                watcher.queue.put_nowait(None)

    def _fan_out(self, event: WatchEvent) -> None:
        for watcher in self._watchers.get(event.plural, ()):
            watcher.queue.put_nowait(event)
        name_key = (event.plural, event.obj["metadata"]["name"])
        for watcher in self._named_watchers.get(name_key, ()):
            watcher.queue.put_nowait(event)

    def _register(self, watcher: _Watcher) -> None:
        if watcher.name is None:
            self._watchers.setdefault(watcher.plural, set()).add(watcher)
        else:
            self._named_watchers.setdefault((watcher.plural, watcher.name), set()).add(watcher)

    def _unregister(self, watcher: _Watcher) -> None:
        if watcher.name is None:
            registry = self._watchers.get(watcher.plural)
        else:
            registry = self._named_watchers.get((watcher.plural, watcher.name))
        if registry is not None:
            registry.discard(watcher)
            if not registry:
                key: Any = watcher.plural if watcher.name is None else (watcher.plural, watcher.name)
                (self._watchers if watcher.name is None else self._named_watchers).pop(key, None)

    def _encoded(self, event: WatchEvent, event_type: str) -> bytes:
        """The JSON line of an event, encoded once however many watches send it."""
        key = (event.resource_version, event_type)
        line = self._encoded_lines.get(key)
        if line is None:
            line = dumps({"type": event_type, "object": event.obj}) + b"\n"
            self._encoded_lines[key] = line
            if len(self._encoded_lines) > 4096:
                self._encoded_lines.popitem(last=False)
        return line

    async def _watch(self, request: web.Request, parsed: ResourceRequest, user: User) -> web.StreamResponse:
        rt = parsed.rt
        query = request.query
        field_selector = query.get("fieldSelector", "")
        if parsed.name:  # the legacy /watch/.../NAME path watches one object
            field_selector = ",".join(filter(None, (field_selector, f"metadata.name={parsed.name}")))
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(field_selector, rt.plural)
        except SelectorError as error:
            raise bad_request(str(error)) from None
        timeout = float(
            optional_int(query.get("timeoutSeconds"), "timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_SECONDS
        )
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        requested = query.get("resourceVersion", "")
        if requested not in ("", "0"):
            optional_int(requested, "resourceVersion")
        watcher = _Watcher(rt.plural, parsed.namespace, labels, fields, fields.name())
        initial: list[dict[str, Any]] = []
        error_event: dict[str, Any] | None = None
        since = 0
        # Registered before the snapshot, with no await in between: no event can fall in a gap.
        self._register(watcher)
        try:
            if self.faults.take_watch_expiry():
                error_event = expired(f"too old resource version: {requested or 0} (injected)").to_status()
            elif requested in ("", "0"):
                items, version, _ = self.store.shared_page(
                    rt.plural,
                    parsed.namespace or None,
                    query.get("labelSelector", ""),
                    field_selector,
                )
                since = int(version)
                watcher.track_membership = True
                initial = items
                watcher.matched.update(_object_key(item) for item in items)
            else:
                since = int(requested)
                for replayed in self.store.events_since(since, rt.plural):
                    watcher.queue.put_nowait(replayed)
        except ApiError as error:
            error_event = error.to_status()
        if error_event is not None:
            self._unregister(watcher)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
        except BaseException:
            self._unregister(watcher)
            raise
        if error_event is not None:
            with contextlib.suppress(ConnectionError):
                await response.write(dumps({"type": "ERROR", "object": error_event}) + b"\n")
                await response.write_eof()
            return response
        self._watch_responses.add(response)
        self.metrics.watch_opened()
        last_sent = since
        try:
            as_table = wants_table(request)  # kubectl get -w prints each event as a table row

            def encode(event_type: str, obj: dict[str, Any]) -> bytes:
                printed = table(rt, [obj], obj["metadata"]["resourceVersion"]) if as_table else obj
                return dumps({"type": event_type, "object": printed}) + b"\n"

            for item in initial:
                await response.write(encode("ADDED", item))
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    event: WatchEvent | None
                    if watcher.queue.empty():
                        async with asyncio.timeout(wait):
                            event = await watcher.queue.get()
                    else:
                        event = watcher.queue.get_nowait()
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        bookmark = {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {
                                "resourceVersion": str(max(last_sent, int(self.store.resource_version)))
                            },
                        }
                        await response.write(dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n")
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                # A burst (a thousand Jobs finishing at once) goes out in one write: one trip through the
                # event loop per event would leave the stream that far behind the store.
                batch = [event]
                while not watcher.queue.empty():
                    batch.append(watcher.queue.get_nowait())
                lines = []
                dropped = False
                for queued in batch:
                    if queued is None:
                        dropped = True  # by a fault or shutdown
                        break
                    if queued.resource_version <= last_sent:
                        continue
                    last_sent = queued.resource_version
                    outgoing = self._filter(watcher, queued)
                    if outgoing is not None:
                        lines.append(
                            encode(outgoing, queued.obj) if as_table else self._encoded(queued, outgoing)
                        )
                if lines:
                    await response.write(b"".join(lines))
                if dropped:
                    break
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # headers are sent: the only honest signal left is cutting the stream
            log.exception("emulator watch stream %s failed", request.path_qs)
            if request.transport is not None:
                request.transport.abort()
        finally:
            self._unregister(watcher)
            self._watch_responses.discard(response)
            self.metrics.watch_closed()
        return response

    @staticmethod
    def _filter(watcher: _Watcher, event: WatchEvent) -> str | None:
        """The event type this watcher sees (objects entering/leaving a selector become ADDED/DELETED)."""
        obj = event.obj
        metadata = obj["metadata"]
        if watcher.namespace and metadata.get("namespace") != watcher.namespace:
            return None
        matches = watcher.labels.matches(metadata.get("labels")) and watcher.fields.matches(obj)
        key = _object_key(obj)
        was = key in watcher.matched
        if matches and event.type != "DELETED":
            watcher.matched.add(key)
        else:
            watcher.matched.discard(key)
        if event.type == "ADDED":
            return "ADDED" if matches else None
        if event.type == "DELETED":
            return "DELETED" if (matches or was) else None
        if not watcher.track_membership:
            return "MODIFIED" if matches else None
        if matches:
            return "MODIFIED" if was else "ADDED"
        return "DELETED" if was else None


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj["metadata"]
    return metadata.get("namespace", ""), metadata["name"]
