"""The coroutine counterpart of the Kubernetes hook: :class:`DruidK8sAsyncHook` (one shared client per
connection and event loop) and :class:`AsyncKubeSession`, the API calls over an open client: requests with
retries, watches, log streams, Job patch and delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from kubernetes_asyncio.client import ApiClient as AsyncApiClient

from druid_k8s_provider.hooks.k8s_api import (
    AUTH_SETTINGS,
    MERGE_PATCH,
    events_about,
    events_path,
    events_query,
    jobs_path,
    pods_path,
)
from druid_k8s_provider.hooks.k8s_errors import ApiCallFailed, undefined_connection
from druid_k8s_provider.hooks.k8s_retry import RetryPolicy

log = logging.getLogger(__name__)

#: Objects per request of a list (``limit``), as client-go's reflector and pager list.
LIST_PAGE_SIZE = 500


class DruidK8sAsyncHook(AsyncKubernetesHook):
    """Coroutine counterpart for the trigger (and the operator's in-process wait): watches and log streams.

    Use :meth:`session` to hold one HTTP client for a series of calls.
    """

    def __init__(
        self,
        kubernetes_conn_id: str = "kubernetes_default",
        disable_client_proxy: bool = False,
        retry_policy: RetryPolicy | None = None,
        connection_extras: dict[str, Any] | None = None,
    ) -> None:
        # Extras handed over by a worker that already read the connection spare an async lookup.
        super().__init__(conn_id=kubernetes_conn_id, connection_extras=connection_extras)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.disable_client_proxy = disable_client_proxy
        self.retry_policy = retry_policy or RetryPolicy()

    @contextlib.asynccontextmanager
    async def session(self, retry_policy: RetryPolicy | None = None) -> AsyncIterator[AsyncKubeSession]:
        """An open client for a series of calls (shared, see :meth:`_client`), retrying as ``retry_policy``
        says (default: the hook's)."""
        try:
            await self.get_conn_extras()
        except AirflowNotFoundException:
            raise undefined_connection(self.kubernetes_conn_id) from None
        async with self._client() as api:
            yield AsyncKubeSession(api, retry_policy or self.retry_policy, self.kubernetes_conn_id)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[AsyncApiClient]:
        """One client per (connection, proxy setting, event loop), shared by every waiter and watch.

        Building a client loads the CA bundle into a new SSL context (tens of milliseconds of CPU on the
        event loop); a triggerer with a thousand deferred tasks would spend most of a minute doing only that.
        Its connection pool is unbounded: every waiter may hold a log stream open. With exec-plugin
        credentials (EKS, GKE), whose tokens expire, each session gets a fresh client, as the cncf hook does.
        """
        key = (self.kubernetes_conn_id, self.disable_client_proxy)
        clients = _SHARED_CLIENTS.setdefault(asyncio.get_running_loop(), {})
        shared = clients.get(key)
        if shared is None:
            await self._load_config()  # type: ignore[no-untyped-call]
            if self._is_exec_auth:
                async with self.get_conn() as fresh:
                    self._ignore_proxy(fresh)
                    yield fresh
                return
            shared = clients.get(key)  # another waiter may have built it while the config loaded
            if shared is None:
                assert self.client_configuration is not None
                self.client_configuration.connection_pool_maxsize = 0  # aiohttp: no limit
                shared = _SharedClient(AsyncApiClient(configuration=self.client_configuration))
                clients[key] = shared
                self._ignore_proxy(shared.api)
        shared.users += 1
        try:
            yield shared.api
        finally:
            shared.users -= 1
            if shared.users == 0 and clients.get(key) is shared:
                del clients[key]
                await shared.api.close()

    def _ignore_proxy(self, api: AsyncApiClient) -> None:
        if self.disable_client_proxy:
            api.rest_client.proxy = None  # type: ignore[assignment]
            # kubernetes_asyncio always builds its aiohttp session with trust_env=True, which reads
            # HTTP(S)_PROXY on every request; turning it off is the only way to ignore them.
            api.rest_client.pool_manager._trust_env = False


@dataclass(eq=False)
class _SharedClient:
    api: AsyncApiClient
    users: int = 0


_SHARED_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, bool], _SharedClient]
] = weakref.WeakKeyDictionary()


