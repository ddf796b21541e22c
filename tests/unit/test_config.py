"""Runner properties: Druid's names and defaults, strings or native values, and clear refusals."""

from __future__ import annotations

import copy
import datetime
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest

from druid_k8s_provider.config import RunnerConfig, read_runtime_properties
from druid_k8s_provider.errors import DruidK8sConfigError

R = "druid.indexer.runner."
NS = {R + "namespace": "druid"}


def config_of(**runner_properties: Any) -> RunnerConfig:
    """A configuration from runner property suffixes (``maxTaskDuration=...``) plus the namespace."""
    return RunnerConfig.from_properties(
        {**NS, **{R + key: value for key, value in runner_properties.items()}}
    )


def test_druid_defaults() -> None:
    config = RunnerConfig.from_properties(NS)
    assert config.namespace == "druid"
    assert config.overlord_namespace == "druid"
    assert config.adapter_type == "overlordSingleContainer"
    assert config.sidecar_support is False
    assert config.primary_container_name is None
    assert config.kubexit_image == "karlkfi/kubexit:v0.3.2"
    assert (config.debug_jobs, config.disable_client_proxy, config.enable_tls_port) == (False, False, False)
    assert config.max_task_duration.total_seconds() == 4 * 3600
    assert config.task_cleanup_delay.total_seconds() == 2 * 86400
    assert config.task_cleanup_interval.total_seconds() == 600
    assert config.k8s_job_launch_timeout.total_seconds() == 3600
    assert config.java_opts_array == ()
    assert dict(config.labels) == {} and dict(config.annotations) == {}
    assert config.peon_monitors == ()
    assert config.grace_termination_period_seconds is None
    assert config.capacity == 2147483647
    assert config.cpu_core_in_micro == 1000
    assert config.pod_template_base is None and dict(config.pod_templates_by_type) == {}
    assert config.base_task_dir == "/tmp/persistent/task"
    assert config.intermediary_storage_type is None
    assert config.sidecar_termination == "kubexit"
    assert dict(config.sidecar_commands) == {}


def test_missing_namespace_is_refused_naming_the_property() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        RunnerConfig.from_properties({R + "debugJobs": "true"})
    assert caught.value.field == "druid.indexer.runner.namespace"


def test_string_values_as_in_runtime_properties() -> None:
    config = config_of(
        **{
            "k8s.adapter.type": "customTemplateAdapter",
            "primaryContainerName": "druid",
            "kubexitImage": "example/kubexit:1",
            "debugJobs": "TRUE",
            "disableClientProxy": "true",
            "maxTaskDuration": "PT10m",
            "taskCleanupDelay": "p1d",
            "taskCleanupInterval": "PT30S",
            "K8sjobLaunchTimeout": "PT5M",
            "javaOptsArray": '["-Xmx2g", "-XX:MaxDirectMemorySize=1g"]',
            "labels": '{"team": "ingest", "example.com/tier": "gold"}',
            "annotations": '{"owner": "a b c"}',
            "peonMonitors": '["org.apache.druid.java.util.metrics.JvmMonitor"]',
            "graceTerminationPeriodSeconds": "45",
            "capacity": "12",
            "cpuCoreInMicro": "2500",
            "k8s.podTemplate.base": "/t/base.yaml",
            "k8s.podTemplate.index_parallel": "/t/index.yaml",
            "overlordNamespace": "druid-system",
            "sidecarTermination": "native",
            "sidecarCommands": '{"proxy": ["/bin/proxy", "--serve"]}',
        }
    )
    assert config.adapter_type == "customTemplateAdapter"
    assert config.primary_container_name == "druid"
    assert config.kubexit_image == "example/kubexit:1"
    assert config.debug_jobs and config.disable_client_proxy
    assert config.max_task_duration.total_seconds() == 600
    assert config.task_cleanup_delay.total_seconds() == 86400
    assert config.task_cleanup_interval.total_seconds() == 30
    assert config.k8s_job_launch_timeout.total_seconds() == 300
    assert config.java_opts_array == ("-Xmx2g", "-XX:MaxDirectMemorySize=1g")
    assert dict(config.labels) == {"team": "ingest", "example.com/tier": "gold"}
    assert dict(config.annotations) == {"owner": "a b c"}
    assert config.peon_monitors == ("org.apache.druid.java.util.metrics.JvmMonitor",)
    assert config.grace_termination_period_seconds == 45
    assert (config.capacity, config.cpu_core_in_micro) == (12, 2500)
    assert config.pod_template_base == "/t/base.yaml"
    assert dict(config.pod_templates_by_type) == {"index_parallel": "/t/index.yaml"}
    assert config.overlord_namespace == "druid-system"
    assert config.sidecar_termination == "native"
    assert dict(config.sidecar_commands) == {"proxy": ("/bin/proxy", "--serve")}


