"""The operator's inputs: task spec forms, configuration layering, derived ids, secret detection, and the
warnings about settings the Overlord decides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from druid_k8s_provider.config import RunnerConfig, druid_name_of
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.hooks.secrets import sensitive_values
from druid_k8s_provider.operators.ignored import JOB_SHAPING_PROPERTIES, job_shaping
from druid_k8s_provider.operators.task import DruidK8sTaskOperator

TASK = {
    "type": "index_parallel",
    "spec": {
        "ioConfig": {
            "inputSource": {
                "type": "s3",
                "properties": {
                    "accessKeyId": {"type": "default", "password": "AKIA-PLAIN"},
                    "secretAccessKey": "s3cr3t",
                },
            }
        }
    },
}


def context(map_index: int = -1, run_id: str = "manual__2026-01-01") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="dag", task_id="load", run_id=run_id, map_index=map_index)
    return {"ti": ti}


def operator(**kwargs: Any) -> DruidK8sTaskOperator:
    kwargs.setdefault("druid_task", TASK)
    kwargs.setdefault("runner_properties", {"druid.indexer.runner.namespace": "druid"})
    return DruidK8sTaskOperator(task_id="load", **kwargs)


def test_task_spec_may_be_a_dict_a_json_string_or_an_absolute_json_path(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps({**TASK, "id": "from-file"}))
    assert operator(druid_task=TASK).druid_task_for(context()).type == "index_parallel"
    assert operator(druid_task=json.dumps({**TASK, "id": "x"})).druid_task_for(context()).id == "x"
    assert operator(druid_task=str(path)).druid_task_for(context()).id == "from-file"


def test_bad_task_json_names_the_argument() -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        operator(druid_task="{not json").druid_task_for(context())
    assert raised.value.field == "druid_task"


def test_derived_id_is_stable_per_task_instance_and_differs_across_runs_and_map_indexes() -> None:
    op = operator()
    first = op.druid_task_for(context()).id
    assert first == op.druid_task_for(context()).id
    assert first != op.druid_task_for(context(run_id="other")).id
    assert first != op.druid_task_for(context(map_index=3)).id
    assert operator(druid_task={**TASK, "id": "given"}).druid_task_for(context()).id == "given"


def test_properties_layer_file_then_airflow_config_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime.properties"
    runtime.write_text(
        "druid.indexer.runner.namespace=from-file\n"
        "druid.indexer.runner.debugJobs=true\n"
        "druid.indexer.runner.capacity=7\n"
        "druid.service=druid/overlord\n"
    )
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNTIME_PROPERTIES_FILE", str(runtime))
    monkeypatch.setenv(
        "AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES",
        json.dumps({"druid.indexer.runner.namespace": "from-conf", "druid.indexer.runner.capacity": "5"}),
    )
    config = operator(runner_properties={"druid.indexer.runner.capacity": 3}).runner_config()
    assert (config.namespace, config.debug_jobs, config.capacity) == ("from-conf", True, 3)


def test_bad_runner_properties_name_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", "[1, 2]")
    with pytest.raises(DruidK8sConfigError) as raised:
        operator().runner_config()
    assert raised.value.field == "[druid_k8s] runner_properties"


def test_pod_template_file_selects_the_custom_adapter() -> None:
    config = operator(pod_template_file="/templates/base.yaml").runner_config()
    assert config.adapter_type == "customTemplateAdapter"
    assert config.pod_template_base == "/templates/base.yaml"


def test_credentials_anywhere_in_the_spec_are_found() -> None:
    assert sorted(sensitive_values(TASK)) == ["AKIA-PLAIN", "s3cr3t"]
    assert sensitive_values({"type": "index", "keyColumn": 3, "dataSource": "wiki"}) == []


def test_ordinary_fields_that_mention_key_are_not_treated_as_secrets() -> None:
    spec = {"keyColumn": "id", "accessKeyId": "AKIA", "partitionKey": "x", "key": "k1", "apiKey": "a1"}
    assert sorted(sensitive_values(spec)) == ["a1", "k1"]


def test_rendering_registers_the_spec_credentials_with_the_secrets_masker() -> None:
    from airflow.sdk._shared.secrets_masker import redact

    op = operator(
        druid_task={**TASK, "spec": {"ioConfig": {"inputSource": {"accessKey": "AKIA-UNIT-98765"}}}}
    )
    op.render_template_fields(context={})  # type: ignore[arg-type]
    assert redact("peon says accessKey=AKIA-UNIT-98765") == "peon says accessKey=***"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("tasks/missing.json", "was not found in the template search path"),
        ('{"type": "{{ params.type "}', "does not parse"),
        ('{"type": "{{ missing.attribute }}"}', "cannot be rendered"),
    ],
)
def test_jinja_errors_in_the_task_name_the_argument_and_the_fix(template: str, problem: str) -> None:
    from airflow.sdk import DAG

    with DAG("jinja_errors", schedule=None):
        op = operator(druid_task=template)
    with pytest.raises(DruidK8sConfigError) as raised:
        op.render_template_fields(context={"params": {}})  # type: ignore[arg-type]
    assert raised.value.field == "druid_task"
    assert problem in raised.value.problem and raised.value.fix


def test_passwords_inside_connect_uris_are_found() -> None:
    spec = {
        "inputSource": {
            "type": "sql",
            "database": {
                "connectorConfig": {"connectURI": "jdbc:mysql://db:3306/shop?user=druid&password=Xy9-secret"}
            },
        },
        "other": "jdbc:postgresql://druid:pg-Secret1@db/shop",
        "plain": "https://example.com/path",
    }
    assert sorted(sensitive_values(spec)) == ["Xy9-secret", "pg-Secret1"]


# RunnerConfig fields by what they do in launch_mode="overlord", beside the Job-shaping ones the operator
# warns about: a new field must be put in one of them (test below), so the warning cannot fall behind.
USED_IN_EVERY_MODE = {
    "namespace",
    "disable_client_proxy",
    "max_task_duration",
    "k8s_job_launch_timeout",
    "k8s_task_pod_name_prefix",
    "druid_version",
}
THE_OVERLORDS_IN_EVERY_MODE = {"debug_jobs"}
NOT_THE_OPERATORS = {"task_cleanup_delay", "task_cleanup_interval", "capacity", "intermediary_storage_type"}


def test_every_runner_property_is_classified_for_the_overlord_mode_warning() -> None:
    shaping = {field.name for field in dataclasses.fields(RunnerConfig)} - (
        USED_IN_EVERY_MODE | THE_OVERLORDS_IN_EVERY_MODE | NOT_THE_OPERATORS | {"pod_templates_by_type"}
    )
    assert {druid_name_of(name) for name in shaping} == JOB_SHAPING_PROPERTIES
    assert job_shaping(["druid.indexer.runner.k8s.podTemplate.index_parallel"]) == [
        "druid.indexer.runner.k8s.podTemplate.index_parallel"
    ]
    assert job_shaping(druid_name_of(name) for name in USED_IN_EVERY_MODE | THE_OVERLORDS_IN_EVERY_MODE) == []


def warnings_of(op: DruidK8sTaskOperator, mode: str) -> list[str]:
    with capture_logs() as logs:
        op._warn_ignored_options(mode)
    return [str(entry["event"]) for entry in logs if entry["log_level"] == "warning"]


def test_in_overlord_mode_the_template_arguments_options_and_job_properties_set_in_airflow_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert warnings_of(operator(), "overlord") == []  # only the namespace set
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__OVERLORD_POD_SELECTOR", "component=overlord")
    monkeypatch.setenv(
        "AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES",
        json.dumps({"druid.indexer.runner.javaOptsArray": ["-Xmx1g"]}),
    )
    properties = {
        "druid.indexer.runner.namespace": "druid",
        "druid.indexer.runner.k8s.adapter.type": "overlordMultiContainer",
        "druid.indexer.runner.maxTaskDuration": "PT1H",
    }
    op = operator(runner_properties=properties, execution_config={"type": "default"})
    [warning] = warnings_of(op, "overlord")
    assert warning == (
        "launch_mode 'overlord': the Overlord builds the Job from its own pod template, adapter and runner "
        "properties, so these settings have no effect on it: execution_config; [druid_k8s] "
        "overlord_pod_selector; druid.indexer.runner.javaOptsArray (set in [druid_k8s] runner_properties); "
        "druid.indexer.runner.k8s.adapter.type (set in runner_properties). Configure the Overlord's runner "
        "instead"
    )
    assert warnings_of(op, "airflow") == []


def test_debug_jobs_set_in_airflow_is_named_in_every_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    debug_jobs = {"druid.indexer.runner.namespace": "druid", "druid.indexer.runner.debugJobs": "true"}
    for mode in ("airflow", "overlord"):
        [warning] = warnings_of(operator(runner_properties=debug_jobs), mode)
        assert warning.startswith("druid.indexer.runner.debugJobs (set in runner_properties) has no effect")
        assert "set it in the Overlord's runtime.properties" in warning
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES", json.dumps(debug_jobs))
    [warning] = warnings_of(operator(), "airflow")
    assert "(set in [druid_k8s] runner_properties)" in warning


def test_a_bad_launch_mode_names_the_argument_or_the_option_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(DruidK8sConfigError) as from_argument:
        operator(launch_mode="bogus")._requested_mode()
    assert from_argument.value.field == "launch_mode"
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__LAUNCH_MODE", "bogus")
    with pytest.raises(DruidK8sConfigError) as from_option:
        operator()._requested_mode()
    assert from_option.value.field == "[druid_k8s] launch_mode"
    assert "'bogus' is not a launch mode" in str(from_option.value)


def test_an_undefined_connection_of_the_option_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__DRUID_INGEST_CONN_ID", "druid_option_typo")
    with pytest.raises(DruidK8sConfigError) as raised:
        operator()._ingest_conn_id()
    assert raised.value.field == "[druid_k8s] druid_ingest_conn_id"
    assert "'druid_option_typo' is not defined" in str(raised.value)
    defined = {"conn_type": "druid", "host": "overlord"}
    monkeypatch.setenv("AIRFLOW_CONN_DRUID_OPTION_TYPO", json.dumps(defined))
    assert operator()._ingest_conn_id() == "druid_option_typo"
    assert operator(druid_ingest_conn_id="druid_argument")._ingest_conn_id() == "druid_argument"
