"""The blocking client under :class:`~druid_k8s_provider.hooks.druid_k8s.DruidK8sHook`: the cncf connection
(without a proxy if asked), one API call with retries, and failures turned into errors that explain."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from kubernetes.client import ApiClient as SyncApiClient
from kubernetes.client.exceptions import ApiException as SyncApiException

from druid_k8s_provider.errors import DruidK8sTaskError
from druid_k8s_provider.hooks.k8s_api import AUTH_SETTINGS
from druid_k8s_provider.hooks.k8s_errors import (
    CONNECTION_ERRORS,
    ApiCallFailed,
    translate_failure,
    undefined_connection,
)
from druid_k8s_provider.hooks.k8s_retry import RetryPolicy

_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
_EXPLAINABLE: tuple[type[BaseException], ...] = (ApiCallFailed, *CONNECTION_ERRORS)


class KubeClientHook(KubernetesHook):
    """The connection, the call and the error handling of the blocking hook (parameters: see DruidK8sHook)."""

    def __init__(
        self,
        kubernetes_conn_id: str = "kubernetes_default",
        namespace: str | None = None,
        disable_client_proxy: bool = False,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(conn_id=kubernetes_conn_id)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.default_namespace = namespace
        self.disable_client_proxy = disable_client_proxy
        self.retry_policy = retry_policy or RetryPolicy()

    # -- client ------------------------------------------------------------------------------------

    def get_conn(self) -> SyncApiClient:
        """The cncf client, rebuilt without a proxy when ``disable_client_proxy`` is set."""
        try:
            api = super().get_conn()
        except AirflowNotFoundException:
            raise undefined_connection(self.kubernetes_conn_id) from None
        if self.disable_client_proxy and api.configuration.proxy:
            configuration = api.configuration
            configuration.proxy = None
            configuration.no_proxy = None
            api.close()
            api = type(api)(configuration=configuration)
        return api

    def resolve_namespace(self, namespace: str | None) -> str:
        """The namespace to use: the argument, the hook's, the connection's, or ``default``."""
        return namespace or self.default_namespace or self.get_namespace() or "default"

    def _request_once(
        self, method: str, path: str, query: Mapping[str, Any] | None, body: Any, timeout: float
    ) -> Any:
        try:
            response = self.api_client.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=dict(_JSON_HEADERS),
                body=body,
                auth_settings=AUTH_SETTINGS,
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=timeout,
            )
        except SyncApiException as exc:
            raise ApiCallFailed.from_response(exc.status or 0, exc.reason, exc.body, exc.headers) from None
        data = response.data
        return json.loads(data) if data else None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float = 60.0,
    ) -> Any:
        """One API call with retries on transient failures; raises :class:`ApiCallFailed` otherwise."""
        for attempt in self.retry_policy.sync(f"{method} {path}"):
            with attempt:
                return self._request_once(method, path, query, body, timeout)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    @contextlib.contextmanager
    def _explained(
        self, action: str, *, task_id: str | None = None, job_name: str | None = None
    ) -> Iterator[None]:
        try:
            yield
        except DruidK8sTaskError:
            raise
        except _EXPLAINABLE as exc:
            raise translate_failure(
                exc, action, conn_id=self.kubernetes_conn_id, task_id=task_id, job_name=job_name
            ) from exc

    def _read_text(self, path: str, query: Mapping[str, Any]) -> str:
        for attempt in self.retry_policy.sync(f"GET {path}"):
            with attempt:
                try:
                    response = self.api_client.call_api(
                        path,
                        "GET",
                        query_params=list(query.items()),
                        header_params={"Accept": "*/*"},
                        auth_settings=AUTH_SETTINGS,
                        _preload_content=False,
                        _return_http_data_only=True,
                        _request_timeout=60.0,
                    )
                except SyncApiException as exc:
                    raise ApiCallFailed.from_response(
                        exc.status or 0, exc.reason, exc.body, exc.headers
                    ) from None
                return str(response.data.decode("utf-8", "replace"))
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
