"""Load on the Kubernetes API emulator: many open watches plus a steady request rate.

Run ``python -m bench.emulator_load`` (defaults: 1,000 watch streams, 200 requests/s, 20 s). The emulator
runs in its own process (``druid-k8s-emulator serve --no-cluster``), as a test's emulator competes with the
test for the CPU; this process drives the load with aiohttp and prints request latency percentiles, the
achieved rate, watch events delivered and the emulator's CPU use. Figures also go to
``bench/results/emulator_load.json``.

The mix mirrors what the provider does to a cluster: one watch per running task (``fieldSelector`` on
the Job's name), reads of single Jobs, label-selected lists, status writes (each one is an event every
watch has to consider) and creates/deletes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

from bench.common import RESULTS_DIR, percentile, write_result

NAMESPACE = "default"


@dataclass
class LoadFigures:
    """What the load run measured."""

    latencies: list[float] = field(default_factory=list)
    by_verb: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    watch_events: int = 0
    watches_open: int = 0
    watch_failures: int = 0
    server_metrics: dict[str, Any] = field(default_factory=dict)


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"druid.k8s.peons": "true", "bench": "load"}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "apache/druid:33.0.0"}],
                }
            }
        },
    }


def _start_emulator(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    kubeconfig = directory / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "druid_k8s_provider.testing.cli",
            "serve",
            "--no-cluster",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not kubeconfig.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the emulator did not start (no kubeconfig written)")
        time.sleep(0.05)
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return process, str(server)


async def _watch(
    session: aiohttp.ClientSession, base: str, name: str, figures: LoadFigures, stop: float
) -> None:
    url = f"{base}/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    params = {
        "watch": "true",
        "fieldSelector": f"metadata.name={name}",
        "timeoutSeconds": str(int(stop) + 30),
    }
    try:
        async with session.get(url, params=params) as response:
            figures.watches_open += 1
            async for line in response.content:
                if line.strip():
                    figures.watch_events += 1
    except (TimeoutError, aiohttp.ClientError):
        figures.watch_failures += 1


async def _request(
    session: aiohttp.ClientSession, base: str, verb: str, name: str, figures: LoadFigures
) -> None:
    jobs = f"{base}/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    started = time.perf_counter()
    try:
        if verb == "get":
            response = await session.get(f"{jobs}/{name}")
        elif verb == "list":
            response = await session.get(
                jobs, params={"labelSelector": "druid.k8s.peons=true", "limit": "50"}
            )
        elif verb == "patch":
            body = json.dumps({"status": {"active": random.randint(0, 1)}})
            response = await session.patch(
                f"{jobs}/{name}/status", data=body, headers={"Content-Type": "application/merge-patch+json"}
            )
        elif verb == "create":
            response = await session.post(
                f"{base}/api/v1/namespaces/{NAMESPACE}/configmaps", json={"metadata": {"name": name}}
            )
        else:
            response = await session.delete(f"{base}/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
        async with response:
            await response.read()
            if response.status >= 400 and response.status != 404:
                figures.errors += 1
    except aiohttp.ClientError:
        figures.errors += 1
        return
    elapsed = time.perf_counter() - started
    figures.latencies.append(elapsed)
    figures.by_verb.setdefault(verb, []).append(elapsed)


async def _drive(base: str, watches: int, rate: float, duration: float) -> tuple[LoadFigures, float]:
    figures = LoadFigures()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        names = [f"task-{index:05d}" for index in range(watches)]
        for start in range(0, len(names), 100):
            await asyncio.gather(
                *(
                    session.post(f"{base}/apis/batch/v1/namespaces/{NAMESPACE}/jobs", json=_job(n))
                    for n in names[start : start + 100]
                )
            )
        watch_tasks = [asyncio.create_task(_watch(session, base, name, figures, duration)) for name in names]
        while figures.watches_open + figures.watch_failures < watches:
            await asyncio.sleep(0.05)
        verbs = ["get"] * 4 + ["list"] * 2 + ["patch"] * 2 + ["create", "delete"]
        counter = itertools.count()
        created: list[str] = []
        in_flight: set[asyncio.Task[None]] = set()
        began = time.perf_counter()
        for sent in itertools.count():
            due = began + sent / rate
            now = time.perf_counter()
            if due - began >= duration:
                break
            if due > now:
                await asyncio.sleep(due - now)
            verb = random.choice(verbs)
            if verb == "create":
                name = f"cm-{next(counter)}"
                created.append(name)
            elif verb == "delete":
                name = created.pop(0) if created else "cm-missing"
            else:
                name = random.choice(names)
            task = asyncio.create_task(_request(session, base, verb, name, figures))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        elapsed = time.perf_counter() - began
        async with session.get(f"{base}/metrics") as response:
            figures.server_metrics = await response.json()
        for task in watch_tasks:
            task.cancel()
        await asyncio.gather(*watch_tasks, return_exceptions=True)
    return figures, elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the load and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--watches", type=int, default=1000, help="concurrent watch streams (default 1000)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where to write the JSON figures"
    )
    arguments = parser.parse_args(argv)
    random.seed(0)
    with tempfile.TemporaryDirectory(prefix="druid-k8s-emulator-load-") as directory:
        process, base = _start_emulator(Path(directory))
        emulator = psutil.Process(process.pid)
        try:
            cpu_before = emulator.cpu_times()
            own_before = psutil.Process(os.getpid()).cpu_times()
            figures, elapsed = asyncio.run(
                _drive(base, arguments.watches, arguments.rate, arguments.duration)
            )
            cpu_after = emulator.cpu_times()
            own_after = psutil.Process(os.getpid()).cpu_times()
        finally:
            process.terminate()
            process.wait(timeout=30)
    emulator_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    driver_cpu = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    result = {
        "watches_requested": arguments.watches,
        "watches_open": figures.watches_open,
        "watch_failures": figures.watch_failures,
        "rate_requested_per_s": arguments.rate,
        "requests": len(figures.latencies),
        "errors": figures.errors,
        "achieved_rate_per_s": round(len(figures.latencies) / elapsed, 1),
        "latency_p50_ms": round((percentile(figures.latencies, 0.50) or 0) * 1000, 2),
        "latency_p99_ms": round((percentile(figures.latencies, 0.99) or 0) * 1000, 2),
        "latency_max_ms": round(max(figures.latencies, default=0) * 1000, 2),
        "latency_p99_ms_by_verb": {
            verb: round((percentile(values, 0.99) or 0) * 1000, 2)
            for verb, values in sorted(figures.by_verb.items())
        },
        # Time spent inside the emulator's handlers; the gap to the client-side figures is socket and
        # scheduling delay (the load driver and the emulator share the machine's cores).
        "server_side_latency_p99_ms": round(
            (figures.server_metrics.get("latency_p99_seconds") or 0) * 1000, 2
        ),
        "peak_watches_seen_by_server": figures.server_metrics.get("peak_watches"),
        "watch_events_delivered": figures.watch_events,
        "emulator_cpu_percent_of_one_core": round(100 * emulator_cpu / elapsed, 1),
        "load_driver_cpu_percent_of_one_core": round(100 * driver_cpu / elapsed, 1),
        "duration_s": round(elapsed, 1),
    }
    for key, value in result.items():
        print(f"{key:40} {value}")
    path = write_result(arguments.results_dir, "emulator_load", result)
    print(f"figures written to {path}")
    return 0 if figures.errors == 0 and figures.watch_failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
