"""The rules of spec sections 3-5, one by one: what Druid's runner puts in a peon Job, and our refusals."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_job_builder_support import (
    KAFKA_TASK,
    KILL_TASK,
    REALTIME_TASK,
    build,
    config,
    container,
    env_of,
    overlord_pod,
    pod_template,
)

from druid_k8s_provider import naming
from druid_k8s_provider.adapters import custom_template
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.job_builder import (
    build_job,
    container_memory_bytes,
    decompress_task,
    load_pod_template,
    parse_human_readable_bytes,
    peon_job_name,
    split_java_opts,
)
from druid_k8s_provider.task import DruidTask

MULTI = {"k8s.adapter.type": "overlordMultiContainer"}
CUSTOM = {"k8s.adapter.type": "customTemplateAdapter"}


# --- Job level ---------------------------------------------------------------------------------------------


def test_job_spec_fields_use_druids_defaults() -> None:
    job = build(KILL_TASK, overlord_pod(), config())
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == naming.job_name(KILL_TASK["id"])
    assert job["metadata"]["namespace"] == "druid"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 14400
    assert job["spec"]["ttlSecondsAfterFinished"] == 172800


def test_job_spec_durations_follow_the_configuration() -> None:
    job = build(KILL_TASK, overlord_pod(), config(maxTaskDuration="PT30m", taskCleanupDelay="PT1H"))
    assert (job["spec"]["activeDeadlineSeconds"], job["spec"]["ttlSecondsAfterFinished"]) == (1800, 3600)


@pytest.mark.parametrize("adapter", [{}, MULTI, CUSTOM])
def test_job_and_pod_template_carry_labels_and_annotations(adapter: dict[str, str]) -> None:
    template = pod_template() if adapter == CUSTOM else overlord_pod()
    cfg = config(labels='{"team": "ingest"}', annotations='{"owner": "me"}', **adapter)
    job = build(KILL_TASK, template, cfg)
    task = DruidTask.from_spec(KILL_TASK)
    expected_labels = naming.peon_labels(task, {"team": "ingest"})
    if adapter == CUSTOM:
        expected_labels[naming.OVERLORD_NAMESPACE_LABEL] = "druid"
    expected_annotations = naming.peon_annotations(task, {"owner": "me"}, tls_enabled=False)
    assert job["metadata"]["labels"] == expected_labels
    assert job["metadata"]["annotations"] == expected_annotations
    pod_metadata = job["spec"]["template"]["metadata"]
    assert expected_labels.items() <= pod_metadata["labels"].items()
    assert expected_annotations.items() <= pod_metadata["annotations"].items()


def test_overlord_pod_labels_are_not_copied_to_peons() -> None:
    """The Overlord's Service selects app=druid,component=overlord: peons must not join it."""
    job = build(KILL_TASK, overlord_pod(), config())
    assert "component" not in job["spec"]["template"]["metadata"]["labels"]


def test_tls_annotation_follows_enable_tls_port() -> None:
    job = build(KILL_TASK, overlord_pod(), config(**{"druid.enableTlsPort": "true"}))
    assert job["metadata"]["annotations"]["tls.enabled"] == "true"


def test_same_inputs_give_the_same_job_byte_for_byte() -> None:
    first = build_job(KAFKA_TASK, overlord_pod(), config(**MULTI))
    second = build_job(copy.deepcopy(KAFKA_TASK), overlord_pod(), config(**MULTI))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


@pytest.mark.parametrize("adapter", [{}, MULTI, CUSTOM])
def test_the_template_is_not_modified_and_shares_nothing_with_the_job(adapter: dict[str, str]) -> None:
    template = pod_template() if adapter == CUSTOM else overlord_pod()
    before = copy.deepcopy(template)
    job = build_job(KILL_TASK, template, config(**adapter))
    assert template == before
    job_spec = job["spec"]["template"]["spec"]
    template_spec = template["template"]["spec"] if adapter == CUSTOM else template["spec"]
    job_spec["containers"][0]["env"].append({"name": "X", "value": "y"})
    job_spec["containers"][0].setdefault("volumeMounts", []).append({"name": "v", "mountPath": "/v"})
    assert template == before
    assert template_spec is not job_spec


def test_task_may_be_given_as_json_text_or_parsed() -> None:
    as_text = build(json.dumps(KILL_TASK), overlord_pod(), config())  # type: ignore[arg-type]
    as_task = build(DruidTask.from_spec(KILL_TASK), overlord_pod(), config())
    assert as_text == as_task


# --- section 3: the main container -------------------------------------------------------------------------


