"""The back-off both clients retry transient failures with: capped exponential pauses with jitter, a server's
``Retry-After`` honoured up to a bound, and an attempt limit; as tenacity controller settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity


@dataclass(frozen=True)
class BackoffPolicy:
    """Pauses grow exponentially (with jitter) from ``initial_wait`` to at most ``max_wait`` seconds; a pause
    the server asked for (:meth:`_retry_after`, which each client's policy reads from its own failures) is
    honoured up to ``max_retry_after`` seconds. A call gives up after ``attempts`` attempts (None: no limit).

    The Kubernetes hooks' :class:`~druid_k8s_provider.hooks.k8s_retry.RetryPolicy` and the Overlord hooks'
    :class:`~druid_k8s_provider.hooks.overlord_transport.OverlordRetryPolicy` are this, with their defaults.
    """

    attempts: int | None
    initial_wait: float
    max_wait: float
    max_retry_after: float = 30.0

    def _retry_after(self, exc: BaseException | None) -> float | None:
        """The pause in seconds the server asked for with this failure, if the policy honours it."""
        return None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = self._retry_after(exc)
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = tenacity.wait_exponential_jitter(initial=self.initial_wait, max=self.max_wait, jitter=0.2)
        return float(backoff(state))

    def _stop(self) -> tenacity.stop.stop_base:
        stop: tenacity.stop.stop_base = tenacity.stop_never
        if self.attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.attempts)
        return stop

    def _controller(
        self,
        retry_on: Callable[[BaseException], bool],
        before_sleep: Callable[[tenacity.RetryCallState], None],
    ) -> dict[str, Any]:
        """Keyword arguments of ``tenacity.Retrying`` / ``AsyncRetrying``: retry what ``retry_on`` accepts,
        re-raise the last failure, call ``before_sleep`` before each pause."""
        return {
            "stop": self._stop(),
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(retry_on),
            "reraise": True,
            "before_sleep": before_sleep,
        }
