"""End-to-end benchmark: API requests of one task's whole lifecycle, ours vs ``KubernetesJobOperator``.

Each operator's ``execute`` runs against one emulated cluster, for K short tasks (a peon that logs a few
lines and exits after ``--seconds``), in the two modes users pick:

- non-deferrable: ``execute`` waits in the worker; the K tasks run one after another (a worker process each
  in real life, so nothing is shared between them);
- deferrable: ``execute`` raises ``TaskDeferred``, the K triggers then run together on one asyncio loop (the
  triggerer), and ``execute_complete`` gets each event, as Airflow would call it.

Every request the emulator answered in a mode, divided by K, is that mode's cost per task; the breakdown by
verb and resource shows where it goes. The peer is configured as documented for waiting on a Job
(``wait_until_job_complete=True``, logs on, the rest default); by default it deletes the pod but not the Job
(``ttl_seconds_after_finished`` or a ``KubernetesDeleteJobOperator`` would add that). Run
``python -m bench.lifecycle --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import (
    NAMESPACE,
    PEON_IMAGE,
    RESULTS_DIR,
    connection_env,
    index_task,
    overlord_pod,
    private_airflow_home,
    runner_properties,
    settled_metrics,
    write_result,
)

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


def our_operator(number: int, deferrable: bool, poll_interval: float) -> Any:
    del poll_interval  # ours waits on watches; its fallback poll keeps the operator's default
    from druid_k8s_provider.operators.task import DruidK8sTaskOperator

    return DruidK8sTaskOperator(
        task_id=f"druid_{number}",
        druid_task=index_task(number),
        runner_properties=runner_properties(),
        overlord_pod_name="druid-overlord-0",
        deferrable=deferrable,
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
    kube: Any, side: str, deferrable: bool, tasks: int, run_number: int, peer_poll_interval: float
) -> dict[str, Any]:
    """K tasks of one side in one mode; returns requests per task and their breakdown."""
    from airflow.sdk.exceptions import TaskDeferred

    make = our_operator if side == "ours" else peer_operator
    kube.metrics.reset()
    jobs_before = len(kube.store.list("jobs", NAMESPACE))
    started = time.monotonic()
    operators = [make(number, deferrable, peer_poll_interval) for number in range(tasks)]
    contexts = [task_context(op.task_id, run_number) for op in operators]
    if not deferrable:
        for operator, context in zip(operators, contexts, strict=True):
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
    snapshot = settled_metrics(kube)
    by_kind = Counter({kind: count for kind, count in snapshot["by_verb_resource"].items()})
    return {
        "side": side,
        "mode": "deferrable" if deferrable else "non-deferrable",
        "tasks": tasks,
        "wall_seconds": round(time.monotonic() - started, 2),
        "requests_per_task": round(snapshot["requests_total"] / tasks, 2),
        "requests_per_task_by_kind": {kind: round(n / tasks, 2) for kind, n in sorted(by_kind.items())},
        "jobs_left": len(kube.store.list("jobs", NAMESPACE)) - jobs_before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5, help="tasks per side and mode (K)")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each peon runs")
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

    modes = []
    with KubeEmulator(node_cpu="1000", node_memory="100Ti") as kube:
        os.environ.update(connection_env(kube.kubeconfig_path))
        kube.register_image(PEON_IMAGE, peon_behaviour(args.seconds))
        kube.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        kube.store.create("pods", NAMESPACE, overlord_pod())
        for run_number, (side, deferrable) in enumerate(
            [("ours", False), ("ours", True), ("peer", False), ("peer", True)]
        ):
            mode = run_mode(kube, side, deferrable, args.tasks, run_number, args.peer_poll_interval)
            modes.append(mode)
            print(
                f"lifecycle {side:>4} {mode['mode']:>14}: {mode['requests_per_task']} requests/task "
                f"{mode['requests_per_task_by_kind']}",
                flush=True,
            )
    write_result(
        args.results_dir,
        "lifecycle",
        {
            "tasks": args.tasks,
            "job_seconds": args.seconds,
            "peer_poll_interval_seconds": args.peer_poll_interval,
            "modes": modes,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
