"""How hard the Kubernetes hooks retry transient failures: :class:`RetryPolicy`, and how much of a long
retry loop gets logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import tenacity

from druid_k8s_provider.hooks.backoff import BackoffPolicy
from druid_k8s_provider.hooks.k8s_errors import ApiCallFailed, is_transient

log = logging.getLogger(__name__)

#: A retry loop without an attempt limit logs its first attempts and then only every this many, so an outage
#: of minutes leaves a few lines in a task log instead of one every couple of seconds.
LOG_EVERY_NTH_RETRY = 10

RetrySleep = Callable[[float], Awaitable[None]]
BeforeSleep = Callable[[tenacity.RetryCallState], None]


def worth_logging(state: tenacity.RetryCallState, attempts: int | None) -> bool:
    """Whether a retry loop should log this failed attempt: every one of a bounded loop, the first three
    and then every :data:`LOG_EVERY_NTH_RETRY`-th of an unbounded one."""
    number = state.attempt_number
    return attempts is not None or number <= 3 or number % LOG_EVERY_NTH_RETRY == 0


@dataclass(frozen=True)
class RetryPolicy(BackoffPolicy):
    """How hard to retry transient failures (429, 5xx, a refused or dropped connection).

    Pauses grow exponentially (with jitter) from ``initial_wait`` to at most ``max_wait`` seconds, so a
    call that is retrying resumes within about ``max_wait`` of the API server answering again; a 429's
    ``Retry-After`` is honoured up to ``max_retry_after`` seconds. A call gives up after ``attempts``
    attempts; with ``attempts=None`` (see :meth:`until`) it retries until ``deadline`` (epoch seconds) or,
    without one, until it is cancelled.
    """

    attempts: int | None = 10
    initial_wait: float = 0.2
    max_wait: float = 2.0
    max_retry_after: float = 30.0
    deadline: float | None = None

    def until(self, deadline: float | None) -> RetryPolicy:
        """The same back-off without an attempt limit, for reads while a task waits.

        An API server outage (a control-plane upgrade, an etcd election; tens of seconds on a real cluster)
        changes nothing about a running peon, so a waiting read must outlast it rather than give up and
        leave the outcome to a slow fallback poll. ``deadline`` (epoch seconds, None: none) still ends it,
        and so does cancelling the caller (a user stopping the task).
        """
        return replace(self, attempts=None, deadline=deadline)

    def _retry_after(self, exc: BaseException | None) -> float | None:
        """A 429's ``Retry-After``."""
        if isinstance(exc, ApiCallFailed) and exc.status == 429:
            return exc.retry_after
        return None

    def _stop(self) -> tenacity.stop.stop_base:
        stop = super()._stop()
        if self.deadline is not None:
            stop = stop | tenacity.stop_before_delay(max(0.0, self.deadline - time.time()))
        return stop

    def _kwargs(
        self, call: str, retry_on: Callable[[BaseException], bool], before_sleep: BeforeSleep | None
    ) -> dict[str, Any]:
        def warn(state: tenacity.RetryCallState) -> None:
            if not worth_logging(state, self.attempts):
                return
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "Kubernetes API call %s failed (%s); attempt %d%s, retrying in %.1fs",
                call,
                exc,
                state.attempt_number,
                f" of {self.attempts}" if self.attempts is not None else "",
                wait,
            )

        return self._controller(retry_on, before_sleep or warn)

    def sync(self, call: str) -> tenacity.Retrying:
        """A tenacity controller for blocking calls; ``call`` names the request in retry warnings."""
        return tenacity.Retrying(**self._kwargs(call, is_transient, None))

    def asynchronous(
        self,
        call: str,
        *,
        retry_on: Callable[[BaseException], bool] = is_transient,
        sleep: RetrySleep | None = None,
        before_sleep: BeforeSleep | None = None,
    ) -> tenacity.AsyncRetrying:
        """A tenacity controller for coroutines; ``call`` names the request in retry warnings.

        ``retry_on`` says which failures to retry (default: the transient ones); ``sleep`` replaces the
        pause (e.g. one that a watch event cuts short); ``before_sleep`` replaces the warning logged before
        each pause.
        """
        kwargs = self._kwargs(call, retry_on, before_sleep)
        if sleep is not None:
            kwargs["sleep"] = sleep
        return tenacity.AsyncRetrying(**kwargs)
