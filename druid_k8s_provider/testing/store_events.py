"""Resource versions, the bounded watch history and event delivery of the emulator's object store.

Every write gets the next cluster-wide ``resourceVersion`` and is recorded as a watch event; the history
keeps the latest ``history_window`` events (older versions answer 410 Expired), and the events are handed
to the listeners one at a time, in resourceVersion order, on the bound event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from druid_k8s_provider.testing.api_errors import expired
from druid_k8s_provider.testing.resources import Obj, copy_object

log = logging.getLogger(__name__)

Listener = Callable[[str, str, Obj], None]


@dataclass(frozen=True)
class WatchEvent:
    """One change, as the history keeps it and watches replay it."""

    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    obj: Obj = field(repr=False)


class StoreEvents:
    """The object store's state, its version counter and history, and the delivery of its events."""

    history_window: int
    loop: asyncio.AbstractEventLoop | None
    _lock: threading.RLock
    _objects: dict[str, dict[tuple[str, str], Obj]]
    _resource_version: int
    _history: deque[WatchEvent]
    _evicted_up_to: int
    _pending: deque[WatchEvent]
    _listeners: list[Listener]
    _event_listeners: list[Callable[[WatchEvent], None]]
    _dispatch_lock: threading.Lock
    _by_uid: dict[str, tuple[str, tuple[str, str]]]
    _dependents_of: dict[str, set[tuple[str, tuple[str, str]]]]
    _owner_uids: dict[tuple[str, tuple[str, str]], tuple[str, ...]]
    _dispatching: bool

    # ------------------------------------------------------------------ listeners and dispatch

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Deliver events on ``loop`` from now on (None: synchronously in the writer's thread)."""
        self.loop = loop

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event_type, plural, obj)`` after every change (``obj`` is the listener's copy)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_event_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        """Internal fan-out hook (the watch server): gets the shared WatchEvent; must not mutate it."""
        self._event_listeners.append(listener)

    def _schedule_dispatch(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            self._dispatch()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._dispatch()
        else:
            try:
                loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:  # loop closed between the check and the call
                self._dispatch()

    def _dispatch(self) -> None:
        with self._dispatch_lock:
            if self._dispatching:
                return  # the outer dispatch loop delivers events queued by listeners, in order
            self._dispatching = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        break
                    event = self._pending.popleft()
                for internal in list(self._event_listeners):
                    try:
                        internal(event)
                    except Exception:
                        log.exception("emulator event listener failed on %s %s", event.type, event.plural)
                for listener in list(self._listeners):
                    try:
                        listener(event.type, event.plural, copy_object(event.obj))
                    except Exception:
                        log.exception("emulator store listener failed on %s %s", event.type, event.plural)
        finally:
            with self._dispatch_lock:
                self._dispatching = False
        with self._lock:
            leftover = bool(self._pending)
        if leftover:
            self._schedule_dispatch()

    def _index(self, event_type: str, plural: str, obj: Obj) -> None:
        """Keep the uid and owner indexes the garbage collector looks dependents up in."""
        metadata = obj["metadata"]
        location = (plural, (metadata.get("namespace", ""), metadata["name"]))
        for owner_uid in self._owner_uids.pop(location, ()):
            dependents = self._dependents_of.get(owner_uid)
            if dependents is not None:
                dependents.discard(location)
                if not dependents:
                    del self._dependents_of[owner_uid]
        if event_type == "DELETED":
            self._by_uid.pop(metadata["uid"], None)
            return
        self._by_uid[metadata["uid"]] = location
        owners = tuple(ref["uid"] for ref in metadata.get("ownerReferences") or [] if ref.get("uid"))
        if owners:
            self._owner_uids[location] = owners
            for owner_uid in owners:
                self._dependents_of.setdefault(owner_uid, set()).add(location)

    def dependents(self, owner_uid: str) -> list[tuple[str, Obj]]:
        """(plural, object) of every stored object naming ``owner_uid`` in its ownerReferences (shared)."""
        with self._lock:
            found = []
            for plural, key in self._dependents_of.get(owner_uid, ()):
                obj = self._objects[plural].get(key)
                if obj is not None:
                    found.append((plural, obj))
            return found

    def find_uid(self, uid: str) -> tuple[str, Obj] | None:
        """(plural, object) of the stored object with ``uid`` (shared), if it exists."""
        with self._lock:
            location = self._by_uid.get(uid)
            if location is None:
                return None
            obj = self._objects[location[0]].get(location[1])
            return (location[0], obj) if obj is not None else None

    def _record(self, event_type: str, plural: str, obj: Obj) -> None:
        """Append an event (caller holds the lock and has already bumped the resourceVersion)."""
        self._index(event_type, plural, obj)
        event = WatchEvent(int(obj["metadata"]["resourceVersion"]), event_type, plural, obj)
        self._history.append(event)
        while len(self._history) > self.history_window:
            self._evicted_up_to = self._history.popleft().resource_version
        self._pending.append(event)

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    # ------------------------------------------------------------------ versions and history

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion handed out (what a list returns as ``metadata.resourceVersion``)."""
        with self._lock:
            return str(self._resource_version)

    def events_since(self, resource_version: int, plural: str | None = None) -> list[WatchEvent]:
        """Retained events newer than ``resource_version``; 410 Expired when some were already dropped."""
        with self._lock:
            if resource_version < self._evicted_up_to:
                oldest = self._history[0].resource_version if self._history else self._resource_version
                raise expired(f"too old resource version: {resource_version} ({oldest - 1})")
            return [
                event
                for event in self._history
                if event.resource_version > resource_version and (plural is None or event.plural == plural)
            ]

    def check_resource_version(self, resource_version: int) -> None:
        """Raise 410 Expired if a watch from ``resource_version`` could not be served."""
        self.events_since(resource_version, plural="")

    def compact(self) -> None:
        """Forget all history, so every watch from an older version gets 410 (what etcd compaction does)."""
        with self._lock:
            self._history.clear()
            self._evicted_up_to = self._resource_version