class AsyncKubeSession:
    """API calls over one open async client; see :class:`DruidK8sAsyncHook`."""

    def __init__(self, api: AsyncApiClient, retry_policy: RetryPolicy, conn_id: str) -> None:
        self.api = api
        self.retry_policy = retry_policy
        self.conn_id = conn_id

    async def _open(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        timeout: aiohttp.ClientTimeout,
        accept: str = "application/json",
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=AUTH_SETTINGS,
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        if not 200 <= response.status <= 299:
            try:
                body_bytes = await response.read()
            finally:
                response.release()
            raise ApiCallFailed.from_response(response.status, response.reason, body_bytes, response.headers)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call with retries on transient failures; raises :class:`ApiCallFailed` otherwise."""
        async for attempt in self.retry_policy.asynchronous(f"{method} {path}"):
            with attempt:
                timeout = aiohttp.ClientTimeout(total=60)
                response = await self._open(method, path, query, body, timeout, content_type=content_type)
                try:
                    data = await response.read()
                finally:
                    response.release()
                return json.loads(data) if data else None
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def get(self, path: str) -> dict[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            return dict(await self.request("GET", path))
        except ApiCallFailed as exc:
            if exc.status == 404:
                return None
            raise

    async def list_objects(
        self,
        path: str,
        selector: str,
        field_selector: str | None = None,
        *,
        page_size: int | None = None,
        on_page: Callable[[], None] | None = None,
        view: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """(items, resourceVersion) of a collection filtered by a label (and field) selector.

        Listed ``page_size`` (default :data:`LIST_PAGE_SIZE`) objects a request (``limit``/``continue``, as
        client-go's reflector lists), so a namespace of ten thousand peons is never one request of tens of
        megabytes that a busy API server cannot answer within the request timeout. Every page of a paged
        list is served from the same snapshot, so the resourceVersion returned is the list's (the first
        page's ``metadata``), the one to start a watch from. A continue token the server no longer honours
        (``410 Expired``: etcd compacted past it, every five minutes on a real cluster) starts the list again
        from the beginning. ``on_page`` is called after every page received (a watch counts them as signs of
        life); ``view`` turns each item into what the caller keeps as its page comes in, so a list of
        thousands of objects never holds them all whole. Raises :class:`ApiCallFailed` as :meth:`request`
        does.
        """
        query: dict[str, Any] = {"labelSelector": selector, "limit": page_size or LIST_PAGE_SIZE}
        if field_selector:
            query["fieldSelector"] = field_selector
        items: list[dict[str, Any]] = []
        resource_version = ""
        continue_token = ""
        while True:
            paged = {**query, "continue": continue_token} if continue_token else query
            try:
                page = await self.request("GET", path, query=paged)
            except ApiCallFailed as exc:
                if exc.status != 410 or not continue_token:
                    raise
                log.info("The paged list of %s expired (410); listing again from the start", path)
                items, resource_version, continue_token = [], "", ""
                continue
            metadata = page.get("metadata") or {}
            listed = page.get("items") or ()
            items.extend(map(view, listed) if view is not None else listed)
            resource_version = resource_version or str(metadata.get("resourceVersion") or "")
            if on_page is not None:
                on_page()
            continue_token = str(metadata.get("continue") or "")
            if not continue_token:
                return items, resource_version

    async def watch(
        self,
        path: str,
        selector: str,
        resource_version: str,
        timeout_seconds: int,
        field_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) from a resourceVersion, with bookmarks, until the server
        ends the stream. Not retried here: the caller resumes or relists."""
        query: dict[str, Any] = {
            "labelSelector": selector,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        if field_selector:
            query["fieldSelector"] = field_selector
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + 15, sock_connect=10)
        response = await self._open("GET", path, query, None, timeout)
        try:
            async for raw in response.content:
                if raw.strip():
                    yield json.loads(raw)
        finally:
            response.release()

    async def follow_log(
        self, pod_name: str, namespace: str, container: str, since_time: str | None, follow: bool = True
    ) -> AsyncIterator[str]:
        """Lines of a container log (timestamped), following it until the container ends."""
        query: dict[str, Any] = {"container": container, "timestamps": "true", "follow": str(follow).lower()}
        if since_time:
            query["sinceTime"] = since_time
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        response = await self._open(
            "GET", f"{pods_path(namespace, pod_name)}/log", query, None, timeout, "*/*"
        )
        try:
            async for raw in response.content:
                yield raw.decode("utf-8", "replace").rstrip("\r\n")
        finally:
            response.release()

    async def delete_job(self, name: str, namespace: str) -> bool:
        """Delete a Job and (background propagation) its pods; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self.request("DELETE", jobs_path(namespace, name), body=body)
        except ApiCallFailed as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_job(self, name: str, namespace: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply a JSON merge patch (RFC 7386) to a Job; the patched Job, or None when it does not exist.

        Retried like any call (a merge patch is idempotent); a refusal (422 ``field is immutable``) raises
        :class:`ApiCallFailed`.
        """
        try:
            return dict(
                await self.request(
                    "PATCH", jobs_path(namespace, name), body=dict(patch), content_type=MERGE_PATCH
                )
            )
        except ApiCallFailed as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_job_version(self, job: Mapping[str, Any]) -> bool:
        """Delete exactly this version of a Job (preconditions ``uid`` and ``resourceVersion``) and its pods;
        False when it is gone or has changed since it was read (the API server's 404 / 409)."""
        metadata = job["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
            "preconditions": {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]},
        }
        try:
            await self.request("DELETE", jobs_path(metadata["namespace"], metadata["name"]), body=body)
        except ApiCallFailed as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def list_events(self, namespace: str, object_names: list[str]) -> list[dict[str, Any]]:
        """Events about the given objects."""
        events: list[dict[str, Any]] = []
        for name in object_names:
            page = await self.request("GET", events_path(namespace), query=events_query(name))
            events.extend(events_about(name, page))
        return events
