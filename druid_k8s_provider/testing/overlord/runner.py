"""The Overlord's Kubernetes task runner, against the Kubernetes emulator's real HTTP API.

What it does, as apache/druid's ``KubernetesTaskRunner`` / ``KubernetesPeonLifecycle`` /
``DirectKubernetesPeonClient`` do (spec ``druid-overlord.md`` section 4):

- :meth:`KubernetesRunner.run`: at most ``capacity`` tasks are launched at once, the others stay PENDING.
  A launch builds the Job with the project's own :func:`~druid_k8s_provider.job_builder.build_job` from the
  Overlord pod and the runner properties and creates it. If the Job already exists, Druid before 35.0.0
  fails the task on the create's 409 (and deletes that Job when shutting the task down); 35.0.0 and later
  (apache/druid PR 18406) join the existing Job instead.
- The pod is looked up at most 10 times with exponential back-off (1 s doubling, at most 60 s: about four
  minutes, times ``pod_lookup_scale``), then the pod must get an IP within ``K8sjobLaunchTimeout``; either
  failing fails the task with Druid's generic "Failed to run task. See overlord logs for more details."
  while the Overlord's log says why (pod not found, or the Job's latest event).
- The outcome is read only from ``<task-log dir>/<task id>.status.json``; absent: FAILED "Peon did not
  report status successfully.". The pod's log is pushed to ``<task id>.log``; the Job is deleted at
  completion unless ``debugJobs``.
- :meth:`restore` (a new leader) lists the Jobs labelled ``druid.k8s.peons`` and joins each one whose task
  it can read back from the Job (``TASK_JSON`` of container ``main``, or the ``task`` annotation).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from druid_k8s_provider import naming
from druid_k8s_provider.config import CUSTOM_TEMPLATE_ADAPTER, RunnerConfig
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.job_builder import (
    MAIN_CONTAINER_NAME,
    PEON_PORT,
    PEON_TLS_PORT,
    build_job,
    load_pod_template,
    peon_job_name,
)
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.jobs import job_finish_time, job_finished, read_task_from_job
from druid_k8s_provider.testing.overlord.queue import PENDING, RUNNING

log = logging.getLogger(__name__)

GENERIC_FAILURE = "Failed to run task. See overlord logs for more details."
NO_STATUS_FAILURE = "Peon did not report status successfully."
#: First Druid release whose runner joins an existing Job instead of failing on the 409 (PR 18406).
JOIN_EXISTING_JOB_SINCE = (35, 0, 0)
POD_LOOKUP_TRIES = 10
_POD_LOOKUP_BASE_SECONDS = 1.0
_POD_LOOKUP_MAX_SECONDS = 60.0
#: How long a request failing with a 429, a 5xx or a dropped connection is retried (an API server outage).
_API_RETRY_SECONDS = 120.0
_LOG_PUSH_TRIES = 20

#: ``(task id, status code, duration ms, errorMsg)``: the runner's outcome of a task.
OutcomeCallback = Callable[[str, str, int, str | None], Awaitable[None]]


def pod_lookup_delays(scale: float = 1.0) -> list[float]:
    """Seconds slept between the pod lookups: 1, 2, 4 ... capped at 60 (Druid's ``RetryUtils``), scaled."""
    return [
        min(_POD_LOOKUP_BASE_SECONDS * 2**attempt, _POD_LOOKUP_MAX_SECONDS) * scale
        for attempt in range(POD_LOOKUP_TRIES - 1)
    ]


class LaunchFailed(Exception):
    """The runner gave up on a task; the message is what the Overlord logs (the task gets the generic one)."""


@dataclass
class WorkItem:
    """A task the runner knows: launched by it, or joined from an existing Job."""

    task: DruidTask
    job_name: str
    state: str = PENDING
    location: dict[str, Any] = field(default_factory=lambda: {"host": None, "port": -1, "tlsPort": -1})
    pod_name: str | None = None
    lifecycle: asyncio.Task[None] | None = None


class KubernetesRunner:
    """Runs tasks as Jobs in the emulated cluster; reports each outcome through ``on_outcome``."""

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
            await _cancelled(item.lifecycle)
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

    # ------------------------------------------------------------------ tasks

    def _job_name(self, task: DruidTask) -> str:
        """The name this Druid version gives the task's Job (``k8sTaskPodNamePrefix`` from 33.0.0 on)."""
        return peon_job_name(task.id, self.config, druid_version=self._druid_version)

    def run(self, task: DruidTask) -> WorkItem:
        """Hand a ready task to the runner: PENDING until a slot is free and its pod is up."""
        item = WorkItem(task, self._job_name(task))
        self.items[task.id] = item
        item.lifecycle = asyncio.create_task(self._lifecycle(item, join=False), name=f"peon-{task.id}")
        return item

    def join(self, task: DruidTask, job_name: str) -> WorkItem:
        """Take over a task whose Job exists (restore): no create, wait for its pod and its end."""
        item = WorkItem(task, job_name)
        self.items[task.id] = item
        item.lifecycle = asyncio.create_task(self._lifecycle(item, join=True), name=f"peon-{task.id}")
        return item

    async def shutdown(self, task_id: str) -> None:
        """Stop following the task and delete its Job (``KubernetesPeonLifecycle.shutdown``)."""
        item = self.items.pop(task_id, None)
        if item is None:
            return
        await _cancelled(item.lifecycle)
        await self._delete_job(item.job_name)

    async def restore(self) -> list[tuple[DruidTask, str]]:
        """(task, Job name) of the labelled Jobs in the runner's namespace; unreadable Jobs are logged."""
        selector = ",".join(
            [naming.PEON_LABEL, *(f"{key}={value}" for key, value in self._restore_labels.items())]
        )
        listed = await self._read(
            lambda: self._batch.list_namespaced_job(
                self.config.namespace, label_selector=selector, _preload_content=False
            )
        )
        tasks = []
        for job in listed.get("items") or []:
            name = job["metadata"]["name"]
            try:
                tasks.append((read_task_from_job(job), name))
            except ValueError as error:
                self._log(f"ERROR Failed to restore task from Job[{name}] at startup: {error}")
        return tasks

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

    async def delete_finished_jobs_older_than(self, seconds: float, now: float) -> list[str]:
        """Delete labelled Jobs that finished more than ``seconds`` ago (the runner's cleanup thread)."""
        listed = await self._read(
            lambda: self._batch.list_namespaced_job(
                self.config.namespace, label_selector=naming.PEON_LABEL, _preload_content=False
            )
        )
        deleted = []
        for job in listed.get("items") or []:
            finished = job_finish_time(job)
            if finished is not None and now - finished > seconds:
                await self._delete_job(job["metadata"]["name"])
                deleted.append(job["metadata"]["name"])
        return deleted

    # ------------------------------------------------------------------ one task's life

    async def _lifecycle(self, item: WorkItem, *, join: bool) -> None:
        task_id = item.task.id
        async with self._slots:
            try:
                if not join:
                    await self._launch(item)
                await self._wait_until_started(item)
                await self._wait_until_finished(item)
            except LaunchFailed as error:
                self._log(f"ERROR Task [{task_id}] failed to run: {error}")
                await self._delete_job(item.job_name)
                await self._finish(task_id, "FAILED", -1, GENERIC_FAILURE)
                return
            await self._save_log(item)
            status = self._status_file(task_id)
            if not self.config.debug_jobs:
                await self._delete_job(item.job_name)
            if status is None:
                await self._finish(task_id, "FAILED", -1, NO_STATUS_FAILURE)
            else:
                duration = status.get("duration")
                await self._finish(
                    task_id,
                    str(status.get("status") or status.get("statusCode") or "FAILED"),
                    duration if isinstance(duration, int) else -1,
                    status.get("errorMsg"),
                )

    async def _finish(self, task_id: str, status_code: str, duration: int, error_msg: str | None) -> None:
        self.items.pop(task_id, None)
        await self._on_outcome(task_id, status_code, duration, error_msg)

    async def _template(self, task: DruidTask) -> dict[str, Any]:
        """The pod template file the pod template adapter reads, else the Overlord's own pod."""
        if self.config.adapter_type == CUSTOM_TEMPLATE_ADAPTER:
            return load_pod_template(self.config, task)
        namespace, pod_name = self._overlord_pod
        return cast(
            dict[str, Any],
            await self._read(
                lambda: self._core.read_namespaced_pod(pod_name, namespace, _preload_content=False)
            ),
        )

    async def _launch(self, item: WorkItem) -> None:
        try:
            job = build_job(
                item.task, await self._template(item.task), self.config, druid_version=self._druid_version
            )
        except DruidK8sConfigError as error:
            # Druid's adapter throws and the runner fails the task; nothing was created.
            raise LaunchFailed(f"building the Job failed: {error}") from error
        try:
            await self._read(
                lambda: self._batch.create_namespaced_job(
                    self.config.namespace, cast(Any, job), _preload_content=False
                )
            )
        except ApiException as error:
            if error.status != 409:
                raise LaunchFailed(
                    f"creating Job[{item.job_name}] failed: {error.status} {error.reason}"
                ) from error
            if not self._join_existing_jobs:
                raise LaunchFailed(f"Job[{item.job_name}] already exists (409 Conflict)") from error
            self._log(f"INFO Job[{item.job_name}] for task[{item.task.id}] already exists: joining it")
            return
        self._log(f"INFO Created Job[{item.job_name}] for task[{item.task.id}]")

    async def _wait_until_started(self, item: WorkItem) -> None:
        pod = await self._find_pod(item)
        deadline = asyncio.get_running_loop().time() + self.config.k8s_job_launch_timeout.total_seconds()
        while not (pod.get("status") or {}).get("podIP"):
            if asyncio.get_running_loop().time() > deadline:
                raise LaunchFailed(
                    f"pod [{pod['metadata']['name']}] got no IP within "
                    f"{self.config.k8s_job_launch_timeout.total_seconds():g} s (K8sjobLaunchTimeout)"
                )
            await asyncio.sleep(self._poll_interval)
            name = str(pod["metadata"]["name"])
            try:
                pod = await self._read(
                    functools.partial(
                        self._core.read_namespaced_pod, name, self.config.namespace, _preload_content=False
                    )
                )
            except ApiException as error:
                raise LaunchFailed(f"pod [{pod['metadata']['name']}] disappeared ({error.status})") from error
        item.pod_name = pod["metadata"]["name"]
        item.state = RUNNING
        # TaskLocation.create(podIP, 8100, 8091, tls, podName): one of the ports is -1; k8sPodName is set.
        tls = self.config.enable_tls_port
        item.location = {
            "host": pod["status"]["podIP"],
            "port": -1 if tls else PEON_PORT,
            "tlsPort": PEON_TLS_PORT if tls else -1,
            "k8sPodName": item.pod_name,
        }
        self._log(f"INFO Task [{item.task.id}] is running in pod [{item.pod_name}]")

    async def _find_pod(self, item: WorkItem) -> dict[str, Any]:
        """The Job's pod: :data:`POD_LOOKUP_TRIES` lookups with back-off (``getPeonPodWithRetries``)."""
        delays = pod_lookup_delays(self._pod_lookup_scale)
        for attempt in range(POD_LOOKUP_TRIES):
            listed = await self._read(
                lambda: self._core.list_namespaced_pod(
                    self.config.namespace, label_selector=f"job-name={item.job_name}", _preload_content=False
                )
            )
            if listed.get("items"):
                return dict(listed["items"][0])
            if attempt < len(delays):
                await asyncio.sleep(delays[attempt])
        raise LaunchFailed(
            f"no pod of Job[{item.job_name}] after {POD_LOOKUP_TRIES} lookups: {await self._why_no_pod(item)}"
        )

    async def _why_no_pod(self, item: WorkItem) -> str:
        events = await self._read(
            lambda: self._core.list_namespaced_event(
                self.config.namespace,
                field_selector=f"involvedObject.name={item.job_name}",
                _preload_content=False,
            )
        )
        messages = [event.get("message") for event in events.get("items") or [] if event.get("message")]
        return f"the Job's latest event: {messages[-1]}" if messages else "pod not found"

    async def _wait_until_finished(self, item: WorkItem) -> None:
        while True:
            try:
                job = await self._read(
                    lambda: self._batch.read_namespaced_job(
                        item.job_name, self.config.namespace, _preload_content=False
                    )
                )
            except ApiException as error:
                if error.status == 404:
                    self._log(f"WARN Job[{item.job_name}] of task[{item.task.id}] is gone")
                    return
                raise
            if job_finished(job):
                return
            await asyncio.sleep(self._poll_interval)

    async def _save_log(self, item: WorkItem) -> None:
        """Push the pod's log to the task-log storage, as the Overlord does at the end of a task."""
        text = await self.live_log(item.task.id)
        for _ in range(_LOG_PUSH_TRIES):  # a failed read (an API fault) is tried again, as a push is
            if text is not None:
                break
            await asyncio.sleep(self._poll_interval)
            text = await self.live_log(item.task.id)
        if text is not None:
            self._task_log_dir.mkdir(parents=True, exist_ok=True)
            (self._task_log_dir / f"{item.task.id}.log").write_text(text)

    def _status_file(self, task_id: str) -> dict[str, Any] | None:
        path = self._task_log_dir / f"{task_id}.status.json"
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    async def _delete_job(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            await self._read(
                lambda: self._batch.delete_namespaced_job(
                    name, self.config.namespace, propagation_policy="Background", _preload_content=False
                )
            )


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done() or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
