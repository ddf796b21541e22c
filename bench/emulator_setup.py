"""The emulators' own cost of setting up N Druid tasks, and of answering a list of their N pods.

Run ``python -m bench.emulator_setup --n 2000`` (several ``--n`` run one after another, each with fresh
emulators). For each N, the Kubernetes emulator (with cluster) and the Overlord emulator run in this process
on one event loop, as in :mod:`bench.triggerer`: N tasks of ``--seconds`` are submitted to the Overlord, and
the set-up time (wall, and this process's CPU) is until every peon pod runs (submission, lockbox, runner,
Job controller, scheduler, kubelet, the stand-in peons' task actions). Then one unpaged list of every pod of
the namespace (what a shared watch's first list asks) is timed from a client in another thread. No provider
code runs: every figure here belongs to the emulators. ``--profile`` writes a pyinstrument profile of the
emulators' loop during the set-up. Figures also go to ``bench/results/emulator_setup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.cluster_clock import Clock, submit_and_wait_for_pods
from bench.common import NAMESPACE, RESULTS_DIR, overlord_emulator, write_result


async def _start_profiler(profiler: Any) -> None:
    profiler.start()


async def _stop_profiler(profiler: Any) -> None:
    profiler.stop()


def _cpu_seconds() -> float:
    """CPU time of this process so far (the emulators' loop, mostly; steadier than wall time on a busy
    machine)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def run(n: int, seconds: float, profile: Path | None) -> dict[str, Any]:
    """Set up N tasks on fresh emulators; the set-up time and the list's figures."""
    from druid_k8s_provider.testing import KubeEmulator

    clock = Clock()
    with (
        KubeEmulator(node_cpu="1000000", node_memory="10000Ti", history_window=100_000) as kube,
        overlord_emulator(kube, informer=True) as overlord,
    ):
        kube.store.add_event_listener(clock.on_event)
        profiler = None
        if profile is not None:
            from pyinstrument import Profiler

            # Started on the emulators' loop thread (the profiler samples the thread that starts it).
            profiler = Profiler(async_mode="disabled")
            asyncio.run_coroutine_threadsafe(_start_profiler(profiler), kube.loop).result()
        started, cpu_before = time.monotonic(), _cpu_seconds()
        submit_and_wait_for_pods(overlord, clock, n, seconds)
        setup_seconds, setup_cpu = time.monotonic() - started, _cpu_seconds() - cpu_before
        if profiler is not None and profile is not None:
            asyncio.run_coroutine_threadsafe(_stop_profiler(profiler), kube.loop).result()
            profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        headers = {"Authorization": f"Bearer {kube.token}"}
        with httpx.Client(base_url=kube.url, headers=headers, timeout=600, trust_env=False) as http:
            began = time.monotonic()
            response = http.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
            list_seconds = time.monotonic() - began
            response.raise_for_status()
            pods = len(response.json()["items"])
            body_mib = len(response.content) / 2**20
    return {
        "n": n,
        "setup_seconds": round(setup_seconds, 1),
        "setup_cpu_seconds": round(setup_cpu, 1),
        "list_pods": pods,
        "list_seconds": round(list_seconds, 2),
        "list_mib": round(body_mib, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run each N and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[2000], help="tasks to set up (default 2000)")
    parser.add_argument(
        "--seconds", type=float, default=900.0, help="each task's run time; must outlast the set-up"
    )
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile of the last N's set-up")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    arguments = parser.parse_args(argv)
    runs = []
    for index, n in enumerate(arguments.n):
        last = index == len(arguments.n) - 1
        figures = run(n, arguments.seconds, arguments.profile if last else None)
        runs.append(figures)
        print(", ".join(f"{key} {value}" for key, value in figures.items()), flush=True)
    write_result(arguments.results_dir, "emulator_setup", {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
