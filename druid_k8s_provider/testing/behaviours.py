"""What an emulated container does when its image is not run as a local process.

The emulator's kubelet can run containers as real local processes, but tests need containers that exit
with a chosen code, get OOM-killed, never exit or fail to pull: cheaply, a thousand at a time. A
*behaviour* is an ``async def behaviour(ctx: ContainerContext) -> int`` returning the container's exit
code (a plain function returning an int works too); it runs as an asyncio task, so sleeping behaviours
cost no thread or process. Register one per image pattern with
``kube.register_image("apache/druid:*", exits(0, lines=["task done"]))``. A container whose image matches
a registration runs the behaviour even when its command exists on this host; the latest matching
registration wins.

A behaviour may also define ``async def pull(ctx)``: the kubelet awaits it before "pulling" succeeds, and a
``ImagePullFailed`` raised there puts the container into ``ErrImagePull`` then ``ImagePullBackOff``, retried
with back-off as a real kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, runtime_checkable

#: Exit code of a process that ended on SIGTERM's default action (128 + 15), as a runtime reports it.
SIGTERM_EXIT_CODE = 143
#: Exit code of a process killed by SIGKILL (128 + 9): grace period over, or OOM-killed.
SIGKILL_EXIT_CODE = 137


class ContainerOOMKilled(Exception):
    """Raised via ``ctx.oom_kill()``: the container ends as if the kernel's OOM killer struck."""


class ImagePullFailed(Exception):
    """Raised from a behaviour's ``pull`` hook: the registry refused the image (``ErrImagePull``)."""


@dataclass
class ContainerContext:
    """Everything a behaviour may look at or do; one per container run (a restart gets a new one)."""

    container_name: str
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    pod: dict[str, Any]
    log_sink: Callable[[str], None]
    #: Set when the kubelet sends SIGTERM (pod deleted, evicted, kubexit death dependency, sidecar stop).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: What the container wrote to ``/dev/termination-log``: becomes ``state.terminated.message``.
    termination_message: str | None = None

    def log(self, line: str) -> None:
        """Append one line to this container's log, as if written to stdout."""
        self.log_sink(line)

    def oom_kill(self) -> NoReturn:
        """End the container now with reason ``OOMKilled`` and exit code 137."""
        raise ContainerOOMKilled(self.container_name)

    def fail_image_pull(self, message: str) -> NoReturn:
        """From a ``pull`` hook: make this pull attempt fail with ``message`` (the registry's error)."""
        raise ImagePullFailed(message)

    async def wait_or_stop(self, seconds: float) -> bool:
        """Sleep ``seconds``, waking early on SIGTERM; returns True when SIGTERM arrived."""
        if seconds <= 0:
            return self.stopping.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()


AsyncBehaviour = Callable[[ContainerContext], Awaitable[int]]
#: What ``register_image`` accepts: an async behaviour, or a plain function returning the exit code.
Behaviour = Callable[[ContainerContext], Awaitable[int] | int]


@runtime_checkable
class PullingBehaviour(Protocol):
    """A behaviour that also decides whether its image can be pulled."""

    async def pull(self, ctx: ContainerContext) -> None: ...

    async def __call__(self, ctx: ContainerContext) -> int: ...


def exits(code: int = 0, lines: Iterable[str] = (), after: float = 0.0) -> AsyncBehaviour:
    """Write ``lines``, run for ``after`` seconds, exit with ``code`` (143 if SIGTERM came first)."""
    log_lines = tuple(lines)

    async def behaviour(ctx: ContainerContext) -> int:
        for line in log_lines:
            ctx.log(line)
        if await ctx.wait_or_stop(after):
            return SIGTERM_EXIT_CODE
        return code

    return behaviour


def sleeps(seconds: float, code: int = 0) -> AsyncBehaviour:
    """Run for ``seconds`` then exit with ``code``; SIGTERM ends it early with 143."""
    return exits(code, after=seconds)


def oom_killed(after: float = 0.0, lines: Iterable[str] = ()) -> AsyncBehaviour:
    """Write ``lines``, then after ``after`` seconds exceed the memory limit (reason ``OOMKilled``)."""
    log_lines = tuple(lines)

    async def behaviour(ctx: ContainerContext) -> int:
        for line in log_lines:
            ctx.log(line)
        if await ctx.wait_or_stop(after):
            return SIGTERM_EXIT_CODE
        ctx.oom_kill()

    return behaviour


def never_exits(lines: Iterable[str] = (), ignores_sigterm: bool = False) -> AsyncBehaviour:
    """A server or sidecar: runs until stopped. With ``ignores_sigterm`` only SIGKILL ends it (exit 137)."""
    log_lines = tuple(lines)

    async def behaviour(ctx: ContainerContext) -> int:
        for line in log_lines:
            ctx.log(line)
        if ignores_sigterm:
            await asyncio.Event().wait()  # only the kubelet's SIGKILL (task cancellation) ends this
        else:
            await ctx.stopping.wait()
        return SIGTERM_EXIT_CODE

    return behaviour


@dataclass
class _PullFails:
    """Image whose pulls fail ``failures`` times (forever when None), then runs ``then``."""

    message: str
    failures: int | None
    then: AsyncBehaviour
    attempts: int = 0

    async def pull(self, ctx: ContainerContext) -> None:
        self.attempts += 1
        if self.failures is None or self.attempts <= self.failures:
            ctx.fail_image_pull(self.message.format(image=ctx.image))

    async def __call__(self, ctx: ContainerContext) -> int:
        return await self.then(ctx)


def image_pull_fails(
    message: str = 'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
    "pull access denied, repository does not exist or may require authorization",
    failures: int | None = None,
    then: AsyncBehaviour | None = None,
) -> PullingBehaviour:
    """Pulls fail (``ErrImagePull``, then ``ImagePullBackOff``); after ``failures`` attempts run ``then``.

    ``{image}`` in ``message`` is replaced by the image reference. The failure count is shared by every
    container using this behaviour object, like a registry outage that ends.
    """
    return _PullFails(message=message, failures=failures, then=then or exits(0))
