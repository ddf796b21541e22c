"""What every benchmark shares: a private Airflow home, the emulators' connections, Druid tasks, result files.

Benchmarks talk only to emulators on 127.0.0.1 (the Kubernetes emulator, and for our side the Overlord
emulator beside it, through which the provider launches every Druid task) and write their figures as JSON
under ``bench/results`` (or ``--results-dir``), one file per benchmark, which ``bench.report`` turns into
docs/performance.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
#: Namespace of the runner in every benchmark.
NAMESPACE = "druid"
#: Image of the peons the benchmarks start; the emulator gives it a sleeping behaviour.
PEON_IMAGE = "apache/druid:33.0.0"
#: Druid's task API, where the Overlord emulator's request log names every request ours made.
TASK_API = "/druid/indexer/v1"
#: User agent of the Overlord emulator's Kubernetes client in the benchmarks (see :func:`overlord_emulator`).
DRUID_RUNNER_AGENT = "druid-k8s-bench-overlord-runner"
#: The peons' task actions (locks, segment allocation, publish): Druid's own traffic, not the provider's.
PEON_ACTIONS_PATH = TASK_API + "/action"


def take_order(log: Path) -> dict[str, Any]:
    """A stand-in process's start: say READY, send everything written from then on to ``log`` (as a
    triggerer's or worker's task logs would: the parent stops reading the pipe, and a full pipe would block
    the loop), read the order (one JSON line on stdin), take its ``environment`` and the most open files the
    system allows (one stream per task)."""
    logging.basicConfig(level=logging.INFO, filename=str(log), force=True)
    print("READY", flush=True)
    with log.open("ab") as log_file:
        os.dup2(log_file.fileno(), sys.stdout.fileno())
        os.dup2(log_file.fileno(), sys.stderr.fileno())
    order: dict[str, Any] = json.loads(sys.stdin.readline())
    os.environ.update(order["environment"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    return order


def private_airflow_home() -> None:
    """Point Airflow at a throwaway home (unless the caller chose one) before anything imports it."""
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="druid-k8s-bench-airflow-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def connection_env(kubeconfig_path: str, conn_id: str = "kubernetes_default") -> dict[str, str]:
    """The environment variable that defines the Airflow connection to the emulator."""
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": kubeconfig_path}}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}


def overlord_connection_env(overlord_url: str, conn_id: str = "druid_ingest_default") -> dict[str, str]:
    """The environment variable that defines the Airflow connection to the Overlord emulator."""
    from druid_k8s_provider.testing.demo import overlord_connection

    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(overlord_connection(overlord_url))}


def overlord_emulator(
    kube: Any, *, informer: bool = False, outcomes: dict[str, float] | None = None, **kwargs: Any
) -> Any:
    """An ``OverlordEmulator`` beside ``kube`` with the benchmarks' runner properties, whose runner calls the
    Kubernetes API with the user agent :data:`DRUID_RUNNER_AGENT`, so :func:`druid_runner_requests` can tell
    the requests Druid makes for a task (its runner creates, reads and deletes the Job) from the provider's.

    ``informer``: the runner waits on one shared watch of peon Jobs and pods (:mod:`bench.informer`) instead
    of reading each task's objects, so ten thousand tasks do not load the cluster with the emulator's polls.
    ``outcomes``: filled with task id -> epoch seconds when the Overlord recorded the task's outcome.
    """
    from bench.informer import with_informer
    from druid_k8s_provider.testing import OverlordEmulator
    from druid_k8s_provider.testing.overlord.runner import KubernetesRunner

    class TaggedRunner(KubernetesRunner):
        async def open(self) -> None:
            await super().open()
            assert self._api is not None
            self._api.user_agent = DRUID_RUNNER_AGENT

    class TaggedOverlordEmulator(OverlordEmulator):
        # The emulator has no option for its client's user agent: its runner is made here, tagged.
        def _make_runner(self) -> KubernetesRunner:
            runner = super()._make_runner()
            runner.__class__ = TaggedRunner
            if informer:
                runner = with_informer(runner)
            if outcomes is not None:
                record = runner._on_outcome

                async def recorded(task_id: str, status: str, duration: int, error: str | None) -> None:
                    await record(task_id, status, duration, error)
                    outcomes.setdefault(task_id, time.time())

                runner._on_outcome = recorded
            return runner

    kwargs.setdefault("runner_properties", runner_properties())
    return TaggedOverlordEmulator(kube, **kwargs)


def druid_runner_requests(kube: Any) -> Counter[str]:
    """The Kubernetes requests the Overlord emulator's runner made since the metrics were reset, by
    ``"<verb> <resource>"`` (as in the metrics' ``by_verb_resource``)."""
    return Counter(
        f"{record.verb} {record.resource}" + (f"/{record.subresource}" if record.subresource else "")
        for record in kube.metrics.records()
        if record.user_agent == DRUID_RUNNER_AGENT
    )


def overlord_pod(namespace: str = NAMESPACE) -> dict[str, Any]:
    """A minimal Running Overlord pod: the template the overlordSingleContainer adapter copies."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "druid-overlord-0", "namespace": namespace, "labels": {"app": "druid-overlord"}},
        "spec": {
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "druid",
                    "image": PEON_IMAGE,
                    "args": ["overlord"],
                    "env": [{"name": "DRUID_XMX", "value": "1g"}],
                }
            ],
        },
    }


def runner_properties(namespace: str = NAMESPACE, **extra: str) -> dict[str, str]:
    """Druid runner properties of the benchmarks: defaults, the given namespace, small peons."""
    return {
        "druid.indexer.runner.namespace": namespace,
        "druid.indexer.runner.cpuCoreInMicro": "10",
        **extra,
    }


def index_task(number: int) -> dict[str, Any]:
    """A Druid task spec of realistic size (an index_parallel task with an inline input)."""
    return {
        "type": "index_parallel",
        "id": f"index_parallel_bench_{number:05d}",
        "spec": {
            "dataSchema": {
                "dataSource": "bench",
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["page", "user", "country"]},
                "granularitySpec": {"segmentGranularity": "day", "queryGranularity": "none"},
            },
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {"type": "inline", "data": '{"ts":"2026-01-01T00:00:00Z","page":"a"}'},
                "inputFormat": {"type": "json"},
            },
            "tuningConfig": {"type": "index_parallel", "maxNumConcurrentSubTasks": 1},
        },
        "context": {"priority": 50},
    }


def overlord_task(number: int, seconds: float, task_id: str | None = None) -> dict[str, Any]:
    """:func:`index_task` as the Overlord emulator runs it: its own datasource and day of data (so no two
    tasks wait for each other's locks), a stand-in peon running ``seconds``, and ``task_id`` or, without it,
    no id (the operator then derives one per Airflow run and attempt, so runs never collide in the
    Overlord)."""
    task = index_task(number)
    # Its own datasource too: the emulator's lockbox compares a new lock with every lock held.
    task["spec"]["dataSchema"]["dataSource"] = f"bench_{number:05d}"
    day = date(2026, 1, 1) + timedelta(days=number)
    task["spec"]["dataSchema"]["granularitySpec"]["intervals"] = [f"{day}/{day + timedelta(days=1)}"]
    task["context"]["standinDurationSeconds"] = seconds
    if task_id is None:
        del task["id"]
    else:
        task["id"] = task_id
    return task


def overlord_requests_by_kind(requests: Iterable[Any]) -> Counter[str]:
    """The provider's requests in an Overlord emulator's request log (``overlord.requests.requests``), as
    ``"<METHOD> <path>"`` with task ids shown as ``{id}`` and ``?state=`` kept; peon task actions left out."""
    kinds: Counter[str] = Counter()
    for request in requests:
        if request.path == PEON_ACTIONS_PATH:
            continue
        path = re.sub(r"^(/druid/indexer/v1/task)/[^/]+", r"\1/{id}", request.path)
        state = request.query.get("state")
        kinds[f"{request.method} {path}" + (f"?state={state}" if state else "")] += 1
    return kinds


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def machine() -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": package_versions(
            [
                "apache-airflow",
                "apache-airflow-providers-cncf-kubernetes",
                "apache-airflow-providers-apache-druid",
                "kubernetes",
                "kubernetes_asyncio",
                "aiohttp",
                "druid-k8s-provider",
            ]
        ),
    }


def source_revision() -> dict[str, Any]:
    """The commit measured, and the package files that differed from it (teammates' work in progress)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except OSError:
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "druid_k8s_provider").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "uncommitted_files": changed}


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the named distributions (``missing`` for an absent one)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def write_result(results_dir: Path, name: str, figures: Mapping[str, Any]) -> Path:
    """Write ``<results_dir>/<name>.json`` with the figures, the machine and the time of the run."""
    results_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "source": source_revision(),
        **figures,
    }
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def settled_metrics(kube: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The emulator's metrics once it noticed the stand-in triggerer's streams closed (a stream is counted
    when its handler ends, a moment after the client went away)."""
    kube.metrics.settle(timeout)
    return dict(kube.metrics.snapshot())
