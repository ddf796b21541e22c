"""The reaper over real HTTP: against the Kubernetes API emulator alone (paging, races, faults, with an
Overlord that knows none of the tasks) and against both emulators (a Job whose task is still active in the
Overlord is kept, one batched status request per page, an unreachable Overlord deletes nothing, the DAG)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from druid_support import Druid, both_emulators, wait_until

from druid_k8s_provider.errors import DruidK8sTaskError
from druid_k8s_provider.hooks.druid_k8s import PEON_SELECTOR, DruidK8sHook
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.hooks.overlord_transport import OverlordRetryPolicy
from druid_k8s_provider.reaper import reap
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task

pytestmark = pytest.mark.integration

NAMESPACE = "druid"
TWO_DAYS = dt.timedelta(days=2)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    """An API server without controllers: Job status stays exactly as the test sets it."""
    with KubeEmulator(cluster=False) as emulator:
        emulator.store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        yield emulator


@pytest.fixture
def hook(kube: KubeEmulator, monkeypatch: pytest.MonkeyPatch) -> DruidK8sHook:
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kube.kubeconfig_path)}}
    monkeypatch.setenv("AIRFLOW_CONN_REAPER_TEST", json.dumps(connection))
    return DruidK8sHook(kubernetes_conn_id="reaper_test", namespace=NAMESPACE)


def add_job(
    kube: KubeEmulator,
    name: str,
    finished: str | None,
    age: dt.timedelta = dt.timedelta(0),
    labelled: bool = True,
    task_id: str | None = None,
) -> None:
    """Store a peon-like Job of ``task_id`` (default ``task_<name>``), then give it the status a finished (or
    running) Job has. In a whole cluster the Job is created suspended and finished once the Job controller
    has seen it, so no pod of it ever runs."""
    labels = {"druid.k8s.peons": "true"} if labelled else {"app": "batch-report"}
    kube.store.create(
        "jobs",
        NAMESPACE,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"task.id": task_id or f"task_{name}"},
            },
            "spec": {
                "backoffLimit": 0,
                "suspend": kube.cluster is not None,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "apache/druid:33.0.0"}],
                    },
                },
            },
        },
    )
    if kube.cluster is not None:
        wait_until(lambda: "conditions" in (kube.store.get("jobs", NAMESPACE, name).get("status") or {}))
    when = (dt.datetime.now(dt.UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")

    def set_status(job: dict[str, Any]) -> None:
        if finished is None:
            job["status"] = {"active": 1, "startTime": when}
        else:
            job["status"] = {
                "startTime": when,
                "conditions": [{"type": finished, "status": "True", "lastTransitionTime": when}],
            }
            if finished == "Complete":
                job["status"]["completionTime"] = when

    kube.store.mutate("jobs", NAMESPACE, name, set_status, subresource="status")


def job_names(kube: KubeEmulator) -> set[str]:
    return {job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)}


class NoActiveTasks:
    """An Overlord that knows none of the tasks (so it keeps no Job), recording the ids of each request."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []

    def task_statuses(self, task_ids: Sequence[str]) -> dict[str, OverlordTaskStatus]:
        self.requests.append(list(task_ids))
        return {}


