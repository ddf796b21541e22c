"""End-to-end benchmark: API requests of one task's whole lifecycle, ours vs ``KubernetesJobOperator``.

Each operator's ``execute`` runs against one emulated cluster, for K short tasks (a peon that logs a few
lines and exits after ``--seconds``), in the two modes users pick. Ours launches every Druid task through
the Overlord, so its runs have an Overlord emulator beside the cluster (the ``druid_ingest_default``
connection points at it; the Overlord's default version makes ``launch_mode="auto"`` choose ``airflow``):
the figures are of the real launch path: the cluster's requests ours made, and apart the requests ours
sent to the Overlord (peons' task actions left out) and those the Overlord's runner sent to the cluster
for the task (Druid makes them whoever launches; the emulator polls where Druid watches). The peer runs a
plain Job with no Overlord, as before.

- non-deferrable: ``execute`` waits in the worker; the K tasks run one after another (a worker process each
  in real life, so nothing is shared between them: what a process reads once, the Overlord's version and
  runner settings, is read again for each);
- deferrable: ``execute`` raises ``TaskDeferred``, the K triggers then run together on one asyncio loop (the
  triggerer), and ``execute_complete`` gets each event, as Airflow would call it.

Every request the emulator answered in a mode, divided by K, is that mode's cost per task; the breakdown by
verb and resource shows where it goes. In the deferrable mode part of it is shared by every task of the
triggerer (the watches), so the mode runs again with more tasks (K2): the growth from K to K2 tasks, per
added task, is the fixed cost of one task's lifecycle. A last pair of runs has peons that outlive the
shared watches' keep-alive (``--long-seconds``), to show what a task costs when nothing is cached.
The peer is configured as documented for waiting on a Job
(``wait_until_job_complete=True``, logs on, the rest default); by default it deletes the pod but not the Job
(``ttl_seconds_after_finished`` or a ``KubernetesDeleteJobOperator`` would add that). Run
``python -m bench.lifecycle --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import (
    NAMESPACE,
    PEON_IMAGE,
    RESULTS_DIR,
    connection_env,
    druid_runner_requests,
    overlord_connection_env,
    overlord_emulator,
    overlord_requests_by_kind,
    overlord_task,
    private_airflow_home,
    runner_properties,
    settled_metrics,
    write_result,
)

#: The sides that run Druid tasks through the Overlord: ours in each launch mode, and ``DruidOperator``.
DRUID_SIDES = (("ours", "airflow"), ("ours", "overlord"), ("druid", None))
LOG_LINES = ("peon starting", "ingesting", "segments published", "peon finished")


def peon_behaviour(seconds: float) -> Any:
    """The Overlord pod runs until stopped; every other container logs a few lines and exits 0."""
    from druid_k8s_provider.testing.behaviours import exits, never_exits

    overlord, peon = never_exits(), exits(0, lines=LOG_LINES, after=seconds)

    async def behaviour(ctx: Any) -> int:
        if ctx.pod["metadata"]["name"].startswith("druid-overlord"):
            return await overlord(ctx)
        return await peon(ctx)

    return behaviour


def task_context(task_id: str, run_number: int) -> dict[str, Any]:
    """The parts of an Airflow task context the two operators read."""
    xcom: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="bench",
        task_id=task_id,
        run_id=f"bench_run_{run_number}",
        map_index=-1,
        try_number=1,
        start_date=None,
        xcom_push=lambda key, value: xcom.__setitem__(key, value),
    )
    return {
        "ti": ti,
        "task_instance": ti,
        "run_id": ti.run_id,
        "dag": SimpleNamespace(dag_id="bench"),
        "dag_run": SimpleNamespace(run_id=ti.run_id),
        "params": {},
    }


def our_operator(number: int, deferrable: bool, seconds: float, launch_mode: str = "auto") -> Any:
    """Ours as documented: the Overlord pod as template, the operator's defaults otherwise (its fallback
    poll included: it waits on watches); the task id is derived per run, the stand-in peon runs
    ``seconds``."""
    from druid_k8s_provider.operators.task import DruidK8sTaskOperator

    return DruidK8sTaskOperator(
        task_id=f"druid_{number}",
        druid_task=overlord_task(number, seconds),
        runner_properties=runner_properties(),
        overlord_pod_name="druid-overlord-0",
        deferrable=deferrable,
        launch_mode=launch_mode,
    )


def druid_operator(number: int, seconds: float) -> Any:
    """The Apache Druid provider's ``DruidOperator`` at its defaults, with the same Druid task."""
    from airflow.providers.apache.druid.operators.druid import DruidOperator

    return DruidOperator(
        task_id=f"druidop_{number}", json_index_file=json.dumps(overlord_task(number, seconds))
    )


