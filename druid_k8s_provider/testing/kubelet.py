"""The emulated kubelet: runs the pods bound to the virtual node and reports their status.

One ``PodWorker`` per pod drives what a real kubelet does, in the same order and with the same status
vocabulary: sandbox, image pulls (with ``ErrImagePull``/``ImagePullBackOff`` back-off), init containers one
by one (native sidecars, ``restartPolicy: Always``, start and keep running), then the regular containers;
restarts per ``restartPolicy`` (``CrashLoopBackOff``); and on deletion SIGTERM, the grace period, SIGKILL, a
terminal phase, and removal of the pod object. Everything a user can observe (container states, reasons,
exit codes, conditions, events, logs) goes through the object store and log store, so clients see it over
HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from druid_k8s_provider.testing.behaviours import (
    Behaviour,
    ContainerContext,
    ImagePullFailed,
    PullingBehaviour,
    exits,
)
from druid_k8s_provider.testing.controllers.common import (
    Key,
    Obj,
    backoff_delay,
    condition,
    is_not_found,
    now_rfc3339,
    object_key,
    pod_is_terminal,
    qos_class,
    set_condition,
)
from druid_k8s_provider.testing.controllers.env import ContainerConfigError, container_env, expand
from druid_k8s_provider.testing.controllers.runtime import (
    BehaviourRun,
    ContainerRun,
    Exit,
    Graveyard,
    KubexitRun,
    ProcessRun,
    StartFailure,
    image_id,
    normalize_image,
    parse_kubexit,
    runtime_start_error,
)

if TYPE_CHECKING:
    from druid_k8s_provider.testing.cluster import Cluster

log = logging.getLogger(__name__)

#: ``startedAt`` of a container that never started, as the runtime reports it.
_NEVER = "1970-01-01T00:00:00Z"
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
    started_at: str = _NEVER

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


class PodWorker:
    """Runs one pod on the node from admission to removal."""

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

    # ------------------------------------------------------------------ status

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
            status.state = {"terminated": self._terminated(result, _NEVER, status)}
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

    async def _pull(
        self, status: ContainerStatus, image: str, normalized: str, behaviour: Behaviour | None
    ) -> None:
        policy = spec_pull_policy(status.spec, image)
        field_path = status.field_path
        attempts = 0
        while True:
            if policy != "Always" and normalized in self.kubelet.pulled_images:
                self._event(
                    "Pulled", f'Container image "{image}" already present on machine', field_path=field_path
                )
                return
            if policy == "Never":
                message = f'Container image "{image}" is not present with pull policy of Never'
                status.waiting("ErrImageNeverPull", message)
                self._event("ErrImageNeverPull", message, warning=True, field_path=field_path)
                self.changed()
                await asyncio.Event().wait()
            self._event("Pulling", f'Pulling image "{image}"', field_path=field_path)
            began = asyncio.get_running_loop().time()
            try:
                if isinstance(behaviour, PullingBehaviour):
                    await behaviour.pull(self._context(status, image, {}))
            except ImagePullFailed as failure:
                attempts += 1
                await self._pull_backoff(status, image, str(failure), attempts)
                continue
            took = round((asyncio.get_running_loop().time() - began) * 1000)
            self._event(
                "Pulled",
                f'Successfully pulled image "{image}" in {took}ms ({took}ms including waiting). '
                "Image size: 0 bytes.",
                field_path=field_path,
            )
            self.kubelet.pulled_images.add(normalized)
            return

    async def _pull_backoff(self, status: ContainerStatus, image: str, problem: str, attempts: int) -> None:
        timings = self.cluster.timings
        delay = backoff_delay(timings.image_pull_backoff, timings.image_pull_backoff_cap, attempts)
        field_path = status.field_path
        status.waiting("ErrImagePull", problem)
        self._event(
            "Failed", f'Failed to pull image "{image}": {problem}', warning=True, field_path=field_path
        )
        self._event("Failed", "Error: ErrImagePull", warning=True, field_path=field_path)
        self.changed()
        await asyncio.sleep(delay / 10)  # the next pod sync turns ErrImagePull into the back-off state
        status.waiting("ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {problem}')
        self._event("BackOff", f'Back-off pulling image "{image}"', field_path=field_path)
        self._event("Failed", "Error: ImagePullBackOff", warning=True, field_path=field_path)
        self.changed()
        await asyncio.sleep(delay - delay / 10)

    async def _resolve_env(self, status: ContainerStatus) -> dict[str, str]:
        while True:
            try:
                return container_env(
                    self.cluster.store,
                    self.pod,
                    status.spec,
                    host_ip=self.cluster.node.host_ip,
                    pod_ip=self.pod_ip,
                    node_allocatable=self.cluster.node.capacity,
                )
            except ContainerConfigError as problem:
                status.waiting("CreateContainerConfigError", str(problem))
                self._event("Failed", f"Error: {problem}", warning=True, field_path=status.field_path)
                self.changed()
                await asyncio.sleep(self.cluster.timings.config_retry)

    def _context(self, status: ContainerStatus, image: str, env: dict[str, str]) -> ContainerContext:
        spec = status.spec
        return ContainerContext(
            container_name=status.name,
            image=image,
            command=[expand(str(part), env) for part in spec.get("command") or ()],
            args=[expand(str(part), env) for part in spec.get("args") or ()],
            env=env,
            pod=self.pod,
            log_sink=self._log_sink(status.name),
        )

    def _log_sink(self, container: str) -> Callable[[str], None]:
        logs = self.cluster.logs

        def append(line: str) -> None:
            logs.append(self.namespace, self.name, container, line)

        return append

    def _make_run(
        self, status: ContainerStatus, normalized: str, behaviour: Behaviour | None, env: dict[str, str]
    ) -> ContainerRun:
        image = str(status.spec.get("image", ""))
        ctx = self._context(status, image, env)
        if behaviour is None and status.init and not status.sidecar and _is_kubexit_image(normalized):
            return BehaviourRun(exits(0), ctx)  # installs the kubexit binary into the shared volume
        argv = [*ctx.command, *ctx.args] if ctx.command else []
        kubexit = parse_kubexit(argv)
        if kubexit is not None:
            child_ctx = ContainerContext(
                container_name=ctx.container_name,
                image=image,
                command=kubexit.child_argv[:1],
                args=kubexit.child_argv[1:],
                env=env,
                pod=self.pod,
                log_sink=ctx.log_sink,
            )
            child = self._plain_run(kubexit.child_argv, behaviour, child_ctx, env)
            return KubexitRun(child, kubexit, env, self.graveyard, ctx.log_sink)
        return self._plain_run(argv, behaviour, ctx, env)

    def _plain_run(
        self, argv: list[str], behaviour: Behaviour | None, ctx: ContainerContext, env: dict[str, str]
    ) -> ContainerRun:
        if behaviour is not None:
            return BehaviourRun(behaviour, ctx)
        process_env = self._process_env(env)
        if argv and shutil.which(argv[0], path=process_env["PATH"]):
            return ProcessRun(argv, process_env, self._working_dir(ctx), ctx.log_sink)
        if argv:
            log.warning(
                "container %s of pod %s/%s: %s is not on this host and image %s has no behaviour; "
                "register one with KubeEmulator.register_image(pattern, behaviour)",
                ctx.container_name,
                self.namespace,
                self.name,
                argv[0],
                ctx.image,
            )
            return StartFailure(runtime_start_error(argv[0]), ctx.log_sink)
        return StartFailure(
            f'emulator: image "{ctx.image}" has no registered behaviour and container "{ctx.container_name}" '
            f'has no command to run locally; register one with KubeEmulator.register_image("{ctx.image}", '
            "exits(0))",
            ctx.log_sink,
        )

    def _process_env(self, env: dict[str, str]) -> dict[str, str]:
        """A container's env plus what its image would provide: PATH (this interpreter's bin first, so a
        ``python`` command finds the project's virtualenv), HOME, and HOSTNAME (``spec.hostname`` or the pod
        name)."""
        host_path = os.environ.get("PATH", os.defpath)
        base = {
            "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{host_path}",
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": str((self.pod.get("spec") or {}).get("hostname") or self.name),
        }
        return {**base, **env}

    def _working_dir(self, ctx: ContainerContext) -> str:
        """The container's ``workingDir`` when it exists here, else a scratch directory for the pod."""
        for container in self.statuses.values():
            if container.name == ctx.container_name:
                wanted = container.spec.get("workingDir")
                if wanted and os.path.isdir(wanted):
                    return str(wanted)
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.kubelet.scratch_root())
        return self._workdir

    async def _stop_sidecars(self) -> None:
        """Regular containers are done: stop the native sidecars (no more restarts), as kubelet 1.29+ does."""
        for keeper in self.sidecar_keepers:
            keeper.cancel()
        await asyncio.gather(*self.sidecar_keepers, return_exceptions=True)
        await self._stop_runs([status.name for status in self.sidecars], self.grace_seconds)

    async def _stop_runs(self, names: list[str], grace: float) -> None:
        """SIGTERM, wait up to ``grace`` seconds, SIGKILL what is left; record every exit."""
        targets = [(self.statuses[name], self.runs[name]) for name in names if name in self.runs]
        if not targets:
            return
        for status, run in targets:
            self._event("Killing", f"Stopping container {status.name}", field_path=status.field_path)
            run.sigterm()
        waiters = {asyncio.ensure_future(run.wait()): (status, run) for status, run in targets}
        _, late = await asyncio.wait(waiters, timeout=max(grace, 0))
        for waiter in late:
            waiters[waiter][1].sigkill()
        for waiter, (status, run) in waiters.items():
            self.record_exit(status, run, await waiter)

    def _finish(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self.phase = phase
        self.reason = reason or self.reason
        self.message = message or self.message
        self.finished = True
        self.changed()
        self._cleanup_workdir()

    def _cleanup_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ------------------------------------------------------------------ deletion, eviction, node loss

    async def _shutdown(self, grace: float) -> None:
        """Stop starting things, then stop every running container (regular ones first, then sidecars)."""
        self.terminating = True
        tasks = [task for task in (self._lifecycle, *self.sidecar_keepers) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sidecar_names = {status.name for status in self.sidecars}
        await self._stop_runs([name for name in self.runs if name not in sidecar_names], grace)
        await self._stop_runs(list(self.runs), grace)

    def observe(self, pod: Obj) -> None:
        """A newer version of the pod from the store (listener context: no store writes here)."""
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and self._shutdown_task is None:
            grace = int(meta.get("deletionGracePeriodSeconds") or 0)
            self._shutdown_task = asyncio.get_running_loop().create_task(self._delete(grace))

    async def _delete(self, grace: int) -> None:
        if not self.finished:
            await self._shutdown(grace)
            regular_ok = all(
                (status.terminated_state() or {}).get("exitCode", 1) == 0 for status in self.regular
            )
            self._finish("Succeeded" if regular_ok else "Failed")
        self.flush()
        with contextlib.suppress(Exception):
            self.cluster.store.delete("pods", self.namespace, self.name, grace_period_seconds=0)

    def fail(
        self,
        reason: str,
        message: str,
        grace: float,
        disruption: Obj | None = None,
        then_delete: bool = False,
    ) -> None:
        """Kubelet-side termination (eviction, node loss): containers stopped, phase Failed with a reason."""
        if self.finished or self._shutdown_task is not None:
            return
        self._shutdown_task = asyncio.get_running_loop().create_task(
            self._fail(reason, message, grace, disruption, then_delete)
        )

    async def _fail(
        self, reason: str, message: str, grace: float, disruption: Obj | None, then_delete: bool
    ) -> None:
        if disruption is not None:
            set_condition(self.conditions, disruption)
            self.changed()
        await self._shutdown(grace)
        self._finish("Failed", reason, message)
        self.flush()
        self._shutdown_task = None  # a later API deletion of the failed pod is handled by observe()
        if then_delete or self.pod["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(Exception):
                self.cluster.store.delete("pods", self.namespace, self.name, grace_period_seconds=0)

    def kill_now(self) -> None:
        """Emulator shutdown: SIGKILL everything at once, write nothing more."""
        self._gone = True
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        for task in (self._lifecycle, self._shutdown_task, *self.sidecar_keepers):
            if task is not None:
                task.cancel()
        for run in list(self.runs.values()):
            run.sigkill()
        self._cleanup_workdir()

    async def wait_killed(self) -> None:
        runs = list(self.runs.values())
        await asyncio.gather(*(run.wait() for run in runs), return_exceptions=True)


def spec_pull_policy(container: Obj, image: str) -> str:
    """``imagePullPolicy`` or the API server's default for it (Always for ``:latest`` or no tag)."""
    policy = container.get("imagePullPolicy")
    if policy:
        return str(policy)
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


def _is_kubexit_image(normalized: str) -> bool:
    repository = normalized.split("@", 1)[0].rsplit("/", 1)[-1]
    return repository.split(":", 1)[0] == "kubexit"


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