def test_native_python_values() -> None:
    config = config_of(
        debugJobs=True,
        maxTaskDuration=datetime.timedelta(hours=2),
        taskCleanupDelay=pendulum.duration(days=1),
        javaOptsArray=["-Xmx1g"],
        labels={"team": "x"},
        graceTerminationPeriodSeconds=0,
        capacity=3,
        sidecarCommands={"proxy": ["run"]},
    )
    assert config.debug_jobs is True
    assert config.max_task_duration.total_seconds() == 7200
    assert config.task_cleanup_delay.total_seconds() == 86400
    assert config.java_opts_array == ("-Xmx1g",)
    assert dict(config.labels) == {"team": "x"}
    assert config.grace_termination_period_seconds == 0
    assert config.capacity == 3
    assert dict(config.sidecar_commands) == {"proxy": ("run",)}


@pytest.mark.parametrize("spelling", ["K8sjobLaunchTimeout", "k8sjobLaunchTimeout"])
def test_both_spellings_of_the_launch_timeout(spelling: str) -> None:
    assert config_of(**{spelling: "PT2M"}).k8s_job_launch_timeout.total_seconds() == 120


def test_both_spellings_at_once_are_refused() -> None:
    with pytest.raises(DruidK8sConfigError, match="keep only one"):
        config_of(K8sjobLaunchTimeout="PT2M", k8sjobLaunchTimeout="PT3M")


def test_sidecar_support_means_the_multi_container_adapter() -> None:
    config = config_of(sidecarSupport="true")
    assert config.adapter_type == "overlordMultiContainer"
    assert config.sidecar_support is True
    assert config_of(
        sidecarSupport="true", **{"k8s.adapter.type": "overlordMultiContainer"}
    ).adapter_type == ("overlordMultiContainer")


@pytest.mark.parametrize("adapter", ["overlordSingleContainer", "customTemplateAdapter"])
def test_sidecar_support_with_another_explicit_adapter_is_refused(adapter: str) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        config_of(sidecarSupport="true", **{"k8s.adapter.type": adapter})
    assert caught.value.field == R + "sidecarSupport"
    assert "overlordMultiContainer" in caught.value.fix


def test_direct_construction_still_refuses_an_empty_namespace() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        RunnerConfig(namespace="")
    assert caught.value.field == R + "namespace"


def test_non_runner_druid_properties_are_read() -> None:
    config = RunnerConfig.from_properties(
        {
            **NS,
            "druid.indexer.task.baseTaskDir": "/druid/task",
            "druid.enableTlsPort": "true",
            "druid.processing.intermediaryData.storage.type": "deepstore",
            "druid.host": "ignored",
            "druid.indexer.runner.type": "k8s",
        }
    )
    assert (config.base_task_dir, config.enable_tls_port, config.intermediary_storage_type) == (
        "/druid/task",
        True,
        "deepstore",
    )


BAD_VALUES = [
    ("debugJobs", "yes", "true or false"),
    ("debugJobs", 1, "true or false"),
    ("capacity", "many", "whole number"),
    ("capacity", "0", "between 1"),
    ("capacity", True, "whole number"),
    ("cpuCoreInMicro", "1.5", "whole number"),
    ("graceTerminationPeriodSeconds", "-1", "between 0"),
    ("maxTaskDuration", "4 hours", "ISO-8601"),
    ("maxTaskDuration", "PT", "ISO-8601"),
    ("maxTaskDuration", "PT0S", "ISO-8601"),
    ("maxTaskDuration", 3600, "ISO-8601"),
    ("maxTaskDuration", "2024-01-01", "ISO-8601"),
    ("taskCleanupDelay", "P1M", "P30D"),
    ("taskCleanupInterval", "P1Y", "P30D"),
    ("K8sjobLaunchTimeout", "-PT1H", "ISO-8601"),
    ("javaOptsArray", "-Xmx1g", "JSON like"),
    ("javaOptsArray", '["-Xmx1g", 2]', "JSON like"),
    ("javaOptsArray", '{"a": 1}', "JSON like"),
    ("peonMonitors", "[oops", "JSON like"),
    ("labels", '{"team": 1}', "quote every value"),
    ("labels", '{"team": "has space"}', "valid Kubernetes label"),
    ("labels", '{"bad key!": "x"}', "valid Kubernetes label"),
    ("labels", '{"team": "' + "x" * 64 + '"}', "valid Kubernetes label"),
    ("labels", '{"druid.k8s.peons": "false"}', "runner sets it"),
    ("annotations", '{"Bad/Key": "x"}', "annotation keys"),
    ("annotations", '{"task.id": "x"}', "runner sets it"),
    ("annotations", "[]", "JSON like"),
    ("k8s.adapter.type", "overlordMultiContainers", "one of"),
    ("k8s.adapter.type", "", "non-empty"),
    ("sidecarTermination", "sigterm", "kubexit"),
    ("sidecarCommands", '{"proxy": "run"}', "JSON like"),
    ("sidecarCommands", '{"proxy": []}', "JSON like"),
    ("namespace", "Druid_NS", "lowercase"),
    ("overlordNamespace", "", "non-empty"),
    ("k8s.podTemplate.index", "", "non-empty"),
    ("k8s.podTemplate.bse", "/t.yaml", "k8s.podTemplate.base"),
    ("k8s.podTemplate.index_paralel", "/t.yaml", "k8s.podTemplate.index_parallel"),
]


