"""Waiting on the Overlord and releasing a suspended Job, against both emulators over real HTTP.

The board, the release and both emulators run on the test's event loop (``async with``); the provider
reaches them through its Airflow connections (``druid_ingest_default``, ``kubernetes_default``) as a
deployment would, and the Overlord emulator's request log pins what was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import DruidK8sConfigError, OverlordApiError, OverlordTaskUnknown
from druid_k8s_provider.hooks.druid_k8s import DruidK8sAsyncHook
from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook
from druid_k8s_provider.hooks.overlord_transport import OverlordRetryPolicy
from druid_k8s_provider.job_builder import build_job, peon_job_name
from druid_k8s_provider.launch.release import release_job
from druid_k8s_provider.launch.suspended import suspended_unlabelled
from druid_k8s_provider.naming import PEON_LABEL
from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task
from druid_k8s_provider.triggers.overlord_board import OverlordBoard

from .conftest import NAMESPACE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASKS = "/druid/indexer/v1/tasks"
TASK_STATUS = "/druid/indexer/v1/taskStatus"
INTERVAL = 0.1
#: A holder of the interval's lock runs until the test shuts it down.
FOREVER = 600


@dataclass
class Both:
    """Both emulators, the provider's hooks on them, and the Overlord's request log."""

    kube: KubeEmulator
    overlord: OverlordEmulator
    druid: DruidOverlordAsyncHook
    k8s: DruidK8sAsyncHook = field(default_factory=DruidK8sAsyncHook)
    lines: list[str] = field(default_factory=list)

    def board(self, **kwargs: Any) -> OverlordBoard:
        kwargs.setdefault("status_interval", INTERVAL)
        kwargs.setdefault("release_interval", INTERVAL)
        return OverlordBoard(**kwargs)

    def count(self, method: str, path: str, **query: str) -> int:
        return self.overlord.requests.count(method, path, **query)

    def our_suspended_job(self, task: dict[str, Any]) -> str:
        """Create the Job of ``task`` as ``launch_mode="airflow"`` does (before submitting it)."""
        template = self.kube.store.get("pods", NAMESPACE, "druid-overlord-0")
        job = build_job(task, template, self.overlord.config, druid_version=self.overlord.druid_version)
        self.kube.store.create("jobs", NAMESPACE, suspended_unlabelled(job))
        return str(job["metadata"]["name"])

    def job(self, name: str) -> dict[str, Any] | None:
        jobs = self.kube.store.list("jobs", NAMESPACE, field_selector=f"metadata.name={name}")
        return jobs[0] if jobs else None

    def pods_of(self, job_name: str) -> list[dict[str, Any]]:
        return self.kube.store.list("pods", NAMESPACE, label_selector=f"job-name={job_name}")

    async def state(self, task_id: str) -> tuple[str, str | None]:
        """(statusCode, runnerStatusCode) from the single-task status."""
        status = await self.druid.task_status(task_id)
        assert status is not None
        return status.status_code, status.runner_status_code

    async def is_running(self, task_id: str) -> bool:
        return await self.state(task_id) == ("RUNNING", "RUNNING")

    async def is_complete(self, task_id: str) -> bool:
        return (await self.state(task_id))[0] != "RUNNING"


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds (bounded by the test's timeout, not by a clock of its own)."""
    for _ in range(2000):
        result = check()
        if await result if asyncio.iscoroutine(result) else result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} did not happen")


@contextlib.asynccontextmanager
async def emulators(monkeypatch: pytest.MonkeyPatch, **overlord: Any) -> AsyncIterator[Both]:
    """Both emulators on the test's loop, with the Airflow connections pointing at them."""
    async with (
        KubeEmulator() as kube,
        OverlordEmulator(
            kube, start_delay=1.0, pod_lookup_scale=0.01, poll_interval=0.05, **overlord
        ) as druid,
    ):
        host, port = druid.url.removeprefix("http://").split(":")
        ingest = {"conn_type": "druid", "host": host, "port": int(port), "extra": {}}
        k8s = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
        monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(ingest))
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(k8s))
        async with DruidOverlordAsyncHook() as hook:
            yield Both(kube, druid, hook)


