"""``OverlordEmulator``: a stand-in Druid Overlord beside a :class:`~druid_k8s_provider.testing.KubeEmulator`.

It is NOT Apache Druid. It plays the Overlord's part toward its clients and its peons, refusing what a real
Overlord refuses (spec ``druid-overlord.md`` sections 1-5): tasks are known only once submitted, only
submitted tasks get locks, a task waits for its intervals' locks before its Job is created, its outcome is
read only from ``status.json`` in the task-log directory, and a new leader joins the labelled Jobs and
shuts down those of tasks it does not know.

Used as ``with OverlordEmulator(kube):`` (``kube`` entered with ``with``) or ``async with
OverlordEmulator(kube):`` (``kube`` entered with ``async with`` on the same loop), it runs on the Kubernetes
emulator's loop, serves Druid's HTTP API on loopback (:attr:`url`) and keeps, in the cluster, a Running
Overlord pod (``druid/druid-overlord-0``, labels ``app=druid,component=overlord``, image
``apache/druid:<version>``) whose container env is what the peons inherit when a Job clones it:

- ``druid_indexer_logs_type=file`` and ``druid_indexer_logs_directory=<task_log_dir>``: the task-log storage
  the Overlord and the peons share;
- ``DRUID_K8S_EMULATOR_OVERLORD_URL=<url>`` (:data:`OVERLORD_URL_ENV`): where the stand-in peon sends its task
  actions (a real peon finds the leader through service discovery);
- with ``basic_auth``, ``druid_escalator_internalClientUsername`` / ``...Password``: the peon's credentials.

The runner talks to the Kubernetes emulator over its real HTTP API, so its requests show in
``kube.metrics`` like a real Overlord's.

Failures for tests: :attr:`OverlordEmulator.faults` scripts, per step of a client's conversation (submit,
task lists, batched status, reports, log, shutdown ...), a standby's 503, a dropped connection, a slow
answer or an answer lost after the request was handled (:mod:`.faults`); :meth:`OverlordEmulator.restart`
plays a failover (with ``refuse_connections``, the process itself is gone meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.config_names import RUNNER_PREFIX
from druid_k8s_provider.testing.emulator import KubeEmulator
from druid_k8s_provider.testing.overlord.api import RequestLog, build_app
from druid_k8s_provider.testing.overlord.faults import OverlordFaults
from druid_k8s_provider.testing.overlord.runner import JOIN_EXISTING_JOB_SINCE, KubernetesRunner
from druid_k8s_provider.testing.overlord.service import Overlord
from druid_k8s_provider.testing.standin_actions import ESCALATOR_PASSWORD_ENV, ESCALATOR_USER_ENV
from druid_k8s_provider.testing.standin_peon import (
    LOGS_DIRECTORY_ENV,
    LOGS_TYPE_ENV,
    OVERLORD_URL_ENV,
    register_standin_peon,
)

#: The newest Apache Druid release when this emulator was written (druid-38.0.0).
DEFAULT_DRUID_VERSION = "38.0.0"
NAMESPACE = "druid"
OVERLORD_POD_NAME = "druid-overlord-0"
OVERLORD_LABELS = {"app": "druid", "component": "overlord"}
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_OVERLORD_NAMESPACE_PROPERTY = RUNNER_PREFIX + "overlordNamespace"
#: Druid's default ``druid.server.hiddenProperties`` (matched as substrings of the name, ignoring case).
HIDDEN_PROPERTIES = (
    "druid.s3.accessKey",
    "druid.s3.secretKey",
    "druid.metadata.storage.connector.password",
    "password",
    "key",
    "token",
    "pwd",
)
_POD_START_SECONDS = 30.0
_SHUTDOWN_SECONDS = 1.0


def parse_druid_version(version: str | None) -> tuple[int, int, int] | None:
    """``35.0.1`` → ``(35, 0, 1)``; ``36.0.0-SNAPSHOT`` → ``(36, 0, 0)``; None or a vendor string → None."""
    match = _VERSION.match(version or "")
    if match is None:
        return None
    return (int(match[1]), int(match[2] or 0), int(match[3] or 0))


class OverlordEmulator:
    """A stand-in Overlord with the Kubernetes task runner, over a running ``KubeEmulator`` (with cluster).

    Args:
        kube: the Kubernetes emulator (``cluster=True``); the stand-in peon is registered for
            ``apache/druid*`` images in it.
        druid_version: the version ``/status`` reports and whose runner rules apply (below 35.0.0 an
            existing Job fails the task; from 35.0.0 it is joined). None or an unparsable vendor string:
            ``/status`` shows it as is and the newest rules apply.
        runner_properties: Druid properties over the defaults (``druid.indexer.runner.namespace=druid``),
            e.g. ``druid.indexer.runner.capacity``, ``...K8sjobLaunchTimeout``, ``...debugJobs``,
            ``...taskCleanupDelay``; refused with DruidK8sConfigError like any runner configuration.
        task_log_dir: the shared file task-log directory (default: a temporary one, removed at exit).
        start_delay: seconds between becoming leader and shutting down joined tasks not in the queue (Druid's
            ``druid.indexer.queue.startDelay``, PT1M).
        pod_lookup_scale: factor on the pod lookup back-off (1: about four minutes in all).
        poll_interval: seconds between the runner's reads of a Job or pod it waits for.
        basic_auth: ``(user, password)``: require HTTP Basic auth as Druid's basic security does.
        hidden_properties: ``druid.server.hiddenProperties``: ``GET /status/properties`` leaves out every
            property whose name contains one of these (ignoring case); default Druid's list.
        host, port: where the API listens (port 0: ephemeral).
        fault_seed: seed of the fault script's random draws (:attr:`faults`), for reproducible fault runs.
    """

    def __init__(
        self,
        kube: KubeEmulator,
        *,
        druid_version: str | None = DEFAULT_DRUID_VERSION,
        runner_properties: Mapping[str, Any] | None = None,
        task_log_dir: str | Path | None = None,
        start_delay: float = 60.0,
        pod_lookup_scale: float = 1.0,
        poll_interval: float = 0.2,
        basic_auth: tuple[str, str] | None = None,
        hidden_properties: Sequence[str] = HIDDEN_PROPERTIES,
        host: str = "127.0.0.1",
        port: int = 0,
        fault_seed: int = 0,
    ) -> None:
        self.kube = kube
        self.druid_version = druid_version
        self.properties = {RUNNER_PREFIX + "namespace": NAMESPACE, **(runner_properties or {})}
        self.config = RunnerConfig.from_properties(self.properties)
        self.credentials = basic_auth
        self.hidden_properties = tuple(hidden_properties)
        self._owned_log_dir = task_log_dir is None
        self.task_log_dir = Path(task_log_dir) if task_log_dir is not None else Path()
        self._pod_lookup_scale = pod_lookup_scale
        self._poll_interval = poll_interval
        self._host, self._port = host, port
        self.overlord = Overlord(
            config=self.config,
            runner_factory=self._make_runner,
            task_log_dir=self.task_log_dir,
            start_delay=start_delay,
        )
        self._site_runner: web.AppRunner | None = None
        self.url = ""
        #: Every request the Overlord's API answered (see :class:`RequestLog`), for request budgets.
        self.requests = RequestLog()
        #: Scripted failures per step of the conversation (see :mod:`.faults`): not leader, unreachable,
        #: slow, an answer lost after the request was handled.
        self.faults = OverlordFaults(seed=fault_seed)

    # ------------------------------------------------------------------ properties

    @property
    def namespace(self) -> str:
        """Namespace of the Overlord pod (``overlordNamespace``, else the runner namespace)."""
        return self.config.overlord_namespace or self.config.namespace

    @property
    def joins_existing_jobs(self) -> bool:
        """Whether this version's runner joins a Job that already exists (Druid 35.0.0 and later)."""
        parsed = parse_druid_version(self.druid_version)
        return parsed is None or parsed >= JOIN_EXISTING_JOB_SINCE

    @property
    def leader(self) -> bool:
        return self.overlord.leader

    @property
    def log_lines(self) -> list[str]:
        """The Overlord's own log: launches, joins, refusals, and why a task failed."""
        return self.overlord.log_lines

    def runtime_properties(self) -> dict[str, str]:
        """What ``GET /status/properties`` answers: the runner properties this Overlord was given and those
        it sets itself (runner type, task logs, service name), as strings, less the hidden ones."""
        given = {
            name: value if isinstance(value, str) else json.dumps(value)
            for name, value in self.properties.items()
        }
        everything = {
            "druid.service": "druid/overlord",
            "druid.indexer.runner.type": "k8s",
            "druid.indexer.logs.type": "file",
            "druid.indexer.logs.directory": str(self.task_log_dir),
            **given,
        }
        hidden = [entry.lower() for entry in self.hidden_properties]
        return {
            name: value
            for name, value in everything.items()
            if not any(entry in name.lower() for entry in hidden)
        }

    def _make_runner(self) -> KubernetesRunner:
        restore_labels = (
            {"druid.overlord.namespace": str(self.properties[_OVERLORD_NAMESPACE_PROPERTY])}
            if _OVERLORD_NAMESPACE_PROPERTY in self.properties
            else {}
        )
        return KubernetesRunner(
            kubeconfig_path=self.kube.kubeconfig_path,
            config=self.config,
            restore_labels=restore_labels,
            overlord_pod=(self.namespace, OVERLORD_POD_NAME),
            task_log_dir=self.task_log_dir,
            join_existing_jobs=self.joins_existing_jobs,
            druid_version=self.druid_version,
            on_outcome=self.overlord.on_outcome,
            overlord_log=self.overlord.log,
            pod_lookup_scale=self._pod_lookup_scale,
            poll_interval=self._poll_interval,
        )

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        if self._owned_log_dir:
            self.task_log_dir = Path(tempfile.mkdtemp(prefix="druid-task-logs-"))
            self.overlord.task_log_dir = self.task_log_dir
        self.task_log_dir.mkdir(parents=True, exist_ok=True)
        app = build_app(
            self.overlord,
            self.druid_version,
            self.credentials,
            self.restart_async,
            self.requests,
            self.faults,
            self.runtime_properties,
        )
        # A peon killed in the middle of an action leaves its request unfinished: do not wait a minute for it.
        self._site_runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
        await self._site_runner.setup()
        await self._listen(self._port)
        self._port = self._site_runner.addresses[0][1]
        self.url = f"http://{self._host}:{self._port}"
        register_standin_peon(self.kube)
        await self._start_overlord_pod()
        await self.overlord.become_leader()

    async def _listen(self, port: int) -> None:
        assert self._site_runner is not None
        await web.TCPSite(self._site_runner, self._host, port).start()

    async def _refuse_connections(self) -> None:
        """The Overlord process is gone: stop listening (new connections are refused) and cut the open
        ones."""
        assert self._site_runner is not None
        for site in list(self._site_runner.sites):
            await site.stop()
        server = self._site_runner.server
        for connection in list(server.connections if server is not None else []):
            if connection.transport is not None:
                connection.transport.abort()

    async def _stop(self) -> None:
        try:
            await self.overlord.step_down()
        finally:
            if self._site_runner is not None:
                await self._site_runner.cleanup()
                self._site_runner = None
            if self._owned_log_dir:
                shutil.rmtree(self.task_log_dir, ignore_errors=True)

    async def _start_overlord_pod(self) -> None:
        store = self.kube.store
        for namespace in {self.namespace, self.config.namespace}:
            if not store.list("namespaces", None, field_selector=f"metadata.name={namespace}"):
                store.create("namespaces", None, {"metadata": {"name": namespace}})
        store.create("pods", self.namespace, self.overlord_pod())
        deadline = asyncio.get_running_loop().time() + _POD_START_SECONDS
        while (store.get("pods", self.namespace, OVERLORD_POD_NAME).get("status") or {}).get(
            "phase"
        ) != "Running":
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    "OverlordEmulator: the Overlord pod did not start; is the cluster running?"
                )
            await asyncio.sleep(0.02)

    def _overlord_pod_running(self) -> bool:
        pod = self.kube.store.get("pods", self.namespace, OVERLORD_POD_NAME)
        return bool((pod.get("status") or {}).get("phase") == "Running")

    def overlord_pod(self) -> dict[str, Any]:
        """The Overlord pod as created in the cluster: the template of every peon Job."""
        env = [
            {"name": "druid_indexer_runner_type", "value": "k8s"},
            {"name": "druid_indexer_runner_namespace", "value": self.config.namespace},
            {"name": "druid_indexer_task_encapsulatedTask", "value": "true"},
            {"name": "druid_processing_intermediaryData_storage_type", "value": "deepstore"},
            {"name": LOGS_TYPE_ENV, "value": "file"},
            {"name": LOGS_DIRECTORY_ENV, "value": str(self.task_log_dir)},
            {"name": OVERLORD_URL_ENV, "value": self.url},
        ]
        if self.credentials is not None:
            env += [
                {"name": ESCALATOR_USER_ENV, "value": self.credentials[0]},
                {"name": ESCALATOR_PASSWORD_ENV, "value": self.credentials[1]},
            ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": OVERLORD_POD_NAME,
                "namespace": self.namespace,
                "labels": dict(OVERLORD_LABELS),
            },
            "spec": {
                "containers": [
                    {
                        "name": "druid",
                        "image": f"apache/druid:{self.druid_version or 'latest'}",
                        "args": ["overlord"],
                        "ports": [{"name": "http", "containerPort": 8090, "protocol": "TCP"}],
                        "env": env,
                        "resources": {
                            "requests": {"cpu": "1", "memory": "2Gi"},
                            "limits": {"cpu": "1", "memory": "2Gi"},
                        },
                    }
                ]
            },
        }

    async def restart_async(self, downtime: float = 0.0, refuse_connections: bool = False) -> None:
        """A new leader: step down (503 for ``downtime`` seconds), then lead again (join, start delay).

        With ``refuse_connections`` the Overlord process itself is gone for ``downtime``: its port refuses
        connections and the open ones are cut (a failover behind a Router or Service looks like this); it
        then listens on the same port again.
        """
        await self.overlord.step_down()
        if refuse_connections:
            await self._refuse_connections()
        try:
            if downtime > 0:
                await asyncio.sleep(downtime)
        finally:
            if refuse_connections:
                await self._listen(self._port)
        await self.overlord.become_leader()

    async def set_leader_async(self, leading: bool) -> None:
        """Lose (False: the API answers 503, Jobs stay) or regain (True: restore, start delay) leadership."""
        if leading:
            await self.overlord.become_leader()
        else:
            await self.overlord.step_down()

    def set_leader(self, leading: bool) -> None:
        """:meth:`set_leader_async` from synchronous code (``with`` mode)."""
        self.kube.run(self.set_leader_async(leading))

    def restart(self, downtime: float = 0.0, refuse_connections: bool = False) -> None:
        """:meth:`restart_async` from synchronous code (``with`` mode)."""
        self.kube.run(self.restart_async(downtime, refuse_connections), timeout=downtime + 30)

    def __enter__(self) -> OverlordEmulator:
        self.kube.run(self._start(), timeout=60)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kube.run(self._stop(), timeout=60)

    async def __aenter__(self) -> OverlordEmulator:
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()
