"""Turn ``bench/results/*.json`` into docs/performance.md (tables, targets) and docs/img/bench.png (plot).

Only what was measured is written: a benchmark without a result file gets a line saying so. Run
``python -m bench.report --help``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS_DIR

DOCS_PAGE = REPO / "docs" / "performance.md"
PLOT = REPO / "docs" / "img" / "bench.png"
#: Hand-written analysis of the figures (causes of missed targets, profiles), kept next to the scripts.
FINDINGS = REPO / "bench" / "findings.md"

INTRO = """\
# Performance

Measured with `make bench` (`bench/run_all.py`), in one run on one machine, against the Kubernetes API
emulator that ships with the provider (`druid_k8s_provider.testing`), on 127.0.0.1. The emulator's request
metrics count every API call a side made; the peer is what users would pick instead: the cncf provider's
`KubernetesJobOperator` and its `KubernetesJobTrigger`, at their default settings. Raw figures:
`bench/results/*.json`; the scripts are in `bench/`.

The emulator answers in microseconds and runs in the same machine, so absolute times are optimistic for a
real cluster; request counts, watch streams and the triggerer's CPU are what carries over.
"""

METHOD = """\
## How it was measured

- **Triggerer.** For each N, each side runs in a phase of its own with a fresh emulator (API server and
  emulated cluster in the benchmark process). Ours: N Druid tasks are submitted to an Overlord emulator beside
  the cluster, whose runner creates their Jobs (each stand-in peon runs T seconds). Peer: N peon Jobs built by
  `build_job` are written into the emulator's store; each peon's container sleeps T seconds. A *stand-in
  triggerer* (a subprocess with one asyncio loop, as Airflow's triggerer runs triggers) then builds one
  trigger per Job exactly as the operator defers with it, round-trips it through `serialize()`, and runs all
  of them until each fired, starting them evenly over 10 s (as deferred tasks arrive over time; it spreads the
  peer's polls over every phase relative to the Jobs' completions, as in real life). Ours:
  `DruidOverlordTaskTrigger` as `DruidK8sTaskOperator(deferrable=True)` builds it for a task the Overlord
  launches (shared watches, log streaming, fallback poll only when the watch goes quiet, one batched
  `taskStatus` request per interval for all tasks); the Kubernetes requests of the Overlord's runner are left
  out of its counts (its client has its own user agent), its requests to the Overlord's API are counted apart.
  Peer: `KubernetesJobTrigger` as `KubernetesJobOperator(deferrable=True, wait_until_job_complete=True)`
  builds it (a `GET jobs/{name}/status` every 10 s, through a new API client each time). Requests are counted
  by the emulator; CPU and RSS of the stand-in triggerer come from psutil and `getrusage`, from the moment the
  triggers start (imports excluded). *Steady state* is the window from 3 s after the last pod started and the
  last trigger was registered to the first Job finishing. *Detection latency* is the time from the moment the
  emulator's Job controller wrote the Job's `Complete` condition (a store listener records it, so the 1 s
  resolution of `status.completionTime` does not blur it) to the trigger's event (ours fires once the
  Overlord's status says the task completed, which its runner records after seeing the Job finish).
- **Lifecycle.** Each operator's `execute` runs K short tasks (a peon that logs 4 lines and exits after 1 s)
  against one emulated cluster, non-deferrable (one after another) and deferrable (execute, then all triggers
  on one loop, then `execute_complete`, as Airflow calls them). Requests per task = all requests of the mode /
  K. Ours launches through an Overlord emulator beside the cluster (`launch_mode="auto"` picks `airflow` at
  its version: suspended Job, submit, release, follow) and reads the Overlord pod as its template
  (`overlordSingleContainer`); its requests to the Overlord's API, and the Kubernetes requests of the
  Overlord's runner for the task, are counted apart. The peer runs with `wait_until_job_complete=True` and its
  defaults otherwise: it deletes the pod but leaves the Job (a TTL or a `KubernetesDeleteJobOperator` would
  add one request), and its count grows by one `GET` per 10 s of run time.
- **Reaper.** Finished peon Jobs (3 days old, past the default `taskCleanupDelay` of 2 days) and running
  ones are written into the store of an API-server-only emulator; `reaper.reap` then sweeps them through
  `DruidK8sHook` in a subprocess, as the reaper DAG does. Memory: how much the reaper process's peak RSS
  grew during the sweep; CPU: the reaper process's own CPU time (the rest of the wall time is the server).
- **build_job.** Manifests per second for distinct tasks, best of three rounds, one core.
"""


def load(results_dir: Path, name: str) -> dict[str, Any] | None:
    """A benchmark's result document, or None when it was not run."""
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""

    def cell(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_section(documents: list[dict[str, Any]]) -> str:
    if not documents:
        return ""
    machine, when = documents[0]["machine"], documents[0]["measured_at"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    return (
        "## Machine\n\n"
        f"Measured {when} on {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB RAM, "
        f"{machine['os']}, Python {machine['python']}; {versions}. The machine was shared with other work "
        f"(1-minute load average {machine.get('load_average_1m', 'n/a')} at the end of the first "
        "benchmark), so CPU and wall times are upper bounds.\n"
    )


def triggerer_section(document: dict[str, Any] | None) -> str:
    if document is None:
        return "## Triggerer\n\nNot measured in this run.\n"
    rows = [
        [
            phase["n"],
            "ours" if phase["side"] == "ours" else "cncf KubernetesJobTrigger",
            phase["job_seconds"],
            phase["requests_per_task"],
            phase.get("overlord_requests_per_task", "none"),
            phase["steady_requests_per_second"],
            f"{steady_watches(phase)} / {phase['peak_watches']}",
            phase["cpu_seconds"],
            phase["steady_cpu_cores"],
            phase["peak_rss_mib"],
            phase["latency_p50_seconds"],
            phase["latency_p95_seconds"],
            f"{phase['fired']}/{phase['n']}",
        ]
        for phase in document["phases"]
    ]
    header = [
        "N",
        "side",
        "T (s)",
        "requests / task",
        "Overlord requests / task",
        "steady requests/s",
        "watches steady / peak",
        "CPU (s)",
        "steady CPU (cores)",
        "peak RSS (MiB)",
        "latency p50 (s)",
        "latency p95 (s)",
        "fired",
    ]
    breakdown = "\n".join(
        f"- N={phase['n']} {phase['side']}: "
        + ", ".join(f"{kind} {count:,}" for kind, count in sorted(phase["requests_by_kind"].items()))
        for phase in document["phases"]
    )
    return (
        "## Triggerer: N concurrent tasks\n\n"
        "Ours follows Druid tasks submitted to an Overlord emulator beside the cluster (its runner creates "
        "the Jobs): its Kubernetes figures leave out the requests of the Overlord's runner, its requests to "
        "the Overlord's API are a column of their own, and its latency runs until the Overlord's status says "
        "the task completed.\n\n"
        + table(header, rows)
        + "\nRequests by kind (whole phase):\n\n"
        + breakdown
        + "\n"
    )


def lifecycle_section(document: dict[str, Any] | None) -> str:
    if document is None:
        return "## Lifecycle\n\nNot measured in this run.\n"
    rows = [
        [
            "DruidK8sTaskOperator" if mode["side"] == "ours" else "KubernetesJobOperator",
            mode["mode"],
            mode["tasks"],
            f"{mode['job_seconds']:g}",
            mode["requests_per_task"],
            ", ".join(f"{kind} {count:g}" for kind, count in mode["requests_per_task_by_kind"].items()),
            mode.get("overlord_requests_per_task", "none"),
            ", ".join(
                f"{kind} {count:g}"
                for kind, count in (mode.get("overlord_requests_per_task_by_kind") or {}).items()
            ),
            mode.get("druid_runner_kubernetes_requests_per_task", "none"),
            mode["jobs_left"],
        ]
        for mode in document["modes"]
    ]
    fixed = document.get("fixed_cost") or {}
    fixed_rows = [
        [
            "DruidK8sTaskOperator" if side == "ours" else "KubernetesJobOperator",
            cost["fixed_per_task"],
            cost["shared"],
        ]
        for side, cost in fixed.items()
    ]
    return (
        "## Lifecycle: requests per task\n\n"
        "Ours launches each Druid task through the Overlord (an Overlord emulator beside the cluster). Its "
        "Kubernetes requests are its own; counted apart are its requests to the Overlord's API (the peons' "
        "own task actions left out) and the Kubernetes requests the "
        "Overlord's runner makes for the task (it joins, reads and deletes the Job, whoever launched it; the "
        "emulator polls where Druid watches). The peer runs a plain Job, with no Overlord.\n\n"
        + table(
            [
                "operator",
                "mode",
                "tasks",
                "peon (s)",
                "Kubernetes requests / task",
                "by kind (per task)",
                "Overlord requests / task",
                "by kind (per task)",
                "Druid runner's Kubernetes requests / task",
                "Jobs left",
            ],
            rows,
        )
        + (
            f"\nDeferrable, split by running K = {document['tasks']} and K2 = {document.get('more_tasks')} "
            f"tasks of {document['job_seconds']:g} s: requests each added task costs (fixed), and those the "
            "triggerer spends once for all of them (shared watches):\n\n"
            + table(["operator", "fixed per task", "shared"], fixed_rows)
            if fixed_rows
            else ""
        )
    )


def reaper_section(document: dict[str, Any] | None) -> str:
    if document is None:
        return "## Reaper\n\nNot measured in this run.\n"
    rows = [
        [
            sweep["finished_jobs"],
            sweep["running_jobs"],
            sweep["wall_seconds"],
            sweep["cpu_seconds"],
            sweep["examined"],
            sweep["deleted"],
            sweep["requests_total"],
            sweep["rss_growth_mib"],
            sweep["peak_rss_mib"],
        ]
        for sweep in document["sweeps"]
    ]
    header = [
        "finished Jobs",
        "running Jobs",
        "wall (s)",
        "reaper CPU (s)",
        "examined",
        "deleted",
        "API requests",
        "RSS growth (MiB)",
        "peak RSS (MiB)",
    ]
    return "## Reaper: one sweep\n\n" + table(header, rows)


def build_job_section(document: dict[str, Any] | None) -> str:
    if document is None:
        return "## build_job\n\nNot measured in this run.\n"
    rows = [
        [adapter["adapter"], adapter["manifests_per_second"], adapter["manifest_bytes"]]
        for adapter in document["adapters"]
    ]
    return "## build_job throughput\n\n" + table(["adapter", "manifests / s", "manifest size (bytes)"], rows)


def phase_of(document: dict[str, Any] | None, side: str, n: int | None = None) -> dict[str, Any] | None:
    """The phase of ``side`` at ``n`` (default: the largest N measured)."""
    if document is None:
        return None
    phases = [phase for phase in document["phases"] if phase["side"] == side]
    if not phases:
        return None
    largest = max(phase["n"] for phase in phases) if n is None else n
    return next((phase for phase in phases if phase["n"] == largest), None)


def steady_watches(phase: dict[str, Any]) -> int | None:
    """Watch streams open at the end of the steady window (every pod running, none finished yet).

    Not the maximum over the window: the pods watch outlives its last user by a keep-alive (30 s) on
    purpose, so the window's start still shows it.
    """
    start, end = phase["steady_window_seconds"]
    inside = [sample["watches"] for sample in phase.get("timeline", ()) if start <= sample["at"] <= end]
    return inside[-1] if inside else None


def keep_alive_end(phase: dict[str, Any]) -> float | None:
    """Seconds into the phase when the open watch streams last dropped to the steady count."""
    steady = steady_watches(phase)
    timeline = phase.get("timeline", ())
    dropped = [
        later["at"]
        for earlier, later in itertools.pairwise(timeline)
        if earlier["watches"] > later["watches"] == steady
    ]
    return dropped[-1] if dropped else None


def targets(
    triggerer: dict[str, Any] | None, lifecycle: dict[str, Any] | None, reaper: dict[str, Any] | None
) -> list[list[Any]]:
    """Rows of (target, measured, met?) for the targets of issue 7."""
    rows: list[list[Any]] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    def add(target: str, measured: str, ok: bool | None) -> None:
        rows.append([target, measured, verdict(ok)])

    ours, peer = phase_of(triggerer, "ours"), phase_of(triggerer, "peer")
    if ours is not None:
        n = ours["n"]
        rate = ours["steady_requests_per_second"]
        peer_rate = peer["steady_requests_per_second"] if peer else None
        add(
            f"steady state, N={n}: at most 1 request/s from our triggers (peer ~N/10)",
            f"ours {rate} req/s, peer {peer_rate} req/s",
            None if rate is None else rate <= 1.0,
        )
        steady = steady_watches(ours)
        add(
            "at most one watch stream per namespace (steady state)",
            f"ours {steady} with every pod running (from {keep_alive_end(ours)} s into the phase, when the "
            f"pods watch's 30 s keep-alive after the last pod start ran out), {ours['peak_watches']} while "
            "pods start (one namespace)",
            None if steady is None else steady <= 1,
        )
        if peer is not None:
            ratio = peer["cpu_seconds"] / ours["cpu_seconds"] if ours["cpu_seconds"] else None
            add(
                f"at least 10x less triggerer CPU than the peer (N={n})",
                f"ours {ours['cpu_seconds']} s, peer {peer['cpu_seconds']} s"
                + (f" ({ratio:.2g}x)" if ratio else ""),
                None if ratio is None else ratio >= 10,
            )
        p95 = ours["latency_p95_seconds"]
        add(
            f"completion detected within 1 s (p95), N={n}",
            f"ours p95 {p95} s, peer p95 {peer['latency_p95_seconds'] if peer else None} s",
            None if p95 is None else p95 <= 1.0,
        )
    if lifecycle is not None:
        fixed = (lifecycle.get("fixed_cost") or {}).get("ours")
        peer_fixed = (lifecycle.get("fixed_cost") or {}).get("peer")
        in_worker = [
            mode["requests_per_task"]
            for mode in lifecycle["modes"]
            if mode["side"] == "ours" and mode["mode"] == "non-deferrable"
        ]
        if fixed is not None:
            peer_cost = peer_fixed["fixed_per_task"] if peer_fixed else None
            measured = (
                f"deferrable: ours {fixed['fixed_per_task']:g} per task + {fixed['shared']:g} shared by all "
                f"tasks of the triggerer (peer {peer_cost} per task)"
            )
            if in_worker:
                measured += (
                    f"; waiting in the worker: {max(in_worker):g} per task (its own watches of its Job and "
                    "pod, which a process running one task shares with nobody)"
                )
            add(
                "fixed cost of one task's lifecycle: at most 5 API requests",
                measured,
                fixed["fixed_per_task"] <= 5,
            )
    if reaper is not None:
        sweeps = sorted(reaper["sweeps"], key=lambda s: s["finished_jobs"])
        small, large = sweeps[0], sweeps[-1]
        add(
            f"reaper: {large['finished_jobs'] + large['running_jobs']:,} Jobs examined and the eligible "
            "ones deleted in under 60 s",
            f"{large['wall_seconds']} s wall ({large['cpu_seconds']} s reaper CPU), "
            f"{large['deleted']:,} deleted",
            large["wall_seconds"] < 60 and large["deleted"] == large["finished_jobs"],
        )
        if large is not small:
            add(
                "reaper memory flat in N",
                f"RSS growth {small['rss_growth_mib']} MiB at {small['finished_jobs']:,} finished Jobs, "
                f"{large['rss_growth_mib']} MiB at {large['finished_jobs']:,}",
                large["rss_growth_mib"] <= max(2 * small["rss_growth_mib"], small["rss_growth_mib"] + 10),
            )
    return rows


def plot(triggerer: dict[str, Any] | None, path: Path) -> bool:
    """Requests over time at the largest N, and CPU per side vs N; False when there is nothing to plot."""
    if triggerer is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (timeline, cpu) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"ours": "tab:blue", "peer": "tab:red"}
    labels = {"ours": "DruidOverlordTaskTrigger", "peer": "cncf KubernetesJobTrigger"}
    for side in ("ours", "peer"):
        phase = phase_of(triggerer, side)
        if phase is not None:
            timeline.plot(
                [point["at"] for point in phase["timeline"]],
                [point["requests"] for point in phase["timeline"]],
                label=f"{labels[side]} (N={phase['n']})",
                color=colours[side],
            )
        phases = sorted((p for p in triggerer["phases"] if p["side"] == side), key=lambda p: p["n"])
        if phases:
            cpu.plot(
                [p["n"] for p in phases],
                [p["cpu_seconds"] for p in phases],
                marker="o",
                label=labels[side],
                color=colours[side],
            )
    timeline.set_title("API requests since the triggers started")
    timeline.set_xlabel("seconds")
    timeline.set_ylabel("requests (cumulative)")
    timeline.legend()
    cpu.set_title("Stand-in triggerer CPU for the whole wait")
    cpu.set_xlabel("concurrent tasks N")
    cpu.set_ylabel("CPU seconds")
    cpu.set_xscale("log")
    cpu.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def render(results_dir: Path, page: Path, image: Path) -> str:
    """Write the page (and the plot); returns the page's text."""
    loaded: dict[str, dict[str, Any] | None] = {
        name: load(results_dir, name) for name in ("triggerer", "lifecycle", "reaper", "build_job")
    }
    present = [document for document in loaded.values() if document is not None]
    sections: list[Callable[[], str]] = [
        lambda: machine_section(present),
        lambda: (
            "## Targets (issue 7)\n\n"
            + table(
                ["target", "measured", "verdict"],
                targets(loaded["triggerer"], loaded["lifecycle"], loaded["reaper"]),
            )
        ),
        lambda: triggerer_section(loaded["triggerer"]),
        lambda: lifecycle_section(loaded["lifecycle"]),
        lambda: reaper_section(loaded["reaper"]),
        lambda: build_job_section(loaded["build_job"]),
    ]
    text = INTRO
    if plot(loaded["triggerer"], image):
        link = image.relative_to(page.parent) if image.is_relative_to(page.parent) else image
        text += f"\n![Requests over time and triggerer CPU, ours vs the cncf provider]({link.as_posix()})\n"
    for section in sections:
        body = section()
        if body:
            text += "\n" + body
    if FINDINGS.exists():
        text += "\n" + FINDINGS.read_text()
    text += "\n" + METHOD
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--page", type=Path, default=DOCS_PAGE)
    parser.add_argument("--image", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    render(args.results_dir, args.page, args.image)
    print(f"wrote {args.page} and {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