@pytest.fixture
async def both(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Both]:
    async with emulators(monkeypatch) as env:
        yield env


async def test_a_waiting_task_is_released_only_after_the_lock_holder_completes_and_then_succeeds(
    both: Both,
) -> None:
    holder = index_parallel_task("index_parallel_holder", standinDurationSeconds=FOREVER)
    waiting = index_parallel_task("index_parallel_waiting", standinDurationSeconds=0.3)
    await both.druid.submit_task(holder)
    await eventually(lambda: both.is_running(holder["id"]), "the holder's start")
    ours = both.our_suspended_job(waiting)
    await both.druid.submit_task(waiting)
    board = both.board()
    both.overlord.requests.clear()
    release = asyncio.create_task(
        release_job(
            both.k8s, board, namespace=NAMESPACE, job_name=ours, task_id=waiting["id"], log=both.lines.append
        )
    )
    await eventually(lambda: board.release_rounds >= 3, "three release rounds")
    # The only waiter of its board (a worker's) asks for its task's own status, one request per round,
    # instead of the two task lists; its runnerStatusCode is WAITING until the lock holder completes.
    assert both.count("GET", f"/druid/indexer/v1/task/{waiting['id']}/status") >= 3
    assert both.count("GET", TASKS, state="pending") == both.count("GET", TASKS, state="running") == 0
    assert await both.state(waiting["id"]) == ("RUNNING", "WAITING")
    assert not release.done()
    job = both.job(ours)
    assert job is not None and job["spec"]["suspend"] is True and PEON_LABEL not in job["metadata"]["labels"]
    assert both.pods_of(ours) == []

    assert await both.druid.shutdown_task(holder["id"])  # the holder ends: its lock is free
    released = await release
    assert released.resumed and released.job_name == ours
    assert released.status is not None and released.status.runner_status_code in ("PENDING", "RUNNING")
    assert both.lines == [released.reason] and "resumed" in released.reason
    job = both.job(ours)
    assert job is not None and job["spec"]["suspend"] is False
    assert job["metadata"]["labels"][PEON_LABEL] == "true"
    assert job["spec"]["template"]["metadata"]["labels"][PEON_LABEL] == "true"

    outcome = await board.wait_complete(waiting["id"])
    assert outcome.status_code == "SUCCESS"
    assert any(
        f"Job[{ours}] for task[{waiting['id']}] already exists: joining it" in line
        for line in both.overlord.log_lines
    )


async def test_a_task_that_completes_while_waiting_is_not_released_and_its_job_is_deleted(both: Both) -> None:
    """No runner will join the Job of a completed task, and a suspended Job never finishes (its
    ``ttlSecondsAfterFinished`` would never remove it): it is deleted."""
    holder = index_parallel_task("index_parallel_holder2", standinDurationSeconds=FOREVER)
    waiting = index_parallel_task("index_parallel_stopped")
    await both.druid.submit_task(holder)
    ours = both.our_suspended_job(waiting)
    await both.druid.submit_task(waiting)
    board = both.board()
    release = asyncio.create_task(
        release_job(
            both.k8s, board, namespace=NAMESPACE, job_name=ours, task_id=waiting["id"], log=both.lines.append
        )
    )
    await eventually(lambda: board.release_rounds >= 1, "a release round")
    assert await both.druid.shutdown_task(waiting["id"])
    released = await release
    assert not released.resumed and released.job_name == ours
    assert released.status is not None and released.status.status_code == "FAILED"
    assert released.status.error_msg == "Shutdown request from user"
    assert both.job(ours) is None and both.pods_of(ours) == []
    assert released.reason.endswith("was not released and was deleted")
    await both.druid.shutdown_task(holder["id"])