def peer_operator(number: int, deferrable: bool, poll_interval: float) -> Any:
    from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator

    return KubernetesJobOperator(
        task_id=f"job_{number}",
        name=f"bench-{number}",
        namespace=NAMESPACE,
        image=PEON_IMAGE,
        wait_until_job_complete=True,
        job_poll_interval=poll_interval,
        deferrable=deferrable,
    )


def run_mode(
    kube: Any,
    overlord: Any,
    side: str,
    deferrable: bool,
    tasks: int,
    job_seconds: float,
    run_number: int,
    peer_poll_interval: float,
    launch_mode: str = "auto",
) -> dict[str, Any]:
    """K tasks of one side in one mode; returns requests per task and their breakdown (``overlord``: the
    Overlord emulator beside the cluster, ours only)."""
    from airflow.sdk.exceptions import TaskDeferred

    if side in ("ours", "druid"):
        operators = [
            our_operator(number, deferrable, job_seconds, launch_mode)
            if side == "ours"
            else druid_operator(number, job_seconds)
            for number in range(tasks)
        ]
        overlord.requests.clear()
    else:
        kube.register_image(PEON_IMAGE, peon_behaviour(job_seconds))
        operators = [peer_operator(number, deferrable, peer_poll_interval) for number in range(tasks)]
    kube.metrics.reset()
    jobs_before = len(kube.store.list("jobs", NAMESPACE))
    started = time.monotonic()
    contexts = [task_context(op.task_id, run_number) for op in operators]
    if not deferrable:
        for operator, context in zip(operators, contexts, strict=True):
            fresh_worker_process()
            operator.execute(context)
    else:
        deferred = []
        for operator, context in zip(operators, contexts, strict=True):
            try:
                operator.execute(context)
            except TaskDeferred as raised:
                deferred.append(raised)
            else:
                raise RuntimeError(f"{side} operator finished without deferring")

        async def triggerer() -> list[Any]:
            async def first_event(trigger: Any) -> Any:
                async for event in trigger.run():
                    return event
                raise RuntimeError("trigger ended without an event")

            return await asyncio.gather(*(first_event(d.trigger) for d in deferred))

        events = asyncio.run(triggerer())
        for operator, context, deferral, event in zip(operators, contexts, deferred, events, strict=True):
            getattr(operator, deferral.method_name)(context, event.payload, **(deferral.kwargs or {}))
    wall = time.monotonic() - started
    snapshot = settled_metrics(kube)
    by_kind = Counter({kind: count for kind, count in snapshot["by_verb_resource"].items()})
    druid: dict[str, Any] = {}
    if side in ("ours", "druid"):
        runner_kinds = druid_runner_requests(kube)
        by_kind -= runner_kinds
        overlord_kinds = overlord_requests_by_kind(overlord.requests.requests)
        druid = {
            "druid_runner_kubernetes_requests_per_task": round(runner_kinds.total() / tasks, 2),
            "overlord_requests_per_task": round(overlord_kinds.total() / tasks, 2),
            "overlord_requests_total": overlord_kinds.total(),
            "overlord_requests_per_task_by_kind": {
                kind: round(n / tasks, 2) for kind, n in sorted(overlord_kinds.items())
            },
        }
    return {
        "side": side,
        "mode": "deferrable" if deferrable else "non-deferrable",
        "tasks": tasks,
        "job_seconds": job_seconds,
        "wall_seconds": round(wall, 2),
        "launch_mode": launch_mode if side == "ours" else None,
        "requests_total": by_kind.total(),
        "requests_per_task": round(by_kind.total() / tasks, 2),
        "requests_per_task_by_kind": {kind: round(n / tasks, 2) for kind, n in sorted(by_kind.items())},
        "jobs_left": len(kube.store.list("jobs", NAMESPACE)) - jobs_before,
        **druid,
    }


