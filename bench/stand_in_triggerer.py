"""The stand-in triggerer of :mod:`bench.triggerer`: ``DruidOverlordTaskTrigger`` for N tasks on one loop.

Started by the benchmark; it imports everything, prints READY, reads its order (the connections' environment
and the Jobs) from stdin, builds each trigger as ``DruidK8sTaskOperator(deferrable=True)`` defers with it for
a task the Overlord launches, round-trips it through ``serialize()`` as the triggerer does, runs them all as
tasks of one asyncio loop (started evenly over the order's ``spread`` seconds) until each fired, and writes
when each fired, its CPU time and peak RSS (and, with ``--profile``, a pyinstrument profile) to ``--result``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import private_airflow_home, runner_properties, take_order
from bench.latency_parts import time_status_rounds

#: Sampling interval of the profile (seconds): coarse enough to cost the loop little.
PROFILE_INTERVAL = 0.005


def build_triggers(jobs: list[dict[str, Any]]) -> list[Any]:
    """The triggers the operator would defer with, rebuilt from ``serialize()`` like the triggerer does."""
    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.launch.follow import FollowSpec
    from druid_k8s_provider.triggers.overlord_task import DruidOverlordTaskTrigger

    config = RunnerConfig.from_properties(runner_properties())
    built = []
    for job in jobs:
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
        classpath, kwargs = DruidOverlordTaskTrigger(**spec.to_kwargs()).serialize()
        module_name, _, class_name = classpath.rpartition(".")
        built.append(getattr(importlib.import_module(module_name), class_name)(**kwargs))
    return built


async def run_triggers(triggers: list[Any], spread: float) -> dict[str, dict[str, Any]]:
    """Run every trigger as its own task on this loop; record each first event by Druid task id."""
    fired: dict[str, dict[str, Any]] = {}

    async def run_one(index: int, trigger: Any) -> None:
        await asyncio.sleep(index * spread / len(triggers))
        async for event in trigger.run():
            overlord = event.payload.get("overlord") or {}
            status = f"{event.payload.get('status')} ({overlord.get('status_code')})"
            fired[trigger.spec.druid_task_id] = {"at": time.time(), "status": status}
            break

    await asyncio.gather(*(run_one(index, trigger) for index, trigger in enumerate(triggers)))
    return fired


def top_costs(profiler: Any, count: int = 10) -> list[dict[str, Any]]:
    """Where the loop's CPU went, by provider function: each sample's time goes to the innermost function of
    ``druid_k8s_provider`` on its stack (the libraries it called included), else to the outermost library
    function under the event loop; the loop's idle wait (``epoll.poll``) is left out."""
    session = profiler.last_session
    own: dict[str, float] = {}

    def walk(frame: Any, owner: str | None) -> None:
        where = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        path = str(frame.file_path_short or "")
        if path.startswith("druid_k8s_provider") and not frame.function.startswith("["):
            owner = where
        elif owner is None and not path.startswith(("asyncio", "selectors", "bench", "runpy", "<")):
            owner = where  # a library the event loop called directly (a watch's or a stream's reader)
        # A frame's total_self_time already holds its synthetic "[self]" children's time: counting those
        # children again would double a function's own time.
        if frame.function != "epoll.poll" and owner is not None and not frame.is_synthetic:
            own[owner] = own.get(owner, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child, owner)

    root = session.root_frame()
    if root is not None:
        walk(root, None)
    total = sum(own.values()) or 1.0
    ranked = sorted(own.items(), key=lambda item: item[1], reverse=True)[:count]
    return [
        {"function": key, "seconds": round(value, 2), "share": round(value / total, 3)}
        for key, value in ranked
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    private_airflow_home()
    import psutil

    build_triggers([])  # import everything before the clock starts
    order = take_order(args.log)
    me = psutil.Process()
    cpu_at_go = sum(me.cpu_times()[:2])
    triggers = build_triggers(order["jobs"])
    profiler = None
    if args.profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=PROFILE_INTERVAL, async_mode="disabled")
        profiler.start()
    rounds = time_status_rounds()
    fired = asyncio.run(run_triggers(triggers, order["spread"]))
    result: dict[str, Any] = {"status_rounds": rounds}
    if profiler is not None:
        profiler.stop()
        result["profile_top"] = top_costs(profiler)
        args.profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    cpu_at_end = sum(me.cpu_times()[:2])
    result.update(
        fired=fired,
        cpu_seconds=cpu_at_end - cpu_at_go,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
