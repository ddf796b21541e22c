"""Run every benchmark, then write docs/performance.md and its plot from the results (``make bench``).

Each benchmark runs as its own ``python -m bench.<name>`` process from the repository root, so one cannot
skew another's memory or CPU figures, and prints its figures as it goes. ``--quick`` uses smaller N and T
(minutes instead of ten); ``--tiny`` only proves every script works (the smoke test uses it): the
benchmarks then run at once and their figures mean nothing. Exits non-zero if any benchmark failed; the
report is written from whatever results exist.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FULL = {
    "triggerer": [
        "--phases",
        "100:45",
        "1000:90",
        "10000:600",
        "--druid-max-n",
        "1000",
        "--profile-n",
        "10000",
    ],
    "lifecycle": ["--tasks", "5", "--more-tasks", "20", "--seconds", "1", "--long-seconds", "35"],
    "crash_retry": ["--seconds", "8"],
    "reaper": ["--finished", "10000", "--running", "1000"],
    "build_job": ["--count", "2000"],
}
QUICK = {
    "triggerer": ["--phases", "100:40", "1000:90", "--druid-max-n", "100", "--profile-n", "1000"],
    "lifecycle": ["--tasks", "3", "--more-tasks", "8", "--seconds", "1", "--long-seconds", "35"],
    "crash_retry": ["--seconds", "5"],
    "reaper": ["--finished", "2000", "--running", "200"],
    "build_job": ["--count", "500"],
}
TINY = {
    "triggerer": ["--phases", "3:4", "--spread", "0.5", "--profile-n", "3"],
    "lifecycle": [
        "--tasks",
        "1",
        "--more-tasks",
        "2",
        "--seconds",
        "0.1",
        "--long-seconds",
        "0",
        "--peer-poll-interval",
        "0.3",
    ],
    "crash_retry": ["--seconds", "2"],
    "reaper": ["--finished", "10", "--running", "2"],
    "build_job": ["--count", "20"],
}


def run_one_by_one(commands: dict[str, list[str]]) -> list[str]:
    """Run each benchmark alone, so none disturbs another's figures; returns the names of failed ones."""
    failed = []
    for name, command in commands.items():
        started = time.monotonic()
        print(f"== bench.{name} {' '.join(command[3:])}", flush=True)
        if subprocess.run(command, cwd=REPO, check=False).returncode != 0:
            failed.append(name)
        print(f"== bench.{name} took {time.monotonic() - started:.0f}s", flush=True)
    return failed


def run_together(commands: dict[str, list[str]]) -> list[str]:
    """Run the benchmarks at once (``--tiny``: their figures do not matter, only that they work)."""
    running = {name: subprocess.Popen(command, cwd=REPO) for name, command in commands.items()}
    return [name for name, process in running.items() if process.wait() != 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller N and T")
    size.add_argument("--tiny", action="store_true", help="smoke test: every script at the smallest size")
    parser.add_argument("--only", nargs="+", choices=sorted(FULL), help="run only these benchmarks")
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--page", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument("--image", type=Path, default=REPO / "docs" / "img" / "bench.png")
    args = parser.parse_args(argv)
    plan = TINY if args.tiny else QUICK if args.quick else FULL
    names = [name for name in plan if not args.only or name in args.only]
    commands = {
        name: [sys.executable, "-m", f"bench.{name}", *plan[name], "--results-dir", str(args.results_dir)]
        for name in names
    }
    failed = run_together(commands) if args.tiny else run_one_by_one(commands)
    report = [
        sys.executable,
        "-m",
        "bench.report",
        "--results-dir",
        str(args.results_dir),
        "--page",
        str(args.page),
        "--image",
        str(args.image),
    ]
    if subprocess.run(report, cwd=REPO, check=False).returncode != 0:
        failed.append("report")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
