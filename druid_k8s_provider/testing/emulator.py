"""``KubeEmulator``: an in-process Kubernetes API server (and, optionally, cluster) for tests and demos.

Used as ``with KubeEmulator() as kube:`` the emulator runs its own asyncio loop in a background thread, so
synchronous code (the ``kubernetes`` client, ``kubectl`` in a subprocess, Airflow operators) can talk to it.
Used as ``async with KubeEmulator() as kube:`` it runs on the caller's loop. Either way it listens on
127.0.0.1 with an ephemeral port and writes a kubeconfig that every client can load.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import importlib
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from druid_k8s_provider.testing.certificates import self_signed_certificate
from druid_k8s_provider.testing.faults import FaultInjector
from druid_k8s_provider.testing.logs import LogStore
from druid_k8s_provider.testing.metrics import RequestMetrics
from druid_k8s_provider.testing.rbac import Authorizer
from druid_k8s_provider.testing.server import ApiServer
from druid_k8s_provider.testing.store import ObjectStore

T = TypeVar("T")

CLUSTER_MODULE = "druid_k8s_provider.testing.cluster"


def kubeconfig_document(
    server_url: str, token: str, namespace: str = "default", ca_pem: bytes | None = None
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one token user and a current context pointing at them."""
    cluster: dict[str, Any] = {"server": server_url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "druid-k8s-emulator", "cluster": cluster}],
        "users": [{"name": "druid-k8s-emulator-user", "user": {"token": token}}],
        "contexts": [
            {
                "name": "druid-k8s-emulator",
                "context": {
                    "cluster": "druid-k8s-emulator",
                    "user": "druid-k8s-emulator-user",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "druid-k8s-emulator",
        "preferences": {},
    }


class KubeEmulator:
    """A Kubernetes API server on loopback over the emulator's object store.

    Args:
        history_window: watch events retained; a watch from an older resourceVersion gets 410 Expired.
        node_cpu, node_memory: capacity of the virtual node (used by the cluster).
        tokens: bearer token -> Role rules (see rbac.Authorizer); None disables authentication.
        token_rules: the same as ``tokens`` (the name used in the team's interface notes).
        cluster: also run the controllers, scheduler and kubelet (``testing.cluster.Cluster``).
        host, port: where to listen (port 0: ephemeral).
        fault_seed: seed of the fault injector's random draws, for reproducible fault runs.
        bookmark_interval: seconds between BOOKMARK events on watches that allow them.
        kubeconfig_path: where to write the kubeconfig (default: a fresh temporary directory).
        tls: serve HTTPS with a throwaway certificate (the kubeconfig trusts it). Default: on when
            ``tokens`` are given, because kubectl never sends a bearer token over plain HTTP.
    """

    def __init__(
        self,
        *,
        history_window: int = 5000,
        node_cpu: str = "8",
        node_memory: str = "32Gi",
        tokens: Mapping[str, Any] | None = None,
        token_rules: Mapping[str, Any] | None = None,
        cluster: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        fault_seed: int = 0,
        bookmark_interval: float = 5.0,
        kubeconfig_path: str | Path | None = None,
        tls: bool | None = None,
    ) -> None:
        if tokens is not None and token_rules is not None:
            raise ValueError("KubeEmulator: give tokens= or token_rules= (the same thing), not both")
        self.store = ObjectStore(history_window=history_window)
        self.logs = LogStore()
        self.metrics = RequestMetrics()
        self.faults = FaultInjector(seed=fault_seed)
        self.authorizer = Authorizer(tokens if tokens is not None else token_rules)
        self.tls = self.authorizer.enabled if tls is None else tls
        self.server = ApiServer(
            self.store,
            self.logs,
            self.metrics,
            self.faults,
            self.authorizer,
            bookmark_interval=bookmark_interval,
        )
        self.cluster: Any = None
        self._want_cluster = cluster
        self._node_cpu = node_cpu
        self._node_memory = node_memory
        self._host = host
        self._port = port
        self._requested_kubeconfig = Path(kubeconfig_path) if kubeconfig_path is not None else None
        self._temp_dir: Path | None = None
        self.kubeconfig_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._owns_loop = False

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS)."""
        return self.server.url

    @property
    def token(self) -> str:
        """The bearer token the written kubeconfig carries."""
        return self.authorizer.default_token

    @property
    def ca_certificate(self) -> bytes | None:
        """PEM certificate clients must trust when the emulator serves TLS (None over plain HTTP)."""
        return self_signed_certificate()[0] if self.tls else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the emulator runs on."""
        if self._loop is None:
            raise RuntimeError("KubeEmulator is not running; use it as a (async) context manager")
        return self._loop

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        self.store.bind_loop(asyncio.get_running_loop())
        await self.server.start(self._host, self._port, tls=self.tls)
        if self._want_cluster:
            self.cluster = self._make_cluster()
            await self.cluster.start()
        self.kubeconfig_path = str(self.write_kubeconfig(self._requested_kubeconfig))

    def _make_cluster(self) -> Any:
        try:
            module = importlib.import_module(CLUSTER_MODULE)
        except ModuleNotFoundError as error:
            if error.name != CLUSTER_MODULE:
                raise
            raise RuntimeError(
                f"KubeEmulator(cluster=True) needs {CLUSTER_MODULE}, which is not available in this "
                "installation; use KubeEmulator(cluster=False) for an API server without controllers"
            ) from error
        return module.Cluster(self.store, self.logs, node_cpu=self._node_cpu, node_memory=self._node_memory)

    async def _stop(self) -> None:
        try:
            if self.cluster is not None:
                await self.cluster.stop()
        finally:
            await self.server.stop()
            self.store.bind_loop(None)

    def write_kubeconfig(self, path: str | Path | None = None, *, token: str | None = None) -> Path:
        """Write a kubeconfig for this server (another token: another user) and return its path."""
        if path is None:
            if self._temp_dir is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="druid-k8s-emulator-"))
            name = "kubeconfig" if token is None else f"kubeconfig-{len(list(self._temp_dir.iterdir()))}"
            path = self._temp_dir / name
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        document = kubeconfig_document(self.url, token or self.token, ca_pem=self.ca_certificate)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(yaml.safe_dump(document, sort_keys=False))
        temporary.replace(target)  # readers never see a half-written file
        return target

    def __enter__(self) -> KubeEmulator:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._owns_loop = True

        def serve() -> None:
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                try:
                    await self._start()
                except BaseException as error:
                    ready.set_exception(error)
                    raise
                ready.set_result(None)

            try:
                loop.run_until_complete(boot())
            except BaseException:
                loop.close()
                return
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=serve, name="kube-emulator", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=5)
            self._loop = None
            self._cleanup_files()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=30)
        self._loop = None
        self._thread = None
        self._cleanup_files()

    async def __aenter__(self) -> KubeEmulator:
        self._loop = asyncio.get_running_loop()
        self._owns_loop = False
        try:
            await self._start()
        except BaseException:
            await self.server.stop()
            self._loop = None
            self._cleanup_files()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._stop()
        finally:
            self._loop = None
            self._cleanup_files()

    def _cleanup_files(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # ------------------------------------------------------------------ bridge and helpers

    def run(self, work: Awaitable[T] | Callable[[], T], timeout: float = 30) -> T:
        """Run a coroutine or a function on the emulator's loop and return its result (sync mode only).

        In async mode (``async with``) the caller already is on that loop: await coroutines directly.
        """
        loop = self.loop
        if not self._owns_loop:
            if callable(work):
                return work()
            raise RuntimeError("KubeEmulator.run: in async mode, await the coroutine directly instead")
        if threading.current_thread() is self._thread:
            raise RuntimeError("KubeEmulator.run was called from the emulator's own loop; await instead")
        if callable(work) and not asyncio.iscoroutine(work):
            function = work

            async def call() -> T:
                return function()

            return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)
        return asyncio.run_coroutine_threadsafe(_as_coroutine(work), loop).result(timeout)

    def register_image(self, pattern: str, behaviour: Any) -> None:
        """Give containers whose image matches ``pattern`` (fnmatch) a behaviour; needs ``cluster=True``."""
        if self.cluster is None:
            raise RuntimeError(
                "KubeEmulator.register_image needs a running cluster: KubeEmulator(cluster=True)"
            )
        self.cluster.register_image(pattern, behaviour)

    def restart_server(self, drain: float = 0.0) -> None:
        """Stop and restart the HTTP listener on the same port (open connections drop; objects stay).

        With ``drain`` seconds the server first drains as a real one does on SIGTERM: open streams go on
        until they end or the drain is over, new requests are refused (see ``ApiServer.stop``).
        """
        if not self._owns_loop:
            raise RuntimeError(
                "KubeEmulator.restart_server: in async mode use `await kube.restart_server_async()`"
            )
        self.run(self.server.restart(drain), timeout=drain + 30)

    async def restart_server_async(self, drain: float = 0.0) -> None:
        """``restart_server`` for async mode."""
        await self.server.restart(drain)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
