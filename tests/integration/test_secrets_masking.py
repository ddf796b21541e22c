"""Credentials in a Druid task spec, and the Druid connection's password, never reach the Airflow task log,
XCom, the rendered template fields or an error message: the operator registers them with Airflow's secrets
masker before anything is logged, and scrubs them from what Airflow stores unmasked (XCom, errors).

Each case runs one try of the operator in a worker subprocess (tests/chaos/worker.py) that logs through
Airflow's structlog configuration with the masker, as a real task log is written, against an emulated
cluster and a stand-in Overlord whose peon prints the credential (Druid peons log their task spec), then
greps everything the try left behind. The Overlord path is covered too: its FAILED ``errorMsg`` quoting a
password, its own task log read back by a retry, its refusal echoing the task, and the connection's
password in Basic auth, in a URI's userinfo, in a host, and echoed back by a 401.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from overlord_double import INDEXER, OverlordDouble, Scripted

from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.behaviours import ContainerContext
from druid_k8s_provider.testing.standin_peon import (
    LOGS_DIRECTORY_ENV,
    is_peon,
    standin_druid_image,
    task_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NAMESPACE = "druid"
WORKER = Path(__file__).resolve().parents[1] / "chaos" / "worker.py"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
JDBC_PASSWORD = "pg-Pa55w0rd-never-log-me"
PROVIDER_PASSWORD = "hunter2-via-password-provider"
AZURE_KEY = "azure-account-key-Zm9vYmFyYmF6cXV4"
URI_PASSWORD = "uri-embedded-Passw0rd"
KAFKA_PASSWORD = "kafka-sasl-Passw0rd"
#: The Druid connection's password (Druid basic security), and the Basic-auth token made of it.
DRUID_PASSWORD = "druid-basic-auth-Pa55"
DRUID_TOKEN = base64.b64encode(f"airflow:{DRUID_PASSWORD}".encode()).decode()
SECRETS = (
    S3_SECRET,
    JDBC_PASSWORD,
    PROVIDER_PASSWORD,
    AZURE_KEY,
    URI_PASSWORD,
    KAFKA_PASSWORD,
    DRUID_PASSWORD,
    DRUID_TOKEN,
)
MASK = "***"
#: An Overlord whose container reports its last log lines as termination message when it fails.
FALLBACK_OVERLORD = "druid-overlord-fallback"


def s3_task() -> dict[str, Any]:
    return {
        "type": "index_parallel",
        "id": "secret_s3_ingest",
        "spec": {
            "dataSchema": {"dataSource": "wikipedia"},
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {
                    "type": "s3",
                    "uris": ["s3://bucket/wikipedia.json.gz"],
                    "properties": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": S3_SECRET},
                },
            },
        },
    }


def jdbc_task() -> dict[str, Any]:
    return {
        "type": "index_parallel",
        "id": "secret_jdbc_ingest",
        "spec": {
            "dataSchema": {"dataSource": "orders"},
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {
                    "type": "sql",
                    "database": {
                        "type": "postgresql",
                        "connectorConfig": {
                            "connectURI": "jdbc:postgresql://db:5432/shop",
                            "user": "druid",
                            "password": JDBC_PASSWORD,
                        },
                    },
                    "sqls": ["SELECT * FROM orders"],
                },
            },
            "tuningConfig": {
                "type": "index_parallel",
                "metadataStorage": {"password": {"type": "default", "password": PROVIDER_PASSWORD}},
            },
        },
    }


async def peon_that_prints_its_spec(ctx: ContainerContext) -> int:
    """Like a Druid peon: decodes TASK_JSON and logs the task, credentials included; a task whose id says
    so then fails quoting its database password, as a JDBC driver's error does, without a status; others
    go on as the stand-in peon (locks, status.json for the Overlord)."""
    if not is_peon(ctx):
        return int(await standin_druid_image(ctx))
    task = json.loads(gzip.decompress(base64.b64decode(ctx.env["TASK_JSON"])))
    ctx.log(f"Running task[{task['id']}]: {json.dumps(task)}")
    if "errormsg" in task["id"]:
        # Druid puts the exception in the status it records: the Overlord's errorMsg quotes the password.
        error = f"java.sql.SQLException: cannot connect to jdbc:postgresql://druid:{JDBC_PASSWORD}@db/shop"
        ctx.log(f"Exception while running task[{task['id']}]: {error}")
        status_file = Path(ctx.env[LOGS_DIRECTORY_ENV]) / f"{task['id']}.status.json"
        status_file.write_text(json.dumps(task_status(task["id"], "FAILED", 10, error)))
        return 1
    if "fail" in task["id"]:
        ctx.log(f"Exception: cannot connect as druid:{JDBC_PASSWORD}@db:5432")
        return 1
    return int(await standin_druid_image(ctx))


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[KubeEmulator]:
    """The cluster and its Overlord; parametrized (indirectly) with ``"basic_auth"``, an Overlord with Druid's
    basic security, reached with the login ``airflow`` and :data:`DRUID_PASSWORD`."""
    auth = ("airflow", DRUID_PASSWORD) if getattr(request, "param", None) == "basic_auth" else None
    with (
        KubeEmulator() as kube,
        OverlordEmulator(
            kube, start_delay=1.0, pod_lookup_scale=0.01, poll_interval=0.05, basic_auth=auth
        ) as overlord,
    ):
        connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
        host, port = overlord.url.removeprefix("http://").rsplit(":", 1)
        druid = {"conn_type": "druid", "host": host, "port": int(port), "schema": "http"}
        if auth is not None:
            druid |= {"login": auth[0], "password": auth[1]}
        monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(druid))
        kube.register_image("apache/druid*", peon_that_prints_its_spec)
        fallback = overlord.overlord_pod()
        fallback["metadata"] = {"name": FALLBACK_OVERLORD}
        fallback["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
        kube.store.create("pods", NAMESPACE, fallback)
        yield kube


def run_worker(
    tmp_path: Path, operator: dict[str, Any], try_number: int = 1
) -> tuple[str, dict[str, Any], str]:
    """One try of the operator in a worker process: (task log, report, the process' own output)."""
    spec = {
        "operator": {
            "runner_properties": {"druid.indexer.runner.namespace": NAMESPACE},
            "overlord_pod_name": "druid-overlord-0",
            "poll_interval": 1.0,
            **operator,
        },
        "log_file": str(tmp_path / "task.log"),
        "report_file": str(tmp_path / "report.json"),
        "try_number": try_number,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    environment = {**os.environ, "AIRFLOW__CORE__UNIT_TEST_MODE": "True"}
    completed = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "spec.json")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    return (tmp_path / "task.log").read_text(), report, completed.stdout + completed.stderr


def assert_no_secret(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} shows the credential(s) {leaked}:\n{text[-2000:]}"


@pytest.mark.parametrize(
    ("druid_task", "deferrable"),
    [(s3_task(), False), (json.dumps(jdbc_task()), True)],
    ids=["s3-dict-worker", "jdbc-json-string-deferred"],
)
def test_credentials_of_a_successful_task_are_masked_everywhere(
    cluster: KubeEmulator, tmp_path: Path, druid_task: Any, deferrable: bool
) -> None:
    log, report, output = run_worker(tmp_path, {"druid_task": druid_task, "deferrable": deferrable})
    assert report.get("error") is None, report.get("traceback")
    assert report["return_value"]["status"] == "SUCCESS"
    assert "Running task[" in log and MASK in log, "the peon's log must reach the task log, masked"
    assert_no_secret("the task log", log)
    assert_no_secret("the worker's output", output)
    assert_no_secret("XCom", json.dumps(report["xcom"]))
    assert_no_secret("the rendered template fields", json.dumps(report["rendered"]))
    assert_no_secret(
        "the trigger and resume kwargs stored for the triggerer", json.dumps(report.get("deferral"))
    )
    assert ("deferral" in report) == deferrable
    assert MASK in json.dumps(report["rendered"]["druid_task"])
    everything = log + output + json.dumps(report)
    assert cluster.token not in everything, "the connection's bearer token reached the task's output"


def test_credentials_of_a_failing_task_stay_out_of_the_error_and_its_xcom(
    cluster: KubeEmulator, tmp_path: Path
) -> None:
    task = jdbc_task()
    task["id"] = "secret_jdbc_fail"
    started = time.monotonic()
    log, report, output = run_worker(tmp_path, {"druid_task": task})
    assert time.monotonic() - started < 60
    assert report["error_type"] == "JobFailed", report.get("traceback")
    assert "secret_jdbc_fail" in report["error"]
    assert_no_secret("the error message", report["error"])
    assert_no_secret("the traceback", report["traceback"])
    assert_no_secret("XCom", json.dumps(report["xcom"]))
    assert_no_secret("the task log", log)
    assert_no_secret("the worker's output", output)
    assert "cannot connect as druid:***@db:5432" in log


def test_bad_input_errors_do_not_quote_credentials(cluster: KubeEmulator, tmp_path: Path) -> None:
    task = s3_task()
    task["context"] = {"druid.indexer.runner.javaOpts": ["-Xmx1g"], "password": S3_SECRET}
    log, report, output = run_worker(tmp_path, {"druid_task": task})
    assert report["error_type"] == "DruidK8sConfigError", report.get("traceback")
    assert "druid.indexer.runner.javaOpts" in report["error"]
    for where, text in (("error", report["error"]), ("log", log), ("output", output)):
        assert_no_secret(where, text)
    assert cluster.metrics.creates("jobs") == 0


def test_a_template_that_fails_to_render_does_not_log_the_credentials_of_the_task(
    cluster: KubeEmulator, tmp_path: Path
) -> None:
    """A Jinja error must not quote the field: Airflow's own renderer logs the whole field on failure and
    hides only values under keys it knows (like "password"), while Druid's Azure input source calls its
    account key just "key"."""
    task = {
        "type": "index_parallel",
        "id": "secret_azure_ingest",
        "spec": {
            "dataSchema": {"dataSource": "{{ params.datasource "},
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {
                    "type": "azureStorage",
                    "objectGlob": "**.json",
                    "properties": {"account": "shop", "key": AZURE_KEY},
                },
            },
        },
    }
    log, report, output = run_worker(tmp_path, {"druid_task": task})
    assert report["error_type"] == "DruidK8sConfigError", report.get("traceback")
    assert report["error"].startswith("druid_task: ")
    for where, text in (("task log", log), ("worker output", output), ("error", report["error"])):
        assert_no_secret(where, text)
    assert cluster.metrics.creates("jobs") == 0


