"""The tasks of the chaos run (``test_chaos_lifecycle.py``) and how each one is run.

- :func:`plan`: the tasks, what each must end with, which are deferred and which worker is SIGKILLed where.
- :func:`run_in_process` (a worker thread; deferred tasks go to the shared
  :class:`~chaos_agents.Triggerer`) and :func:`run_in_worker_process` (try 1 in a forked worker SIGKILLed at
  a step of the launch, then the retries). A try that failed because an API was unavailable is tried again,
  as Airflow's ``retries`` would.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from airflow.sdk.exceptions import TaskDeferred
from chaos_agents import Triggerer
from chaos_workers import ForkServer, wait_for
from emulated_cluster import NAMESPACE, OVERLORD

from druid_k8s_provider.errors import DruidK8sConfigError, JobFailed, JobLaunchTimeout
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing.behaviours import ContainerContext
from druid_k8s_provider.testing.standin_peon import decode_task_payload, task_payload

SEED = 20261126
TASKS = 50
LOG_LINES = 15
LINE_INTERVAL_SECONDS = 0.05
#: Where a worker is SIGKILLed: every step of the launch through the Overlord, each in a task waiting in the
#: worker and in a deferred one.
KILL_POINTS = ("before_create", "after_create", "after_submit", "after_resume", "waiting", "reading_logs")
PEON_LINE = re.compile(r"(chaos-\d{2}-(?:ok|fail)) line (\d{3})")
UNPULLABLE_OVERLORD = "druid-overlord-unpullable"
#: What each kind of task must end with: the operator's return status, or the error it raises.
EXPECTED_STATUS = {"ok": "SUCCESS", "fail": "FAILED", "unpullable": "LAUNCH_FAILED"}
LABEL = "chaosLabel"
#: Errors that say an API was unavailable: the try fails, and Airflow's retry (the operator has
#: ``retries``) re-attaches to what the try left. The run retries those, as Airflow would.
RETRIED_ERRORS = frozenset({"OverlordApiError", "KubernetesApiError"})
#: Tries of one task that are not SIGKILLed (with ``retries=2``).
MAX_TRIES = 3


@dataclass
class ChaosTask:
    """One Druid task of the run and how it is executed.

    A task that succeeds has no id in its task JSON: the operator derives one per attempt (a second Druid
    task for it would be a duplicate). One that fails carries its id (``label``), so its outcome is the
    same whichever try sees it (a retry after Druid recorded FAILED is refused, naming that FAILED).
    """

    index: int
    kind: str  # "ok", "fail" (the peon exits 1) or "unpullable" (its image never pulls)
    deferrable: bool
    kill_at: str | None = None

    @property
    def label(self) -> str:
        return f"chaos-{self.index:02d}-{self.kind}"

    @property
    def run_id(self) -> str:
        return f"chaos_run_{self.index:02d}"

    def expected_lines(self) -> list[str]:
        lines = LOG_LINES if self.kind != "unpullable" else 0
        return [f"{self.label} line {number:03d}" for number in range(lines)]

    def druid_task(self) -> dict[str, Any]:
        task: dict[str, Any] = {
            "type": "index_parallel",
            "spec": {"dataSchema": {"dataSource": "wikipedia"}},
            "context": {LABEL: self.label},
        }
        return task if self.kind == "ok" else {**task, "id": self.label}

    def operator_arguments(self) -> dict[str, Any]:
        properties = {
            "druid.indexer.runner.namespace": NAMESPACE,
            "druid.indexer.runner.K8sjobLaunchTimeout": "PT90S",
            "druid.indexer.runner.maxTaskDuration": "PT5M",
        }
        return {
            "druid_task": self.druid_task(),
            "runner_properties": properties,
            "overlord_pod_name": UNPULLABLE_OVERLORD if self.kind == "unpullable" else OVERLORD,
            "deferrable": self.deferrable,
            "poll_interval": 2.0,
            "image_pull_grace_seconds": 0.5,
        }


@dataclass
class TaskResult:
    """What the try that finished reported, and the peon lines its log showed.

    ``retried``: earlier tries that failed because an API was unavailable (:data:`RETRIED_ERRORS`);
    ``log_from``: where the reporting try's log begins in the run's captured log (tries in this process).
    """

    status: str
    detail: str
    lines: list[str] = field(default_factory=list)
    tries: int = 1
    killed_with: int | None = None
    error_type: str = ""
    retried: int = 0
    log_from: int = 0


def plan() -> list[ChaosTask]:
    """50 tasks: one in five fails, one in ten cannot pull its image, half defer; for every kill point one
    task waiting in the worker and one deferred have their worker killed there."""
    rng = random.Random(SEED)
    tasks = [
        ChaosTask(
            index,
            kind="fail" if index % 5 == 3 else "unpullable" if index % 10 == 9 else "ok",
            deferrable=index % 2 == 1,
        )
        for index in range(TASKS)
    ]
    for deferrable in (False, True):
        candidates = [t for t in tasks if t.kind != "unpullable" and t.deferrable == deferrable]
        for task, point in zip(rng.sample(candidates, len(KILL_POINTS)), KILL_POINTS, strict=True):
            task.kill_at = point
    return tasks


async def chaos_peon(ctx: ContainerContext) -> int:
    """A peon that logs numbered lines over a second, then exits 1 when its task's label says so."""
    label = str(decode_task_payload(task_payload(ctx))["context"][LABEL])
    for number in range(LOG_LINES):
        ctx.log(f"{label} line {number:03d}")
        if await ctx.wait_or_stop(LINE_INTERVAL_SECONDS):
            return 143
    return 1 if label.endswith("-fail") else 0


