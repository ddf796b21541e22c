"""What a deferred task's detection latency is made of, so a reader can tell the Overlord's share from ours.

Ours learns an outcome from the board's batched ``POST /druid/indexer/v1/taskStatus``: the latency the
benchmark reports (from the Overlord recording the outcome to the trigger's event) is the wait for the next
round plus that round's answer time. The stand-in triggerer times every round as the provider sees it
(:func:`time_status_rounds`); the benchmark process knows when each peon's Job ended (the Kubernetes Job
controller's Complete or Failed condition) and when the Overlord recorded the task's outcome, whose gap is
the Overlord runner's own work (log push, ``status.json``, Job delete) and tells how many tasks wait in each
round for an outcome not yet recorded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bench.common import percentile
from bench.report_sections import table


def time_status_rounds() -> list[list[float]]:
    """Time every batched status of this process from now on: ``[start (epoch s), answer (s), ids]`` each,
    appended as the answers come (a failed request is not recorded)."""
    from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook

    rounds: list[list[float]] = []
    asking = DruidOverlordAsyncHook.task_statuses

    async def timed(self: DruidOverlordAsyncHook, task_ids: Any) -> Any:
        start = time.time()
        answer = await asking(self, task_ids)
        rounds.append([start, time.time() - start, len(task_ids)])
        return answer

    DruidOverlordAsyncHook.task_statuses = timed  # type: ignore[method-assign]
    return rounds


def summarise(
    rounds: list[list[float]],
    ended: Mapping[str, float],
    outcomes: Mapping[str, float],
    task_of_job: Mapping[str, str],
) -> dict[str, Any]:
    """The phase's figures: rounds, their answer time (p50/p95/max, s) and ids (p50/max), and the Overlord's
    recording lag after the Job ended (p50/p95/max, s)."""
    answers = [answer for _, answer, _ in rounds]
    ids = [count for _, _, count in rounds]
    lags = [outcomes[task] - at for job, at in ended.items() if (task := task_of_job.get(job)) in outcomes]

    def rounded(values: list[float], fraction: float) -> float | None:
        value = percentile(values, fraction)
        return None if value is None else round(value, 3)

    return {
        "status_rounds": len(rounds),
        "status_answer_seconds": [rounded(answers, 0.5), rounded(answers, 0.95), rounded(answers, 1.0)],
        "status_round_ids": [rounded(ids, 0.5), max(ids, default=None)],
        "overlord_record_lag_seconds": [rounded(lags, 0.5), rounded(lags, 0.95), rounded(lags, 1.0)],
    }


def section(document: dict[str, Any] | None) -> str:
    """The docs/performance.md table of the parts, for the phases of ours that recorded them."""
    phases = [p for p in (document or {}).get("phases", ()) if "status_answer_seconds" in p]
    if not phases:
        return ""

    def three(values: list[Any]) -> str:
        return " / ".join(str(value) for value in values)

    rows = [
        [
            phase["n"],
            three([phase[f"latency_{q}_seconds"] for q in ("p50", "p95", "max")]),
            phase["status_rounds"],
            three(phase["status_answer_seconds"]),
            three(phase["status_round_ids"]),
            three(phase["overlord_record_lag_seconds"]),
        ]
        for phase in phases
    ]
    return (
        "### What our detection latency is made of\n\n"
        "A task's detection latency (from the Overlord recording its outcome to the trigger's event) is the "
        "wait for the next batched status round (rounds start at least a second apart) plus that round's "
        "answer time, timed by the stand-in triggerer (its own loop's delays included). The columns are "
        "spreads over the phase's rounds and tasks, so they do not add up to the latency's percentiles. A "
        "task joins the rounds once its Job ended and stays in them until the Overlord has recorded its "
        "outcome (its runner first pushes the log, reads `status.json` and deletes the Job): that lag comes "
        "before the latency starts, but sets how many ids each round carries. The Overlord emulator shares "
        "its process and event loop with the Kubernetes emulator; the rounds counted are those answered "
        "before the last trigger fired.\n\n"
        + table(
            [
                "N",
                "latency p50 / p95 / max (s)",
                "status rounds",
                "round answer p50 / p95 / max (s)",
                "ids per round p50 / max",
                "Overlord records the outcome after the Job ended p50 / p95 / max (s)",
            ],
            rows,
        )
    )
