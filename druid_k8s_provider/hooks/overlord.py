"""Every request of the provider to the Druid Overlord: submit, status (single and batched), task lists,
shutdown, reports, log, payload, version, runtime properties.

:class:`DruidOverlordHook` (blocking: the operator before deferral, the sensor, the reaper) and
:class:`DruidOverlordAsyncHook` (the triggerer) read the ``druid_ingest_default`` connection the Apache Druid
provider's users already have (:mod:`druid_k8s_provider.hooks.overlord_connection`) and send the operations
of :mod:`druid_k8s_provider.hooks.overlord_api` over httpx
(:mod:`druid_k8s_provider.hooks.overlord_transport`):

- **Retries.** 503, 429, any other 5xx and connection errors are retried with capped exponential back-off;
  a non-leader's redirect to the leader is followed with the credentials. A retried submit whose first try
  reached the Overlord answers ``entryAlreadyExists``: :class:`TaskAlreadySubmitted` tells the caller to
  re-attach.
- **Clear errors.** Anything else is an :class:`OverlordApiError` naming the connection id, the path, the
  status and Druid's message (read from any of its error shapes, or described when the answer is HTML or
  garbage). A submission answered with something unreadable is checked with the Overlord: a task it
  stored is carried on with, never submitted again.
- **No secrets in logs.** Neither the credentials nor a task JSON (which may hold S3 keys or JDBC passwords)
  are logged; the connection's password and Basic-auth token and the task's credentials are registered
  with the secrets masker and scrubbed from Druid's messages before they reach an error.
- **Metrics.** Every failed attempt counts in ``druid_k8s.overlord.request_errors``
  (:mod:`druid_k8s_provider.metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, TypeVar

import httpx
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from airflow.sdk import BaseHook, conf
from airflow.sdk.log import mask_secret

from druid_k8s_provider.adapters.layout import check_overlord_version
from druid_k8s_provider.errors import DruidK8sConfigError, OverlordAnswerUnreadable, OverlordApiError
from druid_k8s_provider.hooks import overlord_api
from druid_k8s_provider.hooks.overlord_api import OverlordCall, OverlordTaskStatus
from druid_k8s_provider.hooks.overlord_connection import (
    OverlordEndpoint,
    overlord_endpoint,
    undefined_connection,
)
from druid_k8s_provider.hooks.overlord_transport import (
    MAX_REDIRECTS,
    OverlordRetryPolicy,
    TransientAnswer,
    answer_of,
    client_options,
    counting_failures,
    failure_of,
    read_answer,
    redirect_target,
)
from druid_k8s_provider.hooks.secrets import sensitive_values
from druid_k8s_provider.settings import CONFIG_SECTION

T = TypeVar("T")
TaskJson = TypeVar("TaskJson", bound=Mapping[str, Any] | None)

DEFAULT_CONN_ID = "druid_ingest_default"


def _masked(task: TaskJson) -> TaskJson:
    """``task`` (a task JSON or None), after registering its credentials with Airflow's secrets masker, so
    no log line of this process shows them whoever logs them."""
    for value in sensitive_values(task):
        mask_secret(value)
    return task


def _extra_of(conn: Any) -> Mapping[str, Any]:
    """The connection's extras, which must be a JSON object (Airflow would read anything else as no extras
    at all, and an https Overlord's ``ca_bundle_path`` would be silently dropped). Never quoted: extras may
    hold secrets."""
    raw = conn.extra
    if not raw:
        return {}
    try:
        decoded = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        decoded = None
    if not isinstance(decoded, Mapping):
        raise DruidK8sConfigError(
            f"connection {conn.conn_id!r} extra",
            "the extras are not a JSON object",
            'write them as a JSON object, e.g. {"endpoint": "druid/indexer/v1/task", "ca_bundle_path": '
            '"/etc/ssl/druid-ca.pem"}, or leave them empty',
        )
    extra: Mapping[str, Any] = conn.extra_dejson  # registers the values with the secrets masker
    return extra


def _endpoint_of(conn: Any) -> OverlordEndpoint:
    """The validated connection, its password and Basic-auth token registered with the secrets masker."""
    endpoint = overlord_endpoint(
        conn.conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        login=conn.login,
        password=conn.password,
        extra=_extra_of(conn),
        default_console_url=conf.get(CONFIG_SECTION, "console_url", fallback="") or None,
    )
    for secret in endpoint.secrets:
        mask_secret(secret)
    return endpoint


def _stored_or_raise(
    hook: BaseHook,
    unreadable: OverlordAnswerUnreadable,
    task_id: str,
    stored: OverlordTaskStatus | OverlordApiError | None,
) -> str:
    """After a submission whose answer could not be read: ``task_id`` when the Overlord has the task
    (``stored``, its status), else the error saying what the next try does (the Overlord may store the task
    late, or not at all; either way the next try's question decides, and nothing runs twice)."""
    if isinstance(stored, OverlordTaskStatus):
        hook.log.warning(
            "The Overlord's answer to the submission of Druid task %s could not be read (%s), but the "
            "Overlord has the task (%s): going on with it",
            task_id,
            unreadable,
            stored.status_code,
        )
        return task_id
    reason = (
        "the Overlord does not know the task yet"
        if stored is None
        else f"asking for the task's status failed too: {stored}"
    )
    raise OverlordAnswerUnreadable(
        f"{unreadable} ({reason}; the next try of the Airflow task asks the Overlord about Druid task "
        f"{task_id!r} and re-attaches to it if it was stored, or submits it if not: it never runs twice)",
        conn_id=unreadable.conn_id,
        path=unreadable.path,
        status=unreadable.status,
        druid_message=unreadable.druid_message,
        task_id=task_id,
    ) from None


class _OverlordHook(BaseHook):
    """What both hooks share: the connection names of the Apache Druid provider and the settings.

    :param druid_ingest_conn_id: the Overlord connection (as the Apache Druid provider's ``DruidHook``).
    :param timeout: seconds to wait for one request's answer.
    :param retry_policy: how transient failures are retried.
    """

    conn_name_attr = "druid_ingest_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "druid"

    def __init__(
        self,
        druid_ingest_conn_id: str = DEFAULT_CONN_ID,
        timeout: float = 30.0,
        retry_policy: OverlordRetryPolicy | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(druid_ingest_conn_id, str) or not druid_ingest_conn_id.strip():
            raise DruidK8sConfigError(
                "druid_ingest_conn_id",
                f"{druid_ingest_conn_id!r} is not the id of an Airflow connection",
                "give the id of the Overlord's connection as a string, e.g. 'druid_ingest_default', or "
                "leave it out for the [druid_k8s] druid_ingest_conn_id option (default druid_ingest_default)",
            )
        self.druid_ingest_conn_id = druid_ingest_conn_id
        self.timeout = timeout
        self.retry_policy = retry_policy or OverlordRetryPolicy()


class DruidOverlordHook(_OverlordHook):
    """Blocking requests to the Druid Overlord (the operator before deferral, the sensor, the reaper).

    Arguments: ``druid_ingest_conn_id`` (default ``druid_ingest_default``), ``timeout`` (seconds per
    request), ``retry_policy``. The connection is read and validated on the first request (a
    :class:`DruidK8sConfigError` names a bad field). Use it as a context manager, or call :meth:`close`
    when done.
    """

    hook_name = "Druid Overlord"
    _client: httpx.Client | None = None

    @cached_property
    def endpoint(self) -> OverlordEndpoint:
        """The validated connection (raises DruidK8sConfigError naming the bad field)."""
        try:
            conn = self.get_connection(self.druid_ingest_conn_id)
        except AirflowNotFoundException:
            raise undefined_connection(self.druid_ingest_conn_id) from None
        return _endpoint_of(conn)

    def get_conn(self) -> httpx.Client:
        """The pooled HTTP client (Basic auth, CA bundle and timeout of the connection)."""
        if self._client is None:
            self._client = httpx.Client(**client_options(self.endpoint, self.timeout))
        return self._client

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DruidOverlordHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, call: OverlordCall[T]) -> T:
        """Send one operation of :mod:`~druid_k8s_provider.hooks.overlord_api`, retrying what heals."""
        endpoint, client = self.endpoint, self.get_conn()
        try:
            for attempt in self.retry_policy.sync(endpoint.conn_id, call):
                with attempt, counting_failures(call):
                    url = endpoint.url(call.path)
                    response = client.request(call.method, url, params=call.params, json=call.body)
                    for _ in range(MAX_REDIRECTS):
                        leader = redirect_target(endpoint, call, response)
                        if leader is None:
                            break
                        response = client.request(call.method, leader, json=call.body)
                    answer = answer_of(endpoint, call, response)
        except (TransientAnswer, httpx.TransportError) as exc:
            raise failure_of(endpoint, call, exc) from None
        return read_answer(call, answer)

    def submit_task(self, task: Mapping[str, Any]) -> str:
        """Submit a task; the id it was accepted under. Its credentials are registered with the secrets
        masker first. Raises TaskAlreadySubmitted when the Overlord already has the id.

        An accepting answer that cannot be read (a proxy's page, garbage) may still mean the Overlord stored
        the task: its status is asked once; a task it knows is carried on with (the id is returned), else
        the :class:`OverlordAnswerUnreadable` says what the next try does.
        """
        call = overlord_api.submit_task(_masked(task))
        try:
            return self.run(call)
        except OverlordAnswerUnreadable as unreadable:
            if call.task_id is None:
                raise
            try:
                stored: OverlordTaskStatus | OverlordApiError | None = self.task_status(call.task_id)
            except OverlordApiError as also:
                stored = also
            return _stored_or_raise(self, unreadable, call.task_id, stored)

    def task_status(self, task_id: str) -> OverlordTaskStatus | None:
        """One task's status with its runner status; None when the Overlord does not know the id."""
        return self.run(overlord_api.task_status(task_id))

    def task_statuses(self, task_ids: Sequence[str]) -> dict[str, OverlordTaskStatus]:
        """The statuses of the known ids among ``task_ids``, in one request (none for an empty list)."""
        return self.run(overlord_api.task_statuses(task_ids)) if task_ids else {}

    def tasks(self, state: str, data_source: str | None = None) -> list[OverlordTaskStatus]:
        """The tasks in ``state`` (waiting / pending / running / complete), optionally of one datasource."""
        return self.run(overlord_api.tasks(state, data_source))

    def shutdown_task(self, task_id: str) -> bool:
        """Ask the Overlord to stop a task; False when it does not know the id."""
        return self.run(overlord_api.shutdown_task(task_id))

    def task_report(self, task_id: str) -> dict[str, Any] | None:
        """The task's reports (``ingestionStatsAndErrors``); None until there are any."""
        return self.run(overlord_api.task_report(task_id))

    def task_log(self, task_id: str, offset: int = 0) -> str | None:
        """The task's log from byte ``offset`` (honoured once the task has completed); None if none yet."""
        return self.run(overlord_api.task_log(task_id, offset))

    def task_payload(self, task_id: str) -> dict[str, Any] | None:
        """The task JSON the Overlord holds, its credentials registered with the secrets masker; None if
        unknown."""
        return _masked(self.run(overlord_api.task_payload(task_id)))

    def overlord_version(self) -> str | None:
        """The Overlord's Druid version as ``GET /status`` reports it (may be None or not plain X.Y.Z).

        A plain version before 30.0.0 is refused (:class:`DruidK8sConfigError` naming the Overlord's
        version as the field): no older release runs the Jobs this provider follows.
        """
        return check_overlord_version(self.run(overlord_api.overlord_version()))

    def runtime_properties(self) -> dict[str, str]:
        """The Overlord's runtime properties (``GET /status/properties``, CONFIG READ); never log them."""
        return self.run(overlord_api.runtime_properties())


class DruidOverlordAsyncHook(_OverlordHook):
    """The same requests as :class:`DruidOverlordHook`, as coroutines on one pooled ``httpx.AsyncClient``
    (the triggerer polls every task it waits for with one batched request). Use it as an async context
    manager, or call :meth:`aclose` when done."""

    hook_name = "Druid Overlord (async)"
    _endpoint: OverlordEndpoint | None = None
    _client: httpx.AsyncClient | None = None

    async def get_endpoint(self) -> OverlordEndpoint:
        """The validated connection, read once (raises DruidK8sConfigError naming the bad field)."""
        if self._endpoint is None:
            try:
                conn = await self.aget_connection(self.druid_ingest_conn_id)
            except AirflowNotFoundException:
                raise undefined_connection(self.druid_ingest_conn_id) from None
            self._endpoint = _endpoint_of(conn)
        return self._endpoint

    async def get_conn(self) -> httpx.AsyncClient:
        """The pooled asynchronous HTTP client."""
        if self._client is None:
            self._client = httpx.AsyncClient(**client_options(await self.get_endpoint(), self.timeout))
        return self._client

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> DruidOverlordAsyncHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run(self, call: OverlordCall[T]) -> T:
        """Send one operation of :mod:`~druid_k8s_provider.hooks.overlord_api`, retrying what heals."""
        endpoint, client = await self.get_endpoint(), await self.get_conn()
        try:
            async for attempt in self.retry_policy.asynchronous(endpoint.conn_id, call):
                with attempt, counting_failures(call):
                    url = endpoint.url(call.path)
                    response = await client.request(call.method, url, params=call.params, json=call.body)
                    for _ in range(MAX_REDIRECTS):
                        leader = redirect_target(endpoint, call, response)
                        if leader is None:
                            break
                        response = await client.request(call.method, leader, json=call.body)
                    answer = answer_of(endpoint, call, response)
        except (TransientAnswer, httpx.TransportError) as exc:
            raise failure_of(endpoint, call, exc) from None
        return read_answer(call, answer)

    async def submit_task(self, task: Mapping[str, Any]) -> str:
        """See :meth:`DruidOverlordHook.submit_task`."""
        call = overlord_api.submit_task(_masked(task))
        try:
            return await self.run(call)
        except OverlordAnswerUnreadable as unreadable:
            if call.task_id is None:
                raise
            try:
                stored: OverlordTaskStatus | OverlordApiError | None = await self.task_status(call.task_id)
            except OverlordApiError as also:
                stored = also
            return _stored_or_raise(self, unreadable, call.task_id, stored)

    async def task_status(self, task_id: str) -> OverlordTaskStatus | None:
        """See :meth:`DruidOverlordHook.task_status`."""
        return await self.run(overlord_api.task_status(task_id))

    async def task_statuses(self, task_ids: Sequence[str]) -> dict[str, OverlordTaskStatus]:
        """See :meth:`DruidOverlordHook.task_statuses`."""
        return await self.run(overlord_api.task_statuses(task_ids)) if task_ids else {}

    async def tasks(self, state: str, data_source: str | None = None) -> list[OverlordTaskStatus]:
        """See :meth:`DruidOverlordHook.tasks`."""
        return await self.run(overlord_api.tasks(state, data_source))

    async def shutdown_task(self, task_id: str) -> bool:
        """See :meth:`DruidOverlordHook.shutdown_task`."""
        return await self.run(overlord_api.shutdown_task(task_id))

    async def task_report(self, task_id: str) -> dict[str, Any] | None:
        """See :meth:`DruidOverlordHook.task_report`."""
        return await self.run(overlord_api.task_report(task_id))

    async def task_log(self, task_id: str, offset: int = 0) -> str | None:
        """See :meth:`DruidOverlordHook.task_log`."""
        return await self.run(overlord_api.task_log(task_id, offset))

    async def task_payload(self, task_id: str) -> dict[str, Any] | None:
        """See :meth:`DruidOverlordHook.task_payload`."""
        return _masked(await self.run(overlord_api.task_payload(task_id)))

    async def overlord_version(self) -> str | None:
        """See :meth:`DruidOverlordHook.overlord_version`."""
        return check_overlord_version(await self.run(overlord_api.overlord_version()))

    async def runtime_properties(self) -> dict[str, str]:
        """See :meth:`DruidOverlordHook.runtime_properties`."""
        return await self.run(overlord_api.runtime_properties())
