"""The emulated default-scheduler: binds pending pods to the single virtual node when they fit.

A pod fits when the node is up, schedulable, without an untolerated taint, matches the pod's nodeSelector,
has a free pod slot, and its CPU/memory requests fit in what the live pods on the node left. A pod that does
not fit stays ``Pending`` with ``PodScheduled=False``/``Unschedulable`` and a ``FailedScheduling`` event
carrying the real scheduler's message, and is retried when capacity frees up or the node changes, not on
every unrelated event (as the real scheduler's unschedulable queue does).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from druid_k8s_provider.testing.controllers.common import (
    Key,
    Obj,
    Resources,
    condition,
    is_not_found,
    object_key,
    pod_is_terminal,
    pod_requests,
    set_condition,
)

if TYPE_CHECKING:
    from druid_k8s_provider.testing.cluster import Cluster

log = logging.getLogger(__name__)

_UNREACHABLE = "node.kubernetes.io/unreachable"
_NOT_HELPFUL = "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
_NO_VICTIMS = "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."


def _tolerates(pod: Obj, taint_key: str) -> bool:
    for toleration in (pod.get("spec") or {}).get("tolerations") or ():
        effect = toleration.get("effect")
        if effect not in (None, "", "NoSchedule", "NoExecute"):
            continue
        key = toleration.get("key")
        if (key == taint_key) or (not key and toleration.get("operator") == "Exists"):
            return True
    return False


class Scheduler:
    """Scheduling queue plus the node's allocation bookkeeping."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._active: dict[Key, Obj] = {}
        self._unschedulable: dict[Key, Obj] = {}
        self._bound: dict[Key, Resources] = {}
        self.allocated = Resources()
        self._pass_scheduled = False

    def _account(self, key: Key, requests: Resources | None) -> bool:
        """Set (or with None drop) a live pod's requests on the node; True when it was counted before."""
        previous = self._bound.pop(key, None)
        if previous is not None:
            self.allocated = self.allocated - previous
        if requests is not None:
            self._bound[key] = requests
            self.allocated = self.allocated + requests
        return previous is not None

    @property
    def pod_count(self) -> int:
        return len(self._bound)

    def on_pod(self, event_type: str, pod: Obj) -> None:
        key = object_key(pod)
        spec = pod.get("spec") or {}
        gone = (
            event_type == "DELETED" or bool(pod["metadata"].get("deletionTimestamp")) or pod_is_terminal(pod)
        )
        if gone:
            self._active.pop(key, None)
            self._unschedulable.pop(key, None)
            if self._account(key, None):
                self.retry_unschedulable()
            return
        node_name = spec.get("nodeName")
        if node_name:
            self._active.pop(key, None)
            self._unschedulable.pop(key, None)
            if node_name == self.cluster.node.name:
                self._account(key, pod_requests(pod))
            return
        if spec.get("schedulerName") not in (None, "default-scheduler"):
            return  # another scheduler's pod, as on a real cluster
        if key in self._unschedulable:
            self._unschedulable[key] = pod
            return
        known = key in self._active
        self._active[key] = pod
        if not known:
            self._kick()

    def retry_unschedulable(self) -> None:
        """Capacity freed up or the node changed: give every waiting pod another attempt."""
        self._active.update(self._unschedulable)
        self._unschedulable.clear()
        self._kick()

    def _kick(self) -> None:
        if not self._pass_scheduled:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self._schedule_pass)

    def _schedule_pass(self) -> None:
        self._pass_scheduled = False
        while self._active and self.cluster.running:
            key, pod = next(iter(self._active.items()))
            del self._active[key]
            problem = self._why_not(pod)
            if problem is None:
                self._bind(key, pod)
            else:
                self._unschedulable[key] = pod
                self._report_unschedulable(pod, problem)

    def _why_not(self, pod: Obj) -> str | None:
        node = self.cluster.node
        if not node.ready:
            return (
                f"0/1 nodes are available: 1 node(s) had untolerated taint {{{_UNREACHABLE}: }}. "
                + _NOT_HELPFUL
            )
        if node.unschedulable:
            return "0/1 nodes are available: 1 node(s) were unschedulable. " + _NOT_HELPFUL
        for taint in node.taints:
            if not _tolerates(pod, taint):
                return (
                    f"0/1 nodes are available: 1 node(s) had untolerated taint {{{taint}: }}. " + _NOT_HELPFUL
                )
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        if any(node.labels.get(label) != value for label, value in selector.items()):
            return (
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                + _NOT_HELPFUL
            )
        shortages: list[str] = []
        if node.max_pods is not None and self.pod_count >= node.max_pods:
            shortages.append("1 Too many pods")
        free = node.capacity - self.allocated
        wanted = pod_requests(pod)
        if wanted.cpu > free.cpu:
            shortages.append("1 Insufficient cpu")
        if wanted.memory > free.memory:
            shortages.append("1 Insufficient memory")
        if shortages:
            return f"0/1 nodes are available: {', '.join(shortages)}. " + _NO_VICTIMS
        return None

    def _bind(self, key: Key, pod: Obj) -> None:
        node_name = self.cluster.node.name

        def apply(obj: Obj) -> None:
            obj["spec"]["nodeName"] = node_name
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            conditions = status.setdefault("conditions", [])
            set_condition(conditions, condition("PodScheduled", True))

        try:
            bound = self.cluster.store.mutate("pods", key[0], key[1], apply)
        except Exception as error:
            if not is_not_found(error):
                log.exception("scheduler could not bind pod %s/%s", *key)
            return
        self._account(key, pod_requests(bound))
        self.cluster.events.record(
            bound,
            "Scheduled",
            f"Successfully assigned {key[0]}/{key[1]} to {node_name}",
            component="default-scheduler",
            host=node_name,
            action="Binding",
        )

    def _report_unschedulable(self, pod: Obj, message: str) -> None:
        def apply(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            conditions = status.setdefault("conditions", [])
            set_condition(conditions, condition("PodScheduled", False, "Unschedulable", message))

        namespace, name = object_key(pod)
        try:
            current = self.cluster.store.mutate("pods", namespace, name, apply, subresource="status")
        except Exception as error:
            if not is_not_found(error):
                log.exception("scheduler could not update pod %s/%s", namespace, name)
            return
        self.cluster.events.record(
            current,
            "FailedScheduling",
            message,
            component="default-scheduler",
            host=self.cluster.node.name,
            warning=True,
            action="Scheduling",
        )