@pytest.mark.parametrize(
    "connect_uri",
    [
        f"jdbc:mysql://db:3306/shop?user=druid&password={URI_PASSWORD}&useSSL=true",
        f"jdbc:postgresql://druid:{URI_PASSWORD}@db:5432/shop",
    ],
    ids=["query-parameter", "userinfo"],
)
def test_a_password_inside_a_jdbc_connect_uri_is_masked_too(
    cluster: KubeEmulator, tmp_path: Path, connect_uri: str
) -> None:
    """Druid's SQL input source takes the password in ``connectURI`` as readily as in ``password``."""
    task = jdbc_task()
    task["id"] = "secret_jdbc_uri"
    connector = task["spec"]["ioConfig"]["inputSource"]["database"]["connectorConfig"]
    connector.pop("password")
    connector["connectURI"] = connect_uri
    log, report, output = run_worker(tmp_path, {"druid_task": task})
    assert report.get("error") is None, report.get("traceback")
    assert "Running task[secret_jdbc_uri]" in log
    assert_no_secret("the task log", log)
    assert_no_secret("the worker's output", output)
    assert_no_secret("the rendered template fields", json.dumps(report["rendered"]))


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_a_termination_message_made_of_the_peon_log_does_not_carry_credentials_into_xcom(
    cluster: KubeEmulator, tmp_path: Path, deferrable: bool
) -> None:
    """With ``terminationMessagePolicy: FallbackToLogsOnError`` (common in Overlord pods), Kubernetes reports
    the failed peon's last log lines as its termination message, and the operator quotes that message in the
    error it raises and pushes to XCom. XCom is stored and shown as pushed, not masked."""
    task = jdbc_task()
    task["id"] = "secret_jdbc_fail_fallback"
    log, report, output = run_worker(
        tmp_path, {"druid_task": task, "overlord_pod_name": FALLBACK_OVERLORD, "deferrable": deferrable}
    )
    assert_no_secret("the worker's output", output)
    assert report["error_type"] == "JobFailed", report.get("traceback")
    assert "Peon did not report status successfully" in report["error"]
    assert report["xcom"]["return_value"]["status"] == "FAILED"
    assert_no_secret("XCom", json.dumps(report["xcom"]))
    assert_no_secret("the error message", report["error"])
    assert_no_secret("the task log", log)


