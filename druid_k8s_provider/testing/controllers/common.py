"""Helpers shared by the emulated controllers and kubelet: timestamps, events, resource arithmetic."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from kubernetes.utils import parse_quantity

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]


class Store(Protocol):
    """The part of H2's ``store.ObjectStore`` the cluster uses (see contracts.md)."""

    def create(self, plural: str, namespace: str | None, obj: Obj) -> Obj: ...

    def get(self, plural: str, namespace: str | None, name: str) -> Obj: ...

    def list(
        self, plural: str, namespace: str | None = None, label_selector: str = "", field_selector: str = ""
    ) -> list[Obj]: ...

    def mutate(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        fn: Callable[[Obj], Any],
        subresource: str | None = None,
    ) -> Obj: ...

    def delete(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        propagation_policy: str | None = "Background",
        grace_period_seconds: int | None = None,
        *,
        precondition_uid: str | None = None,
    ) -> Obj: ...

    def add_listener(self, fn: Callable[[str, str, Obj], None]) -> None: ...


class LogSink(Protocol):
    """The part of H2's ``logs.LogStore`` the kubelet writes to."""

    def append(self, namespace: str, pod: str, container: str, line: str) -> None: ...

    def close(self, namespace: str, pod: str, container: str) -> None: ...

    def mark_started(self, namespace: str, pod: str, container: str) -> None: ...

    def forget_pod(self, namespace: str, pod: str) -> None: ...

    def text(self, namespace: str, pod: str, container: str) -> str: ...