class InterceptedListing:
    """The real hook, with ``before_handing_over(position)`` run before each listed Job reaches the reaper.

    Lets a test change the cluster in the middle of a sweep, as another actor would.
    """

    def __init__(self, hook: DruidK8sHook, before_handing_over: Callable[[int], None]) -> None:
        self.hook = hook
        self.before_handing_over = before_handing_over

    def list_peon_jobs(
        self, namespace: str, page_size: int = 500, *, selector: str = PEON_SELECTOR
    ) -> Iterator[dict[str, Any]]:
        listed = self.hook.list_peon_jobs(namespace, page_size=page_size, selector=selector)
        for position, job in enumerate(listed):
            self.before_handing_over(position)
            yield job

    def delete_job(
        self,
        name: str,
        namespace: str,
        grace_period_seconds: int | None = None,
        *,
        task_id: str | None = None,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        return self.hook.delete_job(
            name, namespace, grace_period_seconds, task_id=task_id, uid=uid, resource_version=resource_version
        )


def test_reaper_pages_through_2000_jobs_and_deletes_exactly_the_old_finished_ones(
    kube: KubeEmulator, hook: DruidK8sHook
) -> None:
    old, running, young, foreign = set(), set(), set(), set()
    for index in range(2000):
        name = f"peon-{index:04d}"
        if index % 10 < 7:
            add_job(kube, name, "Complete" if index % 2 else "Failed", age=dt.timedelta(days=3))
            old.add(name)
        elif index % 10 < 9:
            add_job(kube, name, None, age=dt.timedelta(days=5))
            running.add(name)
        else:
            add_job(kube, name, "Complete", age=dt.timedelta(hours=1))
            young.add(name)
    for index in range(20):
        add_job(kube, f"other-{index}", "Complete", age=dt.timedelta(days=9), labelled=False)
        foreign.add(f"other-{index}")
    lists_before = kube.metrics.count(verb="list", resource="jobs")

    overlord = NoActiveTasks()
    summary = reap(hook, NAMESPACE, TWO_DAYS, page_size=300, overlord=overlord)

    assert summary["examined"] == 2000
    assert summary["deleted"] == len(old) == 1400
    assert summary["kept_running"] == len(running)
    assert summary["kept_young"] == len(young)
    assert summary["already_gone"] == 0
    assert job_names(kube) == running | young | foreign
    # ceil(2000 / 300) pages of peon Jobs, then one (empty) page of unlabelled Jobs of Druid tasks
    assert kube.metrics.count(verb="list", resource="jobs") - lists_before == 7 + 1
    assert len(overlord.requests) == 7, "one batched status request per page"
    assert sorted(task for request in overlord.requests for task in request) == sorted(
        f"task_{n}" for n in old
    )


def test_jobs_deleted_by_someone_else_during_the_sweep_count_as_already_gone(
    kube: KubeEmulator, hook: DruidK8sHook
) -> None:
    for index in range(30):
        add_job(kube, f"peon-{index:02d}", "Complete", age=dt.timedelta(days=3))

    def ttl_controller_wins(position: int) -> None:
        """The TTL controller 'wins' the race for three Jobs of each page."""
        if position % 10 == 9:
            for victim in range(position - 2, position + 1):
                kube.store.delete("jobs", NAMESPACE, f"peon-{victim:02d}")

    summary = reap(
        InterceptedListing(hook, ttl_controller_wins),
        NAMESPACE,
        TWO_DAYS,
        page_size=10,
        overlord=NoActiveTasks(),
    )

    assert summary["examined"] == 30
    assert summary["deleted"] == 21
    assert summary["already_gone"] == 9
    assert job_names(kube) == set()


def test_a_job_launched_again_under_the_same_name_during_the_sweep_is_not_deleted(
    kube: KubeEmulator, hook: DruidK8sHook
) -> None:
    """The sweep decided on the old Job; the delete names its uid, so the new Job that took the name (the
    same Druid task launched again) keeps running."""
    for index in range(3):
        add_job(kube, f"peon-{index}", "Complete", age=dt.timedelta(days=3))
    replaced_uid = kube.store.get("jobs", NAMESPACE, "peon-2")["metadata"]["uid"]

    def launched_again(position: int) -> None:
        if position == 0:
            kube.store.delete("jobs", NAMESPACE, "peon-2")
            add_job(kube, "peon-2", None)

    summary = reap(
        InterceptedListing(hook, launched_again), NAMESPACE, TWO_DAYS, page_size=10, overlord=NoActiveTasks()
    )

    assert (summary["examined"], summary["deleted"], summary["already_gone"]) == (3, 2, 1)
    (survivor,) = kube.store.list("jobs", NAMESPACE)
    assert survivor["metadata"]["name"] == "peon-2" and survivor["metadata"]["uid"] != replaced_uid


def test_jobs_deleted_between_pages_neither_break_paging_nor_are_missed(
    kube: KubeEmulator, hook: DruidK8sHook
) -> None:
    """A concurrent delete while the reaper pages (continue token in hand) neither breaks nor skips a Job."""
    for index in range(40):
        add_job(kube, f"peon-{index:02d}", "Failed", age=dt.timedelta(days=3))

    def delete_later_pages(position: int) -> None:
        if position == 0:
            for victim in range(30, 40):  # on later pages, not listed yet
                kube.store.delete("jobs", NAMESPACE, f"peon-{victim:02d}")

    summary = reap(
        InterceptedListing(hook, delete_later_pages),
        NAMESPACE,
        TWO_DAYS,
        page_size=10,
        overlord=NoActiveTasks(),
    )

    assert summary["deleted"] + summary["already_gone"] == summary["examined"]
    assert summary["deleted"] == 30
    assert job_names(kube) == set()


def test_transient_api_errors_on_delete_are_retried_not_reported(
    kube: KubeEmulator, hook: DruidK8sHook
) -> None:
    for index in range(5):
        add_job(kube, f"peon-{index}", "Complete", age=dt.timedelta(days=3))
    kube.faults.add(verb="delete", resource="jobs", status=503, count=2)
    kube.faults.add(verb="list", resource="jobs", status=429, retry_after=0, count=1)

    summary = reap(hook, NAMESPACE, TWO_DAYS, overlord=NoActiveTasks())

    assert summary["deleted"] == 5
    assert job_names(kube) == set()
    assert kube.metrics.count(verb="delete", resource="jobs", status=503) == 2


def test_a_permission_error_stops_the_sweep_naming_the_job_and_the_task(
    kube: KubeEmulator, hook: DruidK8sHook
) -> None:
    add_job(kube, "peon-forbidden", "Complete", age=dt.timedelta(days=3))
    kube.faults.add(
        verb="delete", resource="jobs", status=403, message='jobs.batch "peon-forbidden" is forbidden'
    )

    with pytest.raises(DruidK8sTaskError) as failure:
        reap(hook, NAMESPACE, TWO_DAYS, overlord=NoActiveTasks())

    assert "task_peon-forbidden" in str(failure.value)
    assert "peon-forbidden" in str(failure.value)
    assert job_names(kube) == {"peon-forbidden"}


@pytest.fixture
def druid(monkeypatch: pytest.MonkeyPatch) -> Iterator[Druid]:
    """Both emulators; the Overlord keeps finished Jobs (``debugJobs``) for the reaper to find."""
    with both_emulators(monkeypatch, **{"druid.indexer.runner.debugJobs": "true"}) as druid:
        yield druid


def finished_tasks_and_an_active_one(druid: Druid) -> tuple[set[str], str, set[str]]:
    """Three tasks the Overlord completed (their Jobs kept by debugJobs) and one still RUNNING whose earlier
    Job (hand-made, finished three days ago) carries its task id. Returns the completed tasks' Jobs, that
    old Job's name and the active task's own running Job."""
    before = druid.job_names()
    for day in (1, 2, 3):
        task_id = druid.submit(
            index_parallel_task(f"index_parallel_done_{day}", f"2026-01-0{day}/2026-01-0{day + 1}")
        )
        druid.wait_for(task_id, "SUCCESS")
    done_jobs = druid.job_names() - before
    active = druid.submit(
        index_parallel_task("index_parallel_active", "2026-02-01/2026-02-02", standinDurationSeconds=60)
    )
    druid.wait_for(active, "RUNNING")
    wait_until(lambda: len(druid.job_names() - before) == 4, what="the active task's Job")
    active_jobs = druid.job_names() - before - done_jobs
    add_job(druid.kube, "peon-of-active-task", "Failed", age=dt.timedelta(days=3), task_id=active)
    return done_jobs, "peon-of-active-task", active_jobs


def test_a_job_whose_task_is_active_in_the_overlord_is_kept_with_one_batched_status_request(
    druid: Druid,
) -> None:
    done_jobs, old_job_of_active_task, active_jobs = finished_tasks_and_an_active_one(druid)
    druid.overlord.requests.clear()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)

    summary = reap(
        DruidK8sHook(namespace=NAMESPACE), NAMESPACE, dt.timedelta(0), now=later, overlord=DruidOverlordHook()
    )

    assert druid.job_names() == {old_job_of_active_task} | active_jobs
    assert summary["deleted"] == len(done_jobs) == 3
    assert summary["kept_task_active"] == 1 and summary["kept_running"] == 1
    assert druid.client_requests() == [("POST", "/druid/indexer/v1/taskStatus")]
    assert druid.status("index_parallel_active")["statusCode"] == "RUNNING"


