"""A submitted task runs in a Job the Overlord created; a Job nobody submitted is refused its locks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.job_builder import build_job
from druid_k8s_provider.naming import job_name
from druid_k8s_provider.testing.overlord.peon_lifecycle import GENERIC_FAILURE, PeonLifecycle
from druid_k8s_provider.testing.tasks import index_parallel_task

from .conftest import NAMESPACE, Druid, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_submitted_index_parallel_runs_to_success_in_the_overlords_job_with_its_report(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_ok", standinRowCount=42)
    response = druid.submit(task)
    assert response.status_code == 200 and response.json() == {"task": task["id"]}

    running = druid.wait_for(task["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
    assert running["statusCode"] == "RUNNING" and running["location"]["port"] == 8100
    assert running["location"]["k8sPodName"].startswith(job_name(task["id"])[:20])
    assert job_name(task["id"]) in druid.job_names()

    done = druid.wait_complete(task["id"])
    assert done["statusCode"] == "SUCCESS" and done["errorMsg"] is None and done["duration"] >= 0
    wait_until(lambda: druid.job_names() == [], what="the Job's deletion at completion")
    assert druid.kube.metrics.creates("jobs") == 1

    report = druid.http.get(f"/druid/indexer/v1/task/{task['id']}/reports")
    assert report.status_code == 200
    payload = report.json()["ingestionStatsAndErrors"]["payload"]
    assert payload["segmentsPublished"] == 1  # one DAY segment for the task's one-day interval
    stats = payload["rowStats"]["buildSegments"]
    assert stats == {
        "processed": 42,
        "processedBytes": 4200,
        "processedWithError": 0,
        "thrownAway": 0,
        "unparseable": 0,
    }
    log = druid.http.get(f"/druid/indexer/v1/task/{task['id']}/log")
    assert log.status_code == 200 and "Published 1 segment(s) of datasource[wikipedia]" in log.text
    submitted = druid.http.get(f"/druid/indexer/v1/task/{task['id']}").json()
    assert submitted["task"] == task["id"] and submitted["payload"]["type"] == "index_parallel"


def test_a_job_created_directly_for_an_unsubmitted_task_fails_on_the_inactive_task_lock(druid: Druid) -> None:
    """What the operator does today: build the Job from the Overlord pod and create it, never submitting."""
    task = index_parallel_task("index_parallel_wikipedia_direct")
    template = druid.kube.store.get("pods", NAMESPACE, "druid-overlord-0")
    config = RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE})
    job = druid.kube.store.create("jobs", NAMESPACE, build_job(task, template, config))

    def failed() -> bool:
        conditions = (
            druid.kube.store.get("jobs", NAMESPACE, job["metadata"]["name"]).get("status") or {}
        ).get("conditions") or []
        return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)

    wait_until(failed, what="the peon's failure")
    [pod] = druid.kube.store.list("pods", NAMESPACE, label_selector=f"job-name={job['metadata']['name']}")
    log = druid.kube.logs.text(NAMESPACE, pod["metadata"]["name"], "main")
    refusal = json.dumps(
        {"error": f"Unable to grant lock to inactive Task [{task['id']}]"}, separators=(",", ":")
    )
    assert "ERROR [main] org.apache.druid.cli.CliPeon - Error when starting up.  Failing." in log
    assert f"Error with status[500 Internal Server Error] and message[{refusal}]" in log
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1
    assert not (druid.overlord.task_log_dir / f"{task['id']}.status.json").exists()
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404


def test_duplicate_submit_is_refused_with_entry_already_exists(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_twice", standinDurationSeconds=5)
    assert druid.submit(task).status_code == 200
    again = druid.submit(task)
    assert again.status_code == 400
    assert again.json() == {
        "error": "druidException",
        "errorCode": "entryAlreadyExists",
        "persona": "USER",
        "category": "INVALID_INPUT",
        "errorMessage": f"Task[{task['id']}] already exists",
        "context": {},
    }


def test_a_task_type_no_module_registers_is_refused_with_jacksons_message_and_not_stored(
    druid: Druid,
) -> None:
    task = {**index_parallel_task("index_paralel_typo"), "type": "index_paralel"}
    refused = druid.submit(task)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error.startswith(
        "Could not resolve type id 'index_paralel' as a subtype of "
        "`org.apache.druid.indexing.common.task.Task`"
    )
    assert "known type ids = [" in error and "index_parallel" in error
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404
    assert druid.kube.metrics.creates("jobs") == 0


def test_an_id_longer_than_druids_task_table_column_is_refused_and_not_stored(druid: Druid) -> None:
    task = index_parallel_task("x" * 300)
    refused = druid.submit(task)
    assert refused.status_code == 500  # the metadata insert fails: a DruidException, persona OPERATOR
    assert refused.json()["errorMessage"] == f"Encountered metadata exception for task [{task['id']}]"
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404
    assert druid.kube.metrics.creates("jobs") == 0


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({}, "Invalid value for field [dataSchema]: must not be null"),
        ({"dataSchema": {"timestampSpec": {"column": "time"}}}, "Invalid value for field [dataSource]"),
    ],
)
def test_an_ingestion_task_without_its_datasource_is_refused_as_jackson_does(
    druid: Druid, spec: dict[str, Any], problem: str
) -> None:
    task = {"type": "index_parallel", "id": "index_parallel_no_datasource", "spec": spec}
    refused = druid.submit(task)
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("Cannot construct instance of `")
    assert problem in refused.json()["error"]
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/status").status_code == 404
    assert druid.kube.metrics.creates("jobs") == 0


def test_a_runner_that_crashes_fails_the_task_instead_of_leaving_it_running(
    druid: Druid, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(self: PeonLifecycle, item: Any) -> None:
        raise OSError(36, "File name too long")

    monkeypatch.setattr(PeonLifecycle, "_save_log", crash)
    task = index_parallel_task("index_parallel_runner_crash", standinDurationSeconds=0)
    assert druid.submit(task).status_code == 200
    status = druid.wait_for(task["id"], lambda status: status["statusCode"] != "RUNNING")
    assert status["statusCode"] == "FAILED"
    assert status["errorMsg"] == GENERIC_FAILURE


def test_shutdown_fails_the_task_and_deletes_its_job(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_stopped", standinDurationSeconds=60)
    druid.submit(task)
    druid.wait_for(task["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
    response = druid.http.post(f"/druid/indexer/v1/task/{task['id']}/shutdown")
    assert response.status_code == 200 and response.json() == {"task": task["id"]}
    status = druid.status(task["id"])
    assert status["statusCode"] == "FAILED" and status["errorMsg"] == "Shutdown request from user"
    wait_until(lambda: druid.job_names() == [], what="the Job's deletion")
    # Unknown or complete: 200 and nothing changes.
    assert druid.http.post("/druid/indexer/v1/task/nope/shutdown").status_code == 200
    assert druid.http.post(f"/druid/indexer/v1/task/{task['id']}/shutdown").status_code == 200
    assert druid.status(task["id"])["errorMsg"] == "Shutdown request from user"


def test_a_second_task_on_the_same_interval_waits_without_a_job_until_the_first_completes(
    druid: Druid,
) -> None:
    first = index_parallel_task("index_parallel_wikipedia_first", standinDurationSeconds=1.5)
    second = index_parallel_task("index_parallel_wikipedia_second")
    druid.submit(first)
    druid.wait_for(first["id"], lambda s: s["runnerStatusCode"] in ("PENDING", "RUNNING"))
    druid.submit(second)
    waiting = druid.status(second["id"])
    assert waiting["statusCode"] == "RUNNING" and waiting["runnerStatusCode"] == "WAITING"
    assert job_name(second["id"]) not in druid.job_names()
    listed = druid.http.get("/druid/indexer/v1/tasks", params={"state": "waiting"}).json()
    assert [entry["id"] for entry in listed] == [second["id"]]
    assert listed[0]["runnerStatusCode"] == "WAITING"

    assert druid.wait_complete(first["id"])["statusCode"] == "SUCCESS"
    assert druid.wait_complete(second["id"])["statusCode"] == "SUCCESS"


def statuses(druid: Druid, ids: list[str]) -> Any:
    return druid.http.post("/druid/indexer/v1/taskStatus", json=ids)


def test_task_status_batch_lists_known_ids_without_runner_status(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_batch")
    druid.submit(task)
    druid.wait_complete(task["id"])
    answer = statuses(druid, [task["id"], "unknown_task"])
    assert answer.status_code == 200
    assert set(answer.json()) == {task["id"]}
    entry = answer.json()[task["id"]]
    assert set(entry) == {"id", "status", "duration", "errorMsg", "location"}
    assert entry["status"] == "SUCCESS"
    assert statuses(druid, []).status_code == 400


def test_task_lists_filter_by_state_and_datasource(druid: Druid) -> None:
    done = index_parallel_task("index_parallel_wikipedia_listed")
    druid.submit(done)
    druid.wait_complete(done["id"])
    running = index_parallel_task(
        "index_parallel_wikipedia_long", "2026-02-01/2026-02-02", standinDurationSeconds=60
    )
    druid.submit(running)
    druid.wait_for(running["id"], lambda s: s["runnerStatusCode"] == "RUNNING")

    def ids(**params: str) -> list[str]:
        response = druid.http.get("/druid/indexer/v1/tasks", params=params)
        assert response.status_code == 200
        return [entry["id"] for entry in response.json()]

    assert ids(state="running") == [running["id"]]
    assert ids(state="complete") == [done["id"]]
    assert ids(state="pending") == [] and ids(state="waiting") == []
    assert ids(datasource="wikipedia") == [running["id"], done["id"]]
    assert ids(datasource="other") == []
    complete = druid.http.get("/druid/indexer/v1/tasks", params={"state": "complete"}).json()[0]
    assert complete["runnerStatusCode"] == "NONE" and complete["statusCode"] == "SUCCESS"
    bad = druid.http.get("/druid/indexer/v1/tasks", params={"state": "finished"})
    assert bad.status_code == 400 and "Invalid task state[finished]" in bad.text


def test_log_is_live_from_the_pod_while_running_then_pushed_honouring_offset(druid: Druid) -> None:
    task = index_parallel_task("index_parallel_wikipedia_logged", standinDurationSeconds=2)
    assert druid.http.get(f"/druid/indexer/v1/task/{task['id']}/log").status_code == 404
    druid.submit(task)
    druid.wait_for(task["id"], lambda s: s["runnerStatusCode"] == "RUNNING")
    live = druid.http.get(f"/druid/indexer/v1/task/{task['id']}/log", params={"offset": 10})
    assert live.status_code == 200 and live.text.startswith(live.text[:10])
    assert "Stand-in peon" in live.text.splitlines()[0]  # whole log: the offset is ignored while running
    druid.wait_complete(task["id"])
    whole = druid.http.get(f"/druid/indexer/v1/task/{task['id']}/log").text
    tail = druid.http.get(f"/druid/indexer/v1/task/{task['id']}/log", params={"offset": 10}).text
    assert tail == whole[10:] and "Task completed with status" in whole


def test_unknown_task_answers_404_as_druid_does(druid: Druid) -> None:
    status = druid.http.get("/druid/indexer/v1/task/nope/status")
    assert status.status_code == 404 and status.json() == {"task": "nope", "status": None}
    assert druid.http.get("/druid/indexer/v1/task/nope").json() == {"task": "nope", "payload": None}
    assert druid.http.get("/druid/indexer/v1/task/nope/reports").status_code == 404
    assert druid.http.get("/status").json()["version"] == druid.overlord.druid_version


@pytest.mark.parametrize(
    ("task", "publishes"),
    [
        (
            {
                "type": "compact",
                "id": "compact_wikipedia_january",
                "dataSource": "wikipedia",
                "ioConfig": {
                    "type": "compact",
                    "inputSpec": {"type": "interval", "interval": "2026-01/2026-02"},
                },
                "context": {"standinDurationSeconds": 0.2},
            },
            True,
        ),
        (
            {
                "type": "kill",
                "id": "kill_wikipedia_january",
                "dataSource": "wikipedia",
                "interval": "2026-01-01/2026-02-01",
                "context": {"standinDurationSeconds": 0.2},
            },
            False,
        ),
    ],
    ids=["compact", "kill"],
)
def test_compaction_and_kill_lock_their_interval_and_succeed(
    druid: Druid, task: dict[str, Any], publishes: bool
) -> None:
    druid.submit(task)
    assert druid.wait_complete(task["id"])["statusCode"] == "SUCCESS"
    log = druid.http.get(f"/druid/indexer/v1/task/{task['id']}/log").text
    assert ("Published 1 segment(s) of datasource[wikipedia]" in log) is publishes
