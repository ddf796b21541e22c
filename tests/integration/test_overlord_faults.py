"""The operator through Overlord faults at each step of the launch, and through Overlord failovers.

At every step a worker or a triggerer asks the Overlord something (its version, the attempts so far, the
submission, the release check, the batched status, the report, the log, the shutdown), the Overlord
emulator answers once as a standby does (503), drops the connection, answers seconds late, or handles the
request and loses the answer. The task must still end as it should, submitted once, in one Job. A failover
while tasks wait for their locks (suspended Jobs, in the worker and deferred) and while one runs must be
just as invisible.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from test_operator_lifecycle import FakeTaskInstance, logged, operator, run
from test_operator_overlord_protocol import druid_tasks, wait_until

from druid_k8s_provider.errors import TaskAlreadySubmitted
from druid_k8s_provider.hooks import overlord as overlord_hooks
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.overlord_transport import OverlordRetryPolicy
from druid_k8s_provider.launch import stop
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
#: One fault of each kind, as the emulator scripts it.
KINDS = {
    "not-leader": {"status": 503},
    "unreachable": {"reset_connection": True},
    "slow": {"latency": 1.0},
    "answer-lost": {"lose_answer": True},
}
#: The steps every launch in ``airflow`` mode goes through: a first try submits without asking about earlier
#: attempts, and a lone waiter's release check is its task's own status; then the batched final status (the
#: log is read only when the pod's was not read to its end: see the retry test).
LAUNCH_STEPS = ("version", "submit", "task_status", "task_statuses", "reports")
#: Druid looks for a joined Job's pod for about four minutes; a fifth of that leaves room for a release
#: retried through the faults (the default test hundredth would not).
POD_LOOKUP_SCALE = 0.2


def peon_job_creates(kube: KubeEmulator) -> int:
    return kube.metrics.creates("jobs")


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries as the hooks make them, with shorter pauses: what is tested is that they happen."""
    monkeypatch.setattr(
        overlord_hooks, "OverlordRetryPolicy", lambda: OverlordRetryPolicy(initial_wait=0.1, max_wait=0.5)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_at_every_step_of_a_launch_changes_nothing_the_user_sees(
    kube: KubeEmulator, start_overlord: Any, kind: str
) -> None:
    overlord = start_overlord(pod_lookup_scale=POD_LOOKUP_SCALE)
    for step in LAUNCH_STEPS:
        overlord.faults.add(step=step, count=1, **KINDS[kind])
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task()), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["report"]["processed"] == 2
    assert [(task["id"], task["statusCode"]) for task in druid_tasks(overlord)] == [
        (result["druid_task_id"], "SUCCESS")
    ]
    assert peon_job_creates(kube) == 1
    assert {step: overlord.faults.fired(step) for step in LAUNCH_STEPS} == dict.fromkeys(LAUNCH_STEPS, 1)
    reattached = any("an earlier try submitted it): re-attaching" in line for line in logged(logs))
    assert reattached == (kind == "answer-lost")  # the submission's answer was lost, not the task


