"""Chaos: 50 Druid tasks through the operator while the API server and the workers misbehave.

The promise under test: no Druid task is ever lost, duplicated or left running unseen, whatever fails.
While the tasks run, the emulated API server answers about one request in ten with a 5xx or a 429 and
resets the connection of one in fifty, every watch stream is cut every second, watches are forced into
``410 Expired``, and the API server itself restarts twice. Forty tasks run in this process (half waiting in
the worker, half deferred to a shared "triggerer" loop); ten run in worker subprocesses that are SIGKILLed at
a chosen point (before the create, after it, while waiting, while the log streams) and then retried, as
Airflow retries a task whose worker died. Every task goes through a stand-in Overlord (Druid 38: the
operator creates each Job suspended, submits, releases it), which keeps the finished Jobs (``debugJobs``);
afterwards the reaper sweeps them, still under the API faults.

Checked for every task: the outcome is the right one (SUCCESS; FAILED for a peon that exits 1; a launch
failure naming the image pull for a peon whose image never pulls, shut down in the Overlord), exactly one
Job was ever created for it (the emulator's store events: the Overlord's runner joins the operator's
Job), every line of the peon's log appears exactly once and in
order in the log of the try that finished, and nothing is left in the namespace after the reaper.
Faults are seeded, so a failing run replays the same faults.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing
from airflow.sdk.exceptions import TaskDeferred
from chaos_workers import ForkServer, wait_for
from emulated_cluster import NAMESPACE, OVERLORD, connected_emulator

from druid_k8s_provider.errors import DruidK8sConfigError, JobFailed, JobLaunchTimeout
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.naming import PEON_LABEL
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.reaper import reap
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext, image_pull_fails

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

SEED = 20261126
TASKS = 50
KILLED_TASKS = 10
LOG_LINES = 15
LINE_INTERVAL_SECONDS = 0.05
KILL_POINTS = ("before_create", "after_create", "waiting", "reading_logs")
FAULT_RATE_5XX = 0.05
FAULT_RATE_429 = 0.05
FAULT_RATE_RESET = 0.02
WATCH_DROP_EVERY_SECONDS = 1.0
WATCH_EXPIRY_EVERY_SECONDS = 1.5
SERVER_RESTARTS_AT_SECONDS = (2.5, 5.0)
PEON_LINE = re.compile(r"(chaos-\d{2}-(?:ok|fail)) line (\d{3})")
UNPULLABLE_OVERLORD = "druid-overlord-unpullable"
#: What each kind of task must end with: the operator's return status, or the error it raises.
EXPECTED_STATUS = {"ok": "SUCCESS", "fail": "FAILED", "unpullable": "LAUNCH_FAILED"}


@dataclass
class ChaosTask:
    """One Druid task of the run and how it is executed."""

    index: int
    kind: str  # "ok", "fail" (the peon exits 1) or "unpullable" (its image never pulls)
    deferrable: bool
    kill_at: str | None = None

    @property
    def druid_id(self) -> str:
        return f"chaos-{self.index:02d}-{self.kind}"

    def expected_lines(self) -> list[str]:
        lines = LOG_LINES if self.kind != "unpullable" else 0
        return [f"{self.druid_id} line {number:03d}" for number in range(lines)]

    def operator_arguments(self) -> dict[str, Any]:
        properties = {
            "druid.indexer.runner.namespace": NAMESPACE,
            "druid.indexer.runner.K8sjobLaunchTimeout": "PT90S",
            "druid.indexer.runner.maxTaskDuration": "PT5M",
        }
        return {
            "druid_task": {"type": "index_parallel", "id": self.druid_id, "spec": {}},
            "runner_properties": properties,
            "overlord_pod_name": UNPULLABLE_OVERLORD if self.kind == "unpullable" else OVERLORD,
            "deferrable": self.deferrable,
            "poll_interval": 2.0,
            "image_pull_grace_seconds": 0.5,
        }


@dataclass
class TaskResult:
    """What the try that finished reported, and the peon lines its log showed."""

    status: str
    detail: str
    lines: list[str] = field(default_factory=list)
    tries: int = 1
    killed_with: int | None = None


def plan() -> list[ChaosTask]:
    """50 tasks: one in five fails, one in ten cannot pull its image, half defer, ten of those that run get
    killed."""
    rng = random.Random(SEED)
    tasks = [
        ChaosTask(
            index,
            kind="fail" if index % 5 == 3 else "unpullable" if index % 10 == 9 else "ok",
            deferrable=index % 2 == 1,
        )
        for index in range(TASKS)
    ]
    killed = rng.sample([task for task in tasks if task.kind != "unpullable"], KILLED_TASKS)
    for number, task in enumerate(killed):
        task.kill_at = KILL_POINTS[number % len(KILL_POINTS)]
    return tasks


async def chaos_peon(ctx: ContainerContext) -> int:
    """A peon that logs numbered lines over a second, then exits 1 when its task id says so."""
    task_id = ctx.env["TASK_ID"]
    for number in range(LOG_LINES):
        ctx.log(f"{task_id} line {number:03d}")
        if await ctx.wait_or_stop(LINE_INTERVAL_SECONDS):
            return 143
    return 1 if task_id.endswith("-fail") else 0


class ChaosMonkey:
    """Drops watches, forces 410s and restarts the API server on a schedule until stopped."""

    def __init__(self, kube: KubeEmulator) -> None:
        self.kube = kube
        self.stop = threading.Event()
        self.watch_drops = 0
        self.streams_cut = 0
        self.forced_expiries = 0
        self.restarts = 0
        self._thread = threading.Thread(target=self._run, name="chaos-monkey", daemon=True)

    def __enter__(self) -> ChaosMonkey:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        next_drop, next_expiry = WATCH_DROP_EVERY_SECONDS, WATCH_EXPIRY_EVERY_SECONDS
        restarts = list(SERVER_RESTARTS_AT_SECONDS)
        while not self.stop.wait(0.1):
            elapsed = time.monotonic() - started
            if elapsed >= next_drop:
                self.streams_cut += self.kube.faults.drop_watches()
                self.watch_drops += 1
                next_drop += WATCH_DROP_EVERY_SECONDS
            if elapsed >= next_expiry:
                self.kube.faults.expire_next_watch(2)
                self.forced_expiries += 2
                next_expiry += WATCH_EXPIRY_EVERY_SECONDS
            if restarts and elapsed >= restarts[0]:
                restarts.pop(0)
                self.kube.restart_server()
                self.restarts += 1


class Triggerer:
    """One event loop running every deferred task's trigger, as Airflow's triggerer does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="triggerer", daemon=True)

    def __enter__(self) -> Triggerer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def run_trigger(self, deferred: TaskDeferred) -> dict[str, Any]:
        """Rebuild the trigger from its serialized form and wait for its event."""
        classpath, kwargs = deferred.trigger.serialize()
        assert classpath.endswith(".DruidOverlordTaskTrigger")
        trigger = type(deferred.trigger)(**kwargs)

        async def first_event() -> dict[str, Any]:
            event = await anext(trigger.run())
            return dict(event.payload)

        return asyncio.run_coroutine_threadsafe(first_event(), self.loop).result(timeout=240)


