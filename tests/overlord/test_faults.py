"""Scripted Overlord faults: what a client sees at each step when the Overlord is not the leader, unreachable,
slow, or loses the answer to a request it handled."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from druid_k8s_provider.testing.overlord.faults import STEPS, OverlordFaults, step_of
from druid_k8s_provider.testing.tasks import index_parallel_task

from .conftest import Druid, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    ("method", "path", "step"),
    [
        ("POST", "/druid/indexer/v1/task", "submit"),
        ("GET", "/druid/indexer/v1/tasks", "task_lists"),
        ("GET", "/druid/indexer/v1/pendingTasks", "task_lists"),
        ("POST", "/druid/indexer/v1/taskStatus", "task_statuses"),
        ("GET", "/druid/indexer/v1/task/t1/status", "task_status"),
        ("GET", "/druid/indexer/v1/task/t1/reports", "reports"),
        ("GET", "/druid/indexer/v1/task/t1/log", "log"),
        ("POST", "/druid/indexer/v1/task/t1/shutdown", "shutdown"),
        ("GET", "/druid/indexer/v1/task/t1", "payload"),
        ("GET", "/status", "version"),
        ("POST", "/druid/indexer/v1/action", "action"),
        ("GET", "/status/health", None),
        ("GET", "/druid/indexer/v1/isLeader", None),
        ("POST", "/emulator/v1/restart", None),
    ],
)
def test_every_request_of_a_client_belongs_to_one_step(method: str, path: str, step: str | None) -> None:
    assert step_of(method, path) == step
    assert step is None or step in STEPS


def test_a_not_leader_fault_answers_503_like_a_standby_overlord_for_the_next_requests_only(
    druid: Druid,
) -> None:
    druid.overlord.faults.add(step="submit", status=503, count=2)
    task = index_parallel_task("faulted_503")
    refused = [druid.submit(task) for _ in range(2)]
    assert [(answer.status_code, answer.content) for answer in refused] == [(503, b""), (503, b"")]
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404  # nothing stored
    assert druid.submit(task).status_code == 200
    assert druid.http.get("/status").status_code == 200  # other steps were never affected
    assert druid.overlord.requests.count("POST", "/druid/indexer/v1/task") == 3
    assert [r.fault for r in druid.overlord.requests.requests][:3] == ["status", "status", ""]


def test_a_lost_answer_stores_the_task_and_the_retry_is_told_entry_already_exists(druid: Druid) -> None:
    druid.overlord.faults.add(step="submit", lose_answer=True, count=1)
    task = index_parallel_task("faulted_lost_answer")
    with pytest.raises(httpx.TransportError):
        druid.submit(task)
    again = druid.submit(task)
    assert again.status_code == 400 and again.json()["errorCode"] == "entryAlreadyExists"
    assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"
    assert druid.overlord.faults.fired("submit") == 1


def test_an_unreachable_step_closes_the_connection_without_handling_the_request(druid: Druid) -> None:
    druid.overlord.faults.add(step="submit", reset_connection=True, count=1)
    task = index_parallel_task("faulted_reset")
    with pytest.raises(httpx.TransportError):
        druid.submit(task)
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404
    assert druid.overlord.requests.requests[0].status == 499


def test_a_slow_step_answers_late_and_other_steps_meanwhile_do_not_wait(druid: Druid) -> None:
    druid.overlord.faults.add(step="task_lists", latency=1.0, count=1)
    answered: list[float] = []

    def slow_list() -> None:
        started = time.monotonic()
        assert druid.http.get("/druid/indexer/v1/tasks?state=running").status_code == 200
        answered.append(time.monotonic() - started)

    lister = threading.Thread(target=slow_list)
    lister.start()
    task = index_parallel_task("while_slow")
    assert druid.submit(task).status_code == 200
    assert not answered  # the submit was answered while the list still waited
    lister.join(10)
    assert answered and answered[0] >= 1.0


def test_rate_faults_replay_for_a_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        faults = OverlordFaults(seed=seed)
        faults.add(step="task_statuses", status=503, rate=0.5)
        return [faults.decide("task_statuses") is not None for _ in range(30)]

    assert pattern(3) == pattern(3) and set(pattern(3)) == {True, False}


def test_bad_fault_scripts_are_refused() -> None:
    faults = OverlordFaults()
    with pytest.raises(ValueError, match="step must be one of"):
        faults.add(step="submitt", status=503)
    with pytest.raises(ValueError, match="rate= or count="):
        faults.add(status=503, rate=0.5, count=1)
    with pytest.raises(ValueError, match="one of status="):
        faults.add(status=503, lose_answer=True)
    with pytest.raises(ValueError, match="latency="):
        faults.add(step="submit")


def test_faults_are_scripted_over_the_control_path(druid: Druid) -> None:
    added = druid.http.post("/emulator/v1/faults", json={"step": "reports", "status": 500, "count": 1})
    assert added.status_code == 200 and added.json()["fault"]["step"] == "reports"
    refused = druid.http.post("/emulator/v1/faults", json={"step": "nope", "status": 500})
    assert refused.status_code == 400 and "step must be one of" in refused.json()["error"]
    answer = druid.http.get("/druid/indexer/v1/task/t1/reports")
    assert answer.status_code == 500 and answer.json() == {"error": "injected fault"}
    (listed,) = druid.http.get("/emulator/v1/faults").json()["faults"]
    assert listed["fired"] == 1
    assert druid.http.delete("/emulator/v1/faults").json() == {"faults": []}
    assert druid.overlord.faults.faults == []


def test_a_restart_that_refuses_connections_keeps_the_port_and_the_tasks(druid: Druid) -> None:
    task = index_parallel_task("across_the_outage", standinDurationSeconds=2)
    assert druid.submit(task).status_code == 200
    druid.wait_for(task["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
    host, port = druid.overlord.url.removeprefix("http://").rsplit(":", 1)
    refused: list[bool] = []

    def probe_while_down() -> None:
        time.sleep(0.3)
        with socket.socket() as probe:
            refused.append(probe.connect_ex((host, int(port))) != 0)

    prober = threading.Thread(target=probe_while_down)
    prober.start()
    druid.overlord.restart(downtime=1.0, refuse_connections=True)
    prober.join(5)
    assert refused == [True]
    assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"  # the same URL answers again

    def leaderships() -> int:
        return sum("Became leader" in line for line in druid.overlord.log_lines)

    before = leaderships()
    over_http = druid.http.post("/emulator/v1/restart", json={"downtime": 0.2, "refuse_connections": True})
    assert over_http.status_code == 202  # answered first: its own connection is cut next
    wait_until(lambda: leaderships() > before, what="the restart over the control path")
    assert druid.http.get("/status").status_code == 200
