"""How the Overlord hooks talk HTTP: retries, the leader's redirect, and errors for answers never received.

- **Retries.** 503 (no leader elected yet, or an Overlord starting), 429, any other 5xx and connection errors
  are retried with capped exponential back-off (tenacity), honouring ``Retry-After``; a certificate that
  cannot be verified, or a server that does not speak TLS, is not (retrying cannot fix it).
- **The leader's redirect.** An Overlord that is not the leader answers 307 with the leader's URL in
  ``Location`` (Druid's ``RedirectFilter``). httpx would drop the Basic-auth header on a redirect to another
  host, so redirects are followed here, with the connection's credentials (the leader belongs to the same
  cluster), never from https down to http.
- **Counted failures.** Every attempt that fails (retried or not) counts once in the
  ``druid_k8s.overlord.request_errors`` metric, by endpoint and status (:func:`counting_failures`,
  :func:`read_answer`); a duplicate submission (``entryAlreadyExists``) is an answer of the protocol, not a
  failure.
- **No credentials in errors.** The connection's password (and its Basic-auth token) is scrubbed from every
  error text, as the task's credentials are.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import tenacity

from druid_k8s_provider import metrics
from druid_k8s_provider.errors import OverlordAnswerUnreadable, OverlordApiError, TaskAlreadySubmitted
from druid_k8s_provider.hooks.backoff import BackoffPolicy
from druid_k8s_provider.hooks.overlord_answer import OverlordAnswer
from druid_k8s_provider.hooks.overlord_api import OverlordCall
from druid_k8s_provider.hooks.overlord_connection import OverlordEndpoint
from druid_k8s_provider.hooks.secrets import scrub

log = logging.getLogger(__name__)

#: How many redirects one request follows (a non-leader sends one to the leader; more means a loop).
MAX_REDIRECTS = 3
_HEADERS = {"Accept": "application/json"}
T = TypeVar("T")


class TransientAnswer(Exception):
    """An answer worth retrying (429, 5xx), raised inside the retry loop; after the last try
    :func:`failure_of` turns it into an :class:`OverlordApiError`."""

    def __init__(self, answer: OverlordAnswer, retry_after: float | None) -> None:
        self.answer = answer
        self.retry_after = retry_after
        super().__init__(f"HTTP {answer.status}")


#: OpenSSL's reasons for a TLS handshake answered by something that is not TLS (a plain-http server):
#: ``WRONG_VERSION_NUMBER`` up to OpenSSL 3.1, ``RECORD_LAYER_FAILURE`` from 3.2 on.
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})


def _is_tls_failure(exc: BaseException) -> bool:
    """A TLS handshake that failed (a certificate the client cannot verify, a server that does not speak TLS):
    retrying cannot help."""
    return _tls_error(exc) is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The :class:`ssl.SSLError` behind ``exc`` (httpx and httpcore wrap it), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _server_does_not_speak_tls(exc: BaseException) -> bool:
    """The handshake's answer was no TLS record: an https request sent to a plain-http port."""
    tls_error = _tls_error(exc)
    reason = getattr(tls_error, "reason", None) if tls_error is not None else None
    text = str(exc).lower()
    return reason in _NOT_TLS_REASONS or "wrong version number" in text or "record layer failure" in text


def is_transient(exc: BaseException) -> bool:
    """429, 5xx and connection failures heal by themselves (a leader election, a restart); nothing else."""
    if isinstance(exc, TransientAnswer):
        return True
    return isinstance(exc, httpx.TransportError) and not _is_tls_failure(exc)


@dataclass(frozen=True)
class OverlordRetryPolicy(BackoffPolicy):
    """How hard to retry transient failures: bounded in attempts and in the longest single wait (seconds).

    The defaults ride out an Overlord leader election (tens of seconds) without holding a worker for long.
    """

    attempts: int = 7
    initial_wait: float = 0.5
    max_wait: float = 10.0
    max_retry_after: float = 30.0

    def _retry_after(self, exc: BaseException | None) -> float | None:
        """The ``Retry-After`` of a transient answer (429 or 5xx)."""
        return exc.retry_after if isinstance(exc, TransientAnswer) else None

    def _kwargs(self, conn_id: str, call: OverlordCall[Any]) -> dict[str, Any]:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            what = f"HTTP {exc.answer.status}" if isinstance(exc, TransientAnswer) else type(exc).__name__
            log.warning(
                "Overlord request %s %s (connection %r) failed (%s); attempt %d of %d, retrying in %.1fs",
                call.method,
                call.path,
                conn_id,
                what,
                state.attempt_number,
                self.attempts,
                wait,
            )

        return self._controller(is_transient, before_sleep)

    def sync(self, conn_id: str, call: OverlordCall[Any]) -> tenacity.Retrying:
        """A tenacity controller for a blocking request."""
        return tenacity.Retrying(**self._kwargs(conn_id, call))

    def asynchronous(self, conn_id: str, call: OverlordCall[Any]) -> tenacity.AsyncRetrying:
        """A tenacity controller for a coroutine."""
        return tenacity.AsyncRetrying(**self._kwargs(conn_id, call))