def test_single_container_keeps_only_the_primary_renamed_main() -> None:
    spec = build(KILL_TASK, overlord_pod(), config())["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["main"]
    assert spec["containers"][0]["image"] == "apache/druid:30.0.0"


def test_primary_container_name_moves_that_container_first() -> None:
    cfg = config(primaryContainerName="log-shipper", sidecarCommands='{"druid": ["/druid.sh"]}', **MULTI)
    spec = build(KILL_TASK, overlord_pod(), cfg)["spec"]
    names = [c["name"] for c in spec["template"]["spec"]["containers"]]
    assert names == ["main", "druid"]
    assert spec["template"]["spec"]["containers"][0]["image"] == "fluent/fluent-bit:3.0"


def test_unknown_primary_container_is_refused_listing_the_names() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(KILL_TASK, overlord_pod(), config(primaryContainerName="overlord"))
    assert caught.value.field == "druid.indexer.runner.primaryContainerName"
    assert "['druid', 'log-shipper']" in caught.value.problem
    assert "'druid'" in caught.value.fix


def test_probes_are_removed_and_ports_replaced() -> None:
    main = container(build(KILL_TASK, overlord_pod(), config()))
    assert not {"readinessProbe", "livenessProbe", "startupProbe"} & main.keys()
    assert main["ports"] == [
        {"name": "druid-tls-port", "containerPort": 8091, "protocol": "TCP"},
        {"name": "druid-port", "containerPort": 8100, "protocol": "TCP"},
    ]


@pytest.mark.parametrize(
    ("task", "base_task_dir", "version", "expected_args", "task_dir"),
    [
        (
            KILL_TASK,
            None,
            "30.0.0",
            "/peon.sh /tmp/persistent/task 1 --taskId kill_wikipedia_2024-01-01",
            None,
        ),
        (
            KILL_TASK,
            "/druid/task",
            "30.0.0",
            "/peon.sh /druid/task 1 --taskId kill_wikipedia_2024-01-01",
            None,
        ),
        (
            KILL_TASK,
            None,
            "33.0.0",
            "/peon.sh /tmp/persistent/task 1 --loadBroadcastDatasourceMode NONE "
            "--taskId kill_wikipedia_2024-01-01",
            None,
        ),
        (
            KAFKA_TASK,
            None,
            "31.0.0",
            "/peon.sh /tmp/persistent/task 1 --loadBroadcastSegments true --loadBroadcastDatasourceMode ALL "
            "--taskId index_kafka_events_0a1b2c3d",
            None,
        ),
        (
            KILL_TASK,
            None,
            None,
            "/peon.sh --loadBroadcastDatasourceMode NONE --taskId kill_wikipedia_2024-01-01",
            "/tmp/persistent/task/kill_wikipedia_2024-01-01",
        ),
        (
            REALTIME_TASK,
            "/druid/task/",
            "34.0.0",
            "/peon.sh --nodeType realtime --loadBroadcastSegments true --loadBroadcastDatasourceMode ALL "
            "--taskId index_realtime_rt_1",
            "/druid/task/index_realtime_rt_1",
        ),
    ],
)
def test_command_runs_peon_sh_with_the_tasks_flags(
    task: dict[str, Any],
    base_task_dir: str | None,
    version: str | None,
    expected_args: str,
    task_dir: str | None,
) -> None:
    extra = {"druid.indexer.task.baseTaskDir": base_task_dir} if base_task_dir else {}
    main = container(build(task, overlord_pod(), config(**extra), version))
    assert main["command"] == ["sh", "-c"]
    assert main["args"] == [expected_args]
    assert env_of(main)["TASK_DIR"] == (task_dir or base_task_dir or "/tmp/persistent/task")


def test_an_msq_worker_loads_broadcast_segments_as_in_druid() -> None:
    worker = {"type": "query_worker", "id": "query-1-worker0_0", "dataSource": "wiki"}
    main = container(build(worker, overlord_pod(), config()))
    assert main["args"] == [
        "/peon.sh --loadBroadcastSegments true --loadBroadcastDatasourceMode ALL --taskId query-1-worker0_0"
    ]


def test_a_task_id_the_shell_would_split_is_quoted_in_the_command() -> None:
    task = {**KILL_TASK, "id": "kill wiki $HOME"}
    main = container(build(task, overlord_pod(), config()))
    assert main["args"] == ["/peon.sh --loadBroadcastDatasourceMode NONE --taskId 'kill wiki $HOME'"]


def test_the_task_context_chooses_the_broadcast_loading_mode() -> None:
    task = {**KAFKA_TASK, "context": {"broadcastDatasourceLoadingMode": "only_required"}}
    main = container(build(task, overlord_pod(), config()))
    assert "--loadBroadcastDatasourceMode ONLY_REQUIRED --taskId" in main["args"][0]
    bad = {**KAFKA_TASK, "context": {"broadcastDatasourceLoadingMode": "SOME"}}
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(bad, overlord_pod(), config())
    assert caught.value.field == "task.context.broadcastDatasourceLoadingMode"


CLICKSTREAM = {
    "type": "index_parallel",
    "id": "index_parallel_web_clickstream_events_eu_region_hourly_rollup_2024-05-01T00:00:00.000Z_try1",
    "dataSource": "web_clickstream_events",
}


@pytest.mark.parametrize("adapter", [{}, CUSTOM])
def test_the_pod_name_prefix_names_the_job_and_leaves_labels_alone(adapter: dict[str, str]) -> None:
    cfg = config(**adapter, k8sTaskPodNamePrefix="Nightly_Orders")
    template = pod_template() if adapter else overlord_pod()
    job = build(CLICKSTREAM, template, cfg)
    assert job["metadata"]["name"] == "nightlyorders-5a8b23807b2132a88feef67ffd87787b"
    assert peon_job_name(CLICKSTREAM["id"], cfg) == job["metadata"]["name"]
    assert job["metadata"]["labels"]["druid.task.id"] == naming.id_label_value(CLICKSTREAM["id"])
    assert job["metadata"]["annotations"]["task.id"] == CLICKSTREAM["id"]
    if not adapter:
        assert job["spec"]["template"]["spec"]["hostname"] == job["metadata"]["name"]


def test_druid_before_33_ignores_the_pod_name_prefix_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(k8sTaskPodNamePrefix="Nightly_Orders")
    with caplog.at_level(logging.WARNING):
        job = build(CLICKSTREAM, overlord_pod(), cfg, "32.0.0")
    assert job["metadata"]["name"] == naming.job_name(CLICKSTREAM["id"])
    assert peon_job_name(CLICKSTREAM["id"], cfg, druid_version="32.0.0") == job["metadata"]["name"]
    assert "k8sTaskPodNamePrefix is ignored" in caplog.text


def test_a_druid_version_before_30_is_refused_and_a_snapshot_gets_the_current_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(KILL_TASK, overlord_pod(), config(), druid_version="29.0.1")
    assert caught.value.field == "druid_version"
    with caplog.at_level(logging.WARNING):
        snapshot = build(KILL_TASK, overlord_pod(), config(), "37.0.0-SNAPSHOT")
    assert snapshot == build(KILL_TASK, overlord_pod(), config())
    assert "'37.0.0-SNAPSHOT' is not a plain X.Y.Z release" in caplog.text


def test_build_job_still_takes_task_template_and_config_positionally() -> None:
    assert build_job(KILL_TASK, overlord_pod(), config()) == build(KILL_TASK, overlord_pod(), config())


def test_env_carries_the_task_and_the_pod_identity() -> None:
    main = container(build(KAFKA_TASK, overlord_pod(), config()))
    names = [var["name"] for var in main["env"]]
    assert names[-6:] == ["TASK_DIR", "TASK_JSON", "JAVA_OPTS", "druid_host", "HOSTNAME", "TASK_ID"]
    env = env_of(main)
    assert decompress_task(env["TASK_JSON"]) == KAFKA_TASK
    assert env["druid_host"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["HOSTNAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["TASK_ID"] == KAFKA_TASK["id"]
    assert env["DRUID_XMX"] == "1g", "the template's other env is kept"


def test_task_json_holds_a_derived_id() -> None:
    task = DruidTask.from_spec({"type": "kill", "dataSource": "w"}, default_id="kill_w_airflow_1")
    env = env_of(container(build(task, overlord_pod(), config())))
    assert decompress_task(env["TASK_JSON"])["id"] == "kill_w_airflow_1"


def test_env_vars_the_runner_sets_replace_template_ones_of_the_same_name() -> None:
    pod = overlord_pod()
    pod["spec"]["containers"][0]["env"].append({"name": "HOSTNAME", "value": "overlord"})
    names = [var["name"] for var in container(build(KILL_TASK, pod, config()))["env"]]
    assert names.count("HOSTNAME") == 1


@pytest.mark.parametrize(("tls", "tls_port", "enabled"), [("false", "-1", "false"), ("true", "8091", "true")])
@pytest.mark.parametrize(
    ("version", "task_dir_option"),
    [("33.0.0", []), (None, ["-Ddruid.indexer.task.baseTaskDir=/tmp/persistent/task"])],
)
def test_java_options_in_druids_order(
    tls: str, tls_port: str, enabled: str, version: str | None, task_dir_option: list[str]
) -> None:
    cfg = config(javaOptsArray='["-Xms1g", "-Xmx3g"]', **{"druid.enableTlsPort": tls})
    main = container(build(KAFKA_TASK, overlord_pod(), cfg, version))
    assert env_of(main)["JAVA_OPTS"] == " ".join(
        [
            "-Xms1g",
            "-Xmx3g",
            "-Xmx2g",
            '-Dlabel="two words"',
            *task_dir_option,
            "-Ddruid.port=8100",
            "-Ddruid.plaintextPort=8100",
            f"-Ddruid.tlsPort={tls_port}",
            f"-Ddruid.task.executor.tlsPort={tls_port}",
            f"-Ddruid.task.executor.enableTlsPort={enabled}",
        ]
    )


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", []),
        ("  -Xmx1g   -Da=b ", ["-Xmx1g", "-Da=b"]),
        ('-Dx="a b" -Dy=c', ['-Dx="a b"', "-Dy=c"]),
        ("-Da\t-Db\n-Dc", ["-Da", "-Db", "-Dc"]),
        ('"-Dq=1 2"', ['"-Dq=1 2"']),
    ],
)
def test_task_java_opts_split_on_white_space_outside_quotes(text: str, tokens: list[str]) -> None:
    assert split_java_opts(text) == tokens


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1", 1),
        ("1g", 1_000_000_000),
        ("2G", 2_000_000_000),
        ("512m", 512_000_000),
        ("64k", 64_000),
        ("1t", 1_000_000_000_000),
        ("1KiB", 1024),
        ("1MiB", 1024**2),
        ("3GiB", 3 * 1024**3),
        ("1TiB", 1024**4),
        ("2gib", 2 * 1024**3),
    ],
)
def test_human_readable_bytes_as_druid_reads_them(text: str, size: int) -> None:
    assert parse_human_readable_bytes(text) == size


