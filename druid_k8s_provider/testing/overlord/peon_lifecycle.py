"""One task's life in the Overlord's Kubernetes runner: the Job created (or joined), its pod looked up with
back-off and waited for until it has an IP, the Job waited for until it finished, the pod's log pushed, and
the outcome read from the task's status file."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Any, cast

from kubernetes_asyncio.client.exceptions import ApiException

from druid_k8s_provider.config_names import CUSTOM_TEMPLATE_ADAPTER
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.hooks.job_state import is_finished
from druid_k8s_provider.job_builder import PEON_PORT, PEON_TLS_PORT, build_job, load_pod_template
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.queue import RUNNING
from druid_k8s_provider.testing.overlord.runner_client import RunnerClient, WorkItem

GENERIC_FAILURE = "Failed to run task. See overlord logs for more details."
NO_STATUS_FAILURE = "Peon did not report status successfully."
POD_LOOKUP_TRIES = 10
_POD_LOOKUP_BASE_SECONDS = 1.0
_POD_LOOKUP_MAX_SECONDS = 60.0
_LOG_PUSH_TRIES = 20


def pod_lookup_delays(scale: float = 1.0) -> list[float]:
    """Seconds slept between the pod lookups: 1, 2, 4 ... capped at 60 (Druid's ``RetryUtils``), scaled."""
    return [
        min(_POD_LOOKUP_BASE_SECONDS * 2**attempt, _POD_LOOKUP_MAX_SECONDS) * scale
        for attempt in range(POD_LOOKUP_TRIES - 1)
    ]


class LaunchFailed(Exception):
    """The runner gave up on a task; the message is what the Overlord logs (the task gets the generic one)."""


class PeonLifecycle(RunnerClient):
    """What the runner does for one task, from launch to outcome (``KubernetesPeonLifecycle``)."""

    async def _lifecycle(self, item: WorkItem, *, join: bool) -> None:
        task_id = item.task.id
        async with self._slots:
            try:
                await self._run_to_outcome(item, join=join)
            except Exception as error:
                # Druid's runner turns any exception of a task's lifecycle into a FAILED status with the
                # generic message (KubernetesTaskRunner), so a crash never leaves the task RUNNING forever.
                why = error if isinstance(error, LaunchFailed) else f"{type(error).__name__}: {error}"
                self._log(f"ERROR Task [{task_id}] failed to run: {why}")
                with contextlib.suppress(Exception):
                    await self._delete_job(item.job_name)
                await self._finish(task_id, "FAILED", -1, GENERIC_FAILURE)

    async def _run_to_outcome(self, item: WorkItem, *, join: bool) -> None:
        task_id = item.task.id
        if not join:
            await self._launch(item)
        await self._wait_until_started(item)
        await self._wait_until_finished(item)
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
            if is_finished(job):
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
