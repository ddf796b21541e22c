"""DruidOverlordHook and DruidOverlordAsyncHook over real HTTP: Druid's shapes, retries, errors, auth, TLS."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk._shared.secrets_masker import redact
from overlord_double import INDEXER, OverlordDouble, Scripted

from druid_k8s_provider.errors import DruidK8sConfigError, OverlordApiError, TaskAlreadySubmitted
from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook, DruidOverlordHook, OverlordRetryPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CONN_ID = "druid_ingest_default"
FAST = OverlordRetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05)
CREDENTIALS = ("airflow", "s3cr3t-pa55")
TASK = {
    "type": "index_parallel",
    "id": "index_parallel_wiki_attempt1",
    "dataSource": "wiki",
    "spec": {
        "ioConfig": {"inputSource": {"type": "s3", "properties": {"secretAccessKey": "AKIA-SECRET-KEY"}}}
    },
}


def connect(monkeypatch: pytest.MonkeyPatch, port: int, conn_id: str = CONN_ID, **fields: Any) -> None:
    """Write the connection the way Airflow's default ``druid_ingest_default`` looks, plus ``fields``."""
    connection = {
        "conn_type": "druid",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"endpoint": "druid/indexer/v1/task"},
        **fields,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


@pytest.fixture
def overlord(monkeypatch: pytest.MonkeyPatch) -> Iterator[OverlordDouble]:
    with OverlordDouble(credentials=CREDENTIALS) as double:
        connect(monkeypatch, double.port, login=CREDENTIALS[0], password=CREDENTIALS[1])
        yield double


@pytest.fixture
def hook(overlord: OverlordDouble) -> Iterator[DruidOverlordHook]:
    with DruidOverlordHook(retry_policy=FAST) as client:
        yield client