@pytest.mark.parametrize("text", ["", "g", "1.5g", "1gb", "1Ki", "-1g", "1 g", "\u0661g"])
def test_malformed_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_human_readable_bytes(text)


@pytest.mark.parametrize(
    ("options", "memory"),
    [
        ([], 2_400_000_000),
        (["-Xmx2g"], 4_800_000_000),
        (["-Xmx1g", "-Xmx4g"], 9_600_000_000),
        (["-Xmx2g", "-XX:MaxDirectMemorySize=1g"], 3_600_000_000),
        (["-XX:MaxDirectMemorySize=500m"], 1_800_000_000),
        (["-Xmx1GiB"], int(2 * 1024**3 * 1.2)),
        (["-Xmx1000000001"], int(2_000_000_002 * 1.2)),
    ],
)
def test_container_memory_is_1_2_times_heap_plus_direct(options: list[str], memory: int) -> None:
    assert container_memory_bytes(options) == memory


def test_resources_set_cpu_and_memory_and_keep_other_keys() -> None:
    cfg = config(javaOptsArray='["-Xmx2g"]', cpuCoreInMicro="1500")
    resources = container(build(KILL_TASK, overlord_pod(), cfg))["resources"]
    assert resources["requests"] == {"cpu": "1500m", "memory": "4800000000", "ephemeral-storage": "10Gi"}
    assert resources["limits"] == {"cpu": "1500m", "memory": "4800000000"}


