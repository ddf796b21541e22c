"""The Overlord emulator's runner as the benchmarks run it at scale: one watch of peon Jobs and pods for all.

The emulator's own runner reads each task's pod and Job every poll interval (where Druid's default client
watches per task), which at ten thousand tasks would load the Kubernetes emulator with thousands of reads a
second that belong to neither side. Druid's runner also has an optional informer-based client (one shared
watch per kind); :class:`InformerRunner` waits that way: one list+watch of the ``druid.k8s.peons`` Jobs and
one of their pods, over the Kubernetes emulator's real HTTP API, serve every task's pod lookup, start and
completion. Launching (template read, create, the 409 join), the log push and the delete are the emulator's
own code, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from druid_k8s_provider.hooks.job_state import is_finished
from druid_k8s_provider.job_builder import PEON_PORT
from druid_k8s_provider.naming import PEON_LABEL
from druid_k8s_provider.testing.overlord.peon_lifecycle import (
    POD_LOOKUP_TRIES,
    LaunchFailed,
    pod_lookup_delays,
)
from druid_k8s_provider.testing.overlord.queue import RUNNING
from druid_k8s_provider.testing.overlord.runner import KubernetesRunner
from druid_k8s_provider.testing.overlord.runner_client import WorkItem

log = logging.getLogger(__name__)

#: Server-side timeout of one watch request; the watch resumes from its resourceVersion.
WATCH_SECONDS = 600


class PeonCache:
    """Peon Jobs by name and peon pods by Job name, kept by one list+watch each; waiters wake on a change."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, runner: KubernetesRunner) -> None:
        assert runner._api is not None
        namespace = runner.config.namespace
        kinds = {
            "jobs": (f"/apis/batch/v1/namespaces/{namespace}/jobs", self.jobs, _name),
            "pods": (f"/api/v1/namespaces/{namespace}/pods", self.pods, _job_name),
        }
        listed = [asyncio.Event() for _ in kinds]
        for (path, cache, key), done in zip(kinds.values(), listed, strict=True):
            self._tasks.append(asyncio.create_task(self._keep_watching(runner, path, cache, key, done)))

        async def both_listed() -> None:
            for done in listed:
                await done.wait()
            self.synced.set()

        self._tasks.append(asyncio.create_task(both_listed()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_for(self, job_name: str, ready: Callable[[], Any], timeout: float) -> Any:
        """``ready()`` once it is truthy (re-evaluated on every change to the Job or its pods), or None after
        ``timeout`` seconds."""
        await self.synced.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = self._changed.setdefault(job_name, asyncio.Event())
        try:
            while not (result := ready()):
                changed.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(None if remaining == float("inf") else remaining):
                        await changed.wait()
                except TimeoutError:
                    return ready() or None
            return result
        finally:
            self._changed.pop(job_name, None)

    async def _keep_watching(self, *args: Any) -> None:
        """:meth:`_watch`, listed again after any failure (an API fault), as an informer does."""
        while True:
            try:
                await self._watch(*args)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the Overlord emulator's peon watch failed; listing again")
                await asyncio.sleep(1.0)

    async def _watch(
        self,
        runner: KubernetesRunner,
        path: str,
        cache: dict[str, dict[str, Any]],
        key: Callable[[dict[str, Any]], str | None],
        listed: asyncio.Event,
    ) -> None:
        api = runner._api
        assert api is not None
        base = api.configuration.host
        session = api.rest_client.pool_manager
        # The runner's client identity (its user agent tells its requests from the provider's) and token.
        headers = {"User-Agent": api.user_agent}
        for setting in (await api.configuration.auth_settings()).values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        while True:
            async with session.get(
                base + path, params={"labelSelector": PEON_LABEL}, headers=headers
            ) as response:
                document = await response.json()
            cache.clear()
            for obj in document.get("items") or []:
                if (name := key(obj)) is not None:
                    cache[name] = obj
            version = document["metadata"]["resourceVersion"]
            listed.set()
            self._wake_all()
            while True:
                params = {
                    "labelSelector": PEON_LABEL,
                    "watch": "true",
                    "resourceVersion": version,
                    "timeoutSeconds": str(WATCH_SECONDS),
                    "allowWatchBookmarks": "true",
                }
                expired = False
                async with session.get(base + path, params=params, headers=headers, timeout=None) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            expired = True
                            break
                        version = obj["metadata"].get("resourceVersion") or version
                        if event["type"] == "BOOKMARK" or (name := key(obj)) is None:
                            continue
                        if event["type"] == "DELETED":
                            cache.pop(name, None)
                        else:
                            cache[name] = obj
                        if (changed := self._changed.get(name)) is not None:
                            changed.set()
                if expired:
                    break

    def _wake_all(self) -> None:
        for changed in self._changed.values():
            changed.set()


def _name(job: dict[str, Any]) -> str | None:
    return str(job["metadata"]["name"])


def _job_name(pod: dict[str, Any]) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    name = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
    return str(name) if name else None


class InformerRunner(KubernetesRunner):
    """The emulator's runner, waiting on a :class:`PeonCache` instead of reading each task's objects."""

    _cache: PeonCache | None = None

    async def open(self) -> None:
        await super().open()
        self._cache = PeonCache()
        self._cache.start(self)

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.stop()
        await super().close()

    @property
    def cache(self) -> PeonCache:
        assert self._cache is not None
        return self._cache

    async def _find_pod(self, item: WorkItem) -> dict[str, Any]:
        # As long as Druid's lookups with back-off would look (about four minutes, times the scale).
        budget = sum(pod_lookup_delays(self._pod_lookup_scale))
        pod = await self.cache.wait_for(item.job_name, lambda: self.cache.pods.get(item.job_name), budget)
        if pod is None:
            raise LaunchFailed(f"no pod of Job[{item.job_name}] after {POD_LOOKUP_TRIES} lookups")
        return dict(pod)

    async def _wait_until_started(self, item: WorkItem) -> None:
        timeout = self.config.k8s_job_launch_timeout.total_seconds()

        def started() -> dict[str, Any] | None:
            pod = self.cache.pods.get(item.job_name)
            return pod if pod is not None and (pod.get("status") or {}).get("podIP") else None

        pod = await self.cache.wait_for(item.job_name, started, timeout)
        if pod is None:
            raise LaunchFailed(f"the pod of Job[{item.job_name}] got no IP within {timeout:g} s")
        item.pod_name = pod["metadata"]["name"]
        item.state = RUNNING
        item.location = {
            "host": pod["status"]["podIP"],
            "port": PEON_PORT,
            "tlsPort": -1,
            "k8sPodName": item.pod_name,
        }
        self._log(f"INFO Task [{item.task.id}] is running in pod [{item.pod_name}]")

    async def _wait_until_finished(self, item: WorkItem) -> None:
        def finished() -> bool:
            job = self.cache.jobs.get(item.job_name)
            return job is None or is_finished(job)

        await self.cache.wait_for(item.job_name, finished, float("inf"))


def with_informer(runner: KubernetesRunner) -> KubernetesRunner:
    """``runner`` (made by the emulator) turned into an :class:`InformerRunner`."""
    runner.__class__ = type("Informer" + type(runner).__name__, (InformerRunner, type(runner)), {})
    return runner
