"""Bad input is refused before anything is created, with an error that names the field and the fix.

A table of malformed inputs (task JSON, runner properties, templates, labels, annotations, durations,
sizes, names, templated fields, pod template files, JVM options, sidecars, the launch mode, the Overlord
connection and its extras, the ``[druid_k8s]`` options) runs through ``DruidK8sTaskOperator`` as a worker
would run it, against an emulated cluster and a stand-in Overlord. For each, the error must name the
offending field and say how to fix it, the API server must have recorded no write at all, and the Overlord
no submission. A second table does the same with an Overlord (or what answers in its place) that answers
the operator's first requests with an HTML page, garbage or JSON of another shape.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG
from overlord_double import INDEXER, OverlordDouble, Scripted

from druid_k8s_provider.errors import (
    DruidK8sConfigError,
    DruidK8sTaskError,
    OverlordAnswerUnreadable,
    OverlordApiError,
)
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMESPACE = "druid"
RUNNER = "druid.indexer.runner."
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
OVERLORD = "druid-overlord-0"
WITH_SIDECAR = "druid-overlord-with-sidecar"
TASK: dict[str, Any] = {"type": "index_parallel", "id": "bad_input_probe", "spec": {}}
DRUID_CONN = "connection 'druid_ingest_default'"
PASSWORD = "never-show-this-pa55"


@dataclass(frozen=True)
class BadInput:
    """One malformed input: operator arguments (over sane defaults) and the field the error must name."""

    case: str
    field: str
    task: Any = field(default_factory=lambda: dict(TASK))
    properties: Any = field(default_factory=dict)
    arguments: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    refused_as: type[Exception] = DruidK8sConfigError
    #: Changes to the ``druid_ingest_default`` connection (a None value removes the field).
    connection: dict[str, Any] = field(default_factory=dict)
    #: Environment variables (``[druid_k8s]`` options as ``AIRFLOW__DRUID_K8S__<OPTION>``).
    environment: dict[str, str] = field(default_factory=dict)
    #: Text the error must not show (credentials).
    hidden: tuple[str, ...] = ()


def task(**changes: Any) -> dict[str, Any]:
    return {**TASK, **changes}


def pod_template(containers: str = "    containers:\n      - name: main\n        image: peon:ok\n") -> str:
    return f"apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: peon\ntemplate:\n  spec:\n{containers}"


CORPUS = (
    # -- task JSON ---------------------------------------------------------------------------------
    BadInput("task-not-json", "druid_task", task='{"type": "index_parallel", '),
    BadInput("task-json-array", "druid_task", task='["index_parallel"]'),
    BadInput("task-a-number", "druid_task", task=42),
    BadInput("task-without-type", "task.type", task={"id": "no_type", "spec": {}}),
    BadInput("task-type-not-a-string", "task.type", task=task(type=["index"])),
    BadInput("task-id-with-slash", "task.id", task=task(id="wiki/2026")),
    BadInput("task-id-empty", "task.id", task=task(id="")),
    BadInput("task-id-with-tab", "task.id", task=task(id="wiki\t2026")),
    BadInput("group-id-not-a-string", "task.groupId", task=task(groupId=7)),
    BadInput("context-not-an-object", "task.context", task=task(context="fast")),
    BadInput(
        "context-java-opts-a-list",
        "task.context.druid.indexer.runner.javaOpts",
        task=task(context={"druid.indexer.runner.javaOpts": ["-Xmx1g"]}),
    ),
    BadInput(
        "context-java-opts-bad-heap-size",
        "javaOpts",
        task=task(context={"druid.indexer.runner.javaOpts": "-Xmx12zz"}),
    ),
    BadInput(
        "task-value-not-json",
        "druid_task",
        task=task(spec={"ioConfig": {"appendToExisting": True, "since": dt.datetime(2026, 1, 1)}}),
    ),
    BadInput(
        "task-value-nan", "druid_task", task=task(spec={"tuningConfig": {"maxBytesInMemory": float("nan")}})
    ),
    BadInput(
        "task-too-large-for-the-peon",
        "task",
        task=task(spec={"blob": os.urandom(150 * 1024).hex()}),
    ),
    # -- runner properties ---------------------------------------------------------------------------
    BadInput("namespace-missing", RUNNER + "namespace", properties={RUNNER + "namespace": None}),
    BadInput("namespace-invalid", RUNNER + "namespace", properties={RUNNER + "namespace": "Druid_Tasks"}),
    BadInput(
        "overlord-namespace-invalid",
        RUNNER + "overlordNamespace",
        properties={RUNNER + "overlordNamespace": "a b"},
    ),
    BadInput("properties-not-json", "runner_properties", properties="druid.indexer.runner.namespace=druid"),
    BadInput("properties-json-array", "runner_properties", properties='["druid"]'),
    BadInput(
        "property-misspelt", RUNNER + "maxTaskDurations", properties={RUNNER + "maxTaskDurations": "PT1H"}
    ),
    BadInput("java-opts-string-form", RUNNER + "javaOpts", properties={RUNNER + "javaOpts": "-Xmx1g"}),
    BadInput(
        "java-opts-array-not-json", RUNNER + "javaOptsArray", properties={RUNNER + "javaOptsArray": "-Xmx1g"}
    ),
    BadInput(
        "java-opts-array-of-numbers",
        RUNNER + "javaOptsArray",
        properties={RUNNER + "javaOptsArray": "[1, 2]"},
    ),
    BadInput(
        "java-opts-array-bad-direct-memory",
        "MaxDirectMemorySize",
        properties={RUNNER + "javaOptsArray": '["-XX:MaxDirectMemorySize=lots"]'},
    ),
    BadInput(
        "adapter-type-unknown",
        RUNNER + "k8s.adapter.type",
        properties={RUNNER + "k8s.adapter.type": "overlordSingle"},
    ),
    BadInput("debug-jobs-not-boolean", RUNNER + "debugJobs", properties={RUNNER + "debugJobs": "yes please"}),
    BadInput("capacity-negative", RUNNER + "capacity", properties={RUNNER + "capacity": "-1"}),
    BadInput("cpu-not-a-number", RUNNER + "cpuCoreInMicro", properties={RUNNER + "cpuCoreInMicro": "lots"}),
    BadInput(
        "grace-period-negative",
        RUNNER + "graceTerminationPeriodSeconds",
        properties={RUNNER + "graceTerminationPeriodSeconds": "-5"},
    ),
    # -- durations --------------------------------------------------------------------------------------
    BadInput(
        "duration-in-words", RUNNER + "maxTaskDuration", properties={RUNNER + "maxTaskDuration": "4 hours"}
    ),
    BadInput(
        "duration-in-months", RUNNER + "maxTaskDuration", properties={RUNNER + "maxTaskDuration": "P1M"}
    ),
    BadInput(
        "duration-zero", RUNNER + "K8sjobLaunchTimeout", properties={RUNNER + "K8sjobLaunchTimeout": "PT0S"}
    ),
    BadInput(
        "duration-a-date", RUNNER + "taskCleanupDelay", properties={RUNNER + "taskCleanupDelay": "2026-01-01"}
    ),
    BadInput(
        "launch-timeout-both-spellings",
        "k8sjobLaunchTimeout",
        properties={RUNNER + "K8sjobLaunchTimeout": "PT1H", RUNNER + "k8sjobLaunchTimeout": "PT2H"},
    ),
    # -- labels and annotations ---------------------------------------------------------------------------
    BadInput("labels-not-json", RUNNER + "labels", properties={RUNNER + "labels": "team=druid"}),
    BadInput("label-value-a-number", RUNNER + "labels", properties={RUNNER + "labels": '{"tier": 5}'}),
    BadInput("label-key-invalid", RUNNER + "labels", properties={RUNNER + "labels": '{"bad key!": "x"}'}),
    BadInput(
        "label-value-too-long",
        RUNNER + "labels",
        properties={RUNNER + "labels": json.dumps({"team": "x" * 64})},
    ),
    BadInput(
        "label-reserved", RUNNER + "labels", properties={RUNNER + "labels": '{"druid.k8s.peons": "false"}'}
    ),
    BadInput(
        "annotation-reserved", RUNNER + "annotations", properties={RUNNER + "annotations": '{"task.id": "x"}'}
    ),
    BadInput("annotations-a-list", RUNNER + "annotations", properties={RUNNER + "annotations": '["x"]'}),
    BadInput(
        "peon-monitors-not-an-array",
        RUNNER + "peonMonitors",
        properties={RUNNER + "peonMonitors": '"JvmMonitor"'},
    ),
    BadInput(
        "annotation-key-invalid",
        RUNNER + "annotations",
        properties={RUNNER + "annotations": '{"bad key!": "x"}'},
    ),
    BadInput(
        "label-value-with-spaces", RUNNER + "labels", properties={RUNNER + "labels": '{"team": "data eng"}'}
    ),
    BadInput(
        "duration-negative",
        RUNNER + "taskCleanupInterval",
        properties={RUNNER + "taskCleanupInterval": "-PT1H"},
    ),
    BadInput("kubexit-image-empty", RUNNER + "kubexitImage", properties={RUNNER + "kubexitImage": ""}),
    BadInput(
        "sidecar-termination-unknown",
        RUNNER + "sidecarTermination",
        properties={RUNNER + "sidecarTermination": "sigkill"},
    ),
    BadInput("cpu-zero", RUNNER + "cpuCoreInMicro", properties={RUNNER + "cpuCoreInMicro": "0"}),
    # -- templates ---------------------------------------------------------------------------------------
    BadInput(
        "primary-container-unknown",
        RUNNER + "primaryContainerName",
        properties={RUNNER + "primaryContainerName": "druid-main"},
    ),
    BadInput(
        "sidecar-support-contradicts-custom-template",
        RUNNER + "sidecarSupport",
        properties={RUNNER + "sidecarSupport": "true", RUNNER + "k8s.adapter.type": "customTemplateAdapter"},
    ),
    BadInput(
        "sidecar-without-command",
        "template.spec.containers[log-shipper].command",
        properties={RUNNER + "k8s.adapter.type": "overlordMultiContainer"},
        arguments={"overlord_pod_name": WITH_SIDECAR},
    ),
    BadInput(
        "sidecar-commands-for-unknown-container",
        RUNNER + "sidecarCommands",
        properties={
            RUNNER + "k8s.adapter.type": "overlordMultiContainer",
            RUNNER + "sidecarCommands": '{"no-such-sidecar": ["/bin/ship"]}',
        },
        arguments={"overlord_pod_name": WITH_SIDECAR},
    ),
    BadInput(
        "pod-template-type-misspelt",
        RUNNER + "k8s.podTemplate.index_paralel",
        properties={RUNNER + "k8s.podTemplate.index_paralel": "/templates/index.yaml"},
    ),
    BadInput(
        "pod-template-file-missing",
        RUNNER + "k8s.podTemplate.base",
        arguments={"pod_template_file": "/nonexistent/peon-template.yaml"},
    ),
    BadInput(
        "pod-template-not-yaml",
        RUNNER + "k8s.podTemplate.base",
        files={"template.yaml": "template: [unclosed"},
    ),
    BadInput(
        "pod-template-a-pod", "kind", files={"template.yaml": pod_template().replace("PodTemplate", "Pod")}
    ),
    BadInput(
        "pod-template-without-containers",
        "containers",
        files={"template.yaml": pod_template("    containers: []\n")},
    ),
    BadInput(
        "pod-template-container-without-name",
        "containers[0]",
        files={"template.yaml": pod_template("    containers:\n      - image: peon:ok\n")},
    ),
    BadInput(
        "pod-template-api-version",
        "apiVersion",
        files={"template.yaml": pod_template().replace("apiVersion: v1", "apiVersion: v2")},
    ),
    BadInput(
        "pod-template-snake-case",
        "snake_case",
        files={"template.yaml": pod_template() + "    restart_policy: Never\n"},
    ),
    BadInput(
        "execution-config-not-json",
        "execution_config",
        arguments={"execution_config": '{"type": "default",'},
        files={"template.yaml": pod_template()},
    ),
    BadInput(
        "execution-config-unknown-strategy",
        "execution_config.podTemplateSelectStrategy.type",
        arguments={"execution_config": {"podTemplateSelectStrategy": {"type": "byLabel"}}},
        files={"template.yaml": pod_template()},
    ),
    BadInput(
        "execution-config-selector-without-key",
        "execution_config.podTemplateSelectStrategy.selectors[0].selectionKey",
        arguments={
            "execution_config": {
                "podTemplateSelectStrategy": {"type": "selectorBased", "selectors": [{"type": ["compact"]}]}
            }
        },
        files={"template.yaml": pod_template()},
    ),
    BadInput(
        "execution-config-with-the-overlord-adapter",
        "execution_config",
        arguments={"execution_config": {"podTemplateSelectStrategy": {"type": "taskType"}}},
    ),
    # -- other operator arguments and templated fields ----------------------------------------------------
    BadInput("task-file-not-found-relative", "druid_task", task="tasks/missing_task.json"),
    BadInput("task-file-not-found-absolute", "druid_task", task="/nonexistent/druid/task.json"),
    BadInput(
        "templated-task-id-renders-empty",
        "task.id",
        task='{"type": "index_parallel", "id": "{{ params.get(\'missing\', \'\') }}"}',
    ),
    BadInput("templated-task-jinja-syntax-error", "druid_task", task='{"type": "{{ params.type "}'),
    BadInput(
        "templated-properties-render-bad-duration",
        RUNNER + "maxTaskDuration",
        properties='{"druid.indexer.runner.namespace": "druid", '
        '"druid.indexer.runner.maxTaskDuration": "{{ params.get(\'hours\', 4) }} hours"}',
    ),
    BadInput(
        "runtime-properties-file-missing",
        "runtime_properties_file",
        arguments={"runtime_properties_file": "/nonexistent/overlord/runtime.properties"},
    ),
    BadInput(
        "connection-not-defined",
        "kubernetes_conn_id",
        arguments={"kubernetes_conn_id": "kubernetes_typo"},
    ),
    BadInput(
        "overlord-connection-not-defined",
        "druid_ingest_conn_id",
        arguments={"druid_ingest_conn_id": "druid_ingest_typo"},
    ),
    BadInput("launch-mode-unknown", "launch_mode", arguments={"launch_mode": "kubernetes"}),
    BadInput("launch-mode-capitalised", "launch_mode", arguments={"launch_mode": "Airflow"}),
    BadInput("launch-mode-a-list", "launch_mode", arguments={"launch_mode": ["airflow"]}),
    BadInput("launch-mode-a-number", "launch_mode", arguments={"launch_mode": 35}),
    BadInput("launch-mode-true", "launch_mode", arguments={"launch_mode": True}),
    BadInput(
        "launch-mode-option-unknown",
        "[druid_k8s] launch_mode",
        environment={"AIRFLOW__DRUID_K8S__LAUNCH_MODE": "peon"},
    ),
    # -- the Overlord connection (druid_ingest_conn_id) ------------------------------------------------
    BadInput(
        "overlord-connection-id-a-number", "druid_ingest_conn_id", arguments={"druid_ingest_conn_id": 42}
    ),
    BadInput(
        "overlord-connection-id-blank", "druid_ingest_conn_id", arguments={"druid_ingest_conn_id": "  "}
    ),
    BadInput(
        "overlord-connection-option-not-defined",
        "[druid_k8s] druid_ingest_conn_id",
        environment={"AIRFLOW__DRUID_K8S__DRUID_INGEST_CONN_ID": "druid_option_typo"},
    ),
    BadInput("overlord-connection-without-host", f"{DRUID_CONN} host", connection={"host": None}),
    BadInput(
        "overlord-connection-host-a-url", f"{DRUID_CONN} host", connection={"host": "http://overlord:8081"}
    ),
    BadInput(
        "overlord-connection-host-with-credentials",
        f"{DRUID_CONN} host",
        connection={"host": f"druid:{PASSWORD}@overlord"},
        hidden=(PASSWORD,),
    ),
    BadInput(
        "overlord-connection-url-with-credentials",
        f"{DRUID_CONN} host",
        connection={"host": f"https://druid:{PASSWORD}@overlord:8281/druid"},
        hidden=(PASSWORD,),
    ),
    BadInput(
        "overlord-connection-host-with-port", f"{DRUID_CONN} host", connection={"host": "overlord:8081"}
    ),
    # Airflow cannot parse this connection and reads it as undefined: the error says both.
    BadInput("overlord-connection-port-a-word", "druid_ingest_conn_id", connection={"port": "eighty"}),
    BadInput("overlord-connection-port-out-of-range", f"{DRUID_CONN} port", connection={"port": 70000}),
    BadInput("overlord-connection-schema-ftp", f"{DRUID_CONN} schema", connection={"schema": "ftp"}),
    BadInput(
        "overlord-connection-extra-not-an-object",
        f"{DRUID_CONN} extra",
        connection={"extra": f'["ca_bundle_path", "{PASSWORD}"]'},
        hidden=(PASSWORD,),
    ),
    BadInput(
        "overlord-connection-extra-not-json",
        f"{DRUID_CONN} extra",
        connection={"extra": f"ca_bundle_path={PASSWORD}"},
        hidden=(PASSWORD,),
    ),
    BadInput(
        "overlord-connection-endpoint-not-the-task-endpoint",
        f"{DRUID_CONN} extra 'endpoint'",
        connection={"extra": {"endpoint": "druid/v2/sql"}},
    ),
    BadInput(
        "overlord-connection-ca-bundle-missing",
        f"{DRUID_CONN} extra 'ca_bundle_path'",
        connection={"schema": "https", "extra": {"ca_bundle_path": "/nonexistent/druid-ca.pem"}},
    ),
    BadInput(
        "overlord-connection-console-url-without-scheme",
        f"{DRUID_CONN} extra 'console_url'",
        connection={"extra": {"console_url": "druid-router:8888"}},
    ),
    BadInput(
        "overlord-connection-console-url-with-credentials",
        f"{DRUID_CONN} extra 'console_url'",
        connection={"extra": {"console_url": f"https://admin:{PASSWORD}@druid.example.com"}},
        hidden=(PASSWORD,),
    ),
    BadInput(
        "console-url-option-not-a-url",
        "[druid_k8s] console_url",
        environment={"AIRFLOW__DRUID_K8S__CONSOLE_URL": "ftp://druid"},
    ),
    BadInput("poll-interval-zero", "poll_interval", arguments={"poll_interval": 0}),
    BadInput(
        "image-pull-grace-negative", "image_pull_grace_seconds", arguments={"image_pull_grace_seconds": -5}
    ),
    BadInput(
        "template-pod-not-found",
        "overlord_pod_name",
        arguments={"overlord_pod_name": "no-such-overlord"},
        refused_as=DruidK8sTaskError,
    ),
    BadInput(
        "no-template-pod-given",
        "overlord_pod_selector",
        arguments={"overlord_pod_name": None},
        refused_as=DruidK8sTaskError,
    ),
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[KubeEmulator, OverlordEmulator]]:
    """The cluster and an Overlord (Druid 38) whose pod ``druid-overlord-0`` is the peon template."""
    with (
        KubeEmulator() as emulator,
        OverlordEmulator(emulator, start_delay=1.0, pod_lookup_scale=0.01, poll_interval=0.05) as overlord,
    ):
        sidecar = {"name": "log-shipper", "image": "apache/druid:38.0.0", "args": ["--ship", "/logs"]}
        emulator.store.create(
            "pods",
            NAMESPACE,
            {
                "metadata": {"name": WITH_SIDECAR},
                "spec": {"containers": [{"name": "druid", "image": "apache/druid:38.0.0"}, sidecar]},
            },
        )
        yield emulator, overlord


def connect_druid(monkeypatch: pytest.MonkeyPatch, url: str, **changes: Any) -> None:
    """Point ``druid_ingest_default`` at the Overlord at ``url``, with ``changes`` (None removes a field)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    druid = {"conn_type": "druid", "host": host, "port": int(port), "schema": "http", **changes}
    connection = {key: value for key, value in druid.items() if value is not None}
    monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(connection))


