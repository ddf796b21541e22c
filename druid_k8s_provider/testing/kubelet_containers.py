"""How the emulated kubelet starts a container: image pulls (with ``ErrImagePull``/``ImagePullBackOff``
back-off), the environment, and the run (a registered behaviour, a local process, or kubexit around one)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

from druid_k8s_provider.testing.behaviours import (
    Behaviour,
    ContainerContext,
    ImagePullFailed,
    PullingBehaviour,
    exits,
)
from druid_k8s_provider.testing.controllers.common import Obj, backoff_delay
from druid_k8s_provider.testing.controllers.env import ContainerConfigError, container_env, expand
from druid_k8s_provider.testing.controllers.runtime import (
    BehaviourRun,
    ContainerRun,
    KubexitRun,
    ProcessRun,
    StartFailure,
    parse_kubexit,
    runtime_start_error,
)
from druid_k8s_provider.testing.kubelet_status import ContainerStatus, PodWorkerStatus

log = logging.getLogger(__name__)


class PodContainers(PodWorkerStatus):
    """Image pulls and container runs of one pod."""

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