def test_one_batched_status_request_per_page_of_jobs_with_deletion_candidates(druid: Druid) -> None:
    _, old_job_of_active_task, active_jobs = finished_tasks_and_an_active_one(druid)
    druid.overlord.requests.clear()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)

    summary = reap(
        DruidK8sHook(namespace=NAMESPACE),
        NAMESPACE,
        dt.timedelta(0),
        page_size=1,
        now=later,
        overlord=DruidOverlordHook(),
    )

    # Five pages of one Job; the page holding the running Job has no candidate and asks nothing.
    assert druid.client_requests() == [("POST", "/druid/indexer/v1/taskStatus")] * 4
    assert summary["examined"] == 5 and summary["deleted"] == 3
    assert druid.job_names() == {old_job_of_active_task} | active_jobs


def test_an_overlord_that_cannot_be_reached_means_no_job_is_deleted_in_that_sweep(
    druid: Druid, caplog: pytest.LogCaptureFixture
) -> None:
    finished_tasks_and_an_active_one(druid)
    jobs_before = druid.job_names()
    druid.overlord.set_leader(False)  # every API request answers 503
    impatient = OverlordRetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.01)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    with caplog.at_level(logging.INFO, logger="druid_k8s_provider.reaper"):
        summary = reap(
            DruidK8sHook(namespace=NAMESPACE),
            NAMESPACE,
            dt.timedelta(0),
            now=later,
            overlord=DruidOverlordHook(retry_policy=impatient),
        )
    druid.overlord.set_leader(True)

    assert druid.job_names() == jobs_before
    assert summary["deleted"] == 0 and summary["kept_overlord_unreachable"] == 4
    assert "Skipping every deletion of this sweep: the Overlord could not be asked" in caplog.text
    assert "druid_ingest_default" in caplog.text


