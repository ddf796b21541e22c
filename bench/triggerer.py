"""Triggerer benchmark: N running peon Jobs watched by our trigger vs the cncf ``KubernetesJobTrigger``.

For each N and each side, in a phase of its own (so every request the emulator counts belongs to that side):

1. a fresh emulator (with cluster) runs in this process, for our side with an Overlord emulator beside it
   (ours launches every Druid task through the Overlord); a *stand-in triggerer* subprocess starts and
   imports everything, then waits;
2. N peon Jobs run: ours as N Druid tasks (T seconds of stand-in peon) submitted to the Overlord, whose
   runner creates their Jobs (``launch_mode="overlord"``; in ``airflow`` mode the trigger first releases
   the Job it created, then follows it the same way); the peer's are ``build_job`` output with image
   behaviour ``sleeps(T)``, written straight into the store;
3. the stand-in triggerer builds N triggers exactly as the operators would defer (ours as
   ``DruidK8sTaskOperator(deferrable=True)`` builds ``DruidOverlordTaskTrigger``; the peer as
   ``KubernetesJobOperator(deferrable=True, wait_until_job_complete=True)`` builds ``KubernetesJobTrigger``,
   default settings: 10 s poll, a new API client per poll), round-trips them through ``serialize()`` as the
   triggerer does, and runs them all as tasks of one asyncio loop until each has fired, starting them
   evenly over one poll interval of the peer (10 s), as deferred tasks arrive over time;
4. this process samples the emulator's request counter and open watches, and the subprocess's CPU and RSS,
   every half second, and records when each Job's terminal condition was written (a store listener), which
   the trigger event times are compared with.

Figures per phase: API requests per task, requests/s in steady state (all pods running, none finished yet),
peak open watch streams, CPU seconds and peak RSS of the stand-in triggerer, detection latency p50/p95 (for
ours, until the Overlord's status says the task completed, which its runner records after seeing the Job
finish). Ours' Kubernetes figures leave out the requests of the Overlord's runner (Druid makes them
whoever launches; counted apart); its requests to the Overlord's API are a figure of their own.
Run ``python -m bench.triggerer --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    NAMESPACE,
    PEON_IMAGE,
    REPO,
    RESULTS_DIR,
    connection_env,
    druid_runner_requests,
    index_task,
    overlord_connection_env,
    overlord_emulator,
    overlord_pod,
    overlord_requests_by_kind,
    overlord_task,
    percentile,
    private_airflow_home,
    runner_properties,
    settled_metrics,
    write_result,
)

OURS = "ours"
PEER = "peer"
SIDES = (OURS, PEER)
#: ``KubernetesJobOperator``'s default ``job_poll_interval``, which it hands to the trigger.
PEER_DEFAULT_POLL_SECONDS = 10.0
SAMPLE_SECONDS = 0.5
#: Extra wall-time budget per trigger: the peer builds an API client (an SSL context, ~50 ms of CPU) per
#: poll, so on a small machine one round of 1,000 polls takes most of a minute.
PER_TRIGGER_BUDGET = 0.5
#: Seconds after the last pod started before the steady-state window opens (initial lists and polls done).
SETTLE_SECONDS = 3.0
#: The Overlord emulator's runner polls each task's Job (Druid's watches it); every 2 s keeps its load on a
#: small machine bounded at N = 1,000, and adds at most that much to ours' detection latency.
OVERLORD_POLL_SECONDS = 2.0


# ---------------------------------------------------------------------------------------------------- worker


def build_triggers(side: str, jobs: list[dict[str, Any]], peer_poll_interval: float) -> list[Any]:
    """The triggers the operators would defer with, rebuilt from ``serialize()`` like the triggerer does."""
    from airflow.providers.cncf.kubernetes.triggers.job import KubernetesJobTrigger

    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.launch.follow import FollowSpec
    from druid_k8s_provider.triggers.overlord_task import DruidOverlordTaskTrigger

    config = RunnerConfig.from_properties(runner_properties())
    built: list[Any] = []
    for job in jobs:
        if side == OURS:
            # DruidK8sTaskOperator.execute for a task the Overlord launches: operator defaults otherwise.
            spec = FollowSpec(
                mode="overlord",
                druid_task_id=job["task_id"],
                job_name=job["name"],
                namespace=job["namespace"],
                druid_ingest_conn_id="druid_ingest_default",
                kubernetes_conn_id="kubernetes_default",
                disable_client_proxy=config.disable_client_proxy,
                launch_timeout_seconds=config.k8s_job_launch_timeout.total_seconds(),
                max_task_duration_seconds=config.max_task_duration.total_seconds(),
            )
            trigger: Any = DruidOverlordTaskTrigger(**spec.to_kwargs())
        else:
            # KubernetesJobOperator.execute_deferrable with the operator's defaults.
            trigger = KubernetesJobTrigger(
                job_name=job["name"],
                job_namespace=job["namespace"],
                pod_names=[job["pod"]],
                pod_namespace=job["namespace"],
                base_container_name="base",
                kubernetes_conn_id="kubernetes_default",
                cluster_context=None,
                config_file=None,
                in_cluster=None,
                poll_interval=peer_poll_interval,
                get_logs=True,
                do_xcom_push=False,
            )
        classpath, kwargs = trigger.serialize()
        module_name, _, class_name = classpath.rpartition(".")
        built.append(getattr(importlib.import_module(module_name), class_name)(**kwargs))
    return built


async def run_triggers(triggers: list[Any], spread: float) -> dict[str, dict[str, Any]]:
    """Run every trigger as its own task on this loop, as the triggerer does; record each first event.

    The triggers start evenly over ``spread`` seconds, as deferred tasks arrive over time: a poller's
    schedule then has every phase relative to the Jobs' completions, as in real life.
    """
    fired: dict[str, dict[str, Any]] = {}

    async def run_one(index: int, trigger: Any) -> None:
        await asyncio.sleep(index * spread / len(triggers))
        job_name = trigger.spec.job_name if hasattr(trigger, "spec") else trigger.job_name
        async for event in trigger.run():
            status = str(event.payload.get("status"))
            if "overlord" in event.payload:  # ours: the Overlord's verdict decides
                status += f" ({event.payload['overlord']['status_code']})"
            fired[job_name] = {"at": time.time(), "status": status}
            break

    await asyncio.gather(*(run_one(index, trigger) for index, trigger in enumerate(triggers)))
    return fired


def worker_main(side: str, peer_poll_interval: float, result_path: Path, log_path: Path) -> None:
    """The stand-in triggerer: import, say READY, read the connection and Jobs from stdin, run the triggers,
    report."""
    import psutil

    build_triggers(side, [], peer_poll_interval)  # import everything before the clock starts
    logging.basicConfig(level=logging.INFO, filename=str(log_path), force=True)
    print("READY", flush=True)
    # From now on everything written goes to the log file, as a triggerer's task logs would: the parent
    # stops reading the pipe, and a full pipe would block the loop.
    with log_path.open("ab") as log_file:
        os.dup2(log_file.fileno(), sys.stdout.fileno())
        os.dup2(log_file.fileno(), sys.stderr.fileno())
    order = json.loads(sys.stdin.readline())
    os.environ.update(order["environment"])
    me = psutil.Process()
    cpu_at_go = sum(me.cpu_times()[:2])
    triggers = build_triggers(side, order["jobs"], peer_poll_interval)
    fired = asyncio.run(run_triggers(triggers, spread=peer_poll_interval))
    cpu_at_end = sum(me.cpu_times()[:2])
    result_path.write_text(
        json.dumps(
            {
                "fired": fired,
                "cpu_seconds": cpu_at_end - cpu_at_go,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


# ---------------------------------------------------------------------------------------------------- parent


@dataclass
class Clock:
    """When things happened in the emulated cluster, from the store's change listener."""

    pod_started: dict[str, float] = field(default_factory=dict)  # job name -> main container running
    finished: dict[str, float] = field(default_factory=dict)  # job name -> Complete/Failed written
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_change(self, event_type: str, plural: str, obj: dict[str, Any]) -> None:
        now = time.time()
        if plural == "jobs" and event_type == "MODIFIED":
            name = obj["metadata"]["name"]
            for condition in (obj.get("status") or {}).get("conditions") or ():
                if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
                    with self.lock:
                        self.finished.setdefault(name, now)
        elif plural == "pods" and event_type == "MODIFIED":
            job = str((obj["metadata"].get("labels") or {}).get("job-name"))
            for status in (obj.get("status") or {}).get("containerStatuses") or ():
                if status.get("name") == "main" and "running" in (status.get("state") or {}):
                    with self.lock:
                        self.pod_started.setdefault(job, now)


