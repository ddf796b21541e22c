"""The Overlord connection read as the Apache Druid provider reads it; Druid's answers read into errors."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.hooks.overlord_answer import druid_error_text
from druid_k8s_provider.hooks.overlord_api import OverlordCall, OverlordTaskStatus, WrongShape, tasks
from druid_k8s_provider.hooks.overlord_connection import overlord_endpoint
from druid_k8s_provider.hooks.overlord_transport import failure_of


def endpoint_of(**fields: Any) -> Any:
    """Airflow's default ``druid_ingest_default`` connection, with ``fields`` changed."""
    connection: dict[str, Any] = {
        "conn_type": "druid",
        "host": "druid-overlord",
        "port": 8081,
        "schema": None,
        "login": None,
        "password": None,
        "extra": {"endpoint": "druid/indexer/v1/task"},
    } | fields
    return overlord_endpoint("druid_ingest_default", **connection)


def test_airflows_default_druid_connection_works_unchanged() -> None:
    endpoint = endpoint_of()
    assert endpoint.base_url == "http://druid-overlord:8081"
    assert endpoint.url("/druid/indexer/v1/task") == "http://druid-overlord:8081/druid/indexer/v1/task"
    assert endpoint.auth is None and endpoint.ca_bundle_path is None


@pytest.mark.parametrize(
    ("fields", "base_url"),
    [
        ({"schema": "https", "port": 8281}, "https://druid-overlord:8281"),
        ({"schema": "HTTPS"}, "https://druid-overlord:8081"),
        ({"conn_type": "https", "port": None}, "https://druid-overlord"),
        ({"conn_type": "http"}, "http://druid-overlord:8081"),
        ({"extra": {"schema": "https"}}, "https://druid-overlord:8081"),
        ({"extra": {}}, "http://druid-overlord:8081"),
        ({"extra": {"endpoint": "/druid/indexer/v1/task/"}}, "http://druid-overlord:8081"),
        (
            {"extra": {"endpoint": "proxy/druid/druid/indexer/v1/task"}},
            "http://druid-overlord:8081/proxy/druid",
        ),
        ({"host": "10.0.0.7"}, "http://10.0.0.7:8081"),
        ({"host": "::1"}, "http://[::1]:8081"),
        ({"host": "[fd00::7]", "port": "8081"}, "http://[fd00::7]:8081"),
    ],
)
def test_scheme_host_port_and_path_prefix(fields: dict[str, Any], base_url: str) -> None:
    assert endpoint_of(**fields).base_url == base_url


def test_login_and_password_are_basic_auth_and_never_shown() -> None:
    endpoint = endpoint_of(login="airflow", password="s3cr3t")
    assert endpoint.auth == ("airflow", "s3cr3t")
    assert "s3cr3t" not in repr(endpoint)
    assert endpoint_of(login="airflow").auth == ("airflow", "")


def test_a_ca_bundle_is_used_when_it_is_a_file(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    endpoint = endpoint_of(schema="https", extra={"ca_bundle_path": str(bundle)})
    assert endpoint.ca_bundle_path == str(bundle)


@pytest.mark.parametrize(
    ("fields", "field", "fix"),
    [
        ({"host": None}, "host", "set host"),
        ({"host": "  "}, "host", "set host"),
        ({"host": "http://druid-overlord:8081"}, "host", "scheme (http/https) in schema"),
        ({"host": "druid-overlord:8081"}, "host", "port in port"),
        ({"host": "druid overlord"}, "host", "DNS name"),
        ({"schema": "ftp"}, "schema", "'http' or 'https'"),
        ({"schema": "druid"}, "schema", "'http' or 'https'"),
        ({"port": "eighty"}, "port", "number"),
        ({"port": 70000}, "port", "between 1 and 65535"),
        ({"extra": {"endpoint": "druid/v2/sql"}}, "extra 'endpoint'", "druid/indexer/v1/task"),
        ({"extra": {"endpoint": 5}}, "extra 'endpoint'", "druid/indexer/v1/task"),
        ({"extra": {"ca_bundle_path": "/no/such/ca.pem"}}, "extra 'ca_bundle_path'", "PEM file"),
    ],
)
def test_bad_connection_input_names_the_connection_the_field_and_the_fix(
    fields: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        endpoint_of(**fields)
    assert raised.value.field == f"connection 'druid_ingest_default' {field}"
    assert fix in raised.value.fix


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        (
            "application/json",
            b'{"error":"druidException","errorCode":"entryAlreadyExists","persona":"USER",'
            b'"category":"INVALID_INPUT","errorMessage":"Task[t1] already exists","context":{}}',
            "Task[t1] already exists",
        ),
        (
            "application/json",
            b'{"error": "Unable to grant lock to inactive Task [t1]"}',
            "Unable to grant lock",
        ),
        ("application/json", b'{"Access-Check-Result": "Allowed:false"}', "Allowed:false"),
        ("application/json", b'"quoted text"', "quoted text"),
        ("application/json", b'{"unexpected": 1}', '{"unexpected":1}'),
        ("text/plain", b"No Task IDs provided.", "No Task IDs provided."),
        (
            "text/plain",
            b"Invalid task state[x].\n  Must be one of [pending].",
            "Invalid task state[x]. Must be",
        ),
        (
            "text/html",
            b"<html><head><title>502 Bad Gateway</title></head></html>",
            "an HTML page: 502 Bad Gateway",
        ),
        ("", b"<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>", "an HTML page: Sign in"),
        ("application/octet-stream", bytes(range(40)), "40 bytes that are not text"),
        ("text/plain", b"", ""),
    ],
)
def test_every_shape_of_druids_errors_reads_as_one_line(content_type: str, body: bytes, text: str) -> None:
    said = druid_error_text(content_type, body)
    assert said.startswith(text)
    assert "\n" not in said