def test_no_xmx_gives_2400000000_bytes() -> None:
    pod = overlord_pod()
    del pod["spec"]["containers"][0]["resources"]
    resources = container(build(KILL_TASK, pod, config()))["resources"]
    assert resources == {
        "requests": {"cpu": "1000m", "memory": "2400000000"},
        "limits": {"cpu": "1000m", "memory": "2400000000"},
    }


@pytest.mark.parametrize(
    "java_opts_array",
    [
        '["-Xms2g -Xmx4g -XX:MaxDirectMemorySize=1g"]',
        '["-Xms2g", "-Xmx4g", "-XX:MaxDirectMemorySize=1g"]',
        '["-Xms2g\\t-Xmx4g", "-XX:MaxDirectMemorySize=1g -Dx=y"]',
    ],
)
def test_an_element_holding_several_options_is_read_for_sizing(java_opts_array: str) -> None:
    """Issue 17 item 8: every javaOptsArray element is split on white space before sizes are read, as the
    peon's JVM sees the options once peon.sh's shell has split JAVA_OPTS."""
    resources = container(build(KILL_TASK, overlord_pod(), config(javaOptsArray=java_opts_array)))[
        "resources"
    ]
    assert resources["requests"]["memory"] == "6000000000"
    assert resources["limits"]["memory"] == "6000000000"


def test_task_context_xmx_sizes_the_container() -> None:
    resources = container(build(KAFKA_TASK, overlord_pod(), config(javaOptsArray='["-Xmx1g"]')))["resources"]
    assert resources["limits"]["memory"] == "4800000000"


@pytest.mark.parametrize(
    ("cfg", "task", "field_part"),
    [
        ({"javaOptsArray": '["-Xmxlots"]'}, KILL_TASK, "javaOptsArray"),
        (
            {},
            {**KILL_TASK, "context": {"druid.indexer.runner.javaOpts": "-XX:MaxDirectMemorySize=1.5g"}},
            "context",
        ),
    ],
)
def test_unreadable_heap_size_is_refused_naming_where_it_came_from(
    cfg: dict[str, str], task: dict[str, Any], field_part: str
) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(task, overlord_pod(), config(**cfg))
    assert field_part in caught.value.field
    assert "2GiB" in caught.value.fix


