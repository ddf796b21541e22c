"""What the emulated kubelet reports about a pod: container statuses, the conditions it owns, events, and
the end of each container, written to the pod's status subresource."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from druid_k8s_provider.testing.controllers.common import (
    Obj,
    condition,
    is_not_found,
    now_rfc3339,
    qos_class,
    set_condition,
)
from druid_k8s_provider.testing.controllers.runtime import (
    ContainerRun,
    Exit,
    Graveyard,
    image_id,
    normalize_image,
)

if TYPE_CHECKING:
    from druid_k8s_provider.testing.kubelet import Kubelet

log = logging.getLogger(__name__)

#: ``startedAt`` of a container that never started, as the runtime reports it.
NEVER_STARTED = "1970-01-01T00:00:00Z"
#: Limits of a ``FallbackToLogsOnError`` termination message, as the kubelet applies them.
_FALLBACK_LINES = 80
_FALLBACK_BYTES = 2048
#: Order in which a 1.32 kubelet lists the pod conditions it owns.
_KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


@dataclass
class ContainerStatus:
    """One entry of ``containerStatuses`` / ``initContainerStatuses``, kept in memory by the worker."""

    spec: Obj
    init: bool
    state: Obj
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    container_id: str | None = None
    started_at: str = NEVER_STARTED

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    @property
    def field_path(self) -> str:
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.name}}}"

    def waiting(self, reason: str, message: str | None = None) -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = False

    def terminated_state(self) -> Obj | None:
        terminated = self.state.get("terminated")
        return dict(terminated) if terminated else None

    def to_api(self) -> Obj:
        image = str(self.spec.get("image", ""))
        normalized = normalize_image(image)
        status: Obj = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": normalized or image,
            "imageID": image_id(normalized) if normalized and self.container_id else "",
            "started": self.started,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


class PodWorkerStatus:
    """The state of one pod's worker and the status it reports."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.cluster = kubelet.cluster
        self.pod = pod
        meta = pod["metadata"]
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta["name"])
        self.uid = str(meta.get("uid"))
        spec = pod.get("spec") or {}
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.grace_seconds = int(spec.get("terminationGracePeriodSeconds", 30))
        self.statuses: dict[str, ContainerStatus] = {}
        for group, init in (("initContainers", True), ("containers", False)):
            for container in spec.get(group) or ():
                reason = "PodInitializing" if init or spec.get("initContainers") else "ContainerCreating"
                self.statuses[container["name"]] = ContainerStatus(
                    container, init, {"waiting": {"reason": reason}}
                )
        self.conditions: list[Obj] = []
        self.pod_ip = kubelet.allocate_ip()
        self.start_time = now_rfc3339()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.finished = False
        self.terminating = False
        self.runs: dict[str, ContainerRun] = {}
        self.graveyard = Graveyard()
        self.sidecar_keepers: list[asyncio.Task[Exit]] = []
        self._flush_scheduled = False
        self._gone = False
        self._workdir: str | None = None
        self._lifecycle: asyncio.Task[None] | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    @property
    def _pod_ref(self) -> str:
        """How kubelet messages name a pod: ``name_namespace(uid)``."""
        return f"{self.name}_{self.namespace}({self.uid})"

    @property
    def regular(self) -> list[ContainerStatus]:
        return [status for status in self.statuses.values() if not status.init]

    @property
    def sidecars(self) -> list[ContainerStatus]:
        return [status for status in self.statuses.values() if status.sidecar]

    def _event(
        self, reason: str, message: str, *, warning: bool = False, field_path: str | None = None
    ) -> None:
        self.cluster.events.record(
            self.pod,
            reason,
            message,
            component="kubelet",
            host=self.cluster.node.name,
            warning=warning,
            field_path=field_path,
        )

    def _condition(
        self, type_: str, status: bool, reason: str | None = None, message: str | None = None
    ) -> None:
        set_condition(self.conditions, condition(type_, status, reason, message))

    def _refresh_readiness(self) -> None:
        if self.finished:
            for type_ in ("Ready", "ContainersReady"):
                self._condition(type_, False, "PodCompleted")
            self._condition("PodReadyToStartContainers", False)
            return
        unready = [status.name for status in [*self.regular, *self.sidecars] if not status.ready]
        for type_ in ("ContainersReady", "Ready"):
            if unready:
                self._condition(
                    type_,
                    False,
                    "ContainersNotReady",
                    f"containers with unready status: [{' '.join(unready)}]",
                )
            else:
                self._condition(type_, True)

    def changed(self) -> None:
        """Something observable changed: write the status once this loop iteration is over (coalesced)."""
        if self._flush_scheduled or self._gone:
            return
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def status(self) -> Obj:
        """The pod status as this kubelet sees it now (conditions it owns, IPs, container statuses)."""
        self._refresh_readiness()
        if not self.finished and any(status.started for status in self.regular):
            self.phase = "Running"
        status: Obj = {
            "phase": self.phase,
            "conditions": [dict(cond) for cond in self.conditions],
            "hostIP": self.cluster.node.host_ip,
            "hostIPs": [{"ip": self.cluster.node.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "qosClass": qos_class(self.pod),
            "containerStatuses": [status.to_api() for status in self.regular],
        }
        init_statuses = [status.to_api() for status in self.statuses.values() if status.init]
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def flush(self) -> None:
        """Write the status now, keeping conditions other components own (PodScheduled)."""
        self._flush_scheduled = False
        if self._gone:
            return
        mine = self.status()

        def apply(pod: Obj) -> None:
            existing = pod.get("status") or {}
            owned = {cond["type"] for cond in mine["conditions"]}
            others = [cond for cond in existing.get("conditions") or () if cond.get("type") not in owned]
            disruption = [cond for cond in mine["conditions"] if cond["type"] == "DisruptionTarget"]
            ordered = [
                cond for kind in _KUBELET_CONDITIONS for cond in mine["conditions"] if cond["type"] == kind
            ]
            pod["status"] = {**existing, **mine, "conditions": [*disruption, *ordered, *others]}

        try:
            self.cluster.store.mutate("pods", self.namespace, self.name, apply, subresource="status")
        except Exception as error:
            if is_not_found(error):
                self._gone = True
            else:
                log.exception("kubelet could not write the status of pod %s/%s", self.namespace, self.name)

    def _terminated(self, result: Exit, started_at: str, status: ContainerStatus) -> Obj:
        terminated: Obj = {
            "exitCode": result.code,
            "reason": result.reason,
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
            "containerID": status.container_id,
        }
        if result.message:
            terminated["message"] = result.message
        return terminated

    def record_exit(self, status: ContainerStatus, run: ContainerRun, result: Exit) -> None:
        """Write a container's end once, whoever noticed it first (its keeper or a shutdown)."""
        if self.runs.get(status.name) is not run:
            return
        del self.runs[status.name]
        if (
            result.code != 0
            and not result.message
            and status.spec.get("terminationMessagePolicy") == ("FallbackToLogsOnError")
        ):
            result = Exit(result.code, result.reason, self._log_tail(status.name))
        status.state = {"terminated": self._terminated(result, status.started_at, status)}
        status.ready = False
        self.cluster.logs.close(self.namespace, self.name, status.name)
        self.changed()

    def _log_tail(self, container: str) -> str | None:
        """What ``FallbackToLogsOnError`` puts in the message: the last 80 lines, at most 2048 bytes."""
        lines = self.cluster.logs.text(self.namespace, self.name, container).splitlines(keepends=True)
        tail = "".join(lines[-_FALLBACK_LINES:]).encode()[-_FALLBACK_BYTES:]
        return tail.decode(errors="ignore") or None
