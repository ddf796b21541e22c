"""The emulated kubelet: runs the pods bound to the virtual node and reports their status.

One ``PodWorker`` per pod drives what a real kubelet does, in the same order and with the same status
vocabulary: sandbox, image pulls (with ``ErrImagePull``/``ImagePullBackOff`` back-off), init containers one
by one (native sidecars, ``restartPolicy: Always``, start and keep running), then the regular containers;
restarts per ``restartPolicy`` (``CrashLoopBackOff``); and on deletion SIGTERM, the grace period, SIGKILL, a
terminal phase, and removal of the pod object. Everything a user can observe (container states, reasons,
exit codes, conditions, events, logs) goes through the object store and log store, so clients see it over
HTTP.

A worker's status reporting is in ``kubelet_status``, its image pulls and container runs in
``kubelet_containers``, and its stopping and ending in ``kubelet_termination``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import uuid
from typing import TYPE_CHECKING

from druid_k8s_provider.testing.controllers.common import (
    Key,
    Obj,
    backoff_delay,
    now_rfc3339,
    object_key,
    pod_is_terminal,
)
from druid_k8s_provider.testing.controllers.runtime import Exit, StartFailure, normalize_image
from druid_k8s_provider.testing.kubelet_status import NEVER_STARTED, ContainerStatus
from druid_k8s_provider.testing.kubelet_termination import PodTermination

if TYPE_CHECKING:
    from druid_k8s_provider.testing.cluster import Cluster

log = logging.getLogger(__name__)


class PodWorker(PodTermination):
    """Runs one pod on the node from admission to removal."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._lifecycle = loop.create_task(self._run_pod_guarded())
        deadline = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None:
            self._deadline_timer = loop.call_later(int(deadline), self._pod_deadline_passed)

    def _pod_deadline_passed(self) -> None:
        """``spec.activeDeadlineSeconds`` of the pod itself, enforced by the kubelet."""
        self.fail(
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
            self.grace_seconds,
        )

    async def _run_pod_guarded(self) -> None:
        try:
            await self._run_pod()
        except Exception as error:  # an emulator bug must not leave the pod silently stuck
            log.exception("kubelet failed running pod %s/%s", self.namespace, self.name)
            self._finish("Failed", "EmulatorError", f"the emulated kubelet failed: {error!r}")

    async def _run_pod(self) -> None:
        has_init = any(status.init for status in self.statuses.values())
        self._condition("PodReadyToStartContainers", True)  # the sandbox: nothing to wait for here
        if has_init:
            pending = [status.name for status in self.statuses.values() if status.init and not status.sidecar]
            self._condition(
                "Initialized",
                False,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending)}]",
            )
        else:
            self._condition("Initialized", True)
        self.changed()
        for status in [status for status in self.statuses.values() if status.init]:
            if status.sidecar:
                started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.sidecar_keepers.append(asyncio.ensure_future(self._keep(status, started)))
                await started
                continue
            result = await self._keep(status)
            if result.code != 0:
                self._finish("Failed")
                return
        if has_init:
            self._condition("Initialized", True)
            for status in self.regular:
                status.waiting("ContainerCreating")
            self.changed()
        results = await asyncio.gather(*(self._keep(status) for status in self.regular))
        await self._stop_sidecars()
        succeeded = all(result.code == 0 for result in results)
        self._finish("Succeeded" if succeeded else "Failed")

    async def _keep(self, status: ContainerStatus, started: asyncio.Future[None] | None = None) -> Exit:
        """Run a container until its restart policy says it is done; returns its last exit."""
        if status.sidecar:
            policy = "Always"
        elif status.init:  # init containers are retried until they succeed unless the pod never restarts
            policy = "Never" if self.restart_policy == "Never" else "OnFailure"
        else:
            policy = self.restart_policy
        while True:
            result = await self._run_once(status, started)
            restart = policy == "Always" or (policy == "OnFailure" and result.code != 0)
            if not restart or self.terminating:
                return result
            status.restart_count += 1
            delay = backoff_delay(
                self.cluster.timings.crash_backoff,
                self.cluster.timings.crash_backoff_cap,
                status.restart_count,
            )
            status.last_state = {"terminated": status.state.get("terminated", {})}
            status.waiting(
                "CrashLoopBackOff",
                f"back-off {round(delay)}s restarting failed container={status.name} pod={self._pod_ref}",
            )
            self._event(
                "BackOff",
                f"Back-off restarting failed container {status.name} in pod {self._pod_ref}",
                warning=True,
                field_path=status.field_path,
            )
            self.changed()
            await asyncio.sleep(delay)

    async def _run_once(self, status: ContainerStatus, started: asyncio.Future[None] | None) -> Exit:
        spec = status.spec
        image = str(spec.get("image", ""))
        normalized = normalize_image(image)
        if normalized is None:
            message = (
                f'Failed to apply default image tag "{image}": couldn\'t parse image reference "{image}": '
                "invalid reference format"
            )
            status.waiting("InvalidImageName", message)
            self._event("InspectFailed", message, warning=True, field_path=status.field_path)
            self._event("Failed", "Error: InvalidImageName", warning=True, field_path=status.field_path)
            self.changed()
            await asyncio.Event().wait()  # a real kubelet never starts it either; only deletion ends this
        assert normalized is not None
        behaviour = self.cluster.behaviour_for(image, normalized)
        await self._pull(status, image, normalized, behaviour)
        env = await self._resolve_env(status)
        run = self._make_run(status, normalized, behaviour, env)
        self._event("Created", f"Created container: {status.name}", field_path=status.field_path)
        status.container_id = f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}"
        if isinstance(run, StartFailure):
            run.start()
            result = await run.wait()
            self._event("Failed", f"Error: {result.message}", warning=True, field_path=status.field_path)
            status.state = {"terminated": self._terminated(result, NEVER_STARTED, status)}
            self.changed()
            return result
        self.cluster.logs.mark_started(self.namespace, self.name, status.name)
        self.runs[status.name] = run
        run.start()
        status.started_at = now_rfc3339()
        status.state = {"running": {"startedAt": status.started_at}}
        status.started = True
        status.ready = True
        self._event("Started", f"Started container {status.name}", field_path=status.field_path)
        self.changed()
        if started is not None and not started.done():
            started.set_result(None)
        result = await run.wait()
        self.record_exit(status, run, result)
        return result


