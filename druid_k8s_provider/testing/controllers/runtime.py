"""The emulated container runtime: how one container run starts, receives signals and ends.

Three kinds of run, chosen by the kubelet: a local process (the container's ``command + args`` exist on this
host), a registered image behaviour (an asyncio task), and kubexit, which wraps one of the other two and
stops it when a container it depends on has died, as karlkfi/kubexit does with its graveyard of tombstones.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import re
import shlex
import signal
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from druid_k8s_provider.testing.behaviours import (
    SIGKILL_EXIT_CODE,
    Behaviour,
    ContainerContext,
    ContainerOOMKilled,
)

log = logging.getLogger(__name__)

#: StreamReader limit for process output: a longer line is split rather than lost.
_MAX_LINE = 1 << 20
#: How long output is still read after the main process exited.
_DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class Exit:
    """How a container run ended, in the words of its ``state.terminated``."""

    code: int
    reason: str
    message: str | None = None

    @classmethod
    def from_code(cls, code: int) -> Exit:
        return cls(code, "Completed" if code == 0 else "Error")


class ContainerRun(abc.ABC):
    """One start of one container; the kubelet awaits ``wait()`` and may signal it meanwhile."""

    def __init__(self, log_line: Callable[[str], None]) -> None:
        self.log_line = log_line
        self._task: asyncio.Task[Exit] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def wait(self) -> Exit:
        """The exit; awaiting callers may be cancelled without touching the run."""
        assert self._task is not None, "start() first"
        return await asyncio.shield(self._task)

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @abc.abstractmethod
    async def _main(self) -> Exit: ...

    @abc.abstractmethod
    def sigterm(self) -> None: ...

    @abc.abstractmethod
    def sigkill(self) -> None: ...


class BehaviourRun(ContainerRun):
    """A registered image behaviour running as an asyncio task: SIGTERM sets ``ctx.stopping``, SIGKILL
    cancels the task."""

    def __init__(self, behaviour: Behaviour, ctx: ContainerContext) -> None:
        super().__init__(ctx.log_sink)
        self.behaviour = behaviour
        self.ctx = ctx
        self._inner: asyncio.Future[int] | None = None
        self._killed = False

    async def _main(self) -> Exit:
        if self._killed:
            return Exit(SIGKILL_EXIT_CODE, "Error")
        self._inner = asyncio.ensure_future(self._invoke())
        await asyncio.wait({self._inner})
        if self._inner.cancelled():
            return Exit(SIGKILL_EXIT_CODE, "Error")
        error = self._inner.exception()
        if isinstance(error, ContainerOOMKilled):
            return Exit(SIGKILL_EXIT_CODE, "OOMKilled", self.ctx.termination_message)
        if error is not None:
            for line in traceback.format_exception(error):
                for part in line.rstrip("\n").splitlines():
                    self.log_line(part)
            log.warning("behaviour for %s raised; the container exits 1", self.ctx.image, exc_info=error)
            return Exit(1, "Error")
        code = self._inner.result()
        if not isinstance(code, int):
            self.log_line(
                f"emulator: behaviour for image {self.ctx.image!r} returned {code!r}, not an exit code"
            )
            return Exit(1, "Error")
        return Exit(code, "Completed" if code == 0 else "Error", self.ctx.termination_message)

    async def _invoke(self) -> int:
        """Await the behaviour; a plain function returning an exit code is accepted too."""
        outcome: Any = self.behaviour(self.ctx)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return cast(int, outcome)

    def sigterm(self) -> None:
        self.ctx.stopping.set()

    def sigkill(self) -> None:
        self._killed = True
        if self._inner is not None:
            self._inner.cancel()


class ProcessRun(ContainerRun):
    """A local process in its own process group, like a container's PID namespace: signals go to the group,
    and when the main process ends whatever it left behind is killed too."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], cwd: str, log_line: Callable[[str], None]
    ) -> None:
        super().__init__(log_line)
        self.argv = argv
        self.env = dict(env)
        self.cwd = cwd
        self._process: asyncio.subprocess.Process | None = None
        self._pending_signal: int | None = None

    async def _main(self) -> Exit:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                limit=_MAX_LINE,
            )
        except OSError as error:
            return Exit(128, "StartError", runtime_start_error(self.argv[0], str(error.strerror or error)))
        self._process = process
        if self._pending_signal is not None:
            self._signal_group(self._pending_signal)
        try:
            assert process.stdout is not None
            pump = asyncio.ensure_future(self._pump(process.stdout))
            returncode = await process.wait()
            self._signal_group(signal.SIGKILL)  # PID 1 gone: the rest of the container goes with it
            # a daemon that left the process group may still hold the pipe: stop reading after a moment
            await asyncio.wait({pump}, timeout=_DRAIN_SECONDS)
            pump.cancel()
        finally:
            if process.returncode is None:  # cancelled: never leave a stray process behind
                self._signal_group(signal.SIGKILL)
        return Exit.from_code(returncode if returncode >= 0 else 128 - returncode)

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    self.log_line(end.partial.decode(errors="replace"))
                return
            except asyncio.LimitOverrunError as overrun:
                raw = await stream.read(overrun.consumed)
            self.log_line(raw.decode(errors="replace").rstrip("\n"))

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            self._pending_signal = signum
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def sigterm(self) -> None:
        self._signal_group(signal.SIGTERM)

    def sigkill(self) -> None:
        self._signal_group(signal.SIGKILL)