def test_peon_monitors_replace_the_overlords_monitors() -> None:
    cfg = config(peonMonitors='["org.apache.druid.java.util.metrics.JvmMonitor", "a.B"]')
    main = container(build(KILL_TASK, overlord_pod(), cfg))
    monitors = [var for var in main["env"] if var["name"] == "druid_monitoring_monitors"]
    assert monitors == [
        {
            "name": "druid_monitoring_monitors",
            "value": '["org.apache.druid.java.util.metrics.JvmMonitor","a.B"]',
        }
    ]


def test_without_peon_monitors_the_overlords_monitors_stay() -> None:
    env = env_of(container(build(KILL_TASK, overlord_pod(), config())))
    assert env["druid_monitoring_monitors"] == '["org.apache.druid.OverlordMonitor"]'


def test_pod_spec_rules() -> None:
    job = build(KILL_TASK, overlord_pod(), config())
    spec = job["spec"]["template"]["spec"]
    assert "nodeName" not in spec
    assert spec["restartPolicy"] == "Never"
    assert spec["hostname"] == job["metadata"]["name"]
    assert spec["terminationGracePeriodSeconds"] == 60, "unset: the template's value is kept"
    for kept in ("serviceAccountName", "securityContext", "tolerations", "volumes", "initContainers"):
        assert spec[kept] == overlord_pod()["spec"][kept]
    assert container(job)["volumeMounts"] == [{"name": "conf", "mountPath": "/opt/druid/conf"}]


def test_grace_period_when_configured() -> None:
    spec = build(KILL_TASK, overlord_pod(), config(graceTerminationPeriodSeconds="5"))["spec"]["template"][
        "spec"
    ]
    assert spec["terminationGracePeriodSeconds"] == 5


def test_ephemeral_containers_of_the_overlord_are_dropped() -> None:
    pod = overlord_pod()
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox"}]
    assert "ephemeralContainers" not in build(KILL_TASK, pod, config())["spec"]["template"]["spec"]


def test_a_pod_listed_by_the_api_without_kind_is_accepted() -> None:
    pod = overlord_pod()
    del pod["kind"], pod["apiVersion"]
    assert build(KILL_TASK, pod, config())["kind"] == "Job"


# --- section 4: sidecars -----------------------------------------------------------------------------------