class Kubelet:
    """The node agent: one worker per pod bound to the node."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.workers: dict[Key, PodWorker] = {}
        self.pulled_images: set[str] = set()
        self._next_ip = 2
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def allocate_ip(self) -> str:
        """Pod IPs are loopback addresses (127.244.x.y): unique per pod, yet a local process can bind them."""
        number = self._next_ip
        self._next_ip += 1
        if self._next_ip % 256 == 255:
            self._next_ip += 3
        return f"127.244.{(number // 256) % 256}.{number % 256}"

    def scratch_root(self) -> str:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="druid-k8s-emulator-pods-")
        return self._scratch.name

    def on_pod(self, event_type: str, pod: Obj) -> None:
        key = object_key(pod)
        meta = pod["metadata"]
        worker = self.workers.get(key)
        if worker is not None and worker.uid != meta.get("uid"):
            worker.kill_now()
            del self.workers[key]
            worker = None
        if event_type == "DELETED":
            if worker is not None:
                worker.kill_now()  # force-deleted while running: the containers die with it
                del self.workers[key]
            self.cluster.logs.forget_pod(key[0], key[1])
            return
        if worker is not None:
            worker.observe(pod)
            return
        if (pod.get("spec") or {}).get("nodeName") != self.cluster.node.name or not self.cluster.node.ready:
            return
        if meta.get("deletionTimestamp") or pod_is_terminal(pod):
            if meta.get("deletionTimestamp"):
                asyncio.get_running_loop().call_soon(self._remove, key)
            return
        worker = PodWorker(self, pod)
        self.workers[key] = worker
        worker.start()

    def _remove(self, key: Key) -> None:
        with contextlib.suppress(Exception):
            self.cluster.store.delete("pods", key[0], key[1], grace_period_seconds=0)

    def fail_pod(
        self,
        key: Key,
        reason: str,
        message: str,
        grace: float = 0,
        disruption: Obj | None = None,
        then_delete: bool = False,
    ) -> bool:
        worker = self.workers.get(key)
        if worker is None or worker.finished:
            return False
        worker.fail(reason, message, grace, disruption, then_delete)
        return True

    async def stop(self) -> None:
        workers = list(self.workers.values())
        self.workers.clear()
        for worker in workers:
            worker.kill_now()
        await asyncio.gather(*(worker.wait_killed() for worker in workers), return_exceptions=True)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