def context(task: ChaosTask, try_number: int) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="chaos", task_id="druid", run_id=task.run_id, map_index=-1, try_number=try_number,
        xcom_push=lambda key, value: None,
    )  # fmt: skip
    return {"ti": ti}


def run_in_process(task: ChaosTask, triggerer: Triggerer, position: Callable[[], int]) -> TaskResult:
    """The task's tries in this process, deferred ones in ``triggerer``; a try that failed because an API
    was unavailable is retried (``position()``: where the run's captured log is when a try starts)."""
    for try_number in range(1, MAX_TRIES + 1):
        started_at = position()
        result = _one_try(task, triggerer, try_number)
        result.tries, result.retried, result.log_from = try_number, try_number - 1, started_at
        if result.error_type not in RETRIED_ERRORS:
            break
    return result


def _one_try(task: ChaosTask, triggerer: Triggerer, try_number: int) -> TaskResult:
    operator = DruidK8sTaskOperator(task_id="druid", **task.operator_arguments())
    ctx = context(task, try_number)
    try:
        try:
            result = operator.execute(ctx)
        except TaskDeferred as deferred:
            payload = triggerer.run_trigger(deferred)
            result = getattr(operator, deferred.method_name)(ctx, payload, **(deferred.kwargs or {}))
    except JobFailed as failure:
        return TaskResult("FAILED", str(failure))
    except JobLaunchTimeout as failure:
        return TaskResult("LAUNCH_FAILED", str(failure))
    except DruidK8sConfigError as refusal:
        return TaskResult(refused_status(str(refusal)), str(refusal))
    except Exception as error:
        return TaskResult("ERROR", f"{type(error).__name__}: {error}", error_type=type(error).__name__)
    return TaskResult(str(result["status"]), json.dumps(result))


def run_in_worker_process(
    task: ChaosTask, server: ForkServer, workdir: Path, rng: random.Random
) -> TaskResult:
    """Try 1 is SIGKILLed at ``task.kill_at``; the retries run to the end (a try that failed because an API
    was unavailable is retried again)."""
    killed_with = None
    for try_number in range(1, MAX_TRIES + 2):
        attempt = workdir / f"{task.label}-try{try_number}"
        attempt.mkdir()
        spec = {
            "operator": task.operator_arguments(),
            "log_file": str(attempt / "task.log"),
            "report_file": str(attempt / "report.json"),
            "dag_id": "chaos",
            "run_id": task.run_id,
            "try_number": try_number,
            "freeze_at": task.kill_at if try_number == 1 else None,
            "freeze_after_lines": 3,
        }
        (attempt / "spec.json").write_text(json.dumps(spec))
        pid, events = server.start(attempt / "spec.json")
        if try_number == 1:
            while wait_for(events, "PHASE", 120) != task.kill_at:
                pass
            if task.kill_at == "waiting":
                time.sleep(rng.uniform(0.1, 0.5))  # the peon is running: kill in the middle of the wait
            server.kill(pid)
            killed_with = int(wait_for(events, "EXITED", 30))
            continue
        assert wait_for(events, "EXITED", 240) == "0"
        result = _reported(attempt)
        result.tries, result.retried, result.killed_with = try_number, try_number - 2, killed_with
        if result.error_type not in RETRIED_ERRORS:
            break
    return result


def _reported(attempt: Path) -> TaskResult:
    """What a try in a worker process reported, with the peon lines of its log."""
    report = json.loads((attempt / "report.json").read_text())
    lines = [match.group(0) for match in PEON_LINE.finditer((attempt / "task.log").read_text())]
    if "error" in report:
        status = {
            "JobFailed": "FAILED",
            "JobLaunchTimeout": "LAUNCH_FAILED",
            "DruidK8sConfigError": refused_status(report["error"]),
        }.get(report["error_type"], "ERROR")
        return TaskResult(status, report["error"], lines, error_type=report["error_type"])
    return TaskResult(report["return_value"]["status"], json.dumps(report["return_value"]), lines)


def refused_status(message: str) -> str:
    """A retry of a task whose id is written in the task JSON, after Druid recorded it FAILED (the try that
    ran it was killed before it saw the end), is refused: Druid never accepts an id twice. The Airflow task
    fails saying so, which is the task's true outcome; any other refusal is an error."""
    return "FAILED" if "already has a FAILED task with the id" in message else "ERROR"


def without_lines_shown_before_a_restart(lines: list[str], shown_before: Counter[str]) -> list[str]:
    """``lines`` (in order) without the first occurrences of the lines a trigger cancelled by a triggerer
    restart had shown (its successor shows them again: its kwargs are the deferral's)."""
    left = Counter(shown_before)  # a copy: counted down here
    kept = []
    for line in lines:
        if left[line] > 0:
            left[line] -= 1
            continue
        kept.append(line)
    return kept


def log_difference(expected: list[str], shown: list[str]) -> str:
    counts = Counter(shown)
    lost = [line for line in expected if counts[line] == 0]
    repeated = [line for line, count in counts.items() if count > 1]
    order = "" if lost or repeated else " (out of order)"
    return f"lost {lost[:5]}{'...' if len(lost) > 5 else ''}, repeated {repeated[:5]}{order}"
