"""Reaper benchmark: a sweep over many finished and running peon Jobs, its wall time, requests and memory.

The emulator (API server only: the Jobs are written straight into its store, which is much faster than
creating them over HTTP and changes nothing the reaper sees) holds F finished peon Jobs, older than
``taskCleanupDelay``, and R running ones. A subprocess runs ``druid_k8s_provider.reaper.reap`` through
``DruidK8sHook`` as the reaper DAG does, so its memory is the reaper's alone:

- sweeps at F = 1,000 / R = 100 and F = 10,000 / R = 1,000: wall time, CPU seconds of the reaper process,
  API requests (from the emulator's metrics), Jobs deleted;
- memory: how much the process's peak RSS grew during the sweep (peak RSS after it minus RSS before it),
  which stays flat in N when one page of Jobs is held at a time. (tracemalloc would be more precise but
  slows the sweep several times over, so it would need separate runs.)

The reaper asks the Overlord, once per page of Jobs it would delete, whether their tasks are still active
(one batched ``taskStatus``); here a stand-in answers that it knows none of them (as an Overlord answers for
tasks it completed long ago), so every old finished Job goes, and the number of those requests is reported.

The emulator keeps a long watch history here (``history_window``) so that a list's continue token stays
valid for the whole sweep, as it does on a real API server for the 5 minutes between etcd compactions.

Run ``python -m bench.reaper --help``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    NAMESPACE,
    PEON_IMAGE,
    REPO,
    RESULTS_DIR,
    connection_env,
    private_airflow_home,
    write_result,
)

CLEANUP_DELAY = dt.timedelta(days=2)  # Druid's default taskCleanupDelay (P2D)


def peon_job(number: int, finished_days_ago: float | None) -> dict[str, Any]:
    """A peon Job as the store holds it after the Job controller's work: finished or still running."""
    labels = {"druid.k8s.peons": "true", "druid.task.type": "index_parallel", "druid.datasource": "bench"}
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=finished_days_ago or 0, minutes=5)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if finished_days_ago is None:
        status: dict[str, Any] = {"active": 1, "ready": 1, "startTime": stamp}
    else:
        status = {
            "startTime": stamp,
            "completionTime": stamp,
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
                {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
            ],
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"indexparallelbench{number:06d}-{number:08x}",
            "labels": labels,
            "annotations": {"task.id": f"index_parallel_bench_{number:06d}"},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": PEON_IMAGE, "args": ["peon"]}],
                },
            },
        },
        "status": status,
    }


def fill_store(kube: Any, finished: int, running: int) -> float:
    """Write the Jobs into the store; returns the seconds it took."""
    started = time.monotonic()
    for number in range(finished + running):
        job = peon_job(number, 3.0 if number < finished else None)
        status = job.pop("status")
        kube.store.create("jobs", NAMESPACE, job)

        def set_status(stored: dict[str, Any], status: dict[str, Any] = status) -> None:
            stored["status"] = status

        kube.store.mutate("jobs", NAMESPACE, job["metadata"]["name"], set_status, subresource="status")
    return time.monotonic() - started


class OverlordWithoutTheseTasks:
    """The Overlord's batched status for tasks it no longer knows: no task keeps its Job. Counts requests."""

    def __init__(self) -> None:
        self.requests = 0

    def task_statuses(self, task_ids: Sequence[str]) -> dict[str, Any]:
        self.requests += 1
        return {}


def worker_main() -> None:
    """Run one sweep as the reaper DAG does and print its figures as JSON."""
    import psutil

    from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
    from druid_k8s_provider.reaper import reap

    logging.basicConfig(level=logging.WARNING)
    hook = DruidK8sHook(namespace=NAMESPACE)
    hook.get_conn()  # build the client before measuring: the sweep is what is measured
    me = psutil.Process()
    rss_before, cpu_before = me.memory_info().rss, sum(me.cpu_times()[:2])
    started = time.monotonic()
    overlord = OverlordWithoutTheseTasks()
    summary = reap(hook, NAMESPACE, CLEANUP_DELAY, overlord=overlord)
    wall = time.monotonic() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "summary": summary,
                "wall_seconds": wall,
                "cpu_seconds": sum(me.cpu_times()[:2]) - cpu_before,
                "rss_before_bytes": rss_before,
                "peak_rss_bytes": peak_rss,
                "overlord_requests": overlord.requests,
            }
        )
    )


def sweep(finished: int, running: int) -> dict[str, Any]:
    """One emulator with the Jobs, one reaper subprocess; returns its figures and the requests it made."""
    from druid_k8s_provider.testing import KubeEmulator

    history = 2 * (finished + running) + 1000  # every write of the fill and the sweep stays in the history
    with KubeEmulator(cluster=False, history_window=history) as kube:
        kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        fill_seconds = fill_store(kube, finished, running)
        kube.metrics.reset()
        completed = subprocess.run(
            [sys.executable, "-m", "bench.reaper", "--worker"],
            cwd=REPO,
            env={**os.environ, **connection_env(kube.kubeconfig_path)},
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the reaper sweep failed:\n{completed.stderr[-3000:]}")
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        snapshot = kube.metrics.snapshot()
        left = len(kube.store.list("jobs", NAMESPACE))
    summary = report["summary"]
    return {
        "finished_jobs": finished,
        "running_jobs": running,
        "fill_seconds": round(fill_seconds, 1),
        "wall_seconds": round(report["wall_seconds"], 2),
        "cpu_seconds": round(report["cpu_seconds"], 2),
        "examined": summary["examined"],
        "deleted": summary["deleted"],
        "kept_running": summary["kept_running"],
        "jobs_left": left,
        "requests_total": snapshot["requests_total"],
        "requests_by_kind": snapshot["by_verb_resource"],
        "rss_growth_mib": round((report["peak_rss_bytes"] - report["rss_before_bytes"]) / 2**20, 1),
        "peak_rss_mib": round(report["peak_rss_bytes"] / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--finished", type=int, default=10_000, help="finished Jobs of the large sweep")
    parser.add_argument("--running", type=int, default=1_000, help="running Jobs of the large sweep")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    private_airflow_home()
    if args.worker:
        worker_main()
        return 0
    sweeps = []
    for finished, running in (
        (max(1, args.finished // 10), max(1, args.running // 10)),
        (args.finished, args.running),
    ):
        result = sweep(finished, running)
        sweeps.append(result)
        print(
            f"reaper F={finished} R={running}: {result['wall_seconds']}s wall, {result['cpu_seconds']}s CPU, "
            f"{result['examined']} examined, {result['deleted']} deleted, "
            f"{result['requests_total']} requests, "
            f"RSS +{result['rss_growth_mib']} MiB (peak {result['peak_rss_mib']} MiB)",
            flush=True,
        )
    write_result(args.results_dir, "reaper", {"cleanup_delay_days": CLEANUP_DELAY.days, "sweeps": sweeps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