def test_faults_of_every_kind_while_deferred_change_nothing(kube: KubeEmulator, start_overlord: Any) -> None:
    overlord = start_overlord(pod_lookup_scale=POD_LOOKUP_SCALE)
    for step, kind in zip(LAUNCH_STEPS, [*KINDS, "not-leader"], strict=True):
        overlord.faults.add(step=step, count=1, **KINDS[kind])
    result = run(operator(druid_task=index_parallel_task(), deferrable=True), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert [task["statusCode"] for task in druid_tasks(overlord)] == ["SUCCESS"]
    assert peon_job_creates(kube) == 1
    assert all(overlord.faults.fired(step) >= 1 for step in LAUNCH_STEPS)


def test_a_retry_reports_the_success_through_faults_on_the_status_the_log_and_the_report(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    overlord = start_overlord()
    first = run(operator(druid_task=index_parallel_task()), FakeTaskInstance())
    overlord.faults.add(step="task_statuses", lose_answer=True, count=1)
    overlord.faults.add(step="log", status=503, count=2)
    overlord.faults.add(step="reports", reset_connection=True, count=1)
    retry = FakeTaskInstance()
    retry.try_number = 2  # type: ignore[attr-defined]
    with capture_logs() as logs:
        result = run(operator(druid_task=index_parallel_task()), retry)
    assert result["status"] == "SUCCESS" and result["druid_task_id"] == first["druid_task_id"]
    assert result["report"] == first["report"]
    peon_lines = [line for line in logged(logs) if "Running task" in line]
    assert len(peon_lines) == 1  # the peon's log, from the Overlord, once
    assert peon_job_creates(kube) == 1 and len(druid_tasks(overlord)) == 1
    assert [overlord.faults.fired(step) for step in ("task_statuses", "log", "reports")] == [1, 2, 1]


def test_a_user_stop_through_a_lost_answer_and_a_standby_still_shuts_the_task_down(
    kube: KubeEmulator, start_overlord: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stop, "LATE_JOB_WATCH_SECONDS", 2.0)
    overlord = start_overlord()
    overlord.faults.add(step="shutdown", lose_answer=True, count=1)
    overlord.faults.add(step="shutdown", status=503, count=1)
    op, ti = operator(druid_task=index_parallel_task(standinDurationSeconds=60)), FakeTaskInstance()
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            op.execute({"ti": ti})  # type: ignore[arg-type]
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    wait_until(lambda: [t for t in druid_tasks(overlord) if t.get("runnerStatusCode") == "RUNNING"])
    ti.state_on_server = "failed"
    op.on_kill()
    worker.join(30)
    assert "stopped by a user" in str(outcome["error"])
    (task,) = druid_tasks(overlord)
    assert (task["statusCode"], task["errorMsg"]) == ("FAILED", "Shutdown request from user")
    assert overlord.faults.fired("shutdown") == 2


def test_an_overlord_failover_while_tasks_wait_for_locks_and_run_adopts_them_all(
    kube: KubeEmulator, start_overlord: Any
) -> None:
    """A lock holder runs; ours wait for its interval (suspended, unlabelled Jobs), one in a worker, one
    deferred. The Overlord process goes away (connections refused) and a new leader takes over; later, while
    one of ours runs, leadership changes again. Nothing is shut down, nothing runs twice."""
    overlord = start_overlord(pod_lookup_scale=POD_LOOKUP_SCALE)
    holder = index_parallel_task("lock_holder", standinDurationSeconds=2.0)
    kube_jobs_before = peon_job_creates(kube)
    httpx.post(f"{overlord.url}/druid/indexer/v1/task", json=holder, trust_env=False).raise_for_status()
    results: dict[str, Any] = {}

    def work(name: str, deferrable: bool) -> None:
        task = index_parallel_task(standinDurationSeconds=1.0)
        try:
            results[name] = run(operator(druid_task=task, deferrable=deferrable), FakeTaskInstance(name))
        except Exception as exc:
            results[name] = exc

    workers = [
        threading.Thread(target=work, args=(name, name == "deferred")) for name in ("worker", "deferred")
    ]
    for worker in workers:
        worker.start()

    def ours(state: str) -> list[dict[str, Any]]:
        return [
            t
            for t in druid_tasks(overlord)
            if t["id"] != "lock_holder" and t.get("runnerStatusCode") == state
        ]

    wait_until(lambda: len(ours("WAITING")) == 2, what="both of ours waiting for the holder's locks")
    overlord.restart(downtime=0.5, refuse_connections=True)
    wait_until(lambda: ours("RUNNING"), what="one of ours running")
    overlord.restart(downtime=0.5)
    for worker in workers:
        worker.join(60)
    statuses = {
        name: result if isinstance(result, Exception) else result["status"]
        for name, result in results.items()
    }
    assert statuses == {"worker": "SUCCESS", "deferred": "SUCCESS"}
    assert sorted(task["statusCode"] for task in druid_tasks(overlord)) == ["SUCCESS"] * 3
    assert peon_job_creates(kube) - kube_jobs_before == 3  # the holder's, by the Overlord, and ours
    assert not [line for line in overlord.log_lines if "Shutting down task" in line or "Shutdown [" in line]


@pytest.mark.parametrize(
    ("latency", "retry_wait", "retry_sees"),
    [
        pytest.param(1.0, 0.05, "accepted", id="retry-first"),
        pytest.param(0.3, 0.6, "already-submitted", id="late-answer-first"),
    ],
)
def test_a_submit_slower_than_the_clients_timeout_is_stored_once_whichever_request_comes_first(
    kube: KubeEmulator, start_overlord: Any, latency: float, retry_wait: float, retry_sees: str
) -> None:
    """The client gives up on a slow submission and sends it again while the Overlord still handles the
    first: one of the two stores the task, the other is told ``entryAlreadyExists``."""
    overlord = start_overlord()
    overlord.faults.add(step="submit", latency=latency, count=1)
    task = index_parallel_task("slow_submit")
    policy = OverlordRetryPolicy(attempts=3, initial_wait=retry_wait, max_wait=retry_wait)
    with DruidOverlordHook(timeout=0.2, retry_policy=policy) as hook:
        try:
            seen = "accepted" if hook.submit_task(task) == task["id"] else "?"
        except TaskAlreadySubmitted:
            seen = "already-submitted"
    assert seen == retry_sees
    wait_until(lambda: overlord.requests.count("POST", "/druid/indexer/v1/task") == 2, what="the late submit")
    answers = sorted(r.status for r in overlord.requests.requests if r.path == "/druid/indexer/v1/task")
    assert answers == [200, 400]
    assert [t["id"] for t in druid_tasks(overlord)] == ["slow_submit"]