def test_a_task_goes_through_every_operation_with_druids_shapes(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    assert hook.overlord_version() == "35.0.0"
    assert hook.submit_task(TASK) == TASK["id"]
    submitted = overlord.requests[-1]
    assert json.loads(submitted.body) == TASK
    expected = base64.b64encode(b"airflow:s3cr3t-pa55").decode()
    assert submitted.headers["Authorization"] == f"Basic {expected}"

    status = hook.task_status(TASK["id"])
    assert status is not None
    assert (status.status_code, status.runner_status_code, status.active) == ("RUNNING", "WAITING", True)
    assert [task.task_id for task in hook.tasks("waiting")] == [TASK["id"]]
    assert hook.tasks("pending") == []
    assert [task.task_id for task in hook.tasks("waiting", data_source="other")] == []
    assert overlord.requests[-1].query == {"state": "waiting", "datasource": "other"}
    assert hook.task_payload(TASK["id"]) == TASK

    batched = hook.task_statuses([TASK["id"], "never-submitted"])
    assert list(batched) == [TASK["id"]]
    assert batched[TASK["id"]].status_code == "RUNNING"
    assert batched[TASK["id"]].runner_status_code is None  # the batched answer carries none

    assert hook.shutdown_task(TASK["id"]) is True
    stopped = hook.task_status(TASK["id"])
    assert stopped is not None and not stopped.active
    assert (stopped.status_code, stopped.error_msg) == ("FAILED", "Shutdown request from user")


def test_the_credentials_of_a_submitted_or_read_task_are_masked_in_logs(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    submitted = {**TASK, "context": {"password": "ctx-pa55-SUBMIT"}}
    assert redact("ctx-pa55-SUBMIT") == "ctx-pa55-SUBMIT"  # unknown to the masker so far
    hook.submit_task(submitted)
    assert redact("peon says ctx-pa55-SUBMIT") == "peon says ***"
    # A task someone else submitted: its credentials become known when the hook reads its payload.
    overlord.tasks["theirs"] = {"type": "index", "id": "theirs", "context": {"token": "their-T0KEN-READ"}}
    assert hook.task_payload("theirs") is not None
    assert redact("token their-T0KEN-READ") == "token ***"


def test_reports_and_log_with_offset(overlord: OverlordDouble, hook: DruidOverlordHook) -> None:
    hook.submit_task(TASK)
    assert hook.task_report(TASK["id"]) is None
    assert hook.task_log(TASK["id"]) is None
    report = {"ingestionStatsAndErrors": {"payload": {"rowStats": {"buildSegments": {"processed": 3}}}}}
    overlord.reports[TASK["id"]] = report
    overlord.logs[TASK["id"]] = "line one\nline two\n"
    assert hook.task_report(TASK["id"]) == report
    assert hook.task_log(TASK["id"], offset=9) == "line two\n"
    assert overlord.requests[-1].query == {"offset": "9"}


def test_unknown_ids_read_as_unknown_whichever_way_druid_says_it(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    # Druid's permission filter answers 400 "Cannot find any task"; the resource itself 404.
    assert hook.task_status("nobody") is None
    overlord.script("GET", f"{INDEXER}/task/nobody/status", Scripted(404, {"task": "nobody"}))
    assert hook.task_status("nobody") is None
    assert hook.shutdown_task("nobody") is False
    assert hook.task_payload("nobody") is None
    requests_before = len(overlord.requests)
    assert hook.task_statuses([]) == {}
    assert len(overlord.requests) == requests_before  # Druid answers an empty list with 400: never sent


def test_a_duplicate_submit_is_a_distinct_outcome_meaning_re_attach(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    hook.submit_task(TASK)
    with pytest.raises(TaskAlreadySubmitted) as raised:
        hook.submit_task(TASK)
    error = raised.value
    assert (error.status, error.task_id, error.conn_id) == (400, TASK["id"], CONN_ID)
    assert error.druid_message == f"Task[{TASK['id']}] already exists"
    assert "re-attach" in str(error)


def test_a_submit_answered_503_by_a_non_leader_is_retried(
    overlord: OverlordDouble, hook: DruidOverlordHook, caplog: pytest.LogCaptureFixture
) -> None:
    overlord.script(
        "POST", f"{INDEXER}/task", Scripted(503, b"", "text/plain"), Scripted(503, b"", "text/plain")
    )
    with caplog.at_level(logging.DEBUG):
        assert hook.submit_task(TASK) == TASK["id"]
    submits = [request for request in overlord.requests if request.path == f"{INDEXER}/task"]
    assert len(submits) == 3
    assert "retrying" in caplog.text and "/druid/indexer/v1/task" in caplog.text
    # Neither the task JSON (it holds an S3 key) nor the password reach the log.
    assert "AKIA-SECRET-KEY" not in caplog.text and CREDENTIALS[1] not in caplog.text


def test_a_submit_whose_first_answer_was_lost_reads_already_submitted_on_the_retry(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    # The first try reached the Overlord, the answer did not come back (a 502 from a proxy): the retry
    # finds the id taken, which the caller turns into a re-attach.
    overlord.tasks[TASK["id"]] = TASK
    overlord.set_status(TASK["id"], "RUNNING", "PENDING")
    overlord.script(
        "POST", f"{INDEXER}/task", Scripted(502, "<html><title>502 Bad Gateway</title></html>", "text/html")
    )
    with pytest.raises(TaskAlreadySubmitted):
        hook.submit_task(TASK)


def test_overload_429_waits_as_long_as_retry_after_says(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    overlord.script(
        "GET", "/status", Scripted(429, {"error": "Too many requests"}, headers={"Retry-After": "0"})
    )
    assert hook.overlord_version() == "35.0.0"


def test_wrong_credentials_give_an_error_naming_the_connection(
    overlord: OverlordDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, overlord.port, login="airflow", password="wrong")
    with pytest.raises(OverlordApiError) as raised:
        DruidOverlordHook(retry_policy=FAST).overlord_version()
    message = str(raised.value)
    assert raised.value.status == 401
    assert CONN_ID in message and "/status" in message and "login and password" in message
    assert "Error 401 Unauthorized" in message  # the HTML page described by its title
    assert "wrong" not in message


def test_forbidden_names_the_permissions(overlord: OverlordDouble, hook: DruidOverlordHook) -> None:
    overlord.script(
        "POST",
        f"{INDEXER}/task",
        Scripted(403, {"Access-Check-Result": "Allowed:false, Message:User airflow lacks WRITE on wiki"}),
    )
    with pytest.raises(OverlordApiError) as raised:
        hook.submit_task(TASK)
    message = str(raised.value)
    assert "lacks WRITE on wiki" in message and "WRITE on the task's datasource" in message


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            Scripted(200, "<html><head><title>Sign in</title></head></html>", "text/html"),
            "an HTML page: Sign in",
        ),
        (Scripted(200, b"\x00\x01garbage{", "application/octet-stream"), "not the JSON Druid sends"),
        (Scripted(200, "[1, 2]"), "not a JSON object"),
    ],
)
def test_an_answer_that_is_not_druids_json_gives_a_clear_error(
    overlord: OverlordDouble, hook: DruidOverlordHook, answer: Scripted, said: str
) -> None:
    overlord.script("GET", "/status", answer)
    with pytest.raises(OverlordApiError) as raised:
        hook.overlord_version()
    message = str(raised.value)
    assert said in message and CONN_ID in message and "GET /status" in message


def test_server_errors_that_persist_end_in_an_error_with_druids_message(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    failing = Scripted(500, {"error": "Unable to grant lock to inactive Task [x]"})
    overlord.script("GET", "/status", *[failing] * FAST.attempts)
    with pytest.raises(OverlordApiError) as raised:
        hook.overlord_version()
    assert raised.value.druid_message == "Unable to grant lock to inactive Task [x]"
    assert "still unavailable after the retries" in str(raised.value)
    assert sum(request.path == "/status" for request in overlord.requests) == FAST.attempts


def test_druids_refusal_of_a_task_is_scrubbed_of_the_tasks_credentials(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    echo = "Cannot construct instance of S3InputSource, problem: bad key [AKIA-SECRET-KEY]"
    overlord.script("POST", f"{INDEXER}/task", Scripted(400, {"error": echo}))
    with pytest.raises(OverlordApiError) as raised:
        hook.submit_task(TASK)
    assert "AKIA-SECRET-KEY" not in str(raised.value) and "bad key [***]" in str(raised.value)
    assert not isinstance(raised.value, TaskAlreadySubmitted)


def test_an_unreachable_overlord_is_retried_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    connect(monkeypatch, closed_port)
    with pytest.raises(OverlordApiError) as raised:
        DruidOverlordHook(retry_policy=FAST).task_status("t")
    message = str(raised.value)
    assert "could not be reached" in message and CONN_ID in message and "/task/t/status" in message
    assert raised.value.status is None


def test_bad_connection_input_is_refused_before_any_request(
    overlord: OverlordDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, overlord.port, host="", schema="https")
    with pytest.raises(DruidK8sConfigError) as raised:
        DruidOverlordHook().submit_task(TASK)
    assert "host" in raised.value.field
    with pytest.raises(DruidK8sConfigError) as undefined:
        DruidOverlordHook("no_such_connection").submit_task(TASK)
    assert undefined.value.field == "druid_ingest_conn_id"
    assert overlord.requests == []


def test_https_with_the_connections_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    with OverlordDouble(tls=True) as double:
        assert double.certificate_file is not None
        connect(
            monkeypatch,
            double.port,
            schema="https",
            extra={"endpoint": "druid/indexer/v1/task", "ca_bundle_path": str(double.certificate_file)},
        )
        assert DruidOverlordHook(retry_policy=FAST).overlord_version() == "35.0.0"

        connect(monkeypatch, double.port, schema="https")
        with pytest.raises(OverlordApiError) as raised:
            DruidOverlordHook(retry_policy=FAST).overlord_version()
        assert "could not be verified" in str(raised.value) and "ca_bundle_path" in str(raised.value)


def test_https_to_a_plain_http_overlord_says_to_fix_the_schema_or_port(
    overlord: OverlordDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, overlord.port, schema="https")
    with pytest.raises(OverlordApiError) as raised:
        DruidOverlordHook(retry_policy=FAST).overlord_version()
    message = str(raised.value)
    assert "does not speak TLS" in message and "schema" in message and CONN_ID in message
    assert "ca_bundle_path" not in message


def test_a_path_prefix_in_the_endpoint_extra_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    with OverlordDouble() as double:
        connect(monkeypatch, double.port, extra={"endpoint": "/proxy/druid/indexer/v1/task"})
        with pytest.raises(OverlordApiError):
            DruidOverlordHook(retry_policy=FAST).overlord_version()
        assert double.requests[-1].path == "/proxy/status"


def test_a_non_leaders_redirect_is_followed_with_the_credentials(
    overlord: OverlordDouble, hook: DruidOverlordHook
) -> None:
    with OverlordDouble(credentials=CREDENTIALS) as leader:
        leader_url = f"http://127.0.0.1:{leader.port}"
        overlord.script(
            "POST", f"{INDEXER}/task", Scripted(307, b"", headers={"Location": f"{leader_url}{INDEXER}/task"})
        )
        overlord.script(
            "GET",
            f"{INDEXER}/tasks",
            Scripted(307, b"", headers={"Location": f"{leader_url}{INDEXER}/tasks?state=waiting"}),
        )
        assert hook.submit_task(TASK) == TASK["id"]
        assert [task.task_id for task in hook.tasks("waiting")] == [TASK["id"]]
    assert TASK["id"] in leader.tasks and TASK["id"] not in overlord.tasks
    assert [request.path for request in leader.requests] == [f"{INDEXER}/task", f"{INDEXER}/tasks"]
    assert all(request.headers.get("Authorization", "").startswith("Basic ") for request in leader.requests)


def test_a_redirect_loop_ends_in_a_clear_error(overlord: OverlordDouble, hook: DruidOverlordHook) -> None:
    to_itself = Scripted(307, b"", headers={"Location": "/status"})
    overlord.script("GET", "/status", *[to_itself] * 10)
    with pytest.raises(OverlordApiError) as raised:
        hook.overlord_version()
    assert "kept redirecting" in str(raised.value) and CONN_ID in str(raised.value)


# -- the asynchronous hook ------------------------------------------------------------------------------


async def test_async_hook_submits_polls_in_one_batch_and_stops(overlord: OverlordDouble) -> None:
    async with DruidOverlordAsyncHook(retry_policy=FAST) as hook:
        assert await hook.overlord_version() == "35.0.0"
        assert await hook.submit_task(TASK) == TASK["id"]
        with pytest.raises(TaskAlreadySubmitted):
            await hook.submit_task(TASK)
        overlord.script("POST", f"{INDEXER}/taskStatus", Scripted(503, b"", "text/plain"))
        statuses = await hook.task_statuses([TASK["id"], "other"])
        assert list(statuses) == [TASK["id"]]
        status = await hook.task_status(TASK["id"])
        assert status is not None and status.runner_status_code == "WAITING"
        assert [task.task_id for task in await hook.tasks("waiting")] == [TASK["id"]]
        assert await hook.shutdown_task(TASK["id"]) is True
        assert await hook.task_report(TASK["id"]) is None
        assert await hook.task_log(TASK["id"], offset=0) is None
        assert await hook.task_payload(TASK["id"]) == TASK
    batched = [request for request in overlord.requests if request.path == f"{INDEXER}/taskStatus"]
    assert [json.loads(request.body) for request in batched] == [[TASK["id"], "other"]] * 2


async def test_async_hook_names_the_connection_on_401(
    overlord: OverlordDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, overlord.port)
    async with DruidOverlordAsyncHook(retry_policy=FAST) as hook:
        with pytest.raises(OverlordApiError) as raised:
            await hook.submit_task(TASK)
    assert raised.value.status == 401 and CONN_ID in str(raised.value)


async def test_an_overlord_older_than_druid_30_is_refused_naming_its_reported_version(
    overlord: OverlordDouble,
) -> None:
    overlord.version = "29.0.1"
    with DruidOverlordHook(retry_policy=FAST) as hook, pytest.raises(DruidK8sConfigError) as blocking:
        hook.overlord_version()
    async with DruidOverlordAsyncHook(retry_policy=FAST) as async_hook:
        with pytest.raises(DruidK8sConfigError) as in_the_triggerer:
            await async_hook.overlord_version()
    for raised in (blocking, in_the_triggerer):
        assert raised.value.field == "the Overlord's version (GET /status)"
        assert "Druid 29.0.1 is older than 30.0.0" in str(raised.value)
        assert "upgrade Druid" in raised.value.fix
    overlord.version = "30.0.0-SNAPSHOT"
    with DruidOverlordHook(retry_policy=FAST) as hook:
        assert hook.overlord_version() == "30.0.0-SNAPSHOT"