def answer_of(
    endpoint: OverlordEndpoint, call: OverlordCall[Any], response: httpx.Response
) -> OverlordAnswer:
    """The answer as the call's reader sees it; a retryable one raised as :class:`TransientAnswer`."""
    answer = OverlordAnswer(
        conn_id=endpoint.conn_id,
        method=call.method,
        path=call.path,
        status=response.status_code,
        content_type=response.headers.get("content-type", ""),
        body=response.content,
        secrets=(*call.secrets, *endpoint.secrets),
        task_id=call.task_id,
    )
    log.debug("Overlord %s %s answered %d", call.method, call.path, response.status_code)
    if response.status_code == 429 or response.status_code >= 500:
        retry_after: float | None = None
        raw = response.headers.get("Retry-After", "")
        if raw.replace(".", "", 1).isdigit():
            retry_after = float(raw)
        raise TransientAnswer(answer, retry_after)
    return answer


def failure_of(endpoint: OverlordEndpoint, call: OverlordCall[Any], exc: BaseException) -> OverlordApiError:
    """The error for a request that never got a final answer."""
    if isinstance(exc, TransientAnswer):
        return exc.answer.refused()
    if _server_does_not_speak_tls(exc):
        fix = (
            "the Overlord does not speak TLS on that port: set the schema of connection "
            f"{endpoint.conn_id!r} to http, or its port to the Overlord's TLS port (druid.tlsPort)"
        )
        problem = "the TLS handshake got an answer that is not TLS"
    elif _is_tls_failure(exc):
        fix = (
            f"set the ca_bundle_path extra of connection {endpoint.conn_id!r} to the CA certificates that "
            "signed the Overlord's certificate"
        )
        problem = "the Overlord's TLS certificate could not be verified"
    else:
        fix = (
            f"check host, port and schema of connection {endpoint.conn_id!r} and that the Overlord is up; "
            "a submitted task is re-attached when the Airflow task is retried"
        )
        problem = "the Overlord could not be reached"
    cause = scrub(f"{type(exc).__name__}: {exc}", [*call.secrets, *endpoint.secrets])
    return OverlordApiError(
        f"Overlord request {call.method} {call.path} (Airflow connection {endpoint.conn_id!r}) failed: "
        f"{problem} ({cause}). Fix: {fix}",
        conn_id=endpoint.conn_id,
        path=call.path,
        task_id=call.task_id,
    )


def client_options(endpoint: OverlordEndpoint, timeout: float) -> dict[str, Any]:
    """Keyword arguments of ``httpx.Client`` / ``httpx.AsyncClient`` for the connection: Basic auth, the CA
    bundle (else httpx's default CAs), the timeout in seconds; redirects are :func:`redirect_target`'s."""
    verify: ssl.SSLContext | bool = True
    if endpoint.ca_bundle_path:
        verify = ssl.create_default_context(cafile=endpoint.ca_bundle_path)
    return {
        "auth": httpx.BasicAuth(*endpoint.auth) if endpoint.auth else None,
        "verify": verify,
        "timeout": timeout,
        "headers": _HEADERS,
    }


def redirect_target(
    endpoint: OverlordEndpoint, call: OverlordCall[Any], response: httpx.Response
) -> str | None:
    """Where a 307/308 answer sends the request (the leader Overlord), or None for any other answer.

    Raises :class:`OverlordApiError` for a redirect from https to http while credentials would follow it.
    """
    location = response.headers.get("location")
    if response.status_code not in (307, 308) or not location:
        return None
    target = response.url.join(location)
    if response.url.scheme == "https" and target.scheme != "https" and endpoint.auth:
        raise OverlordApiError(
            f"Overlord request {call.method} {call.path} (Airflow connection {endpoint.conn_id!r}) was "
            f"redirected from https to {target.scheme} ({target.host}); the credentials are not sent "
            "unencrypted. Fix: enable TLS on the leader Overlord too, or point the connection at it",
            conn_id=endpoint.conn_id,
            path=call.path,
            status=response.status_code,
            task_id=call.task_id,
        )
    log.debug("Overlord %s %s redirected to the leader at %s", call.method, call.path, target.host)
    return str(target)


@contextlib.contextmanager
def counting_failures(call: OverlordCall[Any]) -> Iterator[None]:
    """Count an attempt of ``call`` that fails before it has a final answer: a retried answer (429, 5xx),
    a connection failure, a timeout, a certificate that cannot be verified, a refused redirect."""
    try:
        yield
    except TransientAnswer as exc:
        metrics.count_overlord_request_error(call.endpoint, str(exc.answer.status))
        raise
    except httpx.TimeoutException:
        metrics.count_overlord_request_error(call.endpoint, metrics.TIMEOUT)
        raise
    except httpx.TransportError as exc:
        kind = metrics.TLS_ERROR if _is_tls_failure(exc) else metrics.CONNECTION_ERROR
        metrics.count_overlord_request_error(call.endpoint, kind)
        raise
    except OverlordApiError as exc:
        metrics.count_overlord_request_error(call.endpoint, str(exc.status))
        raise


def read_answer(call: OverlordCall[T], answer: OverlordAnswer) -> T:
    """``call.read(answer)``, counting an answer it refuses (by its HTTP status, or ``invalid_answer`` for
    one that is not Druid's JSON or shape); ``entryAlreadyExists`` is no failure."""
    try:
        return call.read(answer)
    except TaskAlreadySubmitted:
        raise
    except OverlordAnswerUnreadable:
        metrics.count_overlord_request_error(call.endpoint, metrics.INVALID_ANSWER)
        raise
    except OverlordApiError:
        metrics.count_overlord_request_error(call.endpoint, str(answer.status))
        raise