async def test_the_overlords_own_job_is_followed_and_ours_deleted_while_suspended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = {"druid.indexer.runner.k8sTaskPodNamePrefix": "overlordside"}
    async with emulators(monkeypatch, runner_properties=prefix) as env:
        task = index_parallel_task("index_parallel_prefixed", standinDurationSeconds=0.3)
        template = env.kube.store.get("pods", NAMESPACE, "druid-overlord-0")
        without_prefix = RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE})
        manifest = suspended_unlabelled(build_job(task, template, without_prefix))
        env.kube.store.create("jobs", NAMESPACE, manifest)
        ours = manifest["metadata"]["name"]
        theirs = peon_job_name(task["id"], env.overlord.config, druid_version=env.overlord.druid_version)
        assert theirs != ours
        await env.druid.submit_task(task)
        await eventually(lambda: env.job(theirs) is not None, "the Overlord's own Job")
        board = env.board()
        released = await release_job(
            env.k8s, board, namespace=NAMESPACE, job_name=ours, task_id=task["id"], log=env.lines.append
        )
        assert released.job_name == theirs and not released.resumed
        assert f"our suspended Job {ours!r} was deleted" in released.reason
        assert env.lines == [released.reason]
        assert env.job(ours) is None
        assert (await board.wait_complete(task["id"])).status_code == "SUCCESS"


async def test_fifty_waiters_share_each_round_and_nothing_is_asked_once_they_are_cancelled(
    both: Both,
) -> None:
    holder = index_parallel_task("index_parallel_holder3", standinDurationSeconds=FOREVER)
    await both.druid.submit_task(holder)
    ids = [f"index_parallel_queued_{n}" for n in range(50)]
    for task_id in ids:
        await both.druid.submit_task(index_parallel_task(task_id))
    board = both.board()
    both.overlord.requests.clear()
    waits = [asyncio.create_task(board.wait_handed_to_runner(task_id)) for task_id in ids]
    waits += [asyncio.create_task(board.wait_complete(task_id)) for task_id in ids]
    await eventually(lambda: board.release_rounds >= 3 and board.status_rounds >= 3, "three rounds of each")
    for wait in waits:
        wait.cancel()
    results = await asyncio.gather(*waits, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)

    pending = both.count("GET", TASKS, state="pending")
    running = both.count("GET", TASKS, state="running")
    statuses = both.count("POST", TASK_STATUS)
    # Two list requests and one batched status per round, whatever the number of waiters (a round cut
    # short by the cancellation may have sent its first request).
    assert board.release_rounds <= pending <= board.release_rounds + 1
    assert board.release_rounds <= running <= pending
    assert board.status_rounds <= statuses <= board.status_rounds + 1
    assert pending < len(ids) and statuses < len(ids)
    assert len(both.overlord.requests.requests) == pending + running + statuses

    await asyncio.sleep(10 * INTERVAL)
    assert len(both.overlord.requests.requests) == pending + running + statuses  # nobody waits: no request
    await both.druid.shutdown_task(holder["id"])


async def test_an_id_the_overlord_does_not_know_fails_its_wait_after_the_unknown_rounds(both: Both) -> None:
    board = both.board(unknown_rounds=3)
    both.overlord.requests.clear()
    with pytest.raises(OverlordTaskUnknown) as unknown:
        await board.wait_complete("index_parallel_never_submitted")
    assert unknown.value.task_id == "index_parallel_never_submitted"
    assert "'druid_ingest_default'" in str(unknown.value) and "left it out 3 times" in str(unknown.value)
    assert both.count("POST", TASK_STATUS) == 3
    with pytest.raises(OverlordTaskUnknown):
        await board.wait_handed_to_runner("index_parallel_never_submitted")