class StartFailure(ContainerRun):
    """A container the runtime could not start (no such executable): exit 128, reason ``StartError``."""

    def __init__(self, message: str, log_line: Callable[[str], None]) -> None:
        super().__init__(log_line)
        self.message = message

    async def _main(self) -> Exit:
        return Exit(128, "StartError", self.message)

    def sigterm(self) -> None:
        """Nothing runs, so there is nothing to signal."""

    def sigkill(self) -> None:
        """Nothing runs, so there is nothing to signal."""


def runtime_start_error(executable: str, problem: str | None = None) -> str:
    """containerd/runc's message for an executable missing from the image."""
    if problem is None:
        problem = (
            f"stat {executable}: no such file or directory"
            if "/" in executable
            else "executable file not found in $PATH"
        )
    return (
        "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
        f'runc create failed: unable to start container process: exec: "{executable}": {problem}: unknown'
    )


class Graveyard:
    """kubexit's shared ``/graveyard`` volume of one pod: tombstones of the wrapped containers that died."""

    def __init__(self) -> None:
        self._dead: dict[str, asyncio.Event] = {}

    def _tombstone(self, name: str) -> asyncio.Event:
        return self._dead.setdefault(name, asyncio.Event())

    def bury(self, name: str) -> None:
        self._tombstone(name).set()

    async def wait_any_dead(self, names: list[str]) -> str:
        """The first of ``names`` to die (never returns for an empty list)."""
        if not names:
            await asyncio.Event().wait()
        waiters = {asyncio.ensure_future(self._tombstone(name).wait()): name for name in names}
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            return waiters[done.pop()]
        finally:
            for waiter in waiters:
                waiter.cancel()


@dataclass(frozen=True)
class KubexitCommand:
    """The command kubexit wraps, and whether the shell line ends in ``|| true`` (sidecars in Druid)."""

    child_argv: list[str]
    ignores_failure: bool


def parse_kubexit(argv: list[str]) -> KubexitCommand | None:
    """Recognise ``/kubexit/kubexit CMD...`` either directly or inside ``/bin/sh -c "..."``."""
    if argv and os.path.basename(argv[0]) == "kubexit":
        return KubexitCommand(argv[1:], ignores_failure=False)
    if len(argv) == 3 and os.path.basename(argv[0]) in ("sh", "bash", "ash", "dash") and argv[1] == "-c":
        try:
            tokens = shlex.split(argv[2])
        except ValueError:
            return None
        if not tokens or os.path.basename(tokens[0]) != "kubexit":
            return None
        rest = tokens[1:]
        cut = next((index for index, token in enumerate(rest) if token in ("||", "&&", ";")), len(rest))
        return KubexitCommand(rest[:cut], ignores_failure=rest[cut:] == ["||", "true"])
    return None


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_GO_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str, default: float) -> float:
    """kubexit's KUBEXIT_GRACE_PERIOD is a Go duration such as ``30s`` or ``1m30s``."""
    parts = _GO_DURATION.findall(text or "")
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return default
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


