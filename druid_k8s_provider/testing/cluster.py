"""The emulated cluster behind the API server: one virtual node, its kubelet, the scheduler, and the Job and
TTL controllers, all driven by the object store's change listener on the emulator's event loop.

``KubeEmulator`` builds one ``Cluster`` per emulator and starts it on its loop. Tests reach it as
``kube.cluster`` to register image behaviours and to inject node-side faults (eviction, node pressure,
cordon, node loss), each with the statuses, reasons and events a real cluster shows.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from druid_k8s_provider.testing.behaviours import Behaviour
from druid_k8s_provider.testing.controllers.common import (
    EventRecorder,
    LogSink,
    Obj,
    Resources,
    Store,
    Timings,
    condition,
)
from druid_k8s_provider.testing.controllers.job import JobController
from druid_k8s_provider.testing.controllers.scheduler import Scheduler
from druid_k8s_provider.testing.controllers.ttl import TTLController
from druid_k8s_provider.testing.kubelet import Kubelet

T = TypeVar("T")

#: Taint the node lifecycle controller / kubelet put on a node under each kind of pressure.
PRESSURE_TAINTS = {
    "memory": "node.kubernetes.io/memory-pressure",
    "disk": "node.kubernetes.io/disk-pressure",
    "pid": "node.kubernetes.io/pid-pressure",
}


@dataclass
class VirtualNode:
    """The one node pods are scheduled to; its flags are what the node faults flip."""

    name: str
    capacity: Resources
    max_pods: int | None
    host_ip: str = "127.0.0.1"
    ready: bool = True
    unschedulable: bool = False
    taints: list[str] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }


class Cluster:
    """Controllers, scheduler and kubelet of the emulator; see the module docstring."""

    def __init__(
        self,
        store: Store,
        logs: LogSink,
        *,
        node_cpu: str = "8",
        node_memory: str = "32Gi",
        node_name: str = "emulator-node",
        node_max_pods: int | None = None,
        timings: Timings | None = None,
    ) -> None:
        self.store = store
        self.logs = logs
        self.node = VirtualNode(node_name, Resources.parse(node_cpu, node_memory), node_max_pods)
        self.timings = timings or Timings()
        self.events = EventRecorder(store)
        self.scheduler = Scheduler(self)
        self.kubelet = Kubelet(self)
        self.jobs = JobController(self)
        self.ttl = TTLController(self)
        self._images: list[tuple[str, Behaviour]] = []
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Begin reacting to store changes, and adopt the objects already stored (a restarted emulator)."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self.store.add_listener(self._on_change)
        for plural in ("jobs", "pods"):
            for obj in self.store.list(plural):
                self._on_change("ADDED", plural, obj)

    async def stop(self) -> None:
        """Kill every container (SIGKILL, no status writes) and cancel all timers."""
        if not self._started:
            return
        self._started = False
        remove = getattr(self.store, "remove_listener", None)
        if remove is not None:
            remove(self._on_change)
        self.ttl.stop()
        self.jobs.stop()
        await self.kubelet.stop()

    @property
    def running(self) -> bool:
        """False once stopped: callbacks already queued on the loop then do nothing."""
        return self._started

    def _on_change(self, event_type: str, plural: str, obj: Obj) -> None:
        if not self._started:
            return
        if plural == "pods":
            self.scheduler.on_pod(event_type, obj)
            self.kubelet.on_pod(event_type, obj)
            self.jobs.on_pod(event_type, obj)
        elif plural == "jobs":
            self.jobs.on_job(event_type, obj)
        if event_type == "DELETED" and plural in ("pods", "jobs"):
            self.events.forget(str(obj["metadata"].get("uid")))

    # ------------------------------------------------------------------ images

    def register_image(self, pattern: str, behaviour: Behaviour) -> None:
        """Containers whose image matches ``pattern`` (fnmatch, on the image as written or fully qualified)
        run ``behaviour`` instead of a local process; the latest matching registration wins."""
        if not callable(behaviour):
            raise TypeError(
                f"register_image({pattern!r}, ...): behaviour must be an async callable taking a "
                "ContainerContext, e.g. druid_k8s_provider.testing.behaviours.exits(0)"
            )
        self._images.append((pattern, behaviour))

    def behaviour_for(self, image: str, normalized: str) -> Behaviour | None:
        for pattern, behaviour in reversed(self._images):
            if fnmatch.fnmatchcase(image, pattern) or fnmatch.fnmatchcase(normalized, pattern):
                return behaviour
        return None

    # ------------------------------------------------------------------ faults (callable from any thread)

    def _on_loop(self, action: Callable[[], T]) -> T:
        """Run ``action`` on the emulator loop: the kubelet's tasks live there, tests usually do not."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the cluster is not running; start the KubeEmulator first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return action()

        async def call() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    def evict_pod(
        self,
        namespace: str,
        name: str,
        message: str = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 0Ki. ",
        grace_seconds: float = 0,
    ) -> bool:
        """Kubelet-side eviction: containers stopped, pod ``Failed`` with reason ``Evicted`` and a
        ``DisruptionTarget`` condition. False when the pod is not running on the node."""
        disruption = condition(
            "DisruptionTarget", True, "TerminationByKubelet", "The node was low on resource: memory."
        )
        return self._on_loop(
            lambda: self.kubelet.fail_pod((namespace, name), "Evicted", message, grace_seconds, disruption)
        )

    def set_node_pressure(self, resource: str | None, evict: bool = True) -> None:
        """Put the node under ``memory``/``disk``/``pid`` pressure (None lifts it): the pressure taint keeps
        new pods Pending and, with ``evict``, every running pod is evicted."""
        if resource is not None and resource not in PRESSURE_TAINTS:
            raise ValueError(
                f"set_node_pressure: resource must be one of {sorted(PRESSURE_TAINTS)} or None, "
                f"not {resource!r}"
            )
        self._on_loop(lambda: self._apply_pressure(resource, evict))

    def _apply_pressure(self, resource: str | None, evict: bool) -> None:
        self.node.taints = [taint for taint in self.node.taints if taint not in PRESSURE_TAINTS.values()]
        if resource is None:
            self.scheduler.retry_unschedulable()
            return
        self.node.taints.append(PRESSURE_TAINTS[resource])
        if not evict:
            return
        for key in list(self.kubelet.workers):
            disruption = condition(
                "DisruptionTarget", True, "TerminationByKubelet", f"The node was low on resource: {resource}."
            )
            self.kubelet.fail_pod(
                key, "Evicted", f"The node was low on resource: {resource}. ", 0, disruption
            )

    def set_node_unschedulable(self, unschedulable: bool = True) -> None:
        """Cordon (or uncordon) the node: running pods carry on, new pods stay Pending."""
        self._on_loop(lambda: self._cordon(unschedulable))

    def _cordon(self, unschedulable: bool) -> None:
        self.node.unschedulable = unschedulable
        if not unschedulable:
            self.scheduler.retry_unschedulable()

    def lose_node(self, delete_pods: bool = False) -> None:
        """The node stops responding: its containers die, its pods are marked ``Failed`` with reason
        ``NodeLost`` (or, with ``delete_pods``, force-deleted as the pod GC does), and nothing new schedules
        until ``restore_node()``."""
        self._on_loop(lambda: self._lose_node(delete_pods))

    def _lose_node(self, delete_pods: bool) -> None:
        self.node.ready = False
        for key, worker in list(self.kubelet.workers.items()):
            message = f"Node {self.node.name} which was running pod {key[1]} is unresponsive"
            disruption = condition(
                "DisruptionTarget",
                True,
                "DeletionByTaintManager",
                "Taint manager: deleting due to NoExecute taint",
            )
            worker.fail("NodeLost", message, 0, disruption, then_delete=delete_pods)

    def restore_node(self) -> None:
        """The node is back: pending pods schedule again."""
        self._on_loop(self._restore_node)

    def _restore_node(self) -> None:
        self.node.ready = True
        self.scheduler.retry_unschedulable()
