"""How the emulated kubelet ends a pod: native sidecars stopped after the regular containers, SIGTERM, the
grace period and SIGKILL on deletion, eviction and node loss, the terminal phase, and removal of the pod."""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from druid_k8s_provider.testing.controllers.common import Obj, set_condition
from druid_k8s_provider.testing.kubelet_containers import PodContainers


class PodTermination(PodContainers):
    """Stopping one pod's containers and finishing the pod."""

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
