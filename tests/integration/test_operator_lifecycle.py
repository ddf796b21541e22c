"""DruidK8sTaskOperator end to end against the emulated cluster over real HTTP.

Each test asserts what a user sees: the Airflow task's result or error, the XCom summary, the peon's log
lines in the task log, the Jobs left in the cluster and the API calls made (from the emulator's metrics).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from structlog.testing import capture_logs

from druid_k8s_provider.errors import DruidK8sConfigError, JobFailed, JobLaunchTimeout
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits, never_exits, oom_killed
from druid_k8s_provider.triggers.overlord_task import DruidOverlordTaskTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NAMESPACE = "druid"
PEON_LINES = ["peon starting", "ingesting 3 rows", "peon done"]
TASK = {"type": "index_parallel", "spec": {"dataSchema": {"dataSource": "wikipedia"}}}


class FakeTaskInstance:
    """The parts of Airflow's RuntimeTaskInstance the operator uses, with the API server's answer to
    "what state is this task instance in" under the test's control."""

    def __init__(self, run_id: str = "manual__1", state_on_server: str = "running") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "druid_dag", "ingest", run_id, -1
        self.state_on_server = state_on_server
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def get_task_states(self, **query: Any) -> dict[str, dict[str, str]]:
        assert query["task_ids"] == [self.task_id] and query["run_ids"] == [self.run_id]
        return {self.run_id: {self.task_id: self.state_on_server}}


def operator(**kwargs: Any) -> DruidK8sTaskOperator:
    properties = {"druid.indexer.runner.namespace": NAMESPACE, **kwargs.pop("properties", {})}
    kwargs.setdefault("druid_task", TASK)
    return DruidK8sTaskOperator(
        task_id="ingest",
        runner_properties=properties,
        overlord_pod_selector="component=overlord",
        image_pull_grace_seconds=kwargs.pop("image_pull_grace_seconds", 0.5),
        poll_interval=5,
        **kwargs,
    )


def run(op: DruidK8sTaskOperator, ti: FakeTaskInstance) -> Any:
    """Run the task as Airflow would: execute, and on deferral hand a rebuilt trigger to a 'triggerer'."""
    context: Any = {"ti": ti}
    try:
        result = op.execute(context)
    except TaskDeferred as deferred:
        classpath, kwargs = deferred.trigger.serialize()
        assert classpath == "druid_k8s_provider.triggers.overlord_task.DruidOverlordTaskTrigger"
        trigger = DruidOverlordTaskTrigger(**json.loads(json.dumps(kwargs)))
        event = asyncio.run(anext(trigger.run()))
        result = getattr(op, deferred.method_name)(context, event.payload, **(deferred.kwargs or {}))
    if result is not None:
        ti.xcom_push("return_value", result)
    return result


def logged(logs: list[dict[str, Any]]) -> list[str]:
    return [str(entry["event"]) for entry in logs]


def jobs_left(kube: KubeEmulator) -> list[str]:
    return [job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)]