@dataclass
class Sample:
    """One look at the emulator and the stand-in triggerer, ``at`` seconds after GO."""

    at: float
    requests: int
    open_watches: int
    cpu_seconds: float
    rss_bytes: int


def sample_until(
    stop: threading.Event, kube: Any, pid: int, go: float, samples: list[Sample], side: str
) -> None:
    """Append a :class:`Sample` every half second until ``stop`` is set or the process ends (ours: the
    Overlord runner's requests left out)."""
    import psutil

    try:
        process = psutil.Process(pid)
        while not stop.is_set():
            times = process.cpu_times()
            snapshot = kube.metrics.snapshot()
            runner = druid_runner_requests(kube).total() if side == OURS else 0
            samples.append(
                Sample(
                    at=time.time() - go,
                    requests=int(snapshot["requests_total"]) - runner,
                    open_watches=int(snapshot["open_watches"]),
                    cpu_seconds=times.user + times.system,
                    rss_bytes=process.memory_info().rss,
                )
            )
            stop.wait(SAMPLE_SECONDS)
    except psutil.NoSuchProcess:
        return


def rate_between(samples: list[Sample], start: float, end: float, attribute: str) -> float | None:
    """Average growth per second of a sampled counter between two moments (None if the window is empty)."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2 or inside[-1].at - inside[0].at <= 0:
        return None
    first, last = inside[0], inside[-1]
    return float(getattr(last, attribute) - getattr(first, attribute)) / (last.at - first.at)


def run_phase(side: str, n: int, seconds: float, peer_poll_interval: float) -> dict[str, Any]:
    """One side watching N Jobs of ``seconds`` each; returns the phase's figures."""
    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.job_builder import build_job
    from druid_k8s_provider.testing import KubeEmulator
    from druid_k8s_provider.testing.behaviours import sleeps

    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="druid-k8s-bench-") as scratch:
        result_path, log_path = Path(scratch) / "result.json", Path(scratch) / "triggerer.log"
        # Started first: it imports Airflow while the emulator starts and the Jobs are built.
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.triggerer",
                "--worker",
                side,
                "--peer-poll-interval",
                str(peer_poll_interval),
                "--worker-result",
                str(result_path),
                "--worker-log",
                str(log_path),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdin is not None and worker.stdout is not None
        try:
            config = RunnerConfig.from_properties(runner_properties())
            manifests = (
                [build_job(index_task(i), overlord_pod(), config) for i in range(n)] if side == PEER else []
            )
            with (
                KubeEmulator(node_cpu="100000", node_memory="1000Ti", history_window=50_000) as kube,
                beside(kube, side) as overlord,
            ):
                kube.store.add_listener(clock.on_change)
                environment = connection_env(kube.kubeconfig_path)
                if overlord is None:
                    kube.register_image(PEON_IMAGE, sleeps(seconds))
                    kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
                    wait_until_ready(worker.stdout, side)
                    jobs = create_jobs(kube, manifests)
                else:
                    environment.update(overlord_connection_env(overlord.url))
                    wait_until_ready(worker.stdout, side)
                    jobs = submit_tasks(kube, overlord, n, seconds)
                    overlord.requests.clear()
                kube.metrics.reset()
                go = time.time()
                order = {"environment": environment, "jobs": jobs}
                worker.stdin.write(json.dumps(order) + "\n")
                worker.stdin.flush()
                samples: list[Sample] = []
                stop = threading.Event()
                sampler = threading.Thread(
                    target=sample_until, args=(stop, kube, worker.pid, go, samples, side)
                )
                sampler.start()
                budget = seconds + peer_poll_interval + 120 + n * PER_TRIGGER_BUDGET
                try:
                    code = worker.wait(timeout=budget)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"the {side} stand-in triggerer did not finish within {budget:.0f}s; the end of its "
                        "log:\n" + log_path.read_text(errors="replace")[-3000:]
                    ) from None
                finally:
                    stop.set()
                    sampler.join()
                if code != 0:
                    raise RuntimeError(
                        f"the {side} stand-in triggerer failed with exit code {code}; the end of its log:\n"
                        + log_path.read_text(errors="replace")[-3000:]
                    )
                ended = time.time()
                snapshot = settled_metrics(kube)
                if overlord is not None:
                    snapshot["druid_runner"] = druid_runner_requests(kube)
                    snapshot["overlord"] = overlord_requests_by_kind(overlord.requests.requests)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        report = json.loads(result_path.read_text())
    return figures(side, n, seconds, peer_poll_interval, go, ended, clock, samples, snapshot, report)