def add_suspended_job(kube: KubeEmulator, name: str, task_id: str, ours: bool = True) -> None:
    """Store a Job as the operator creates it in ``launch_mode="airflow"`` before the submission: suspended,
    without the ``druid.k8s.peons`` label, with Druid's task-id label and (``ours``) the Airflow identity."""
    labels = {"druid.task.id": task_id.replace("_", "").lower()[:63]}
    annotations = {"task.id": task_id}
    if ours:
        annotations |= {"airflow.apache.org/dag-id": "etl", "airflow.apache.org/task-id": "load"}
    kube.store.create(
        "jobs",
        NAMESPACE,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "apache/druid:38.0.0"}],
                    },
                },
            },
        },
    )


def test_old_suspended_leftovers_go_unless_the_overlord_holds_their_task(druid: Druid) -> None:
    """A suspended, unlabelled Job of the operator whose submission never went through is deleted once old;
    one whose task is active in the Overlord, and an unlabelled Job that is not the provider's, stay."""
    active = druid.submit(index_parallel_task("index_parallel_active", standinDurationSeconds=60))
    druid.wait_for(active, "RUNNING")
    wait_until(lambda: bool(druid.job_names()), what="the active task's Job")
    active_jobs = druid.job_names()
    add_suspended_job(druid.kube, "leftover-never-submitted", "index_parallel_never_submitted")
    add_suspended_job(druid.kube, "leftover-of-active-task", active)
    add_suspended_job(druid.kube, "someone-elses", "index_parallel_other", ours=False)
    druid.overlord.requests.clear()
    days_later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)

    summary = reap(
        DruidK8sHook(namespace=NAMESPACE), NAMESPACE, TWO_DAYS, now=days_later, overlord=DruidOverlordHook()
    )

    assert druid.job_names() == active_jobs | {"leftover-of-active-task", "someone-elses"}
    assert summary["deleted"] == 1 and summary["kept_task_active"] == 1
    assert summary["kept_unlabelled"] == 1 and summary["kept_running"] == 1
    assert druid.client_requests() == [("POST", "/druid/indexer/v1/taskStatus")]
    assert druid.status(active)["statusCode"] == "RUNNING"


