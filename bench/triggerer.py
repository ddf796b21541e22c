"""Steady state with N concurrent Druid tasks: ours deferred on one triggerer vs the Apache Druid provider's
``DruidOperator`` holding a worker slot each, against both emulators over real HTTP.

For each N and each side, in a phase of its own with fresh emulators (a Kubernetes emulator with cluster and
an Overlord emulator beside it, in this process; the Overlord's runner waits on one shared watch, see
:mod:`bench.informer`):

- **ours**: N Druid tasks of T seconds (a stand-in peon) are submitted to the Overlord, whose runner creates
  their Jobs (``launch_mode="overlord"``; in ``airflow`` mode the trigger releases its Job first, then waits
  the same way). Once every pod runs, a *stand-in triggerer* subprocess (one asyncio loop, as Airflow's
  triggerer runs triggers) builds ``DruidOverlordTaskTrigger`` for each task exactly as
  ``DruidK8sTaskOperator(deferrable=True)`` defers with it, round-trips it through ``serialize()`` and runs
  them all (started evenly over ten seconds, as deferred tasks arrive) until each has fired. No worker slot
  is held while they wait: the operator gave its slot back when it deferred.
- **druid**: a *stand-in worker pool* subprocess runs ``DruidOperator(...).execute`` of the
  apache-druid provider at its defaults in N threads (one worker slot each, started evenly over ten
  seconds): each submits its task and GETs ``/druid/indexer/v1/task/{id}/status`` every ``timeout`` (1) s
  until the task completed.

This process samples, every half second, the requests each side sent to the Overlord (the peons' task
actions left out) and to the Kubernetes API (the Overlord runner's left out: Druid makes them whoever
launches), the watch streams open, the CPU and RSS of the side's subprocess and of this process (the two
emulators and the sampler), and the worker slots held. The Overlord records when it completed each task;
detection latency is from then to the moment the trigger yielded its event (or ``execute`` returned).
*Steady state* is the last 30 s before the first outcome (at most from three seconds after every pod ran and
every waiter started); the waiters' start-up before it is reported apart. Run
``python -m bench.triggerer --help``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.cluster_clock import Clock, submit_and_wait_for_pods
from bench.common import (
    DRUID_RUNNER_AGENT,
    PEON_ACTIONS_PATH,
    REPO,
    RESULTS_DIR,
    connection_env,
    overlord_connection_env,
    overlord_emulator,
    overlord_requests_by_kind,
    overlord_task,
    percentile,
    private_airflow_home,
    write_result,
)
from bench.latency_parts import summarise

OURS = "ours"
DRUID = "druid"
SIDES = (OURS, DRUID)
SAMPLE_SECONDS = 0.5
#: Seconds over which the waiters start (deferred tasks, or worker slots, arrive over time).
SPREAD_SECONDS = 10.0
#: Seconds after every pod ran and every waiter started before the steady-state window opens.
SETTLE_SECONDS = 3.0
#: Length of the steady-state window, which ends at the first outcome (seconds): the waiters' start-up
#: (shared lists, log streams opened) is over by then, and is reported apart.
STEADY_SECONDS = 30.0
#: The Overlord runner's shared watches (peon Jobs, peon pods), open beside the side's own.
RUNNER_WATCHES = 2


@dataclass
class Sample:
    """One look, ``at`` seconds after GO."""

    at: float
    kube_requests: int
    overlord_requests: int
    watches: int
    cpu: float
    rss: int
    emulator_cpu: float
    emulator_rss: int
    slots: int


class Sampler(threading.Thread):
    """Samples every half second until stopped."""

    def __init__(self, kube: Any, overlord: Any, worker: psutil.Process, go: float, side: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.overlord, self.worker, self.go, self.side = kube, overlord, worker, go, side
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self._kube_seen = self._kube_ours = self._overlord_seen = self._overlord_ours = 0
        self._base_threads = worker.num_threads()

    def run(self) -> None:
        me = psutil.Process()
        try:
            while not self.stop.is_set():
                cpu = self.worker.cpu_times()
                rss = self.worker.memory_info().rss
                threads = self.worker.num_threads()
                mine = me.cpu_times()
                self.samples.append(
                    Sample(
                        at=time.time() - self.go,
                        kube_requests=self._count_kube(),
                        overlord_requests=self._count_overlord(),
                        watches=max(0, int(self.kube.metrics.snapshot()["open_watches"]) - RUNNER_WATCHES),
                        cpu=cpu.user + cpu.system,
                        rss=rss,
                        emulator_cpu=mine.user + mine.system,
                        emulator_rss=me.memory_info().rss,
                        slots=max(0, threads - self._base_threads) if self.side == DRUID else 0,
                    )
                )
                self.stop.wait(SAMPLE_SECONDS)
        except psutil.NoSuchProcess:
            return

    def _count_kube(self) -> int:
        records = self.kube.metrics.records()
        for record in records[self._kube_seen :]:
            self._kube_ours += record.user_agent != DRUID_RUNNER_AGENT
        self._kube_seen = len(records)
        return self._kube_ours

    def _count_overlord(self) -> int:
        requests = self.overlord.requests.requests
        end = len(requests)
        for request in requests[self._overlord_seen : end]:
            self._overlord_ours += request.path != PEON_ACTIONS_PATH
        self._overlord_seen = end
        return self._overlord_ours


def run_phase(side: str, n: int, seconds: float, profile: bool, spread: float) -> dict[str, Any]:
    """One side waiting on N tasks of ``seconds`` each; returns the phase's figures."""
    from druid_k8s_provider.testing import KubeEmulator

    clock, outcomes = Clock(), {}
    with tempfile.TemporaryDirectory(prefix="druid-k8s-bench-") as scratch:
        result_path, log_path = Path(scratch) / "result.json", Path(scratch) / "worker.log"
        profile_path = Path(scratch) / "profile.txt"
        module = "bench.stand_in_triggerer" if side == OURS else "bench.stand_in_workers"
        command = [sys.executable, "-m", module, "--result", str(result_path), "--log", str(log_path)]
        if profile:
            command += ["--profile", str(profile_path)]
        worker = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert worker.stdin is not None and worker.stdout is not None
        try:
            with (
                KubeEmulator(node_cpu="1000000", node_memory="10000Ti", history_window=100_000) as kube,
                overlord_emulator(kube, informer=True, outcomes=outcomes) as overlord,
            ):
                kube.store.add_event_listener(clock.on_event)
                environment = {
                    **connection_env(kube.kubeconfig_path),
                    **overlord_connection_env(overlord.url),
                }
                wait_until_ready(worker.stdout, side)
                started = time.time()
                order: dict[str, Any] = {"environment": environment, "spread": spread}
                if side == OURS:
                    order["jobs"] = submit_and_wait_for_pods(overlord, clock, n, seconds)
                else:
                    order["tasks"] = [
                        overlord_task(i, seconds, f"index_parallel_druidop_{i:05d}") for i in range(n)
                    ]
                setup_seconds = time.time() - started
                overlord.requests.clear()
                kube.metrics.reset()
                go = time.time()
                worker.stdin.write(json.dumps(order) + "\n")
                worker.stdin.flush()
                sampler = Sampler(kube, overlord, psutil.Process(worker.pid), go, side)
                sampler.start()
                budget = seconds + 3 * spread + 300 + n * 0.05
                try:
                    code = worker.wait(timeout=budget)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"the {side} side did not finish within {budget:.0f}s:\n{tail(log_path)}"
                    ) from None
                finally:
                    sampler.stop.set()
                    sampler.join()
                if code != 0:
                    raise RuntimeError(f"the {side} side failed (exit code {code}):\n{tail(log_path)}")
                ended = time.time()
                kube.metrics.settle(5.0)
                by_kind = overlord_requests_by_kind(overlord.requests.requests)
                kube_by_kind = Counter(
                    f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")
                    for r in kube.metrics.records()
                    if r.user_agent != DRUID_RUNNER_AGENT
                )
                peak_watches = int(kube.metrics.snapshot()["peak_watches"]) - RUNNER_WATCHES
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        report = json.loads(result_path.read_text())
        profile_text = profile_path.read_text() if profile and profile_path.exists() else None
    phase = figures(side, n, seconds, spread, go, ended, clock, outcomes, sampler.samples, report)
    phase.update(
        setup_seconds=round(setup_seconds, 1),
        overlord_requests_by_kind=dict(sorted(by_kind.items())),
        kubernetes_requests_by_kind=dict(sorted(kube_by_kind.items())),
        peak_watches=max(0, peak_watches),
    )
    if "status_rounds" in report:
        phase.update(summarise(report["status_rounds"], clock.job_ended, outcomes, clock.task_of_job))
    if profile_text is not None:
        phase["profile"] = report.get("profile_top")
        phase["profile_text"] = profile_text
    return phase