async def test_waits_ride_out_an_overlord_without_leader_and_check_soon_asks_within_a_second(
    both: Both,
) -> None:
    holder = index_parallel_task("index_parallel_holder4", standinDurationSeconds=FOREVER)
    # Long enough for the board's next round, after the outage's back-off, to find it still running.
    task = index_parallel_task("index_parallel_through_failover", standinDurationSeconds=5)
    await both.druid.submit_task(holder)
    await both.druid.submit_task(task)
    impatient = OverlordRetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02)
    # A status interval longer than the test's timeout: only check_soon can bring the outcome in time.
    board = both.board(retry_policy=impatient, status_interval=600.0)
    await both.overlord.set_leader_async(False)
    both.overlord.requests.clear()
    handed = asyncio.create_task(board.wait_handed_to_runner(task["id"]))
    # A lone waiter asks for its task's own status (see the first test), here refused with 503.
    own_status = f"/druid/indexer/v1/task/{task['id']}/status"
    await eventually(lambda: both.count("GET", own_status) >= 4, "status requests refused with 503")
    assert {request.status for request in both.overlord.requests.requests} == {503}
    assert not handed.done()

    await both.overlord.set_leader_async(True)
    await both.druid.shutdown_task(holder["id"])
    status = await handed
    assert status.task_id == task["id"] and status.active
    complete = asyncio.create_task(board.wait_complete(task["id"]))
    await eventually(lambda: both.is_complete(task["id"]), "the task's end")
    board.check_soon()
    assert (await complete).status_code == "SUCCESS"


async def test_a_refusal_that_retrying_cannot_fix_ends_the_waits_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with emulators(monkeypatch, basic_auth=("airflow", "right")) as env:
        board = env.board()
        with pytest.raises(OverlordApiError) as refused:
            await board.wait_handed_to_runner("index_parallel_anything")
        assert refused.value.status == 401 and "'druid_ingest_default'" in str(refused.value)
        asked = len(env.overlord.requests.requests)
        await asyncio.sleep(10 * INTERVAL)
        assert len(env.overlord.requests.requests) == asked  # the rounds ended with the waits


async def test_one_board_per_connection_and_event_loop() -> None:
    board = OverlordBoard.shared("druid_ingest_default", status_interval=1.0)
    assert OverlordBoard.shared("druid_ingest_default") is board and board.status_interval == 1.0
    assert OverlordBoard.shared("druid_ingest_other") is not board


async def test_releasing_a_released_job_again_changes_nothing(both: Both) -> None:
    """A retry after a crash right after the release finds the Job released and running: no harm done."""
    task = index_parallel_task("index_parallel_released_twice", standinDurationSeconds=FOREVER)
    ours = both.our_suspended_job(task)
    await both.druid.submit_task(task)
    board = both.board()
    first = await release_job(
        both.k8s, board, namespace=NAMESPACE, job_name=ours, task_id=task["id"], log=both.lines.append
    )
    await eventually(lambda: both.is_running(task["id"]), "the peon's start in our Job")
    job = both.job(ours)
    assert job is not None
    again = await release_job(
        both.k8s, board, namespace=NAMESPACE, job_name=ours, task_id=task["id"], log=both.lines.append
    )
    assert first.resumed and again.resumed and again.job_name == ours
    assert again.status is not None and again.status.runner_status_code == "RUNNING"
    after = both.job(ours)
    assert after is not None and after["metadata"]["generation"] == job["metadata"]["generation"]
    assert after["metadata"]["labels"] == job["metadata"]["labels"] and after["spec"] == job["spec"]
    await both.druid.shutdown_task(task["id"])


async def test_a_shorter_interval_asked_later_shortens_the_shared_board_at_once(both: Both) -> None:
    """A sensor's long poke_interval made the board first; an operator's wait asking for a short one must not
    wait out the long pause (every waiter of the process shares the rounds)."""
    task = index_parallel_task("index_parallel_short_interval", standinDurationSeconds=0.3)
    await both.druid.submit_task(task)
    board = OverlordBoard.shared(status_interval=600.0)
    complete = asyncio.create_task(board.wait_complete(task["id"]))
    await eventually(lambda: both.is_complete(task["id"]), "the task's end")
    assert OverlordBoard.shared(status_interval=0.2) is board
    assert (await asyncio.wait_for(complete, 30)).status_code == "SUCCESS"
    assert OverlordBoard.shared(status_interval=5.0).status_interval == 0.2
    with pytest.raises(DruidK8sConfigError):
        OverlordBoard.shared(status_interval=0)