def now_rfc3339() -> str:
    """Current time as the API server writes timestamps (second precision, UTC, ``Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro_rfc3339() -> str:
    """``MicroTime`` as the API writes ``eventTime``: microseconds, UTC, ``Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str) -> float:
    """Epoch seconds of an API timestamp."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def object_key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controlling owner (ownerReference with ``controller: true``)."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref["uid"])
    return None


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_is_terminal(pod: Mapping[str, Any]) -> bool:
    return pod_phase(pod) in ("Succeeded", "Failed")


def condition(
    type_: str, status: bool, reason: str | None = None, message: str | None = None, when: str | None = None
) -> Obj:
    """A status condition as controllers write it (``lastProbeTime`` null, transition time now)."""
    cond: Obj = {
        "type": type_,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": when or now_rfc3339(),
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def find_condition(status: Mapping[str, Any] | None, type_: str) -> Obj | None:
    for cond in (status or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_condition(conditions: list[Obj], new: Obj) -> None:
    """Replace the condition of the same type, keeping its transition time when its status is unchanged."""
    for index, old in enumerate(conditions):
        if old.get("type") == new["type"]:
            if old.get("status") == new["status"]:
                new = {**new, "lastTransitionTime": old.get("lastTransitionTime", new["lastTransitionTime"])}
            conditions[index] = new
            return
    conditions.append(new)


@dataclass(frozen=True)
class Resources:
    """CPU (cores) and memory (bytes) as exact decimals, so ``100m`` times ten is exactly one core."""

    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def max(self, other: Resources) -> Resources:
        return Resources(max(self.cpu, other.cpu), max(self.memory, other.memory))

    @classmethod
    def parse(cls, cpu: str | int | float, memory: str | int | float) -> Resources:
        return cls(parse_quantity(cpu), parse_quantity(memory))


def container_requests(container: Mapping[str, Any]) -> Resources:
    """Requests of one container; a limit without a request counts as the request, as the API server
    defaults it."""
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    cpu = requests.get("cpu", limits.get("cpu", 0))
    memory = requests.get("memory", limits.get("memory", 0))
    return Resources.parse(cpu, memory)


def pod_requests(pod: Mapping[str, Any]) -> Resources:
    """Effective pod request as the scheduler computes it, native sidecars included.

    Regular containers and sidecars run together; each plain init container runs alone next to the sidecars
    started before it, so the pod needs the larger of the two.
    """
    spec = pod.get("spec") or {}
    sidecars = Resources()
    init_peak = Resources()
    for init in spec.get("initContainers") or ():
        if init.get("restartPolicy") == "Always":
            sidecars = sidecars + container_requests(init)
            init_peak = init_peak.max(sidecars)
        else:
            init_peak = init_peak.max(sidecars + container_requests(init))
    running = sidecars
    for container in spec.get("containers") or ():
        running = running + container_requests(container)
    return running.max(init_peak)


def qos_class(pod: Mapping[str, Any]) -> str:
    """``Guaranteed`` / ``Burstable`` / ``BestEffort`` by the Kubernetes rules for requests and limits."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = {**limits, **(resources.get("requests") or {})}
        if limits or requests:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or parse_quantity(requests.get(name, 0)) != parse_quantity(limits[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


class EventRecorder:
    """Writes ``v1/Event`` objects the way client-go's recorder does, aggregating repeats into ``count``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._last_suffix = 0
        self._seen: dict[tuple[str, ...], Key] = {}
        self._keys_of: dict[str, set[tuple[str, ...]]] = {}  # involved uid -> its keys in _seen

    def record(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        component: str,
        host: str | None = None,
        warning: bool = False,
        field_path: str | None = None,
        action: str | None = None,
    ) -> None:
        """Record one occurrence; never raises (a lost event must not break a controller).

        With ``action`` the event is written as components on the ``events.k8s.io/v1`` API (the scheduler)
        show through ``v1``: ``eventTime`` and ``series`` instead of ``firstTimestamp``/``lastTimestamp``/
        ``count``, empty ``source``. Clients that sort by ``lastTimestamp`` meet the same nulls as on a real
        cluster.
        """
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        event_type = "Warning" if warning else "Normal"
        key = (str(meta.get("uid")), field_path or "", reason, message, component, event_type)
        timestamp = now_rfc3339()
        try:
            if key in self._seen and self._bump(self._seen[key], timestamp, series=action is not None):
                return
            name = f"{meta['name']}.{self._unique_suffix():x}"
            involved_ref: Obj = {
                "apiVersion": involved.get("apiVersion", "v1"),
                "kind": involved.get("kind", "Pod"),
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            }
            if field_path:
                involved_ref["fieldPath"] = field_path
            event: Obj = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved_ref,
                "reason": reason,
                "message": message,
                "type": event_type,
            }
            if action is None:
                event.update(
                    source={"component": component, **({"host": host} if host else {})},
                    reportingComponent=component,
                    reportingInstance=host or "",
                    count=1,
                    firstTimestamp=timestamp,
                    lastTimestamp=timestamp,
                    eventTime=None,
                )
            else:
                event.update(
                    source={},
                    reportingComponent=component,
                    reportingInstance=f"{component}-{host}" if host else component,
                    action=action,
                    firstTimestamp=None,
                    lastTimestamp=None,
                    eventTime=now_micro_rfc3339(),
                )
            self._store.create("events", namespace, event)
            self._seen[key] = (namespace, name)
            self._keys_of.setdefault(key[0], set()).add(key)
        except Exception:  # an event is best effort, exactly as in client-go
            log.warning("could not record event %s for %s/%s", reason, namespace, meta["name"], exc_info=True)

    def forget(self, involved_uid: str) -> None:
        """The object is gone: its next events (a new object) start fresh instead of bumping old counts."""
        for key in self._keys_of.pop(involved_uid, ()):
            self._seen.pop(key, None)

    def _bump(self, event_key: Key, timestamp: str, series: bool) -> bool:
        def increment(event: Obj) -> None:
            if series:
                count = int((event.get("series") or {}).get("count") or 1) + 1
                event["series"] = {"count": count, "lastObservedTime": now_micro_rfc3339()}
            else:
                event["count"] = int(event.get("count") or 1) + 1
                event["lastTimestamp"] = timestamp

        try:
            self._store.mutate("events", event_key[0], event_key[1], increment)
        except Exception:  # deleted meanwhile: create a fresh one
            return False
        return True

    def _unique_suffix(self) -> int:
        """Nanosecond clock like client-go's event names, forced to increase so names never collide."""
        self._last_suffix = max(time.time_ns(), self._last_suffix + 1)
        return self._last_suffix


@dataclass
class Timings:
    """Delays of the emulated cluster, a tenth of the real ones by default so tests stay fast.

    Real values: Job pod back-off 10 s doubling to 6 min, image-pull and crash-loop back-off 10 s doubling
    to 5 min. Tests may shrink them further on ``kube.cluster.timings``.
    """

    job_backoff: float = 1.0
    job_backoff_cap: float = 36.0
    image_pull_backoff: float = 1.0
    image_pull_backoff_cap: float = 30.0
    crash_backoff: float = 1.0
    crash_backoff_cap: float = 30.0
    #: how often a container stuck in CreateContainerConfigError re-reads its ConfigMaps
    config_retry: float = 1.0


def backoff_delay(base: float, cap: float, attempt: int) -> float:
    """``base`` doubled per earlier attempt (``attempt`` counts from 1), capped at ``cap``."""
    return float(min(cap, base * (2 ** max(attempt - 1, 0))))


def is_not_found(exc: BaseException) -> bool:
    """True for the store's 404 ``ApiError`` (the object is gone), whatever module raised it."""
    return getattr(exc, "status", None) == 404