def test_kafka_sasl_credentials_in_consumer_properties_are_masked(
    cluster: KubeEmulator, tmp_path: Path
) -> None:
    """Kafka ingestion tasks carry the consumer's SASL login as one JAAS string (Druid's documented form)."""
    jaas = (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="druid" '
        f'password="{KAFKA_PASSWORD}";'
    )
    task = {
        "type": "index_kafka",
        "id": "secret_kafka_ingest",
        "dataSource": "clicks",
        "ioConfig": {
            "topic": "clicks",
            "consumerProperties": {
                "bootstrap.servers": "kafka:9093",
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN",
                "sasl.jaas.config": jaas,
            },
        },
    }
    log, report, output = run_worker(tmp_path, {"druid_task": task})
    assert report.get("error") is None, report.get("traceback")
    assert "Running task[secret_kafka_ingest]" in log
    for where, text in (
        ("task log", log),
        ("worker output", output),
        ("rendered", json.dumps(report["rendered"])),
    ):
        assert_no_secret(where, text)


def assert_nothing_shows_a_secret(log: str, report: dict[str, Any], output: str) -> None:
    """The task log, the worker's output, XCom, the rendered fields, the deferral's stored kwargs, the
    error and its traceback: none shows a credential."""
    assert_no_secret("the task log", log)
    assert_no_secret("the worker's output", output)
    assert_no_secret("XCom", json.dumps(report.get("xcom")))
    assert_no_secret("the rendered template fields", json.dumps(report.get("rendered")))
    assert_no_secret("the stored trigger kwargs", json.dumps(report.get("deferral")))
    assert_no_secret("the error", report.get("error") or "")
    assert_no_secret("the traceback", report.get("traceback") or "")


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_the_overlords_error_message_quoting_a_password_is_masked_and_scrubbed(
    cluster: KubeEmulator, tmp_path: Path, deferrable: bool
) -> None:
    """Druid records the peon's exception as the task's ``errorMsg``; a JDBC driver's message quotes the
    connect URI, password included. The operator reports that message in its error and in XCom."""
    task = jdbc_task()
    task["id"] = "secret_jdbc_errormsg"
    log, report, output = run_worker(tmp_path, {"druid_task": task, "deferrable": deferrable})
    assert report["error_type"] == "JobFailed", report.get("traceback")
    assert "java.sql.SQLException: cannot connect to jdbc:postgresql://druid:***@db/shop" in report["error"]
    assert report["xcom"]["return_value"]["status"] == "FAILED"
    assert_nothing_shows_a_secret(log, report, output)


