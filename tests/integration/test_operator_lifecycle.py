"""DruidK8sTaskOperator end to end against the emulated cluster and a stand-in Druid Overlord, over real HTTP.

Each test asserts what a user sees: the Airflow task's result or error, the XCom summary, the peon's log
lines in the task log, the Jobs left in the cluster and the API calls made (from the emulator's metrics).
The Overlord is of Druid 38 (``launch_mode`` auto → ``airflow``: the operator builds the Job); the
Overlord's status decides every outcome and the Overlord deletes the Job when the task completes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import TaskDeferred
from structlog.testing import capture_logs

from druid_k8s_provider.errors import DruidK8sConfigError, JobFailed, JobLaunchTimeout, OverlordApiError
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits, never_exits, oom_killed
from druid_k8s_provider.testing.standin_peon import standin_druid_image
from druid_k8s_provider.triggers.overlord_task import DruidOverlordTaskTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NAMESPACE = "druid"
PEON_LINES = ["peon starting", "ingesting 3 rows", "peon done"]
TASK = {
    "type": "index_parallel",
    "spec": {
        "dataSchema": {
            "dataSource": "wikipedia",
            "granularitySpec": {"segmentGranularity": "DAY", "intervals": ["2026-01-01/2026-01-02"]},
        },
        "ioConfig": {"type": "index_parallel", "inputSource": {"type": "inline", "data": '{"page":"a"}'}},
    },
    "context": {"standinDurationSeconds": 0.2},
}


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


def peon_logging(lines: list[str], after: float = 0.0) -> Any:
    """The stand-in peon, logging ``lines`` first (and waiting ``after`` seconds): it takes its locks and
    reports its status to the Overlord like a real peon."""

    async def behaviour(ctx: Any) -> int:
        for line in lines:
            ctx.log(line)
        if after:
            await ctx.wait_or_stop(after)
        return int(await standin_druid_image(ctx))

    return behaviour


def wait_until_gone(kube: KubeEmulator, timeout: float = 20) -> None:
    """Wait until the Overlord deleted every Job (at completion, or after a shutdown)."""
    deadline = time.monotonic() + timeout
    while jobs_left(kube):
        assert time.monotonic() < deadline, f"Jobs left: {jobs_left(kube)}"
        time.sleep(0.05)


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
def test_success_streams_the_log_returns_the_summary_and_the_overlord_deletes_the_job(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    druid.start(peon_logging(PEON_LINES, after=0.3))
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
    wait_until_gone(kube)
    assert kube.metrics.creates("jobs") == 1


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_peon_done_in_an_instant_still_shows_its_whole_log_and_pod(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """The Job can be reported Complete before the pods watch told of its pod at all: the pod is then read,
    so the log is caught up and the summary names the pod."""
    druid.start(peon_logging(PEON_LINES))
    for attempt in range(3):
        ti = FakeTaskInstance(run_id=f"manual__{attempt}")
        with capture_logs() as logs:
            result = run(operator(deferrable=deferrable), ti)
        assert result["status"] == "SUCCESS", result
        assert [line for line in logged(logs) if line in PEON_LINES] == PEON_LINES
    wait_until_gone(kube)


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_peon_dying_without_a_status_fails_the_task_with_druids_message_and_its_log(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    druid.start(exits(1, ["java.lang.RuntimeException: boom"]))
    ti = FakeTaskInstance()
    with capture_logs() as logs, pytest.raises(JobFailed) as raised:
        run(operator(deferrable=deferrable), ti)
    assert "Peon did not report status successfully" in str(raised.value)  # the Overlord's word
    assert ti.xcom["return_value"]["status"] == "FAILED"
    assert "java.lang.RuntimeException: boom" in logged(logs)
    wait_until_gone(kube)


def test_oom_killed_peon_says_so(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(oom_killed(after=0.1))
    with pytest.raises(JobFailed, match="OOMKilled"):
        run(operator(), FakeTaskInstance())
    wait_until_gone(kube)


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_oom_killed_is_reported_even_when_the_job_and_pod_vanish_as_it_fails(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """An Overlord quicker than any look: the failed Job and its pod are deleted in the same moment the Job
    controller marks it failed, so only the watch's ``DELETED`` event still shows how the pod ended."""

    def delete_at_once(event_type: str, plural: str, obj: dict[str, Any]) -> None:
        conditions = (obj.get("status") or {}).get("conditions") or []
        if plural != "jobs" or event_type == "DELETED" or not any(c["type"] == "Failed" for c in conditions):
            return
        name = obj["metadata"]["name"]
        for pod in kube.store.list("pods", NAMESPACE, label_selector=f"job-name={name}"):
            kube.store.delete("pods", NAMESPACE, pod["metadata"]["name"], grace_period_seconds=0)
        kube.store.delete("jobs", NAMESPACE, name)

    kube.store.add_listener(delete_at_once)
    druid.start(oom_killed(after=0.1))
    with pytest.raises(JobFailed, match="OOMKilled"):
        run(operator(deferrable=deferrable), FakeTaskInstance())
    wait_until_gone(kube)


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_an_overlord_that_never_records_the_outcome_fails_the_try_and_leaves_the_task(
    kube: KubeEmulator, druid: Druid, deferrable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Job ended but the Overlord's runner hangs pushing the task log (a stuck deep storage): the wait for
    its verdict is bounded, the try fails naming the request, and the task stays for the next try."""
    from druid_k8s_provider.launch import follow
    from druid_k8s_provider.testing.overlord.peon_lifecycle import PeonLifecycle

    async def stuck_log_push(self: PeonLifecycle, item: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(follow, "OUTCOME_WAIT_SECONDS", 2.0)
    monkeypatch.setattr(PeonLifecycle, "_save_log", stuck_log_push)
    druid.start()
    with pytest.raises(OverlordApiError) as raised:
        run(operator(deferrable=deferrable), FakeTaskInstance())
    message = str(raised.value)
    assert "after 2s the Overlord still reports Druid task" in message
    assert raised.value.path == "/druid/indexer/v1/taskStatus" and "next try re-attaches" in message
    task_id = raised.value.task_id
    answer = httpx.get(f"{druid.overlord.url}/druid/indexer/v1/task/{task_id}/status").json()
    assert answer["status"]["statusCode"] == "RUNNING"  # left for the next try to re-attach to


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_invalid_image_fails_fast_with_the_reason_and_shuts_the_task_down(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    druid.start()
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
    assert "shut down in the Overlord" in message
    wait_until_gone(kube)


def test_unschedulable_pod_hits_the_launch_timeout_with_reason_and_events(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start()
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
    wait_until_gone(kube)


def test_deadline_exceeded_reports_max_task_duration(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(never_exits(["still going"]))
    op = operator(properties={"druid.indexer.runner.maxTaskDuration": "PT1S"})
    with pytest.raises(JobFailed, match="maxTaskDuration"):
        run(op, FakeTaskInstance())
    wait_until_gone(kube)


def test_the_overlords_debug_jobs_keeps_the_finished_job(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(runner_properties={"druid.indexer.runner.debugJobs": "true"})
    result = run(operator(), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert jobs_left(kube) == [result["job_name"]]


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_the_pod_name_prefix_names_the_job_the_operator_creates_and_follows(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """Issue 17 item 1: the Job is named as Druid 33+ names it with k8sTaskPodNamePrefix (the Overlord's
    and the operator's runner properties agree, so the Overlord joins the operator's Job)."""
    task = {
        **TASK,
        "id": "index_parallel_web_clickstream_events_eu_region_hourly_rollup_2024-05-01T00:00:00.000Z_try1",
    }
    properties = {
        "druid.indexer.runner.k8sTaskPodNamePrefix": "Nightly_Orders",
        "druid.indexer.runner.debugJobs": "true",
    }
    druid.start(runner_properties=properties)
    result = run(operator(druid_task=task, properties=properties, deferrable=deferrable), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert result["job_name"] == "nightlyorders-5a8b23807b2132a88feef67ffd87787b"
    assert jobs_left(kube) == [result["job_name"]]


def test_a_peon_exiting_0_without_status_json_fails_as_in_druid(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(exits(0, PEON_LINES))
    with pytest.raises(JobFailed, match="Peon did not report status successfully"):
        run(operator(), FakeTaskInstance())


def test_bad_input_creates_nothing(kube: KubeEmulator, druid: Druid) -> None:
    druid.start()
    with pytest.raises(DruidK8sConfigError) as raised:
        run(operator(properties={"druid.indexer.runner.javaOptsArray": "-Xmx1g"}), FakeTaskInstance())
    assert raised.value.field == "druid.indexer.runner.javaOptsArray"
    assert kube.metrics.count("create") == 0


def test_a_second_execution_joins_the_running_job_instead_of_creating_another(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(peon_logging(PEON_LINES, after=1.0))
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
    druid.start(peon_logging(PEON_LINES, after=1.0))
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
    assert kube.metrics.count("delete", "jobs") == 1  # only the Overlord's cleanup after success


SIDECAR_IMAGE = "example/log-shipper:2.0"


def sidecar(**fields: Any) -> dict[str, Any]:
    return {"name": "log-shipper", "image": SIDECAR_IMAGE, **fields}


@pytest.mark.parametrize("termination", ["kubexit", "native"], ids=["kubexit-sidecar", "native-sidecar"])
def test_a_peon_with_a_sidecar_that_never_exits_still_completes(
    kube: KubeEmulator, druid: Druid, termination: str
) -> None:
    kube.register_image("example/log-shipper*", never_exits(["shipping logs"]))
    druid.start(
        peon_logging(PEON_LINES, after=0.2),
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
    wait_until_gone(kube)


def test_a_sidecar_without_command_is_refused_before_any_api_write(kube: KubeEmulator, druid: Druid) -> None:
    druid.start(sidecars=[sidecar(args=["--to", "s3://logs"])])
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
    op, shown = operator(), threading.Event()
    emit = op._emit_peon_line

    def emit_and_tell(line: str) -> None:
        emit(line)
        shown.set()

    op._emit_peon_line = emit_and_tell  # type: ignore[method-assign]

    def work() -> None:
        try:
            run(op, FakeTaskInstance())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    assert shown.wait(20)  # the peon runs and the operator follows its log
    (peon,) = kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons=true")
    kube.run(lambda: kube.cluster.evict_pod(NAMESPACE, peon["metadata"]["name"]))
    worker.join(30)
    assert isinstance(outcome["error"], JobFailed)
    assert "evicted" in str(outcome["error"]) and "low on resource" in str(outcome["error"])
    wait_until_gone(kube)


def test_a_fixed_task_id_that_succeeded_is_reported_again_without_running_it(
    kube: KubeEmulator, druid: Druid
) -> None:
    """The Overlord never accepts an id twice: a second execution with a written id that SUCCEEDED in Druid
    reports that success and runs nothing."""
    druid.start(peon_logging(PEON_LINES))
    daily = {**TASK, "id": "compact_wiki_daily"}
    first = run(operator(druid_task=daily), FakeTaskInstance(run_id="scheduled__1"))
    again = run(operator(druid_task=daily), FakeTaskInstance(run_id="scheduled__1"))
    assert first["status"] == again["status"] == "SUCCESS"
    assert first["report"] == again["report"]
    assert kube.metrics.creates("jobs") == 1


def test_the_execution_configs_selectors_pick_the_pod_template_of_the_custom_adapter(
    kube: KubeEmulator, druid: Druid, tmp_path: Path
) -> None:
    """Druid's selectorBased strategy: the first selector whose conditions hold names the template."""
    druid.start()
    kube.register_image("example/druid*", standin_druid_image)
    env = json.dumps(druid.peon_env())
    templates = {}
    for key, image in (("base", "example/druid:base"), ("clickstream", "example/druid:clickstream")):
        path = tmp_path / f"{key}.yaml"
        path.write_text(
            "apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: peon\ntemplate:\n  spec:\n"
            f"    containers:\n      - name: main\n        image: {image}\n        env: {env}\n"
        )
        templates[f"druid.indexer.runner.k8s.podTemplate.{key}"] = str(path)
    properties = {
        "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
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
        task = {**TASK, "spec": {**TASK["spec"], "dataSchema": {**TASK["spec"]["dataSchema"]}}}
        task["spec"]["dataSchema"]["dataSource"] = data_source
        op = operator(
            druid_task=task, properties=properties, execution_config=json.dumps(selectors), deferrable=True
        )
        ti = FakeTaskInstance(run_id=f"manual__{data_source}")
        with pytest.raises(TaskDeferred) as deferred:
            op.execute({"ti": ti})  # type: ignore[arg-type]
        job = kube.store.get("jobs", NAMESPACE, deferred.value.trigger.spec.job_name)
        images[data_source] = job["spec"]["template"]["spec"]["containers"][0]["image"]
        event = asyncio.run(anext(deferred.value.trigger.run()))
        result = op.execute_complete({"ti": ti}, event.payload, **deferred.value.kwargs)  # type: ignore[arg-type]
        assert result["status"] == "SUCCESS"
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


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_pod_the_quota_refuses_fails_fast_with_the_event_and_shuts_the_task_down(
    kube: KubeEmulator, druid: Druid, deferrable: bool
) -> None:
    """The Job is accepted, its pod never is (a Warning FailedCreate on the Job): waiting out
    K8sjobLaunchTimeout would cure nothing, so the task fails within seconds, as Druid does."""
    druid.start()
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
    assert "shut down in the Overlord" in message
    wait_until_gone(kube)
    assert kube.store.list("pods", NAMESPACE, label_selector="druid.k8s.peons=true") == []


PROXY = "istio-proxy"


def template_with_a_proxy(tmp_path: Path, env: list[dict[str, Any]]) -> dict[str, Any]:
    """customTemplateAdapter properties whose pod template carries a service-mesh proxy next to main (which
    gets ``env``: how the stand-in peon reaches the Overlord and its task logs)."""
    path = tmp_path / "base.yaml"
    path.write_text(
        "apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: peon\ntemplate:\n  spec:\n    containers:\n"
        f"      - name: main\n        image: example/druid:31.0.0\n        env: {json.dumps(env)}\n"
        f"      - name: {PROXY}\n        image: example/mesh-proxy:1.0\n"
    )
    return {
        "druid.indexer.runner.k8s.adapter.type": "customTemplateAdapter",
        "druid.indexer.runner.k8s.podTemplate.base": str(path),
    }


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
@pytest.mark.parametrize(
    ("proxy", "outcome"),
    [
        ("plain-container", "SUCCESS"),
        ("native-sidecar-ignoring-sigterm", "SUCCESS"),
        ("plain-container", "FAILED"),
    ],
)
def test_a_sidecar_that_never_stops_does_not_hold_the_task_the_job_is_deleted_and_the_overlord_decides(
    kube: KubeEmulator, druid: Druid, tmp_path: Path, deferrable: bool, proxy: str, outcome: str
) -> None:
    """apache/airflow issues 39693 and 37298: the main container ended, a sidecar keeps the pod (and the Job)
    running. Once the grace passed the Job is deleted, the log names the sidecar, and the Overlord (which
    reads the peon's status.json) decides."""
    kube.register_image("example/mesh-proxy*", never_exits(["proxying"], ignores_sigterm=True))
    druid.start()
    kube.register_image("example/druid*", peon_logging(PEON_LINES, after=0.2))
    properties = template_with_a_proxy(tmp_path, druid.peon_env())
    if proxy == "native-sidecar-ignoring-sigterm":
        # The kubelet stops a native sidecar with SIGTERM once main ended, and kills it only after the grace.
        properties["druid.indexer.runner.sidecarTermination"] = "native"
        properties["druid.indexer.runner.graceTerminationPeriodSeconds"] = 600
    ti = FakeTaskInstance()
    task = {**TASK, "context": {**TASK["context"], "standinOutcome": outcome}}
    op = operator(druid_task=task, deferrable=deferrable, properties=properties, sidecar_grace_seconds=1.0)
    with capture_logs() as logs:
        if outcome == "SUCCESS":
            result = run(op, ti)
        else:
            with pytest.raises(JobFailed):
                run(op, ti)
            result = ti.xcom["return_value"]
    assert result["status"] == outcome
    assert [line for line in logged(logs) if line in PEON_LINES] == PEON_LINES
    held = [line for line in logged(logs) if "kept the peon pod" in line]
    assert held and PROXY in held[0] and "main container" in held[0]
    wait_until_gone(kube)
