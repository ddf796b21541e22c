"""A worker killed in the middle of a task, then the Airflow retry: what each operator leaves in Druid.

For each side, against both emulators over real HTTP: try 1 runs the operator's ``execute`` in a worker
process of its own (waiting in the worker); once the task's peon pod runs, that process is killed with
SIGKILL (an OOM kill, a node lost); try 2 then runs ``execute`` in a new process, as Airflow's retry would.
Counted from the Overlord's request log and the cluster's store: task submissions, the Druid tasks the
Overlord ran, the peon Jobs created, and how each Druid task ended.

- **ours**: ``DruidK8sTaskOperator`` (id derived from the task instance, ``launch_mode="auto"``); the retry
  asks the Overlord about the attempts so far and re-attaches to the one still running.
- **druid**: the Apache Druid provider's ``DruidOperator`` at its defaults, with the same task JSON (no
  ``id``, as its users write it); its retry submits the task again.

Run ``python -m bench.crash_retry --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    NAMESPACE,
    REPO,
    RESULTS_DIR,
    connection_env,
    overlord_connection_env,
    overlord_emulator,
    overlord_task,
    private_airflow_home,
    runner_properties,
    write_result,
)

SIDES = ("ours", "druid")
SUBMIT = ("POST", "/druid/indexer/v1/task")


def child(side: str, try_number: int, seconds: float) -> None:
    """One try of the task in this process (waiting in the worker)."""
    private_airflow_home()
    from bench.lifecycle import task_context

    if side == "ours":
        from druid_k8s_provider.operators.task import DruidK8sTaskOperator

        operator: Any = DruidK8sTaskOperator(
            task_id="ingest",
            druid_task=overlord_task(0, seconds),
            runner_properties=runner_properties(),
            overlord_pod_name="druid-overlord-0",
            deferrable=False,
        )
    else:
        from airflow.providers.apache.druid.operators.druid import DruidOperator

        operator = DruidOperator(task_id="ingest", json_index_file=json.dumps(overlord_task(0, seconds)))
    context = task_context("ingest", 0)
    context["ti"].try_number = try_number
    operator.execute(context)


def running(pod: dict[str, Any]) -> bool:
    """Whether a peon pod's container runs."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    labels = pod["metadata"].get("labels") or {}
    return "job-name" in labels and any("running" in (s.get("state") or {}) for s in statuses)


def druid_tasks(url: str, timeout: float) -> dict[str, str]:
    """Task id -> final status of every task the Overlord ran, once none is active (the one nobody follows
    after the crash runs to its end too), read from Druid's task lists."""
    import httpx

    with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = [
                task
                for state in ("waiting", "pending", "running")
                for task in http.get("/druid/indexer/v1/tasks", params={"state": state}).json()
            ]
            if not active:
                break
            time.sleep(0.5)
        complete = http.get("/druid/indexer/v1/tasks", params={"state": "complete"}).json()
    return {str(task["id"]): str(task["statusCode"]) for task in complete}


def run_side(side: str, seconds: float) -> dict[str, Any]:
    """Try 1 killed once its pod runs, then try 2; what the Overlord and the cluster saw."""
    from druid_k8s_provider.testing import KubeEmulator

    jobs_created: list[str] = []
    pod_running = threading.Event()

    def on_change(event_type: str, plural: str, obj: dict[str, Any]) -> None:
        if plural == "jobs" and event_type == "ADDED":
            jobs_created.append(obj["metadata"]["name"])
        elif plural == "pods" and event_type == "MODIFIED" and running(obj):
            pod_running.set()

    with KubeEmulator(node_cpu="1000", node_memory="100Ti") as kube, overlord_emulator(kube) as overlord:
        kube.store.add_listener(on_change)
        environment = {
            **os.environ,
            **connection_env(kube.kubeconfig_path),
            **overlord_connection_env(overlord.url),
            "PYTHONPATH": str(REPO),
        }
        command = [sys.executable, "-m", "bench.crash_retry", "--child", side, "--seconds", str(seconds)]
        first = subprocess.Popen(
            [*command, "--try", "1"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not pod_running.wait(120):
            first.kill()
            raise RuntimeError(f"{side}: the first try's pod did not run within 120 s")
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        second = subprocess.run(
            [*command, "--try", "2"],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=seconds + 180,
            check=False,
        )
        retried_in = time.time() - killed_at
        submissions = sum(1 for r in overlord.requests.requests if (r.method, r.path) == SUBMIT)
        accepted = sum(
            1 for r in overlord.requests.requests if (r.method, r.path) == SUBMIT and r.status == 200
        )
        tasks = druid_tasks(overlord.url, seconds + 60)
    return {
        "side": side,
        "job_seconds": seconds,
        "retry_succeeded": second.returncode == 0,
        "retry_error": None if second.returncode == 0 else second.stderr.strip().splitlines()[-1:],
        "retry_seconds": round(retried_in, 1),
        "submissions": submissions,
        "submissions_accepted": accepted,
        "druid_tasks": len(tasks),
        "druid_task_outcomes": sorted(tasks.values()),
        "jobs_created": len(set(jobs_created)),
        "ingestions": sum(1 for status in tasks.values() if status == "SUCCESS"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the peon runs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--try", dest="try_number", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.try_number, args.seconds)
        return 0
    private_airflow_home()
    results = []
    for side in SIDES:
        result = run_side(side, args.seconds)
        results.append(result)
        print(f"crash_retry {side:>5}: {json.dumps(result)}", flush=True)
    write_result(args.results_dir, "crash_retry", {"namespace": NAMESPACE, "sides": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