def test_a_retry_reporting_a_finished_task_shows_the_overlords_task_log_masked(
    cluster: KubeEmulator, tmp_path: Path
) -> None:
    """A retry that finds the attempt already SUCCEEDED in Druid shows the peon's whole log from the
    Overlord's task log (GET /task/{id}/log), where the peon printed its task spec."""
    task = s3_task()
    task.pop("id")  # derived, so the retry asks the Overlord about the attempt and reports it
    (tmp_path / "try1").mkdir()
    (tmp_path / "try2").mkdir()
    log, report, output = run_worker(tmp_path / "try1", {"druid_task": task})
    assert report.get("error") is None, report.get("traceback")
    log, report, output = run_worker(tmp_path / "try2", {"druid_task": task}, try_number=2)
    assert report.get("error") is None, report.get("traceback")
    assert "report (attempt 1" in log and "Running task[" in log and MASK in log, log[-3000:]
    assert_nothing_shows_a_secret(log, report, output)


def test_druids_refusal_quoting_the_task_is_scrubbed(
    cluster: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Druid's 400 for a task it cannot read may quote the part it choked on, a key included."""
    with OverlordDouble() as double:
        double.version = "34.0.0"  # overlord mode: nothing is created before the submission
        echo = f"Cannot construct instance of S3InputSource, problem: bad secretAccessKey [{S3_SECRET}]"
        double.script("POST", f"{INDEXER}/task", Scripted(400, {"error": echo}))
        connection = {"conn_type": "druid", "host": "127.0.0.1", "port": double.port}
        monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(connection))
        log, report, output = run_worker(tmp_path, {"druid_task": s3_task()})
    assert report["error_type"] == "OverlordApiError", report.get("traceback")
    assert "bad secretAccessKey [***]" in report["error"]
    assert_nothing_shows_a_secret(log, report, output)