def beside(kube: Any, side: str) -> AbstractContextManager[Any]:
    """Ours: an Overlord emulator beside the cluster (its runner polling every
    :data:`OVERLORD_POLL_SECONDS`); the peer: nothing."""
    return overlord_emulator(kube, poll_interval=OVERLORD_POLL_SECONDS) if side == OURS else nullcontext()


def submit_tasks(kube: Any, overlord: Any, n: int, seconds: float) -> list[dict[str, Any]]:
    """Submit N Druid tasks of ``seconds`` to the Overlord, wait for the Jobs its runner creates and their
    pods; what a trigger needs to know about each (as the operator knew)."""
    import httpx

    with httpx.Client(base_url=overlord.url, timeout=60, trust_env=False) as http:
        for number in range(n):
            task_id = f"index_parallel_bench_{number:05d}"
            http.post(
                "/druid/indexer/v1/task", json=overlord_task(number, seconds, task_id)
            ).raise_for_status()
    # A Job is noted as soon as its pod exists: a short task may complete, and the Overlord delete its Job,
    # before the last of the others has its pod.
    jobs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 120.0
    while len(jobs) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(jobs)} of {n} peon Jobs were created with a pod within 120s")
        time.sleep(0.1)
        pods = pods_by_job(kube)
        for job in kube.store.list("jobs", NAMESPACE):
            name = job["metadata"]["name"]
            if name in pods:
                task_id = job["metadata"]["annotations"]["task.id"]
                jobs.setdefault(
                    name, {"name": name, "namespace": NAMESPACE, "task_id": task_id, "pod": pods[name]}
                )
    return list(jobs.values())