@pytest.fixture
def kube(cluster: tuple[KubeEmulator, OverlordEmulator], monkeypatch: pytest.MonkeyPatch) -> KubeEmulator:
    """The cluster, its Kubernetes and Overlord connections set, request records cleared."""
    emulator, overlord = cluster
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(emulator.kubeconfig_path)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
    connect_druid(monkeypatch, overlord.url)
    emulator.metrics.reset()
    overlord.requests.clear()
    return emulator


@pytest.fixture
def overlord(cluster: tuple[KubeEmulator, OverlordEmulator]) -> OverlordEmulator:
    return cluster[1]


def worker_context(run_id: str = "manual_1", try_number: int = 1) -> dict[str, Any]:
    """The context a worker gives ``execute`` for one try of the task in one DAG run."""
    ti = SimpleNamespace(
        dag_id="bad_input", task_id="druid", run_id=run_id, map_index=-1, try_number=try_number,
        xcom_push=lambda key, value: None,
    )  # fmt: skip
    return {"ti": ti, "params": {}, "var": {}}


def writes_recorded(kube: KubeEmulator) -> list[str]:
    return [
        f"{r.verb} {r.resource}"
        for r in kube.metrics.records()
        # Access and rules reviews are questions about permissions, not writes.
        if r.verb in WRITE_VERBS and r.resource not in ("selfsubjectaccessreviews", "selfsubjectrulesreviews")
    ]


