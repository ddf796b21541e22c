"""Turn ``bench/results/*.json`` into docs/performance.md (tables, targets) and docs/img/bench.png (plot).

Only what was measured is written: a benchmark without a result file gets a line saying so. Run
``python -m bench.report --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import latency_parts
from bench.common import REPO, RESULTS_DIR
from bench.report_sections import (
    crash_retry_section,
    lifecycle_section,
    plot,
    reaper_targets,
    table,
    targets,
    triggerer_section,
)

DOCS_PAGE = REPO / "docs" / "performance.md"
PLOT = REPO / "docs" / "img" / "bench.png"
#: Hand-written analysis of the figures (causes of missed targets, profiles), kept next to the scripts.
FINDINGS = REPO / "bench" / "findings.md"

INTRO = """\
# Performance

Measured with `make bench` (`bench/run_all.py`), in one run on one machine, against the two emulators that
ship with the provider (`druid_k8s_provider.testing`: the Kubernetes API emulator and the Overlord emulator
beside it), over real HTTP on 127.0.0.1. Every Druid task, ours and the peer's, is a task of the Overlord
emulator, whose Kubernetes runner runs its Job. The peer is what users run today to launch Druid tasks from
Airflow: the Apache Druid provider's `DruidOperator` (apache-airflow-providers-apache-druid, pinned in
`constraints.txt`) at its defaults; the Kubernetes-only comparisons keep the cncf provider's
`KubernetesJobOperator`. Raw figures: `bench/results/*.json`; the scripts are in `bench/`.

The emulators answer in microseconds and share the machine with the side measured, so absolute times are
optimistic for a real cluster; request counts, watch streams, worker slots and the triggerer's CPU and
memory are what carries over.
"""

METHOD = """\
## How it was measured

- **Triggerer (N concurrent tasks).** For each N and each side, a phase of its own with fresh emulators (in
  the benchmark process; the Overlord's runner waits on one shared watch of peon Jobs and pods, as Druid's
  optional informer client does, so that ten thousand tasks do not load the cluster with the emulator's own
  polls). Ours: N Druid tasks of T seconds (a stand-in peon) are submitted to the Overlord, whose runner
  creates their Jobs; once every pod runs, a *stand-in triggerer* (a subprocess with one asyncio loop, as
  Airflow's triggerer runs triggers) builds `DruidOverlordTaskTrigger` for each exactly as
  `DruidK8sTaskOperator(deferrable=True)` defers with it, round-trips it through `serialize()`, and runs them
  all, started evenly over 10 s. `DruidOperator`: a *stand-in worker pool* subprocess runs its `execute` in N
  threads (one worker slot each, started over 10 s), each submitting its task and GETting
  `/druid/indexer/v1/task/{id}/status` every second. Requests are counted by the emulators (the peons' task
  actions and the Overlord runner's Kubernetes requests left out: Druid makes them whoever launches); CPU and
  RSS of the subprocess come from psutil and `getrusage`, those of the emulators from the benchmark process.
  *Steady state* is the last 30 s before the first outcome, after every pod ran and every waiter started.
  *Detection latency* runs from the moment the Overlord recorded the task's outcome to the moment the trigger
  yielded its event (or `execute` returned). The N = 10,000 triggerer is profiled with pyinstrument (5 ms
  sampling) in the same run.
- **Lifecycle (requests per task).** Each operator's `execute` runs K short tasks (a peon of 1 s) against
  one emulated cluster and one Overlord: in the worker (one after another, each as a worker process of its
  own: what a process reads once, the Overlord's version and runner settings, is read again) and deferred
  (execute, then all triggers on one loop, then `execute_complete`, as Airflow calls them); ours in both
  launch modes. Requests
  per task = all requests of the mode / K; deferred, the growth from K to K2 tasks per added task is the
  fixed cost of one task, the rest is shared by every task of the triggerer. `DruidOperator` has no
  deferrable mode. The cncf `KubernetesJobOperator` runs a plain Job with no Overlord (Kubernetes only).
- **Worker crash and retry.** Try 1 runs `execute` in a worker process of its own and is killed with SIGKILL
  once the peon runs; try 2 runs in a new process, as Airflow's retry would; the Overlord's task lists and the
  cluster's store say how many Druid tasks ran and how many Jobs were created.
- **Reaper.** Finished peon Jobs (3 days old, past the default `taskCleanupDelay` of 2 days) and running
  ones are written into the store of an API-server-only emulator; `reaper.reap` then sweeps them through
  `DruidK8sHook` in a subprocess, as the reaper DAG does.
- **build_job.** Manifests per second for distinct tasks, best of three rounds, one core.
"""


def load(results_dir: Path, name: str) -> dict[str, Any] | None:
    """A benchmark's result document, or None when it was not run."""
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


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


def render(results_dir: Path, page: Path, image: Path) -> str:
    """Write the page (and the plot); returns the page's text."""
    names = ("triggerer", "lifecycle", "crash_retry", "reaper", "build_job")
    loaded: dict[str, dict[str, Any] | None] = {name: load(results_dir, name) for name in names}
    present = [document for document in loaded.values() if document is not None]
    sections: list[Callable[[], str]] = [
        lambda: machine_section(present),
        lambda: (
            "## Targets (issue 15)\n\n"
            + table(
                ["target", "measured", "verdict"],
                targets(loaded["triggerer"], loaded["lifecycle"], loaded["crash_retry"]),
            )
            + reaper_targets(loaded["reaper"])
        ),
        lambda: triggerer_section(loaded["triggerer"]),
        lambda: latency_parts.section(loaded["triggerer"]),
        lambda: lifecycle_section(loaded["lifecycle"]),
        lambda: crash_retry_section(loaded["crash_retry"]),
        lambda: reaper_section(loaded["reaper"]),
        lambda: build_job_section(loaded["build_job"]),
    ]
    text = INTRO
    if plot(loaded["triggerer"], image):
        link = image.relative_to(page.parent) if image.is_relative_to(page.parent) else image
        text += (
            f"\n![Overlord requests over time and waiting CPU, ours vs DruidOperator]({link.as_posix()})\n"
        )
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
