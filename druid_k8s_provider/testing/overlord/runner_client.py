"""The Overlord runner's Kubernetes client and the state it keeps of the tasks it runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import MAIN_CONTAINER_NAME
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.queue import PENDING

#: How long a request failing with a 429, a 5xx or a dropped connection is retried (an API server outage).
_API_RETRY_SECONDS = 120.0
_LOG_PUSH_TRIES = 20

#: ``(task id, status code, duration ms, errorMsg)``: the runner's outcome of a task.
OutcomeCallback = Callable[[str, str, int, str | None], Awaitable[None]]


@dataclass
class WorkItem:
    """A task the runner knows: launched by it, or joined from an existing Job."""

    task: DruidTask
    job_name: str
    state: str = PENDING
    location: dict[str, Any] = field(default_factory=lambda: {"host": None, "port": -1, "tlsPort": -1})
    pod_name: str | None = None
    lifecycle: asyncio.Task[None] | None = None


class RunnerClient:
    """The runner's settings, its tasks, and its calls to the Kubernetes API (retried through an outage)."""

    def __init__(
        self,
        *,
        kubeconfig_path: str,
        config: RunnerConfig,
        restore_labels: Mapping[str, str],
        overlord_pod: tuple[str, str],
        task_log_dir: Path,
        join_existing_jobs: bool,
        druid_version: str | None,
        on_outcome: OutcomeCallback,
        overlord_log: Callable[[str], None],
        pod_lookup_scale: float,
        poll_interval: float,
    ) -> None:
        self.config = config
        self._kubeconfig_path = kubeconfig_path
        self._restore_labels = dict(restore_labels)
        self._overlord_pod = overlord_pod
        self._task_log_dir = task_log_dir
        self._join_existing_jobs = join_existing_jobs
        self._druid_version = druid_version
        self._on_outcome = on_outcome
        self._log = overlord_log
        self._pod_lookup_scale = pod_lookup_scale
        self._poll_interval = poll_interval
        self.items: dict[str, WorkItem] = {}
        self._slots = asyncio.Semaphore(config.capacity)
        self._api: k8s.ApiClient | None = None

    # ------------------------------------------------------------------ client

    async def open(self) -> None:
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(
            config_file=self._kubeconfig_path, client_configuration=configuration
        )
        self._api = k8s.ApiClient(configuration)
        self._api.rest_client.pool_manager._trust_env = False  # the emulator is on loopback: no proxy

    async def close(self) -> None:
        """Forget every task without touching its Job (the Overlord process ends)."""
        for item in list(self.items.values()):
            await cancel_and_wait(item.lifecycle)
        self.items.clear()
        if self._api is not None:
            await self._api.close()
            self._api = None

    @property
    def _batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self._api)

    @property
    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._api)

    async def _read(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """The JSON of a raw (``_preload_content=False``) call; ApiException for a non-2xx answer. A 429, a
        5xx or a dropped connection is retried every poll interval for up to :data:`_API_RETRY_SECONDS`,
        as Druid's Kubernetes client retries with back-off."""
        deadline = asyncio.get_running_loop().time() + _API_RETRY_SECONDS
        while True:
            try:
                response = await call()
                try:
                    if not 200 <= response.status <= 299:
                        raise ApiException(status=response.status, reason=response.reason)
                    return await response.json()
                finally:
                    response.release()
            except (ApiException, aiohttp.ClientError, TimeoutError) as error:
                status = getattr(error, "status", None)
                transient = not isinstance(error, ApiException) or status == 429 or (status or 0) >= 500
                if not transient or asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(self._poll_interval)

    async def live_log(self, task_id: str) -> str | None:
        """The whole log of the task's running pod (container ``main``), or None when there is no pod."""
        item = self.items.get(task_id)
        if item is None or item.pod_name is None:
            return None
        try:
            text = await self._core.read_namespaced_pod_log(
                item.pod_name, self.config.namespace, container=MAIN_CONTAINER_NAME
            )
        except (ApiException, aiohttp.ClientError, TimeoutError):
            return None
        return str(text)

    async def _delete_job(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            await self._read(
                lambda: self._batch.delete_namespaced_job(
                    name, self.config.namespace, propagation_policy="Background", _preload_content=False
                )
            )


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (unless it is done or the current task) and wait until it ended."""
    if task is None or task.done() or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