def refuse(bad: BadInput, tmp_path: Path, try_number: int = 1) -> Exception:
    """Run the operator on the bad input like a worker (try ``try_number``); return what it raised."""
    arguments: dict[str, Any] = {"overlord_pod_name": OVERLORD, "poll_interval": 0.5, **bad.arguments}
    for name, text in bad.files.items():
        (tmp_path / name).write_text(text)
        arguments["pod_template_file"] = str(tmp_path / name)
    properties = bad.properties
    if isinstance(properties, dict):
        properties = {
            key: value
            for key, value in {RUNNER + "namespace": NAMESPACE, **properties}.items()
            if value is not None
        }
    elif properties is None:
        properties = {RUNNER + "namespace": NAMESPACE}
    context = worker_context(try_number=try_number)

    def run_like_a_worker() -> None:
        with DAG("bad_input", schedule=None, template_searchpath=[str(tmp_path)]):
            operator = DruidK8sTaskOperator(
                task_id="druid", druid_task=bad.task, runner_properties=properties, **arguments
            )
        operator.render_template_fields(context)
        operator.execute(context)

    with pytest.raises(Exception) as raised:
        run_like_a_worker()
    return raised.value


@pytest.mark.parametrize("bad", CORPUS, ids=lambda bad: bad.case)
def test_bad_input_is_refused_naming_the_field_and_the_fix_before_any_write(
    kube: KubeEmulator,
    overlord: OverlordEmulator,
    bad: BadInput,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if bad.connection:
        connect_druid(monkeypatch, overlord.url, **bad.connection)
    for name, value in bad.environment.items():
        monkeypatch.setenv(name, value)
    error = refuse(bad, tmp_path)
    message = str(error)
    assert isinstance(error, bad.refused_as), f"{type(error).__name__}: {message}"
    assert bad.field in message, f"the error does not name {bad.field!r}: {message}"
    assert "Fix:" in message or "Fix " in message or "fix:" in message, f"the error gives no fix: {message}"
    shown = [text for text in bad.hidden if text in message]
    assert not shown, f"the error shows {shown}: {message}"
    writes = writes_recorded(kube)
    assert writes == [], f"bad input {bad.case!r} reached the cluster: {writes}"
    assert kube.store.list("jobs", NAMESPACE) == []
    assert overlord.requests.count("POST", "/druid/indexer/v1/task") == 0


def test_the_corpus_covers_every_kind_of_input() -> None:
    assert len(CORPUS) >= 30
    assert len({bad.case for bad in CORPUS}) == len(CORPUS)


SIGN_IN_PAGE = "<html><head><title>Sign in - Corporate SSO</title></head><body>...</body></html>"
#: What answers in the Overlord's place before anything is written: (case, request, answer, said).
UNREADABLE_ANSWERS = (
    ("status-an-html-page", ("GET", "/status"), Scripted(200, SIGN_IN_PAGE, "text/html"), "Sign in"),
    (
        "status-garbage",
        ("GET", "/status"),
        Scripted(200, b"\x00\x17\xff{garbage", "application/octet-stream"),
        "not the JSON Druid sends",
    ),
    ("status-a-json-list", ("GET", "/status"), Scripted(200, ["35.0.0"]), "not a JSON object"),
    ("status-version-a-number", ("GET", "/status"), Scripted(200, {"version": 35}), "the version is 35"),
    (
        "task-status-an-html-page",
        ("POST", f"{INDEXER}/taskStatus"),
        Scripted(200, SIGN_IN_PAGE, "text/html"),
        "Sign in",
    ),
    (
        "task-status-entry-a-string",
        ("POST", f"{INDEXER}/taskStatus"),
        Scripted(200, {"bad_input_probe": "RUNNING"}),
        "a task status is str",
    ),
    (
        "task-status-entry-without-status",
        ("POST", f"{INDEXER}/taskStatus"),
        Scripted(200, {"bad_input_probe": {"id": "bad_input_probe", "duration": -1}}),
        "has no statusCode",
    ),
    (
        "task-status-a-json-list",
        ("POST", f"{INDEXER}/taskStatus"),
        Scripted(200, [{"id": "bad_input_probe", "status": "RUNNING"}]),
        "not a JSON object",
    ),
)


@pytest.mark.parametrize(
    ("request_", "answer", "said"),
    [case[1:] for case in UNREADABLE_ANSWERS],
    ids=[case[0] for case in UNREADABLE_ANSWERS],
)
def test_an_overlord_answering_what_druid_does_not_is_refused_before_any_write(
    kube: KubeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request_: tuple[str, str],
    answer: Scripted,
    said: str,
) -> None:
    """A proxy's login page, garbage, or JSON of another shape where the operator asks the Overlord its
    version or about the task's attempts (a retry: a first try has none to ask about): the error names the
    connection, the request and the fix; nothing is created in Kubernetes and nothing is submitted."""
    with OverlordDouble() as double:
        double.version = "38.0.0"
        double.script(*request_, answer)
        connect_druid(monkeypatch, f"http://127.0.0.1:{double.port}")
        error = refuse(BadInput("overlord-answer", "druid_ingest_default"), tmp_path, try_number=2)
        submits = [r for r in double.requests if (r.method, r.path) == ("POST", f"{INDEXER}/task")]
    message = str(error)
    assert isinstance(error, OverlordAnswerUnreadable), f"{type(error).__name__}: {message}"
    assert "'druid_ingest_default'" in message and f"{request_[0]} {request_[1]}" in message, message
    assert said in message and "Fix:" in message, message
    assert writes_recorded(kube) == [] and submits == []


def test_an_overlord_refusing_the_credentials_is_named_before_any_write(
    kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with OverlordDouble(credentials=("airflow", "the-right-one")) as double:
        connect_druid(monkeypatch, f"http://127.0.0.1:{double.port}", login="airflow", password=PASSWORD)
        error = refuse(BadInput("overlord-401", "druid_ingest_default"), tmp_path)
    message = str(error)
    assert isinstance(error, OverlordApiError) and error.status == 401, message
    assert "login and password of Airflow connection 'druid_ingest_default'" in message
    assert PASSWORD not in message and writes_recorded(kube) == []


def test_a_retry_of_a_written_id_that_failed_is_refused_before_any_write(
    kube: KubeEmulator, overlord: OverlordEmulator
) -> None:
    """Druid never accepts an id twice: a retry of a task whose id is written in its JSON cannot run it
    again after its FAILED; it is refused, saying how to template the id, and nothing is written."""
    failing = {
        "type": "index_parallel",
        "id": "wiki_daily_fixed",
        "spec": {"dataSchema": {"dataSource": "wiki"}},
        "context": {"standinOutcome": "FAILED", "standinDurationSeconds": 0.1},
    }
    properties = {RUNNER + "namespace": NAMESPACE}

    def run(try_number: int) -> Any:
        operator = DruidK8sTaskOperator(
            task_id="druid", druid_task=failing, runner_properties=properties, overlord_pod_name=OVERLORD
        )
        return operator.execute(worker_context("manual_1", try_number))

    with pytest.raises(DruidK8sTaskError):
        run(1)
    kube.metrics.reset()
    overlord.requests.clear()
    with pytest.raises(DruidK8sConfigError) as raised:
        run(2)
    message = str(raised.value)
    assert "task.id" in message and "wiki_daily_fixed" in message and "try_number" in message, message
    assert writes_recorded(kube) == []
    assert overlord.requests.count("POST", "/druid/indexer/v1/task") == 0