def context(task: ChaosTask) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="chaos", task_id="druid", run_id="manual_1", map_index=-1, try_number=1,
        xcom_push=lambda key, value: None,
    )  # fmt: skip
    return {"ti": ti}


def run_in_process(task: ChaosTask, triggerer: Triggerer) -> TaskResult:
    operator = DruidK8sTaskOperator(task_id="druid", **task.operator_arguments())
    ctx = context(task)
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
        return TaskResult(_refused_status(str(refusal)), str(refusal))
    except Exception as error:
        return TaskResult("ERROR", f"{type(error).__name__}: {error}")
    return TaskResult(str(result["status"]), json.dumps(result))


def run_in_worker_process(
    task: ChaosTask, server: ForkServer, workdir: Path, rng: random.Random
) -> TaskResult:
    """Try 1 is SIGKILLed at ``task.kill_at``; try 2 (the retry) runs to the end."""
    killed_with = None
    for try_number in (1, 2):
        attempt = workdir / f"{task.druid_id}-try{try_number}"
        attempt.mkdir()
        spec = {
            "operator": task.operator_arguments(),
            "log_file": str(attempt / "task.log"),
            "report_file": str(attempt / "report.json"),
            "run_id": "manual_1",
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
        report = json.loads((attempt / "report.json").read_text())
        lines = [match.group(0) for match in PEON_LINE.finditer((attempt / "task.log").read_text())]
        if "error" in report:
            status = {
                "JobFailed": "FAILED",
                "JobLaunchTimeout": "LAUNCH_FAILED",
                "DruidK8sConfigError": _refused_status(report["error"]),
            }.get(report["error_type"], "ERROR")
            return TaskResult(status, report["error"], lines, 2, killed_with)
        return TaskResult(
            report["return_value"]["status"], json.dumps(report["return_value"]), lines, 2, killed_with
        )
    raise AssertionError("unreachable")


def _refused_status(message: str) -> str:
    """A retry of a task whose id is written in the task JSON, after Druid recorded it FAILED (the try that
    ran it was killed before it saw the end), is refused: Druid never accepts an id twice. The Airflow task
    fails saying so, which is the task's true outcome; any other refusal is an error."""
    return "FAILED" if "already has a FAILED task with the id" in message else "ERROR"


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    images = {"chaos-peon:*": chaos_peon, "chaos-unpullable:*": image_pull_fails()}
    overlords = {OVERLORD: "chaos-peon:1", UNPULLABLE_OVERLORD: "chaos-unpullable:1"}
    with connected_emulator(
        monkeypatch,
        images=images,
        overlords=overlords,
        overlord_properties={"druid.indexer.runner.debugJobs": "true"},
        fault_seed=SEED,
        bookmark_interval=1.0,
    ) as emulator:
        yield emulator


def test_fifty_tasks_survive_api_faults_watch_drops_restarts_and_killed_workers(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    tasks = plan()
    jobs_created: Counter[str] = Counter()

    def count_creates(event_type: str, plural: str, obj: dict[str, Any]) -> None:
        if plural == "jobs" and event_type == "ADDED":
            jobs_created[obj["metadata"]["name"]] += 1

    kube.store.add_listener(count_creates)
    kube.faults.add(status=500, rate=FAULT_RATE_5XX)
    kube.faults.add(status=429, rate=FAULT_RATE_429, retry_after=1)
    kube.faults.add(reset_connection=True, rate=FAULT_RATE_RESET)
    rng = random.Random(SEED)
    results: dict[str, TaskResult] = {}
    started = time.monotonic()
    with (
        structlog.testing.capture_logs() as captured,
        Triggerer() as triggerer,
        ChaosMonkey(kube) as monkey,
        ForkServer(tmp_path) as server,
        ThreadPoolExecutor(16) as in_process,
        ThreadPoolExecutor(5) as workers,
    ):
        futures = {
            task.druid_id: (
                workers.submit(run_in_worker_process, task, server, tmp_path, random.Random(rng.random()))
                if task.kill_at
                else in_process.submit(run_in_process, task, triggerer)
            )
            for task in tasks
        }
        results = {druid_id: future.result(timeout=280) for druid_id, future in futures.items()}
    elapsed = time.monotonic() - started

    shown: dict[str, list[str]] = defaultdict(list)
    for entry in captured:
        match = PEON_LINE.fullmatch(str(entry.get("event", "")))
        if match:
            shown[match.group(1)].append(match.group(0))
    for task in tasks:
        if not task.kill_at:
            results[task.druid_id].lines = shown[task.druid_id]

    kept = sorted(job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE))
    summary = reap(DruidK8sHook(namespace=NAMESPACE), NAMESPACE, dt.timedelta(0))  # API faults still on
    faults_fired = sum(fault.fired for fault in kube.faults.faults)
    kube.faults.clear()
    deadline = time.monotonic() + 15
    while (
        kube.store.list("pods", NAMESPACE, label_selector=f"{PEON_LABEL}=true")
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    orphans = [obj["metadata"]["name"] for obj in kube.store.list("jobs", NAMESPACE)] + [
        pod["metadata"]["name"]
        for pod in kube.store.list("pods", NAMESPACE, label_selector=f"{PEON_LABEL}=true")
    ]

    wrong_outcome = {
        task.druid_id: (results[task.druid_id].status, results[task.druid_id].detail[:300])
        for task in tasks
        if results[task.druid_id].status != EXPECTED_STATUS[task.kind]
        or (
            task.kind == "unpullable"
            and "ImagePullBackOff" not in results[task.druid_id].detail
            and "ErrImagePull" not in results[task.druid_id].detail
        )
    }
    # The exit code in a failure's message can be lost when the pods watch lags (a race, proven
    # deterministically by test_outcome_under_watch_lag.py); counted here, asserted there.
    reason_lost = [
        task.druid_id
        for task in tasks
        if task.kind == "fail" and "exited with code 1" not in results[task.druid_id].detail
    ]
    duplicates = {name: count for name, count in jobs_created.items() if count != 1}
    log_problems = {
        task.druid_id: _log_difference(task.expected_lines(), results[task.druid_id].lines)
        for task in tasks
        if results[task.druid_id].lines != task.expected_lines()
    }
    not_killed = {
        t.druid_id: results[t.druid_id].killed_with
        for t in tasks
        if t.kill_at and results[t.druid_id].killed_with != -signal.SIGKILL
    }
    figures = {
        "tasks": len(tasks),
        "seconds": round(elapsed, 1),
        "faults_injected": faults_fired,
        "watch_drops": monkey.watch_drops,
        "streams_cut": monkey.streams_cut,
        "forced_410": monkey.forced_expiries,
        "server_restarts": monkey.restarts,
        "workers_sigkilled": sum(1 for t in tasks if t.kill_at) - len(not_killed),
        "jobs_created": sum(jobs_created.values()),
        "duplicates": len(duplicates),
        "wrong_outcomes": len(wrong_outcome),
        "failure_reason_lost": len(reason_lost),
        "lost_or_repeated_log_lines": len(log_problems),
        "kept_for_reaper": len(kept),
        "reaped": summary["deleted"],
        "orphans": len(orphans),
    }
    print("CHAOS FIGURES " + json.dumps(figures))
    assert faults_fired > 50 and monkey.restarts == len(SERVER_RESTARTS_AT_SECONDS), figures
    assert not_killed == {}, f"workers that were not SIGKILLed: {not_killed}"
    assert wrong_outcome == {}, f"tasks with the wrong outcome: {wrong_outcome}"
    assert len(jobs_created) == TASKS and duplicates == {}, f"Jobs created more than once: {duplicates}"
    assert log_problems == {}, f"peon log lines lost or repeated: {log_problems}"
    assert orphans == [], f"left in namespace {NAMESPACE!r} after the reaper: {orphans}"


def _log_difference(expected: list[str], shown: list[str]) -> str:
    counts = Counter(shown)
    lost = [line for line in expected if counts[line] == 0]
    repeated = [line for line, count in counts.items() if count > 1]
    order = "" if lost or repeated else " (out of order)"
    return f"lost {lost[:5]}{'...' if len(lost) > 5 else ''}, repeated {repeated[:5]}{order}"