@pytest.mark.parametrize(("suffix", "value", "fix_mentions"), BAD_VALUES)
def test_bad_values_are_refused_naming_the_property_and_the_fix(
    suffix: str, value: Any, fix_mentions: str
) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        config_of(**{suffix: value})
    assert caught.value.field == R + suffix
    assert fix_mentions in caught.value.fix


def test_unknown_adapter_suggests_the_close_name() -> None:
    with pytest.raises(DruidK8sConfigError, match="did you mean 'overlordMultiContainer'"):
        config_of(**{"k8s.adapter.type": "overlordMultiContainers"})


def test_java_opts_string_is_refused_pointing_at_the_array() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        config_of(javaOpts="-Xmx1g")
    assert caught.value.field == R + "javaOpts"
    assert "javaOptsArray" in caught.value.fix


def test_misspelt_runner_property_is_refused_with_a_suggestion() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        config_of(maxTaskDurration="PT1H")
    assert caught.value.field == R + "maxTaskDurration"
    assert "did you mean 'druid.indexer.runner.maxTaskDuration'" in str(caught.value)


def test_templates_for_task_types_of_other_extensions_are_accepted() -> None:
    config = config_of(**{"k8s.podTemplate.my_extension_task": "/t/ext.yaml"})
    assert dict(config.pod_templates_by_type) == {"my_extension_task": "/t/ext.yaml"}


def test_merged_templates_are_checked_for_typos_too() -> None:
    with pytest.raises(DruidK8sConfigError, match="did you mean 'kill'"):
        config_of().merged(pod_templates_by_type={"kil": "/t.yaml"})


def test_key_without_druid_prefix_is_refused_with_the_full_name() -> None:
    with pytest.raises(DruidK8sConfigError, match=re.escape("did you mean 'druid.indexer.runner.debugJobs'")):
        RunnerConfig.from_properties({**NS, "debugJobs": "true"})


def test_other_runners_properties_in_an_overlord_file_are_ignored() -> None:
    config = config_of(
        type="k8s",
        taskAssignmentTimeout="PT5M",
        maxZnodeBytes="1000",
        **{"k8sAndWorker.runnerStrategy.type": "k8s"},
    )
    assert config.namespace == "druid"


def test_the_job_name_prefix_is_read() -> None:
    config = config_of(k8sTaskPodNamePrefix="Nightly_Orders", taskJoinTimeout="PT1M", logSaveTimeout="PT300S")
    assert config.k8s_task_pod_name_prefix == "Nightly_Orders"
    assert config_of(k8sTaskPodNamePrefix="").k8s_task_pod_name_prefix is None, (
        "empty means unset, as in Druid"
    )


@pytest.mark.parametrize("prefix", ["___", "-.-", ": _"])
def test_a_job_name_prefix_without_letters_or_digits_is_refused(prefix: str) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        config_of(k8sTaskPodNamePrefix=prefix)
    assert caught.value.field == "druid.indexer.runner.k8sTaskPodNamePrefix"
    assert "no letters or digits" in caught.value.problem


@pytest.mark.parametrize("version", ["30.0.0", "34.0.0", " 36.1.2 "])
def test_the_druid_version_is_a_plain_release(version: str) -> None:
    assert config_of(druidVersion=version).druid_version == version.strip()


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("34.0", "not a plain Druid release"),
        ("35.0.0-SNAPSHOT", "not a plain"),
        ("29.0.1", "older than 30.0.0"),
    ],
)
def test_a_druid_version_that_is_not_a_supported_release_is_refused(version: str, problem: str) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        config_of(druidVersion=version)
    assert caught.value.field == "druid.indexer.runner.druidVersion"
    assert problem in caught.value.problem