Druid = Any  # tests/integration/conftest.py DruidCluster (conftest modules are not importable)


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_success_streams_the_log_returns_the_summary_and_deletes_the_job(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    druid.start(exits(0, PEON_LINES, after=0.3))
    ti = FakeTaskInstance()
    with capture_logs() as logs:
        result = run(operator(deferrable=deferrable), ti)
    assert result["status"] == "SUCCESS" and result["error"] is None
    assert result["namespace"] == NAMESPACE
    assert result["druid_task_id"].startswith("index_parallel_druid_dag_ingest_")
    assert result["job_name"].startswith("indexparalleldruiddagingest")
    assert result["pod_name"].startswith(result["job_name"][:20])
    assert isinstance(result["duration_ms"], int)
    lines = logged(logs)
    assert [line for line in lines if line in PEON_LINES] == PEON_LINES  # each once, in order
    assert jobs_left(kube) == []
    assert kube.metrics.creates("jobs") == 1
    assert kube.metrics.count("watch", "jobs") + kube.metrics.open_watches <= 2  # shared watches, no polling
    assert kube.metrics.count("get", "jobs") <= 3


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_peon_done_in_an_instant_still_shows_its_whole_log_and_pod(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """The Job can be reported Complete before the pods watch told of its pod at all: the pod is then read,
    so the log is caught up and the summary names the pod."""
    druid.start(exits(0, PEON_LINES, after=0))
    for attempt in range(5):
        ti = FakeTaskInstance(run_id=f"manual__{attempt}")
        with capture_logs() as logs:
            result = run(operator(deferrable=deferrable), ti)
        assert result["status"] == "SUCCESS" and result["pod_name"], result
        assert [line for line in logged(logs) if line in PEON_LINES] == PEON_LINES
    assert jobs_left(kube) == []


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_peon_exit_1_fails_the_task_with_the_exit_code_and_still_reports(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    druid.start(exits(1, ["java.lang.RuntimeException: boom"]))
    ti = FakeTaskInstance()
    with capture_logs() as logs, pytest.raises(JobFailed) as raised:
        run(operator(deferrable=deferrable), ti)
    assert "exited with code 1" in str(raised.value)
    assert ti.xcom["return_value"]["status"] == "FAILED"
    assert "exited with code 1" in ti.xcom["return_value"]["error"]
    assert "java.lang.RuntimeException: boom" in logged(logs)
    assert jobs_left(kube) == []


def test_oom_killed_peon_says_so(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(oom_killed(after=0.1))
    with pytest.raises(JobFailed, match="OOMKilled"):
        run(operator(), FakeTaskInstance())
    assert jobs_left(kube) == []


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_invalid_image_fails_fast_with_the_reason_and_deletes_the_job(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    druid.start(exits(0))
    op = operator(deferrable=deferrable, properties={"druid.indexer.runner.K8sjobLaunchTimeout": "PT1H"})
    kube.store.mutate(
        "pods",
        NAMESPACE,
        "druid-overlord-0",
        lambda pod: pod["spec"]["containers"][0].update(image="Bad Image"),
    )
    started = time.monotonic()
    with pytest.raises(JobLaunchTimeout) as raised:
        run(op, FakeTaskInstance())
    assert time.monotonic() - started < 15
    message = str(raised.value)
    assert "InvalidImageName" in message and "Bad Image" in message
    assert "InspectFailed" in message  # the pod's events are in the error
    assert "The Job was deleted" in message
    assert jobs_left(kube) == []


def test_unschedulable_pod_hits_the_launch_timeout_with_reason_and_events(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(exits(0))
    op = operator(
        properties={
            "druid.indexer.runner.K8sjobLaunchTimeout": "PT2S",
            "druid.indexer.runner.cpuCoreInMicro": 64000,
        }
    )
    with pytest.raises(JobLaunchTimeout) as raised:
        run(op, FakeTaskInstance())
    message = str(raised.value)
    assert "K8sjobLaunchTimeout" in message and "Insufficient cpu" in message
    assert "FailedScheduling" in message
    assert jobs_left(kube) == []


def test_deadline_exceeded_reports_max_task_duration(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(never_exits(["still going"]))
    op = operator(properties={"druid.indexer.runner.maxTaskDuration": "PT1S"})
    with pytest.raises(JobFailed, match="maxTaskDuration"):
        run(op, FakeTaskInstance())
    assert jobs_left(kube) == []


def test_debug_jobs_keeps_the_finished_job(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(exits(0, PEON_LINES))
    result = run(operator(properties={"druid.indexer.runner.debugJobs": "true"}), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert jobs_left(kube) == [result["job_name"]]


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_the_pod_name_prefix_names_the_job_the_operator_creates_and_follows(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """Issue 17 item 1: the Job is named as Druid 33+ names it with k8sTaskPodNamePrefix."""
    druid.start(exits(0, PEON_LINES))
    task = {
        **TASK,
        "id": "index_parallel_web_clickstream_events_eu_region_hourly_rollup_2024-05-01T00:00:00.000Z_try1",
    }
    properties = {
        "druid.indexer.runner.k8sTaskPodNamePrefix": "Nightly_Orders",
        "druid.indexer.runner.debugJobs": "true",
    }
    result = run(operator(druid_task=task, properties=properties, deferrable=deferrable), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert result["job_name"] == "nightlyorders-5a8b23807b2132a88feef67ffd87787b"
    assert jobs_left(kube) == [result["job_name"]]


def test_status_json_from_the_task_log_location_decides_the_outcome(
    kube: KubeEmulator, druid: Druid, tmp_path: Path
) -> None:
    """With task logs configured, Druid's TaskStatus wins over the exit code (a peon may exit 0 and fail)."""
    from druid_k8s_provider.testing.standin_peon import standin_peon

    druid.start(
        standin_peon,
        env=[
            {"name": "druid_indexer_logs_type", "value": "file"},
            {"name": "druid_indexer_logs_directory", "value": str(tmp_path)},
        ],
    )
    task = {**TASK, "context": {"standinOutcome": "FAILED", "standinDurationSeconds": 0.2}}
    ti = FakeTaskInstance()
    with pytest.raises(JobFailed):
        run(operator(druid_task=task, task_logs_location=f"file://{tmp_path}"), ti)
    summary = ti.xcom["return_value"]
    assert summary["status"] == "FAILED" and summary["error"]
    assert list(tmp_path.glob("*.status.json"))

    ok = FakeTaskInstance(run_id="manual__2")
    success = run(operator(task_logs_location=f"file://{tmp_path}"), ok)
    assert success["status"] == "SUCCESS"


def test_no_status_json_means_failed_as_in_druid(kube: KubeEmulator, druid: Druid, tmp_path: Path) -> None:
    druid.start(exits(0, PEON_LINES))
    with pytest.raises(JobFailed, match="Peon did not report status successfully"):
        run(operator(task_logs_location=f"file://{tmp_path}"), FakeTaskInstance())


def test_bad_input_creates_nothing(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(exits(0))
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(properties={"druid.indexer.runner.javaOptsArray": "-Xmx1g"}), FakeTaskInstance())
    assert raised.value.field == "druid.indexer.runner.javaOptsArray"
    assert kube.metrics.count("create") == 0


def test_a_second_execution_joins_the_running_job_instead_of_creating_another(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(exits(0, PEON_LINES, after=1.0))
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(run(operator(), FakeTaskInstance())))
    first.start()
    deadline = time.monotonic() + 10
    while not kube.store.list("jobs", NAMESPACE):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = run(operator(deferrable=True), FakeTaskInstance())
    first.join(20)
    assert results[0]["job_name"] == second["job_name"]
    assert {results[0]["status"], second["status"]} == {"SUCCESS"}
    assert kube.metrics.creates("jobs") == 1


def test_triggerer_restart_mid_run_gives_the_same_outcome(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(exits(0, PEON_LINES, after=1.0))
    op, ti = operator(deferrable=True), FakeTaskInstance()
    context: Any = {"ti": ti}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    _, kwargs = deferred.value.trigger.serialize()

    async def triggerer_dies_then_another_resumes() -> Any:
        dying = asyncio.create_task(anext(DruidOverlordTaskTrigger(**kwargs).run()))
        await asyncio.sleep(0.5)
        dying.cancel()  # the triggerer process goes away: the trigger is cancelled, not killed by a user
        return await anext(DruidOverlordTaskTrigger(**kwargs).run())

    event = asyncio.run(triggerer_dies_then_another_resumes())
    result = op.execute_complete(context, event.payload, **deferred.value.kwargs)
    assert result["status"] == "SUCCESS"
    assert kube.metrics.creates("jobs") == 1
    assert kube.metrics.count("delete", "jobs") == 1  # only the cleanup after success


SIDECAR_IMAGE = "example/log-shipper:2.0"


def sidecar(**fields: Any) -> dict[str, Any]:
    return {"name": "log-shipper", "image": SIDECAR_IMAGE, **fields}


@pytest.mark.parametrize("termination", ["kubexit", "native"], ids=["kubexit-sidecar", "native-sidecar"])
def test_a_peon_with_a_sidecar_that_never_exits_still_completes(
    kube: KubeEmulator, druid: Druid, termination: str
) -> None:
    kube.register_image("example/log-shipper*", never_exits(["shipping logs"]))
    druid.start(
        exits(0, PEON_LINES, after=0.2),
        sidecars=[sidecar(command=["/bin/shipper"], args=["--to", "s3://logs"])],
    )
    properties = {
        "druid.indexer.runner.k8s.adapter.type": "overlordMultiContainer",
        "druid.indexer.runner.sidecarTermination": termination,
    }
    ti = FakeTaskInstance()
    with capture_logs() as logs:
        result = run(operator(properties=properties), ti)
    assert result["status"] == "SUCCESS"
    assert [line for line in logged(logs) if line in PEON_LINES] == PEON_LINES
    assert "shipping logs" not in logged(logs)  # only the main container's log goes to the task log
    assert jobs_left(kube) == []


def test_a_sidecar_without_command_is_refused_before_any_api_write(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(exits(0), sidecars=[sidecar(args=["--to", "s3://logs"])])
    kube.register_image("example/log-shipper*", never_exits())
    properties = {"druid.indexer.runner.k8s.adapter.type": "overlordMultiContainer"}
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(properties=properties), FakeTaskInstance())
    assert "log-shipper" in str(raised.value)
    assert kube.metrics.count("create", "jobs") == 0
    assert jobs_left(kube) == []


def test_an_evicted_peon_fails_the_task_saying_so(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(never_exits(["working"]))
    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            run(operator(), FakeTaskInstance())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 20
    while True:
        peons = [
            pod
            for pod in kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons=true")
            if (pod.get("status") or {}).get("phase") == "Running"
        ]
        if peons:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kube.run(lambda: kube.cluster.evict_pod(NAMESPACE, peons[0]["metadata"]["name"]))
    worker.join(30)
    assert isinstance(outcome["error"], JobFailed)
    assert "evicted" in str(outcome["error"]) and "low on resource" in str(outcome["error"])
    assert jobs_left(kube) == []


def test_a_fixed_task_id_reused_by_another_run_is_refused_while_the_same_run_reattaches(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(exits(0, PEON_LINES))
    daily = {**TASK, "id": "compact_wiki_daily"}
    keep = {"druid.indexer.runner.debugJobs": "true"}
    first = run(operator(druid_task=daily, properties=keep), FakeTaskInstance(run_id="scheduled__1"))
    again = run(operator(druid_task=daily, properties=keep), FakeTaskInstance(run_id="scheduled__1"))
    assert first["pod_name"] == again["pod_name"]  # a retry of the same run takes the Job's outcome
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(druid_task=daily, properties=keep), FakeTaskInstance(run_id="scheduled__2"))
    assert raised.value.field == "task.id" and "scheduled__1" in str(raised.value)
    assert kube.metrics.creates("jobs") == 1


def test_the_execution_configs_selectors_pick_the_pod_template_of_the_custom_adapter(
    kube: KubeEmulator, druid: Druid, tmp_path: Path
) -> None:
    """Druid's selectorBased strategy: the first selector whose conditions hold names the template."""
    druid.start(exits(0, ["peon done"]))
    templates = {}
    for key, image in (("base", "example/druid:base"), ("clickstream", "example/druid:clickstream")):
        path = tmp_path / f"{key}.yaml"
        path.write_text(
            "apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: peon\ntemplate:\n  spec:\n"
            f"    containers:\n      - name: main\n        image: {image}\n"
        )
        templates[f"druid.indexer.runner.k8s.podTemplate.{key}"] = str(path)
    properties = {
        "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
        "druid.indexer.runner.debugJobs": "true",
        **templates,
    }
    selectors = {
        "type": "default",
        "podTemplateSelectStrategy": {
            "type": "selectorBased",
            "selectors": [
                {"selectionKey": "clickstream", "dataSource": ["clicks"], "type": ["index_parallel"]},
            ],
        },
    }
    images = {}
    for data_source in ("clicks", "wikipedia"):
        task = {"type": "index_parallel", "spec": {"dataSchema": {"dataSource": data_source}}}
        op = operator(druid_task=task, properties=properties, execution_config=json.dumps(selectors))
        result = run(op, FakeTaskInstance(run_id=f"manual__{data_source}"))
        assert result["status"] == "SUCCESS"
        job = kube.store.get("jobs", NAMESPACE, result["job_name"])
        images[data_source] = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert images == {"clicks": "example/druid:clickstream", "wikipedia": "example/druid:base"}


def test_a_second_execution_of_the_same_try_joins_its_job_even_when_the_overlord_pod_is_gone(
    kube: KubeEmulator, druid: Druid
) -> None:
    """A first try creates without looking first; when the template pod cannot be read any more, it still
    finds and joins the Job it launched before, instead of failing or launching a second one."""
    druid.start(never_exits(["working"]))
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred) as first:
        operator(deferrable=True).execute({"ti": ti})  # type: ignore[arg-type]
    kube.store.delete("pods", NAMESPACE, "druid-overlord-0")
    with pytest.raises(TaskDeferred) as second:
        operator(deferrable=True).execute({"ti": ti})  # type: ignore[arg-type]
    assert second.value.kwargs == first.value.kwargs
    assert len(jobs_left(kube)) == 1 and kube.metrics.creates("jobs") == 1
    for name in jobs_left(kube):
        kube.store.delete("jobs", NAMESPACE, name)


HOLD = "example.com/audit-export"


def launch_then_delete_with_a_finalizer(
    kube: KubeEmulator, ti: FakeTaskInstance, held_by: str = "finalizer", **kwargs: Any
) -> str:
    """A first try launches its Job and its worker dies; then the Job is deleted while something holds it: a
    finalizer (another controller's), or (``held_by="pods"``) foreground deletion waiting for its pod to
    terminate. It stays, with a deletionTimestamp. Returns the old pod's name."""
    with pytest.raises(TaskDeferred):
        operator(deferrable=True, **kwargs).execute({"ti": ti})  # type: ignore[arg-type]
    (name,) = jobs_left(kube)
    deadline = time.monotonic() + 10

    def running_pods() -> list[dict[str, Any]]:
        pods = kube.store.list("pods", NAMESPACE, label_selector=f"job-name={name}")
        return [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Running"]

    while not (pods := running_pods()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    if held_by == "finalizer":
        kube.store.mutate("jobs", NAMESPACE, name, lambda job: job["metadata"].update(finalizers=[HOLD]))
        kube.store.delete("jobs", NAMESPACE, name)
    else:  # kubectl delete --cascade=foreground: the Job waits for its pod's graceful termination
        kube.store.delete("jobs", NAMESPACE, name, propagation_policy="Foreground")
    assert kube.store.get("jobs", NAMESPACE, name)["metadata"].get("deletionTimestamp")
    return str(pods[0]["metadata"]["name"])


def release(kube: KubeEmulator, name: str) -> None:
    """The finalizer's controller lets go: the Job disappears."""
    kube.store.mutate("jobs", NAMESPACE, name, lambda job: job["metadata"].update(finalizers=[]))


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
@pytest.mark.parametrize("try_number", [2, 1], ids=["retry", "same-try-again"])
def test_a_job_being_deleted_is_not_joined_the_launch_waits_for_its_name_then_creates_its_own(
    kube: KubeEmulator,
    druid: Druid,
    deferrable: bool,
    try_number: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Joining a deleting Job would report the earlier try's outcome: the launch waits (a watch) until the
    name is free, whether a retry read the Job first or a create was refused with 409."""
    druid.start(exits(0, PEON_LINES, after=0.5))
    ti = FakeTaskInstance()
    old_pod = launch_then_delete_with_a_finalizer(kube, ti)
    (name,) = jobs_left(kube)
    threading.Timer(1.0, release, args=(kube, name)).start()
    kube.faults.expire_next_watch()  # etcd compacted past the Job's version: the wait reads it again
    ti.try_number = try_number  # type: ignore[attr-defined]
    with caplog.at_level("INFO", logger="druid_k8s_provider"):
        result = run(operator(deferrable=deferrable), ti)
    assert result["status"] == "SUCCESS" and result["job_name"] == name
    assert result["pod_name"] != old_pod  # this try's own peon, not the earlier one's outcome
    assert kube.metrics.creates("jobs") == 2
    assert any("is being deleted" in line and HOLD in line for line in caplog.messages)
    assert jobs_left(kube) == []


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_job_whose_pod_is_still_terminating_under_foreground_deletion_is_waited_for_too(
    kube: KubeEmulator, druid: Druid, deferrable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The peon ignores SIGTERM: its pod terminates only at the end of its 2 s grace, and until then the Job
    (foregroundDeletion) keeps the name."""
    druid.start(never_exits(["working"], ignores_sigterm=True))
    grace = {"druid.indexer.runner.graceTerminationPeriodSeconds": 2}
    ti = FakeTaskInstance()
    launch_then_delete_with_a_finalizer(kube, ti, held_by="pods", properties=grace)
    (name,) = jobs_left(kube)
    kube.register_image("example/druid*", exits(0, PEON_LINES, after=0.2))  # the next peon finishes
    ti.try_number = 2  # type: ignore[attr-defined]
    with caplog.at_level("INFO", logger="druid_k8s_provider"):
        result = run(operator(deferrable=deferrable, properties=grace), ti)
    assert result["status"] == "SUCCESS" and result["job_name"] == name
    assert kube.metrics.creates("jobs") == 2
    assert any("foregroundDeletion" in line and "not gone yet" in line for line in caplog.messages)
    assert jobs_left(kube) == []


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_job_held_by_a_finalizer_past_the_bound_fails_the_launch_naming_the_job_and_the_finalizer(
    kube: KubeEmulator, druid: Druid, deferrable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("druid_k8s_provider.hooks.druid_k8s.JOB_RELEASE_SLACK_SECONDS", 1.0)
    druid.start(never_exits(["working"]))
    quick = {"druid.indexer.runner.graceTerminationPeriodSeconds": 0}
    ti = FakeTaskInstance()
    launch_then_delete_with_a_finalizer(kube, ti, properties=quick)
    (name,) = jobs_left(kube)
    ti.try_number = 2  # type: ignore[attr-defined]
    with pytest.raises(JobLaunchTimeout) as raised:
        run(operator(deferrable=deferrable, properties=quick), ti)
    message = str(raised.value)
    assert name in message and "still being deleted" in message and HOLD in message
    assert "kubectl patch job" in message
    assert kube.metrics.creates("jobs") == 1
    release(kube, name)


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_pod_the_quota_refuses_fails_fast_with_the_event_and_deletes_the_job(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """The Job is accepted, its pod never is (a Warning FailedCreate on the Job): waiting out
    K8sjobLaunchTimeout would cure nothing, so the task fails within seconds, as Druid does."""
    druid.start(exits(0))
    quota = {"metadata": {"name": "peons"}, "spec": {"hard": {"limits.memory": "1Gi"}}}
    kube.store.create("resourcequotas", NAMESPACE, quota)
    op = operator(deferrable=deferrable, properties={"druid.indexer.runner.K8sjobLaunchTimeout": "PT1H"})
    started = time.monotonic()
    with pytest.raises(JobLaunchTimeout) as raised:
        run(op, FakeTaskInstance())
    assert time.monotonic() - started < 30
    message = str(raised.value)
    assert "the Job cannot create its pod (FailedCreate): Error creating: pods " in message
    assert "is forbidden: exceeded quota: peons" in message and "limited: limits.memory=1Gi" in message
    assert "The Job was deleted" in message
    assert jobs_left(kube) == []
    assert kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons=true") == []


PROXY = "istio-proxy"


def template_with_a_proxy(tmp_path: Path) -> dict[str, Any]:
    """customTemplateAdapter properties whose pod template carries a service-mesh proxy next to main."""
    path = tmp_path / "base.yaml"
    path.write_text(
        "apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: peon\ntemplate:\n  spec:\n    containers:\n"
        "      - name: main\n        image: example/druid:31.0.0\n"
        f"      - name: {PROXY}\n        image: example/mesh-proxy:1.0\n"
    )
    return {
        "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
        "druid.indexer.runner.k8s.podTemplate.base": str(path),
    }


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
@pytest.mark.parametrize(
    ("proxy", "exit_code"),
    [("plain-container", 0), ("native-sidecar-ignoring-sigterm", 0), ("plain-container", 1)],
)
def test_a_sidecar_that_never_stops_does_not_hold_the_task_main_decides_and_the_job_is_deleted(
    kube: KubeEmulator, druid: Druid, tmp_path: Path, deferrable: bool, proxy: str, exit_code: int
) -> None:
    """apache/airflow issues 39693 and 37298: the main container ended, a sidecar keeps the pod (and the Job)
    running. Once the grace passed, main's exit code decides, the log names the sidecar, the Job goes."""
    kube.register_image("example/mesh-proxy*", never_exits(["proxying"], ignores_sigterm=True))
    druid.start(exits(exit_code, PEON_LINES, after=0.2))
    properties = {**template_with_a_proxy(tmp_path), "druid.indexer.runner.debugJobs": "true"}
    if proxy == "native-sidecar-ignoring-sigterm":
        # The kubelet stops a native sidecar with SIGTERM once main ended, and kills it only after the grace.
        properties["druid.indexer.runner.sidecarTermination"] = "native"
        properties["druid.indexer.runner.graceTerminationPeriodSeconds"] = 600
    ti = FakeTaskInstance()
    op = operator(deferrable=deferrable, properties=properties, sidecar_grace_seconds=1.0)
    with capture_logs() as logs:
        if exit_code == 0:
            result = run(op, ti)
        else:
            with pytest.raises(JobFailed, match="exited with code 1"):
                run(op, ti)
            result = ti.xcom["return_value"]
    assert result["status"] == ("SUCCESS" if exit_code == 0 else "FAILED")
    assert [line for line in logged(logs) if line in PEON_LINES] == PEON_LINES
    held = [line for line in logged(logs) if "kept pod" in line]
    assert held and PROXY in held[0] and "main container" in held[0]
    assert jobs_left(kube) == []  # deleted even with debugJobs: it would run on until maxTaskDuration