def test_an_overlord_that_cannot_be_reached_keeps_the_suspended_leftovers_too(druid: Druid) -> None:
    add_suspended_job(druid.kube, "leftover-never-submitted", "index_parallel_never_submitted")
    druid.overlord.set_leader(False)  # every API request answers 503
    impatient = OverlordRetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.01)
    days_later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    summary = reap(
        DruidK8sHook(namespace=NAMESPACE),
        NAMESPACE,
        TWO_DAYS,
        now=days_later,
        overlord=DruidOverlordHook(retry_policy=impatient),
    )
    druid.overlord.set_leader(True)

    assert druid.job_names() == {"leftover-never-submitted"}
    assert summary["deleted"] == 0 and summary["kept_overlord_unreachable"] == 1


def test_airflow_dags_test_of_the_reaper_dag_deletes_old_jobs_and_keeps_the_rest(
    druid: Druid, tmp_path: Path
) -> None:
    kube = druid.kube
    active = druid.submit(index_parallel_task("index_parallel_still_active", standinDurationSeconds=600))
    druid.wait_for(active, "RUNNING")
    add_job(kube, "old-complete", "Complete", age=dt.timedelta(days=3))
    add_job(kube, "old-failed", "Failed", age=dt.timedelta(days=4))
    add_job(kube, "old-of-active-task", "Failed", age=dt.timedelta(days=4), task_id=active)
    add_job(kube, "finished-an-hour-ago", "Complete", age=dt.timedelta(hours=1))
    add_job(kube, "not-a-peon", "Complete", age=dt.timedelta(days=9), labelled=False)
    jobs_before = job_names(kube)
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env |= {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags" / "druid_k8s_reaper.py"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": os.environ["AIRFLOW_CONN_KUBERNETES_DEFAULT"],
        "AIRFLOW_CONN_DRUID_INGEST_DEFAULT": os.environ["AIRFLOW_CONN_DRUID_INGEST_DEFAULT"],
        "AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES": json.dumps({"druid.indexer.runner.namespace": NAMESPACE}),
        "NO_PROXY": "*",
    }

    def airflow(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    assert airflow("db", "migrate").returncode == 0
    run = airflow("dags", "test", "druid_k8s_reaper")

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert job_names(kube) == jobs_before - {"old-complete", "old-failed"}
    assert "Deleted Job old-complete (task.id=task_old-complete)" in output
    assert f"Keeping Job old-of-active-task (task.id={active}): its task is still RUNNING" in output
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as db:
        xcom = db.execute(
            "SELECT key, value FROM xcom WHERE dag_id = ? AND task_id = ?",
            ("druid_k8s_reaper", "reap_finished_peon_jobs"),
        ).fetchall()
    [(key, value)] = xcom
    assert key == "return_value"
    assert json.loads(value) == {
        "namespace": NAMESPACE,
        "cleanup_delay_seconds": 172800,
        "examined": 5,
        "deleted": 2,
        "already_gone": 0,
        "kept_running": 1,
        "kept_young": 1,
        "kept_unlabelled": 0,
        "kept_being_deleted": 0,
        "kept_no_finish_time": 0,
        "kept_task_active": 1,
        "kept_overlord_unreachable": 0,
        "kept_suspended_young": 0,
    }