def test_merged_overrides_with_native_or_string_values_and_revalidates() -> None:
    base = config_of(debugJobs="false", labels='{"a": "b"}')
    merged = base.merged(debug_jobs="true", max_task_duration="PT1H", labels={"c": "d"})
    assert merged.debug_jobs is True
    assert merged.max_task_duration.total_seconds() == 3600
    assert dict(merged.labels) == {"c": "d"}
    assert base.debug_jobs is False, "the original is unchanged"
    with pytest.raises(DruidK8sConfigError) as caught:
        base.merged(max_task_duration="soon")
    assert caught.value.field == R + "maxTaskDuration"
    with pytest.raises(DruidK8sConfigError, match="did you mean 'debug_jobs'"):
        base.merged(debug_job=True)


def test_merged_namespace_moves_a_defaulted_overlord_namespace_along() -> None:
    assert config_of().merged(namespace="other").overlord_namespace == "other"
    explicit = config_of(overlordNamespace="druid-system")
    assert explicit.merged(namespace="other").overlord_namespace == "druid-system"


def test_merged_adapter_type_replaces_a_sidecar_support_switch() -> None:
    config = config_of(sidecarSupport="true").merged(adapter_type="customTemplateAdapter")
    assert (config.adapter_type, config.sidecar_support) == ("customTemplateAdapter", False)
    assert config_of().merged(sidecar_support=True).adapter_type == "overlordMultiContainer"


def test_config_mappings_are_read_only_but_copyable_and_hashable() -> None:
    config = config_of(labels='{"a": "b"}', sidecarCommands='{"p": ["x"]}')
    assert hash(config) == hash(config_of(labels='{"a": "b"}', sidecarCommands='{"p": ["x"]}'))
    with pytest.raises(TypeError, match="read-only"):
        config.labels["x"] = "y"  # type: ignore[index]
    assert copy.deepcopy(config) == config
    assert pickle.loads(pickle.dumps(config)) == config


def test_as_properties_round_trips() -> None:
    config = config_of(
        labels='{"a": "b"}',
        graceTerminationPeriodSeconds="10",
        sidecarCommands='{"p": ["x", "y"]}',
        javaOptsArray='["-Xmx3g"]',
        maxTaskDuration="PT90M",
        sidecarSupport="true",
        **{"k8s.podTemplate.kill": "/k.yaml"},
    )
    assert RunnerConfig.from_properties(config.as_properties()) == config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runtime.properties"
    path.write_text(text, encoding="utf-8")
    return path


def test_from_runtime_properties_reads_an_overlord_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(
        tmp_path,
        "# Overlord\n"
        "druid.service=druid/overlord\n"
        "druid.indexer.runner.type=k8s\n"
        "druid.indexer.runner.namespace=druid\n"
        'druid.indexer.runner.javaOptsArray=["-Xmx2g"]\n'
        "druid.indexer.runner.maxTaskDuration : PT2h\n"
        "druid.indexer.task.encapsulatedTask=true\n"
        "druid.indexer.task.baseTaskDir=/druid/task\n"
        "druid.processing.intermediaryData.storage.type=deepstore\n"
        "log4j.shutdownHookEnabled=true\n",
    )
    with caplog.at_level(logging.WARNING, logger="druid_k8s_provider.config"):
        config = RunnerConfig.from_runtime_properties(path)
    assert config.java_opts_array == ("-Xmx2g",)
    assert config.max_task_duration.total_seconds() == 7200
    assert config.base_task_dir == "/druid/task"
    assert not caplog.records


@pytest.mark.parametrize("storage_line", ["", "druid.processing.intermediaryData.storage.type=local\n"])
def test_warns_when_intermediary_data_is_not_in_deep_storage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, storage_line: str
) -> None:
    path = _write(tmp_path, "druid.indexer.runner.namespace=druid\n" + storage_line)
    with caplog.at_level(logging.WARNING, logger="druid_k8s_provider.config"):
        RunnerConfig.from_runtime_properties(path)
    assert any("deepstore" in record.getMessage() for record in caplog.records)


def test_typo_in_a_runtime_properties_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "druid.indexer.runner.namespace=druid\ndruid.indexer.runner.debugJob=true\n")
    with pytest.raises(DruidK8sConfigError, match=re.escape("did you mean 'druid.indexer.runner.debugJobs'")):
        RunnerConfig.from_runtime_properties(path)


def test_missing_runtime_properties_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.properties"
    with pytest.raises(DruidK8sConfigError) as caught:
        read_runtime_properties(missing)
    assert caught.value.field == str(missing)


def test_read_runtime_properties_handles_java_syntax(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.b = one \\\n  two\nc:3\n! comment\nd\\ e=unicode \\u00e9\n")
    assert read_runtime_properties(path) == {"a.b": "one two", "c": "3", "d e": "unicode é"}