def wait_until_ready(stdout: Any, side: str) -> None:
    """Read the subprocess's output up to its READY line (imports may print warnings first)."""
    for line in stdout:
        if line.strip() == "READY":
            return
    raise RuntimeError(f"the {side} subprocess ended before it was ready")


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def rate(samples: list[Sample], start: float, end: float, attribute: str) -> float | None:
    """Average growth per second of a sampled counter between two moments (None if the window is empty)."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2 or inside[-1].at - inside[0].at <= 0:
        return None
    return float(getattr(inside[-1], attribute) - getattr(inside[0], attribute)) / (
        inside[-1].at - inside[0].at
    )


def figures(
    side: str,
    n: int,
    seconds: float,
    spread: float,
    go: float,
    ended: float,
    clock: Clock,
    outcomes: dict[str, float],
    samples: list[Sample],
    report: dict[str, Any],
) -> dict[str, Any]:
    """The phase's figures from the samples, the Overlord's outcome times and the subprocess's report."""
    fired: dict[str, dict[str, Any]] = report["fired"]
    latencies = [event["at"] - outcomes[task_id] for task_id, event in fired.items() if task_id in outcomes]
    last_start = max(clock.pod_running.values(), default=go) - go
    first_outcome = min(outcomes.values(), default=ended) - go
    started = max(last_start, spread) + SETTLE_SECONDS
    window = (max(started, first_outcome - STEADY_SECONDS), first_outcome - SAMPLE_SECONDS)
    inside = [s for s in samples if window[0] <= s.at <= window[1]]
    steady_rps = rate(samples, *window, "overlord_requests")
    return {
        "side": side,
        "n": n,
        "job_seconds": seconds,
        "fired": len(fired),
        "detected": len(latencies),
        "statuses": sorted({str(event["status"]) for event in fired.values()}),
        "wall_seconds": round(ended - go, 1),
        "steady_window_seconds": [round(window[0], 1), round(window[1], 1)],
        "steady_overlord_requests_per_second": _round(steady_rps),
        "steady_kubernetes_requests_per_second": _round(rate(samples, *window, "kube_requests")),
        "steady_watches": inside[-1].watches if inside else None,
        "steady_cpu_cores": _round(rate(samples, *window, "cpu"), 3),
        "cpu_seconds": round(float(report["cpu_seconds"]), 1),
        "startup_cpu_seconds": round(inside[0].cpu - samples[0].cpu, 1) if inside and samples else None,
        "peak_rss_mib": round(report["peak_rss_bytes"] / 2**20, 1),
        "worker_slots_held": max((s.slots for s in inside), default=0),
        "emulators_steady_cpu_cores": _round(rate(samples, *window, "emulator_cpu"), 3),
        "emulators_peak_rss_mib": round(max((s.emulator_rss for s in samples), default=0) / 2**20, 1),
        "overlord_requests_total": samples[-1].overlord_requests if samples else 0,
        "kubernetes_requests_total": samples[-1].kube_requests if samples else 0,
        "latency_p50_seconds": _round(percentile(latencies, 0.50), 3),
        "latency_p95_seconds": _round(percentile(latencies, 0.95), 3),
        "latency_max_seconds": _round(max(latencies, default=None), 3),
        "timeline": [
            {
                "at": round(s.at, 1),
                "overlord": s.overlord_requests,
                "kube": s.kube_requests,
                "cpu": round(s.cpu, 2),
            }
            for s in samples
        ],
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def describe(phase: dict[str, Any]) -> str:
    """One line of a phase's figures."""
    fields = [
        f"triggerer {phase['side']:>5} N={phase['n']:<6} T={phase['job_seconds']:g}s",
        f"setup {phase.get('setup_seconds')}s",
        f"steady Overlord {phase['steady_overlord_requests_per_second']} req/s",
        f"Kubernetes {phase['steady_kubernetes_requests_per_second']} req/s",
        f"{phase['steady_watches']} watches",
        f"CPU {phase['cpu_seconds']}s (steady {phase['steady_cpu_cores']} cores)",
        f"RSS {phase['peak_rss_mib']} MiB",
        f"slots {phase['worker_slots_held']}",
        f"latency p50 {phase['latency_p50_seconds']}s p95 {phase['latency_p95_seconds']}s",
        f"status rounds {phase.get('status_rounds')} answered in {phase.get('status_answer_seconds')}s",
        f"Overlord records outcomes {phase.get('overlord_record_lag_seconds')}s after the Job",
        f"detected {phase['detected']}/{phase['n']} {phase['statuses']}",
        f"emulators steady {phase['emulators_steady_cpu_cores']} cores",
        f"emulators RSS {phase['emulators_peak_rss_mib']} MiB",
    ]
    return ", ".join(fields)


def parse_phase(text: str) -> tuple[int, float]:
    n, _, seconds = text.partition(":")
    return int(n), float(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--phases",
        nargs="+",
        type=parse_phase,
        default=[(100, 60.0), (1000, 90.0), (10000, 420.0)],
        help="N:T pairs: N concurrent tasks of T seconds (T must outlast submitting them all)",
    )
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument(
        "--druid-max-n",
        type=int,
        default=1000,
        help="largest N the DruidOperator side is run at (one thread per worker slot)",
    )
    parser.add_argument("--profile-n", type=int, default=10000, help="profile our triggerer at this N")
    parser.add_argument(
        "--spread", type=float, default=SPREAD_SECONDS, help="seconds over which the waiters start"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    private_airflow_home()
    phases: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for n, seconds in args.phases:
        for side in args.sides:
            if side == DRUID and n > args.druid_max_n:
                skipped.append({"side": side, "n": n})
                continue
            profile = side == OURS and n == args.profile_n
            try:
                phase = run_phase(side, n, seconds, profile, args.spread)
            except RuntimeError as error:  # the other phases' figures still count; this one says why not
                print(f"triggerer {side} N={n}: failed: {error}", flush=True)
                skipped.append({"side": side, "n": n, "failed": str(error)[:2000]})
                continue
            phases.append(phase)
            print(describe(phase), flush=True)
    write_result(
        args.results_dir,
        "triggerer",
        {
            "spread_seconds": SPREAD_SECONDS,
            "phases": phases,
            "not_run": skipped,
            "druid_max_n": args.druid_max_n,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