class KubexitRun(ContainerRun):
    """kubexit: run the child, stop it (SIGTERM, grace, SIGKILL) when a death dependency's tombstone
    appears, bury this container's own tombstone when the child ends, exit with the child's code."""

    def __init__(
        self,
        child: ContainerRun,
        command: KubexitCommand,
        env: Mapping[str, str],
        graveyard: Graveyard,
        log_line: Callable[[str], None],
    ) -> None:
        super().__init__(log_line)
        self.child = child
        self.command = command
        self.env = env
        self.graveyard = graveyard

    async def _main(self) -> Exit:
        name = self.env.get("KUBEXIT_NAME", "")
        graveyard_path = self.env.get("KUBEXIT_GRAVEYARD", "")
        for variable, value in (("KUBEXIT_NAME", name), ("KUBEXIT_GRAVEYARD", graveyard_path)):
            if not value:
                self.log_line(f"Error: missing env var: {variable}")
                return self._exit(Exit(1, "Error"))
        death_deps = [dep.strip() for dep in self.env.get("KUBEXIT_DEATH_DEPS", "").split(",") if dep.strip()]
        grace = parse_go_duration(self.env.get("KUBEXIT_GRACE_PERIOD", "30s"), 30.0)
        self.log_line(f"Name: {name}")
        self.log_line(f"Graveyard: {graveyard_path}")
        self.log_line(f"Death Deps: {','.join(death_deps) or 'N/A'}")
        self.log_line(f"Executing: {self.command.child_argv}")
        self.child.start()
        child_exit = asyncio.ensure_future(self.child.wait())
        dep_died = asyncio.ensure_future(self.graveyard.wait_any_dead(death_deps))
        try:
            await asyncio.wait({child_exit, dep_died}, return_when=asyncio.FIRST_COMPLETED)
            if not child_exit.done():
                self.log_line(f"Tombstone modified: {graveyard_path}/{dep_died.result()}")
                self.log_line("Terminating child process")
                self.child.sigterm()
                done, _ = await asyncio.wait({child_exit}, timeout=grace)
                if not done:
                    self.child.sigkill()
            result = await child_exit
        finally:
            dep_died.cancel()
        self.log_line(f"Exit({result.code})")
        self.graveyard.bury(name)
        self.log_line(f"Updating tombstone: {graveyard_path}/{name}")
        return self._exit(result)

    def _exit(self, child: Exit) -> Exit:
        if self.command.ignores_failure and child.reason != "OOMKilled":
            return Exit.from_code(0)
        return child

    def sigterm(self) -> None:
        self.child.sigterm()

    def sigkill(self) -> None:
        self.child.sigkill()


# Docker image reference grammar (distribution/reference), enough to tell valid from InvalidImageName.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
)
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


def normalize_image(image: str) -> str | None:
    """Fully qualified reference as the runtime reports it (``docker.io/library/busybox:latest``), or None
    for an invalid reference (the kubelet's ``InvalidImageName``)."""
    match = _REFERENCE.match(image or "")
    if not match:
        return None
    first, _, remainder = image.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
    else:
        domain, path = "docker.io", image
        if "/" not in path:
            path = f"library/{path}"
    if not match.group("tag") and not match.group("digest"):
        path += ":latest"
    return f"{domain}/{path}"


def image_id(normalized: str) -> str:
    """A stable fake ``imageID`` digest for a normalized reference."""
    repository = normalized.split("@", 1)[0]
    head, _, tail = repository.rpartition(":")
    if head and "/" not in tail:
        repository = head
    return f"{repository}@sha256:{hashlib.sha256(normalized.encode()).hexdigest()}"