def test_a_huge_error_page_is_cut() -> None:
    assert len(druid_error_text("text/plain", b"x" * 100_000)) < 600


def test_the_single_and_the_batched_status_shapes_read_alike() -> None:
    single = OverlordTaskStatus.from_json(
        {
            "id": "t1",
            "type": "index_parallel",
            "statusCode": "RUNNING",
            "status": "RUNNING",
            "runnerStatusCode": "PENDING",
            "duration": -1,
            "location": {"host": None, "port": -1, "tlsPort": -1},
            "dataSource": "wiki",
            "errorMsg": None,
        }
    )
    batched = OverlordTaskStatus.from_json(
        {"id": "t1", "status": "FAILED", "duration": 1200, "errorMsg": "boom", "location": {}}
    )
    assert (single.status_code, single.runner_status_code, single.data_source, single.active) == (
        "RUNNING",
        "PENDING",
        "wiki",
        True,
    )
    assert (batched.status_code, batched.runner_status_code, batched.error_msg, batched.active) == (
        "FAILED",
        None,
        "boom",
        False,
    )
    # Handed to the runner: what the pending/running task lists hold; never read from the batched status.
    assert single.handed_to_runner and not batched.handed_to_runner
    waiting = OverlordTaskStatus.from_json(
        {"id": "t1", "statusCode": "RUNNING", "runnerStatusCode": "WAITING"}
    )
    complete = OverlordTaskStatus.from_json(
        {"id": "t1", "statusCode": "SUCCESS", "runnerStatusCode": "RUNNING"}
    )
    assert not waiting.handed_to_runner and not complete.handed_to_runner


def test_a_task_list_state_druid_does_not_know_is_refused() -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        tasks("queued")
    assert raised.value.field == "state" and "waiting" in raised.value.fix


@pytest.mark.parametrize(
    ("extra", "default", "console_url"),
    [
        ({}, None, "http://druid-overlord:8081"),
        ({"endpoint": "proxy/druid/druid/indexer/v1/task"}, None, "http://druid-overlord:8081/proxy/druid"),
        ({}, "https://router.example.com:9088/", "https://router.example.com:9088"),
        ({"console_url": "https://druid.example.com/"}, "https://router:9088", "https://druid.example.com"),
    ],
)
def test_the_console_url_comes_from_the_extra_else_the_option_else_the_connection(
    extra: dict[str, Any], default: str | None, console_url: str
) -> None:
    endpoint = endpoint_of(extra=extra, default_console_url=default)
    assert endpoint.console_url == console_url


@pytest.mark.parametrize(
    "host", ["airflow:pa55word@druid-overlord", "https://airflow:pa55word@druid-overlord:8281/druid"]
)
def test_a_host_with_credentials_is_refused_without_showing_them(host: str) -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        endpoint_of(host=host)
    assert raised.value.field == "connection 'druid_ingest_default' host"
    assert "pa55word" not in str(raised.value) and "***@druid-overlord" in str(raised.value)


def test_the_password_and_its_basic_token_are_the_connections_secrets() -> None:
    assert endpoint_of(login="airflow", password="s3cr3t").secrets == ("s3cr3t", "YWlyZmxvdzpzM2NyM3Q=")
    assert endpoint_of(login="airflow").secrets == ()


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"id": "t1", "duration": -1}, "has no statusCode"),
        ({"id": "t1", "statusCode": 3}, "has no statusCode"),
        ({"statusCode": "RUNNING"}, "no task id"),
    ],
)
def test_a_status_of_another_shape_is_refused_not_guessed(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(WrongShape) as raised:
        OverlordTaskStatus.from_json(entry)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("openssl_says", "fix"),
    [
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "does not speak TLS"),
        ("[SSL: RECORD_LAYER_FAILURE] record layer failure (_ssl.c:1000)", "does not speak TLS"),
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)", "ca_bundle_path"),
    ],
)
def test_a_tls_failure_names_the_fix_for_its_cause(openssl_says: str, fix: str) -> None:
    try:
        try:
            raise ssl.SSLError(1, openssl_says)
        except ssl.SSLError as tls_error:
            raise httpx.ConnectError(str(tls_error)) from tls_error
    except httpx.ConnectError as failure:
        call = OverlordCall("GET", "/status", read=lambda answer: answer, endpoint="overlord_version")
        error = failure_of(endpoint_of(schema="https"), call, failure)
    assert fix in str(error) and "druid_ingest_default" in str(error)
    assert ("ca_bundle_path" in str(error)) == (fix == "ca_bundle_path")