def fresh_worker_process() -> None:
    """Forget what a worker process reads once (the Overlord's version and runner settings): in Airflow
    each try runs in a worker process of its own, so a task waited in the worker pays them every time."""
    from druid_k8s_provider.launch import worker

    worker._VERSIONS.clear()
    worker._RUNNER_SETTINGS.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5, help="tasks per side and mode (K)")
    parser.add_argument(
        "--more-tasks", type=int, default=20, help="K2 > K: the deferrable runs again with this many tasks"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each peon runs")
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=45.0,
        help="peons of the last deferrable pair (longer than the 30 s watch keep-alive); 0 skips it",
    )
    parser.add_argument(
        "--peer-poll-interval",
        type=float,
        default=10.0,
        help="KubernetesJobOperator's job_poll_interval (its default, 10 s, unless smoke-testing)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    private_airflow_home()
    logging.basicConfig(level=logging.WARNING)
    from druid_k8s_provider.testing import KubeEmulator

    if args.more_tasks <= args.tasks:
        parser.error("--more-tasks must be larger than --tasks")
    modes = []
    run_number = 0
    with KubeEmulator(node_cpu="1000", node_memory="100Ti") as kube:
        os.environ.update(connection_env(kube.kubeconfig_path))
        kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        # One Overlord beside the Druid runs (there is one Overlord pod per cluster); none beside the peer's,
        # so its runner's requests stay out of the peer's.
        for with_overlord, sides in ((True, DRUID_SIDES), (False, (("peer", None),))):
            beside = overlord_emulator(kube) if with_overlord else nullcontext()
            with beside as overlord:
                if overlord is not None:
                    os.environ.update(overlord_connection_env(overlord.url))
                for side, launch_mode in sides:
                    for deferrable, tasks, seconds in plan(side, launch_mode, args):
                        mode = run_mode(
                            kube,
                            overlord,
                            side,
                            deferrable,
                            tasks,
                            seconds,
                            run_number,
                            args.peer_poll_interval,
                            launch_mode or "auto",
                        )
                        run_number += 1
                        modes.append(mode)
                        print(describe(mode), flush=True)
    write_result(
        args.results_dir,
        "lifecycle",
        {
            "tasks": args.tasks,
            "more_tasks": args.more_tasks,
            "job_seconds": args.seconds,
            "long_job_seconds": args.long_seconds,
            "peer_poll_interval_seconds": args.peer_poll_interval,
            "modes": modes,
            "fixed_cost": fixed_costs(modes, args.tasks, args.more_tasks, args.seconds),
        },
    )
    return 0


def plan(side: str, launch_mode: str | None, args: argparse.Namespace) -> list[tuple[bool, int, float]]:
    """(deferrable, tasks, peon seconds) of each run of a side: in the worker and deferred (K, then K2 to
    split fixed from shared costs; ours in airflow mode and the peer also with peons outliving the shared
    watches' keep-alive); DruidOperator has no deferrable mode."""
    if side == "druid":
        return [(False, args.tasks, args.seconds)]
    runs = [(False, args.tasks, args.seconds), (True, args.tasks, args.seconds)]
    runs += [(True, args.more_tasks, args.seconds)]
    if args.long_seconds > 0 and launch_mode != "overlord":
        runs += [(True, args.tasks, args.long_seconds)]
    return runs


def side_name(mode: dict[str, Any]) -> str:
    """``ours (airflow)``, ``ours (overlord)``, ``druid`` or ``peer``."""
    return f"ours ({mode['launch_mode']})" if mode["side"] == "ours" else str(mode["side"])


def describe(mode: dict[str, Any]) -> str:
    """One line of a run's figures."""
    line = (
        f"lifecycle {side_name(mode):>15} {mode['mode']:>14} K={mode['tasks']} T={mode['job_seconds']:g}s "
        f"({mode['wall_seconds']}s): "
        f"{mode['requests_per_task']} requests/task {mode['requests_per_task_by_kind']}"
    )
    if "overlord_requests_per_task" in mode:
        line += (
            f"; Overlord {mode['overlord_requests_per_task']} requests/task "
            f"{mode['overlord_requests_per_task_by_kind']}; Druid's runner "
            f"{mode['druid_runner_kubernetes_requests_per_task']} Kubernetes requests/task"
        )
    return line


def fixed_costs(
    modes: list[dict[str, Any]], tasks: int, more_tasks: int, seconds: float
) -> dict[str, dict[str, float]]:
    """Per side, the deferrable requests per added task (fixed) and those shared by all tasks (shared).

    Total requests grow linearly with the number of tasks: fixed per task, plus the triggerer's watches
    (shared). Two runs with K and K2 tasks of the same length give both.
    """
    costs = {}
    for side in sorted({side_name(mode) for mode in modes if mode["side"] != "druid"}):
        totals = {
            mode["tasks"]: mode["requests_total"]
            for mode in modes
            if side_name(mode) == side and mode["mode"] == "deferrable" and mode["job_seconds"] == seconds
        }
        overlord = {
            mode["tasks"]: mode.get("overlord_requests_total", 0)
            for mode in modes
            if side_name(mode) == side and mode["mode"] == "deferrable" and mode["job_seconds"] == seconds
        }
        if tasks in totals and more_tasks in totals:
            fixed = (totals[more_tasks] - totals[tasks]) / (more_tasks - tasks)
            shared = totals[tasks] - fixed * tasks
            costs[side] = {"fixed_per_task": round(fixed, 2), "shared": round(shared, 2)}
            if side.startswith("ours"):
                fixed_overlord = (overlord[more_tasks] - overlord[tasks]) / (more_tasks - tasks)
                costs[side]["overlord_fixed_per_task"] = round(fixed_overlord, 2)
                costs[side]["overlord_shared"] = round(overlord[tasks] - fixed_overlord * tasks, 2)
    return costs


if __name__ == "__main__":
    sys.exit(main())