def test_kubexit_wiring() -> None:
    job = build(KILL_TASK, overlord_pod(), config(**MULTI, kubexitImage="example/kubexit:9"))
    spec = job["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["main", "log-shipper"]
    assert spec["volumes"][-2:] == [
        {"name": "graveyard", "emptyDir": {"medium": "Memory"}},
        {"name": "kubexit", "emptyDir": {}},
    ]
    for c in spec["containers"]:
        assert c["volumeMounts"][-2:] == [
            {"name": "graveyard", "mountPath": "/graveyard"},
            {"name": "kubexit", "mountPath": "/kubexit"},
        ]
        env = env_of(c)
        assert (env["KUBEXIT_NAME"], env["KUBEXIT_GRAVEYARD"]) == (c["name"], "/graveyard")
        assert c["command"] == ["/bin/sh", "-c"]
    assert "KUBEXIT_DEATH_DEPS" not in env_of(spec["containers"][0])
    assert env_of(spec["containers"][1])["KUBEXIT_DEATH_DEPS"] == "main"
    assert spec["initContainers"] == [
        overlord_pod()["spec"]["initContainers"][0],
        {
            "name": "kubexit",
            "image": "example/kubexit:9",
            "command": ["cp", "/bin/kubexit", "/kubexit/kubexit"],
            "volumeMounts": [{"name": "kubexit", "mountPath": "/kubexit"}],
        },
    ]


def test_kubexit_commands_with_exact_escaping() -> None:
    spec = build(KILL_TASK, overlord_pod(), config(**MULTI))["spec"]["template"]["spec"]
    main, sidecar = spec["containers"]
    assert main["args"] == [
        "/kubexit/kubexit /bin/sh -c "
        '"/peon.sh --loadBroadcastDatasourceMode NONE --taskId kill_wikipedia_2024-01-01"'
    ]
    assert sidecar["args"] == [
        "/kubexit/kubexit /bin/sh -c "
        '"/fluent-bit/bin/fluent-bit -c /etc/\\"fluent\\"/bit.conf -R C:\\\\parsers" || true'
    ]


def test_sidecar_without_command_is_refused_naming_it_and_both_fixes() -> None:
    pod = overlord_pod()
    del pod["spec"]["containers"][1]["command"]
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(KILL_TASK, pod, config(**MULTI))
    assert caught.value.field == "template.spec.containers[log-shipper].command"
    assert "'log-shipper'" in caught.value.problem
    assert "druid.indexer.runner.sidecarCommands" in caught.value.fix
    assert "sidecarTermination=native" in caught.value.fix


def test_sidecar_command_override_is_used_for_a_sidecar_without_command() -> None:
    pod = overlord_pod()
    del pod["spec"]["containers"][1]["command"]
    cfg = config(**MULTI, sidecarCommands='{"log-shipper": ["/entry", "point"]}')
    sidecar = container(build(KILL_TASK, pod, cfg), "log-shipper")
    assert sidecar["args"] == [
        '/kubexit/kubexit /bin/sh -c "/entry point -c /etc/\\"fluent\\"/bit.conf -R C:\\\\parsers" || true'
    ]


def test_sidecar_command_override_for_an_unknown_container_is_refused() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(KILL_TASK, overlord_pod(), config(**MULTI, sidecarCommands='{"log-shiper": ["/x"]}'))
    assert caught.value.field == "druid.indexer.runner.sidecarCommands"
    assert "log-shipper" in caught.value.problem


def test_kubexit_volume_name_clash_is_refused() -> None:
    pod = overlord_pod()
    pod["spec"]["volumes"].append({"name": "kubexit", "emptyDir": {}})
    with pytest.raises(DruidK8sConfigError, match="already has a volume"):
        build_job(KILL_TASK, pod, config(**MULTI))


def test_native_sidecars_become_restartable_init_containers() -> None:
    pod = overlord_pod()
    del pod["spec"]["containers"][1]["command"]  # native sidecars need no command
    spec = build(KILL_TASK, pod, config(**MULTI, sidecarTermination="native"))["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["main"]
    assert spec["initContainers"] == [
        overlord_pod()["spec"]["initContainers"][0],
        {**pod["spec"]["containers"][1], "restartPolicy": "Always"},
    ]
    assert [v["name"] for v in spec["volumes"]] == ["conf"]
    main = spec["containers"][0]
    assert main["command"] == ["sh", "-c"]
    assert main["args"] == ["/peon.sh --loadBroadcastDatasourceMode NONE --taskId kill_wikipedia_2024-01-01"]
    assert not any(var["name"].startswith("KUBEXIT") for var in main["env"])


def test_sidecar_support_switch_keeps_sidecars() -> None:
    spec = build(KILL_TASK, overlord_pod(), config(sidecarSupport="true"))["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["main", "log-shipper"]


# --- template validation -----------------------------------------------------------------------------------


def _without_containers(pod: dict[str, Any]) -> dict[str, Any]:
    pod["spec"]["containers"] = []
    return pod


def _with(pod: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    target = pod
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return pod


BAD_TEMPLATES = [
    ("a pod", "template", "dict in API form"),
    (_with(overlord_pod(), ("kind",), "Deployment"), "template.kind", "kind: Pod"),
    (pod_template(), "template.kind", "kind: Pod"),
    (_with(overlord_pod(), ("apiVersion",), "v2"), "template.apiVersion", "apiVersion: v1"),
    ({"kind": "Pod"}, "template.spec", "'spec'"),
    (_without_containers(overlord_pod()), "template.spec.containers", "at least one container"),
    (_with(overlord_pod(), ("spec", "containers"), [{"image": "x"}]), "template.spec.containers[0]", "name"),
    (
        _with(overlord_pod(), ("spec", "containers"), [{"name": "a"}, {"name": "a"}]),
        "template.spec.containers[a]",
        "own name",
    ),
    (_with(overlord_pod(), ("spec", "service_account_name"), "x"), "template.spec", "camelCase"),
]


@pytest.mark.parametrize(("template", "field", "fix_mentions"), BAD_TEMPLATES)
def test_bad_overlord_templates_are_refused(template: Any, field: str, fix_mentions: str) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(KILL_TASK, template, config())
    assert caught.value.field == field
    assert fix_mentions in caught.value.fix


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (overlord_pod(), "template.kind"),
        (_with(pod_template(), ("template",), None), "template.template"),
        (_with(pod_template(), ("template", "spec", "containers"), []), "template.template.spec.containers"),
    ],
)
def test_bad_pod_templates_are_refused(template: Any, field: str) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(KILL_TASK, template, config(**CUSTOM))
    assert caught.value.field == field


def test_task_without_type_is_refused_before_building() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job({"id": "x"}, overlord_pod(), config())
    assert caught.value.field == "task.type"


# --- section 5: custom template adapter --------------------------------------------------------------------


def test_custom_template_keeps_containers_and_adds_task_env() -> None:
    job = build(KAFKA_TASK, pod_template(), config(**CUSTOM), "30.0.0")
    spec = job["spec"]["template"]["spec"]
    main = spec["containers"][0]
    assert main["command"] == ["sh", "-c", "/peon.sh /druid/data 1"], "kept as written"
    assert main["env"] == [
        {"name": "CUSTOM_ENV", "value": "kept"},
        {"name": "TASK_DIR", "value": "/tmp/persistent/task"},
        {"name": "TASK_ID", "value": KAFKA_TASK["id"]},
        {"name": "LOAD_BROADCAST_SEGMENTS", "value": "true"},
        {"name": "TASK_JSON", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['task']"}}},
    ]
    assert spec["serviceAccountName"] == "druid-peon"
    pod_metadata = job["spec"]["template"]["metadata"]
    assert decompress_task(pod_metadata["annotations"]["task"]) == KAFKA_TASK
    assert pod_metadata["labels"]["tier"] == "peon"
    assert pod_metadata["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "task" not in job["metadata"]["annotations"], "the payload travels once, on the pod"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 14400)


def test_custom_template_ignores_java_opts_array_as_druid_does_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 17 item 3: Druid's PodTemplateTaskAdapter sets no JAVA_OPTS (apache/druid issue 19385 and PR
    19364, which made peon.sh read jvm.config instead); the option has no effect, so it is named once."""
    custom_template._warned.clear()
    cfg = config(
        **CUSTOM, javaOptsArray='["-Xms2g","-Xmx2g","-XX:MaxDirectMemorySize=1g"]', cpuCoreInMicro="2000"
    )
    with caplog.at_level(logging.WARNING, logger="druid_k8s_provider.adapters.custom_template"):
        first = build(KILL_TASK, pod_template(), cfg)
        build(KILL_TASK, pod_template(), cfg)
    main = first["spec"]["template"]["spec"]["containers"][0]
    assert "JAVA_OPTS" not in env_of(main)
    assert "resources" not in main, "the template decides resources"
    warnings = [record.getMessage() for record in caplog.records]
    assert sum("druid.indexer.runner.javaOptsArray has no effect" in w for w in warnings) == 1
    assert sum("druid.indexer.runner.cpuCoreInMicro has no effect" in w for w in warnings) == 1
    assert "customTemplateAdapter" in warnings[0]


def test_custom_template_without_overlord_only_options_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    custom_template._warned.clear()
    with caplog.at_level(logging.WARNING, logger="druid_k8s_provider.adapters.custom_template"):
        build(KILL_TASK, pod_template(), config(**CUSTOM))
    assert not caplog.records


def test_custom_template_batch_task_does_not_load_broadcast_segments() -> None:
    main = build(KILL_TASK, pod_template(), config(**CUSTOM))["spec"]["template"]["spec"]["containers"][0]
    assert env_of(main)["LOAD_BROADCAST_SEGMENTS"] == "false"


def test_custom_template_primary_container_is_named_main() -> None:
    template = pod_template()
    template["template"]["spec"]["containers"].insert(0, {"name": "proxy", "image": "envoy"})
    template["template"]["spec"]["containers"][1]["name"] = "druid"
    job = build(KILL_TASK, template, config(**CUSTOM, primaryContainerName="druid"))
    assert [c["name"] for c in job["spec"]["template"]["spec"]["containers"]] == ["main", "proxy"]


def test_custom_template_sidecars_are_kept_as_written_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    template = pod_template()
    template["template"]["spec"]["containers"].append({"name": "proxy", "image": "envoy"})
    with caplog.at_level(logging.WARNING, logger="druid_k8s_provider.job_builder"):
        spec = build(KILL_TASK, template, config(**CUSTOM))["spec"]["template"]["spec"]
    assert spec["containers"][1] == {"name": "proxy", "image": "envoy"}
    assert "sidecarTermination=native" in caplog.text and "'proxy'" in caplog.text


def test_custom_template_with_native_sidecars() -> None:
    template = pod_template()
    template["template"]["spec"]["containers"].append({"name": "proxy", "image": "envoy"})
    spec = build(KILL_TASK, template, config(**CUSTOM, sidecarTermination="native"))["spec"]["template"][
        "spec"
    ]
    assert [c["name"] for c in spec["containers"]] == ["main"]
    assert spec["initContainers"] == [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]


def _big_task(size: int) -> dict[str, Any]:
    """A task whose JSON does not compress: inline data of ``size`` random-looking characters."""
    import random

    rng = random.Random(7)
    data = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))
    return {**KILL_TASK, "inline": data}


def test_custom_template_payload_over_128_kib_is_refused_pointing_at_deep_storage() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(_big_task(200_000), pod_template(), config(**CUSTOM))
    assert caught.value.field == "task"
    assert "128 KiB" in caught.value.problem
    assert "deep storage" in caught.value.fix


def test_env_payload_over_128_kib_is_refused_pointing_at_deep_storage() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        build_job(_big_task(200_000), overlord_pod(), config())
    assert caught.value.field == "task"
    assert "deep storage" in caught.value.fix


def test_a_payload_just_under_the_limit_is_accepted() -> None:
    job = build(_big_task(60_000), pod_template(), config(**CUSTOM))
    assert (
        decompress_task(job["spec"]["template"]["metadata"]["annotations"]["task"])["id"] == KILL_TASK["id"]
    )


# --- load_pod_template -------------------------------------------------------------------------------------


def _write_template(tmp_path: Path, name: str, image: str) -> str:
    template = pod_template()
    template["template"]["spec"]["containers"][0]["image"] = image
    path = tmp_path / name
    import yaml

    path.write_text(yaml.safe_dump(template), encoding="utf-8")
    return str(path)


def test_load_pod_template_prefers_the_task_types_file(tmp_path: Path) -> None:
    base = _write_template(tmp_path, "base.yaml", "druid:base")
    kill = _write_template(tmp_path, "kill.yaml", "druid:kill")
    cfg = config(**CUSTOM, **{"k8s.podTemplate.base": base, "k8s.podTemplate.kill": kill})
    assert load_pod_template(cfg, DruidTask.from_spec(KILL_TASK))["template"]["spec"]["containers"][0][
        "image"
    ] == ("druid:kill")
    loaded = load_pod_template(cfg, DruidTask.from_spec(KAFKA_TASK))
    assert loaded["template"]["spec"]["containers"][0]["image"] == "druid:base"
    build(KAFKA_TASK, loaded, cfg)


def test_without_a_base_template_even_a_task_with_its_own_template_is_refused(tmp_path: Path) -> None:
    """Issue 17 item 2: Druid refuses the adapter itself when k8s.podTemplate.base is missing."""
    kafka_template = tmp_path / "kafka.yaml"
    kafka_template.write_text(yaml.safe_dump(pod_template()), encoding="utf-8")
    cfg = config(**CUSTOM, **{"k8s.podTemplate.index_kafka": str(kafka_template)})
    for task in (KAFKA_TASK, KILL_TASK):
        with pytest.raises(DruidK8sConfigError) as caught:
            load_pod_template(cfg, DruidTask.from_spec(task))
        assert caught.value.field == "druid.indexer.runner.k8s.podTemplate.base"
        assert "druid.indexer.runner.k8s.podTemplate.base" in caught.value.fix


def test_load_pod_template_without_any_template_names_the_base_property() -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        load_pod_template(config(**CUSTOM), DruidTask.from_spec(KILL_TASK))
    assert caught.value.field == "druid.indexer.runner.k8s.podTemplate.base"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("a: [unclosed", "not valid YAML"),
        ("- a list", "no YAML mapping"),
        ("apiVersion: v1\nkind: Pod\nspec: {}\n", "not a PodTemplate"),
    ],
)
def test_load_pod_template_errors_name_the_property(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "kill.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    templates = {"k8s.podTemplate.kill": str(path), "k8s.podTemplate.base": str(tmp_path / "base.yaml")}
    with pytest.raises(DruidK8sConfigError) as caught:
        load_pod_template(config(**CUSTOM, **templates), DruidTask.from_spec(KILL_TASK))
    assert "druid.indexer.runner.k8s.podTemplate.kill" in caught.value.field
    assert problem in caught.value.problem


# --- properties ------------------------------------------------------------------------------------------

_DRUID_ID = st.text(min_size=1, max_size=200).filter(
    lambda text: (
        not text.startswith(".")
        and "/" not in text
        and all(c == " " or (c.isprintable() and not c.isspace()) for c in text)
    )
)


@settings(max_examples=60, deadline=None)
@given(task_id=_DRUID_ID, task_type=st.text(min_size=1, max_size=80), data_source=st.text(max_size=300))
def test_any_task_gives_a_job_kubernetes_accepts(task_id: str, task_type: str, data_source: str) -> None:
    if not task_type.strip():
        task_type = "kill"
    job = build({"id": task_id, "type": task_type, "dataSource": data_source}, overlord_pod(), config())
    name = job["metadata"]["name"]
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        for key, value in labels.items():
            assert naming.label_key_problem(key) is None
            assert naming.label_value_problem(value) is None, (key, value)
    assert job["metadata"]["annotations"]["task.id"] == task_id


@pytest.mark.parametrize(
    ("properties", "version", "expected"),
    [
        ({**CUSTOM, "overlordNamespace": "druid-system"}, "33.0.0", "druid-system"),
        (CUSTOM, "35.0.0", "druid"),
        ({**CUSTOM, "overlordNamespace": "druid-system"}, "32.0.0", None),
        ({"overlordNamespace": "druid-system"}, "35.0.0", None),
    ],
)
def test_pod_template_jobs_carry_the_overlord_namespace_its_restore_looks_for(
    properties: dict[str, str], version: str, expected: str | None
) -> None:
    """Druid 33's pod template adapter labels Job and pod; an Overlord with ``overlordNamespace`` set only
    adopts Jobs with its namespace there, so a Job without it would be missed after a restart."""
    cfg = config(**properties)
    template = pod_template() if properties.get("k8s.adapter.type") else overlord_pod()
    job = build(CLICKSTREAM, template, cfg, version)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels.get(naming.OVERLORD_NAMESPACE_LABEL) == expected