def wait_until_ready(stdout: Any, side: str) -> None:
    """Read the stand-in triggerer's output up to its READY line (imports may print warnings first)."""
    for line in stdout:
        if line.strip() == "READY":
            return
    raise RuntimeError(f"the {side} stand-in triggerer ended before it was ready")


def create_jobs(kube: Any, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the Jobs, wait for their pods; what a trigger needs to know about each (as the operator knew)."""
    jobs = []
    for manifest in manifests:
        created = kube.store.create("jobs", NAMESPACE, manifest)
        jobs.append(
            {
                "name": created["metadata"]["name"],
                "namespace": NAMESPACE,
                "task_id": created["metadata"]["annotations"]["task.id"],
            }
        )
    pods = wait_for_pods(kube, len(jobs))
    for job in jobs:
        job["pod"] = pods[job["name"]]
    return jobs


def wait_for_pods(kube: Any, n: int, timeout: float = 120.0) -> dict[str, str]:
    """Job name -> pod name, once the Job controller made a pod for each of the N Jobs."""
    deadline = time.monotonic() + timeout
    while True:
        pods = pods_by_job(kube)
        if len(pods) >= n:
            return pods
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pods)} of {n} peon pods were created within {timeout:.0f}s")
        time.sleep(0.1)


def pods_by_job(kube: Any) -> dict[str, str]:
    """Job name -> pod name of every pod a Job made in the namespace (the Overlord's own pod is none)."""
    return {
        str(labels["job-name"]): pod["metadata"]["name"]
        for pod in kube.store.list("pods", NAMESPACE)
        if "job-name" in (labels := pod["metadata"].get("labels") or {})
    }


def figures(
    side: str,
    n: int,
    seconds: float,
    peer_poll_interval: float,
    go: float,
    ended: float,
    clock: Clock,
    samples: list[Sample],
    snapshot: dict[str, Any],
    report: dict[str, Any],
) -> dict[str, Any]:
    """The phase's figures from the samples, the store clock and the stand-in triggerer's report."""
    fired: dict[str, dict[str, Any]] = report["fired"]
    latencies = [
        event["at"] - clock.finished[name] for name, event in fired.items() if name in clock.finished
    ]
    last_start = max(clock.pod_started.values(), default=go) - go
    first_finish = min(clock.finished.values(), default=ended) - go
    all_running = max(last_start, peer_poll_interval)  # every pod started and every trigger registered
    window = (all_running + SETTLE_SECONDS, first_finish - SAMPLE_SECONDS)
    runner: Counter[str] = snapshot.get("druid_runner", Counter())
    by_kind = Counter(snapshot["by_verb_resource"]) - runner
    requests = by_kind.total()
    overlord: Counter[str] | None = snapshot.get("overlord")
    druid = (
        {}
        if overlord is None
        else {
            "overlord_requests_per_task": round(overlord.total() / n, 2),
            "overlord_requests_by_kind": dict(sorted(overlord.items())),
            "druid_runner_kubernetes_requests_per_task": round(runner.total() / n, 2),
        }
    )
    return {
        "side": side,
        "n": n,
        "job_seconds": seconds,
        "poll_interval_seconds": peer_poll_interval if side == PEER else 60.0,
        "fired": len(fired),
        "statuses": sorted({str(event["status"]) for event in fired.values()}),
        "wall_seconds": round(ended - go, 2),
        "requests_total": requests,
        "requests_per_task": round(requests / n, 2),
        "requests_by_kind": dict(sorted(by_kind.items())),
        **druid,
        "steady_window_seconds": [round(window[0], 1), round(window[1], 1)],
        "steady_requests_per_second": _rounded(rate_between(samples, *window, "requests")),
        "steady_cpu_cores": _rounded(rate_between(samples, *window, "cpu_seconds"), 4),
        "peak_watches": int(snapshot["peak_watches"]),
        "cpu_seconds": round(float(report["cpu_seconds"]), 2),
        "peak_rss_mib": round(report["peak_rss_bytes"] / 2**20, 1),
        "latency_p50_seconds": _rounded(percentile(latencies, 0.50), 3),
        "latency_p95_seconds": _rounded(percentile(latencies, 0.95), 3),
        "latency_max_seconds": _rounded(max(latencies, default=None), 3),
        "timeline": [
            {"at": round(s.at, 2), "requests": s.requests, "watches": s.open_watches, "cpu": s.cpu_seconds}
            for s in samples
        ],
    }


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="concurrent Jobs")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each Job runs (T)")
    parser.add_argument("--quick", action="store_true", help="N = 10, 100 and T = 20 s")
    parser.add_argument(
        "--peer-poll-interval",
        type=float,
        default=PEER_DEFAULT_POLL_SECONDS,
        help="the cncf trigger's poll interval (its default, 10 s, unless smoke-testing)",
    )
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    private_airflow_home()
    if args.worker:
        worker_main(args.worker, args.peer_poll_interval, args.worker_result, args.worker_log)
        return 0
    sizes, seconds = ([10, 100], 20.0) if args.quick else (args.n, args.seconds)
    phases = []
    for n in sizes:
        for side in args.sides:
            phase = run_phase(side, n, seconds, args.peer_poll_interval)
            phases.append(phase)
            print(
                f"triggerer {side:>4} N={n:<5} T={seconds:g}s: {phase['requests_per_task']} req/task, "
                f"steady {phase['steady_requests_per_second']} req/s, {phase['peak_watches']} watches, "
                f"CPU {phase['cpu_seconds']}s (steady {phase['steady_cpu_cores']} cores), "
                f"RSS {phase['peak_rss_mib']} MiB, latency p50 {phase['latency_p50_seconds']}s "
                f"p95 {phase['latency_p95_seconds']}s, fired {phase['fired']}/{n} {phase['statuses']}"
                + (
                    f"; Overlord {phase['overlord_requests_per_task']} req/task "
                    f"{phase['overlord_requests_by_kind']}; Druid's runner "
                    f"{phase['druid_runner_kubernetes_requests_per_task']} Kubernetes req/task"
                    if side == OURS
                    else ""
                ),
                flush=True,
            )
    write_result(args.results_dir, "triggerer", {"quick": args.quick, "phases": phases})
    return 0


if __name__ == "__main__":
    sys.exit(main())