@pytest.mark.parametrize("cluster", ["basic_auth"], indirect=True)
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_the_druid_connections_password_never_shows(
    cluster: KubeEmulator, tmp_path: Path, deferrable: bool
) -> None:
    """The Overlord wants Druid's basic security: the worker and the triggerer send the connection's
    password in every request (and the peon gets the escalator's in its env, as Druid's peons do)."""
    log, report, output = run_worker(tmp_path, {"druid_task": s3_task(), "deferrable": deferrable})
    assert report.get("error") is None, report.get("traceback")
    assert report["return_value"]["status"] == "SUCCESS"
    assert_nothing_shows_a_secret(log, report, output)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("connection", "said"),
    [
        pytest.param(
            lambda port: f"druid://airflow:{DRUID_PASSWORD}@127.0.0.1:{_closed_port()}/",
            "the Overlord could not be reached",
            id="uri-unreachable",
        ),
        pytest.param(
            lambda port: {"conn_type": "druid", "host": f"airflow:{DRUID_PASSWORD}@127.0.0.1", "port": port},
            "'***@127.0.0.1' carries credentials",
            id="host-with-userinfo",
        ),
        pytest.param(
            lambda port: {
                "conn_type": "druid",
                "host": "127.0.0.1",
                "port": port,
                "login": "airflow",
                "password": DRUID_PASSWORD,
            },
            "user airflow:*** refused (Authorization: Basic ***)",
            id="401-echoing-the-credentials",
        ),
    ],
)
def test_errors_of_the_druid_connection_do_not_show_its_password(
    cluster: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connection: Any, said: str
) -> None:
    with OverlordDouble() as double:
        page = f"401: user airflow:{DRUID_PASSWORD} refused (Authorization: Basic {DRUID_TOKEN})"
        double.script("GET", "/status", Scripted(401, page, "text/plain"))
        value = connection(double.port)
        monkeypatch.setenv(
            "AIRFLOW_CONN_DRUID_INGEST_DEFAULT", value if isinstance(value, str) else json.dumps(value)
        )
        log, report, output = run_worker(tmp_path, {"druid_task": s3_task()})
    assert report.get("error_type") in ("OverlordApiError", "DruidK8sConfigError"), report.get("traceback")
    assert "druid_ingest_default" in report["error"] and said in report["error"], report["error"]
    assert_nothing_shows_a_secret(log, report, output)
    assert cluster.metrics.creates("jobs") == 0
