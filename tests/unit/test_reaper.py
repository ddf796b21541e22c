"""The reaper's selection rules and sweep loop, without Kubernetes: what gets deleted and what never does."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# Imported before any test: importing the Kubernetes hook sets Airflow's logging up, which would drop the
# caplog handler of whichever test first imported it (the sweep's preflight imports it).
import druid_k8s_provider.hooks.druid_k8s  # noqa: F401
from druid_k8s_provider.errors import DruidK8sConfigError, OverlordApiError
from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.reaper import (
    Verdict,
    keep_active_tasks,
    reap,
    select_jobs_to_reap,
    select_suspended_leftovers,
    suspended_leftover_age,
)
from druid_k8s_provider.reaper.rules import LABELLED_SELECTOR, UNLABELLED_SELECTOR

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
TWO_DAYS = dt.timedelta(days=2)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(
    name: str,
    *,
    finished: str | None = None,
    finished_ago: dt.timedelta | None = None,
    labelled: bool = True,
    deleting: bool = False,
    completion_time: bool = True,
    condition_time: bool = True,
) -> dict[str, Any]:
    """A Job as the API returns it; ``finished`` is the terminal condition type (None: still running)."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "druid",
        "labels": {"druid.k8s.peons": "true"} if labelled else {"app": "other"},
        "annotations": {"task.id": f"index_parallel_{name}"},
    }
    if deleting:
        metadata["deletionTimestamp"] = stamp(NOW)
    status: dict[str, Any] = {"active": 1} if finished is None else {}
    if finished is not None:
        when = stamp(NOW - (finished_ago or dt.timedelta(0)))
        condition: dict[str, Any] = {"type": finished, "status": "True"}
        if condition_time:
            condition["lastTransitionTime"] = when
        status["conditions"] = [{"type": "SuccessCriteriaMet", "status": "True"}, condition]
        if completion_time and finished == "Complete":
            status["completionTime"] = when
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "status": status}


def test_old_complete_and_failed_jobs_are_deleted_with_their_reason() -> None:
    plan = select_jobs_to_reap(
        [
            job("old-ok", finished="Complete", finished_ago=dt.timedelta(days=3)),
            job("old-failed", finished="Failed", finished_ago=dt.timedelta(days=2, seconds=1)),
        ],
        NOW,
        TWO_DAYS,
    )
    assert [d.name for d in plan.to_delete] == ["old-ok", "old-failed"]
    assert plan.to_delete[0].explanation == "Complete 3d ago, older than taskCleanupDelay 2d"
    assert plan.to_delete[0].task_id == "index_parallel_old-ok"


def test_running_young_unlabelled_and_deleting_jobs_are_kept_and_say_why() -> None:
    plan = select_jobs_to_reap(
        [
            job("running"),
            job("young", finished="Complete", finished_ago=dt.timedelta(hours=47)),
            job("exactly-at-delay", finished="Failed", finished_ago=TWO_DAYS),
            job("foreign", finished="Complete", finished_ago=dt.timedelta(days=9), labelled=False),
            job("deleting", finished="Complete", finished_ago=dt.timedelta(days=9), deleting=True),
        ],
        NOW,
        TWO_DAYS,
    )
    assert plan.to_delete == ()
    assert [d.verdict for d in plan.to_keep] == [
        Verdict.KEEP_RUNNING,
        Verdict.KEEP_YOUNG,
        Verdict.KEEP_YOUNG,
        Verdict.KEEP_UNLABELLED,
        Verdict.KEEP_BEING_DELETED,
    ]
    assert plan.to_keep[1].explanation == "Complete 1d 23h ago, within taskCleanupDelay 2d"


def test_non_terminal_conditions_do_not_count_as_finished() -> None:
    pending_failure = job("failing")
    pending_failure["status"]["conditions"] = [
        {"type": "FailureTarget", "status": "True", "lastTransitionTime": stamp(NOW - dt.timedelta(days=5))},
        {"type": "Failed", "status": "False", "lastTransitionTime": stamp(NOW - dt.timedelta(days=5))},
    ]
    assert select_jobs_to_reap([pending_failure], NOW, TWO_DAYS).to_keep[0].verdict is Verdict.KEEP_RUNNING


def test_finish_time_falls_back_to_completion_time_and_takes_the_later_clock() -> None:
    only_completion_time = job(
        "a", finished="Complete", finished_ago=dt.timedelta(days=3), condition_time=False
    )
    later_condition = job("b", finished="Complete", finished_ago=dt.timedelta(days=3))
    later_condition["status"]["conditions"][-1]["lastTransitionTime"] = stamp(NOW - dt.timedelta(hours=1))
    no_time_at_all = job(
        "c",
        finished="Complete",
        finished_ago=dt.timedelta(days=3),
        condition_time=False,
        completion_time=False,
    )
    plan = select_jobs_to_reap([only_completion_time, later_condition, no_time_at_all], NOW, TWO_DAYS)
    assert [d.verdict for d in plan.decisions] == [
        Verdict.DELETE,
        Verdict.KEEP_YOUNG,
        Verdict.KEEP_NO_FINISH_TIME,
    ]


def test_naive_now_and_negative_delay_are_refused_naming_the_input() -> None:
    with pytest.raises(DruidK8sConfigError) as naive:
        select_jobs_to_reap([], NOW.replace(tzinfo=None), TWO_DAYS)
    assert naive.value.field == "now"
    with pytest.raises(DruidK8sConfigError) as negative:
        select_jobs_to_reap([], NOW, -TWO_DAYS)
    assert negative.value.field == "druid.indexer.runner.taskCleanupDelay"


job_specs = st.fixed_dictionaries(
    {
        "finished": st.sampled_from([None, "Complete", "Failed"]),
        "finished_ago_seconds": st.integers(min_value=-3600, max_value=10 * 86400),
        "labelled": st.booleans(),
        "deleting": st.booleans(),
        "completion_time": st.booleans(),
    }
)


def build(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    return job(
        f"job-{index}",
        finished=spec["finished"],
        finished_ago=dt.timedelta(seconds=spec["finished_ago_seconds"]),
        labelled=spec["labelled"],
        deleting=spec["deleting"],
        completion_time=spec["completion_time"],
    )


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(job_specs, max_size=40), delay_seconds=st.integers(min_value=0, max_value=5 * 86400))
def test_property_deletes_exactly_the_old_finished_labelled_jobs(
    specs: list[dict[str, Any]], delay_seconds: int
) -> None:
    jobs = [build(index, spec) for index, spec in enumerate(specs)]
    plan = select_jobs_to_reap(jobs, NOW, dt.timedelta(seconds=delay_seconds))
    deleted = {d.name for d in plan.to_delete}
    for index, spec in enumerate(specs):
        eligible = (
            spec["labelled"]
            and not spec["deleting"]
            and spec["finished"] is not None
            and spec["finished_ago_seconds"] > delay_seconds
        )
        assert (f"job-{index}" in deleted) == eligible, spec
    assert len(plan.decisions) == len(jobs)


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(job_specs, max_size=40), delay_seconds=st.integers(min_value=0, max_value=5 * 86400))
def test_property_never_deletes_running_young_or_unlabelled_jobs(
    specs: list[dict[str, Any]], delay_seconds: int
) -> None:
    jobs = [build(index, spec) for index, spec in enumerate(specs)]
    for decision in select_jobs_to_reap(jobs, NOW, dt.timedelta(seconds=delay_seconds)).to_delete:
        original = jobs[int(decision.name.removeprefix("job-"))]
        assert original["metadata"]["labels"].get("druid.k8s.peons") == "true"
        assert "active" not in original["status"]
        assert "deletionTimestamp" not in original["metadata"]
        finished = [c for c in original["status"]["conditions"] if c["type"] in ("Complete", "Failed")]
        age = NOW - dt.datetime.fromisoformat(finished[0]["lastTransitionTime"])
        assert age > dt.timedelta(seconds=delay_seconds)


class FakeOverlord:
    """Answers batched status requests from ``states`` (task id → statusCode) and records each request."""

    def __init__(self, states: dict[str, str] | None = None, down: bool = False) -> None:
        self.states = states or {}
        self.down = down
        self.requests: list[list[str]] = []

    def task_statuses(self, task_ids: Sequence[str]) -> dict[str, OverlordTaskStatus]:
        self.requests.append(list(task_ids))
        if self.down:
            raise OverlordApiError(
                "POST /druid/indexer/v1/taskStatus failed: HTTP 503",
                conn_id="druid_ingest_default",
                path="/druid/indexer/v1/taskStatus",
            )
        return {
            task_id: OverlordTaskStatus(task_id, self.states[task_id])
            for task_id in task_ids
            if task_id in self.states
        }


class FakeHook:
    """Lists Jobs in pages like the hook (``jobs`` for the peon label, ``unlabelled`` for the second pass's
    selector) and remembers deletes with their version precondition; ``vanished`` Jobs are already gone."""

    def __init__(
        self,
        jobs: list[dict[str, Any]],
        vanished: frozenset[str] = frozenset(),
        unlabelled: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.jobs = jobs
        self.unlabelled = list(unlabelled)
        self.vanished = set(vanished)
        self.deleted: list[str] = []
        self.versions: dict[str, str | None] = {}
        self.pages_served = 0
        self.max_in_flight = 0

    def list_peon_jobs(
        self, namespace: str, page_size: int = 500, *, selector: str = LABELLED_SELECTOR
    ) -> Iterator[dict[str, Any]]:
        listed = {LABELLED_SELECTOR: self.jobs, UNLABELLED_SELECTOR: self.unlabelled}[selector]
        for start in range(0, len(listed), page_size):
            self.pages_served += 1
            yield from listed[start : start + page_size]

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
        if name in self.vanished:
            return False
        self.deleted.append(name)
        self.versions[name] = resource_version
        return True


def test_reap_deletes_by_plan_counts_everything_and_tolerates_vanished_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = FakeHook(
        [
            job("old-1", finished="Complete", finished_ago=dt.timedelta(days=3)),
            job("old-2", finished="Failed", finished_ago=dt.timedelta(days=3)),
            job("gone", finished="Failed", finished_ago=dt.timedelta(days=3)),
            job("running"),
            job("young", finished="Complete", finished_ago=dt.timedelta(minutes=5)),
        ],
        vanished=frozenset({"gone"}),
    )
    with caplog.at_level(logging.INFO, logger="druid_k8s_provider.reaper"):
        summary = reap(hook, "druid", TWO_DAYS, page_size=2, now=NOW, overlord=FakeOverlord())
    assert hook.deleted == ["old-1", "old-2"]
    assert hook.pages_served == 3
    assert summary == {
        "namespace": "druid",
        "cleanup_delay_seconds": 172800,
        "examined": 5,
        "deleted": 2,
        "already_gone": 1,
        "kept_running": 1,
        "kept_young": 1,
        "kept_unlabelled": 0,
        "kept_being_deleted": 0,
        "kept_no_finish_time": 0,
        "kept_task_active": 0,
        "kept_overlord_unreachable": 0,
        "kept_suspended_young": 0,
    }
    assert "Deleted Job old-1 (task.id=index_parallel_old-1): Complete 3d ago" in caplog.text
    assert "Keeping Job running (task.id=index_parallel_running): still running" in caplog.text
    assert "Job gone (task.id=index_parallel_gone) was already gone" in caplog.text


def test_reap_pulls_one_page_at_a_time() -> None:
    """The sweep deletes a page's Jobs before it asks for the next page: memory is one page, not N Jobs."""
    events: list[str] = []

    class RecordingHook(FakeHook):
        def list_peon_jobs(
            self, namespace: str, page_size: int = 500, *, selector: str = LABELLED_SELECTOR
        ) -> Iterator[dict[str, Any]]:
            for start in range(0, len(self.jobs) if selector == LABELLED_SELECTOR else 0, page_size):
                events.append(f"page {start // page_size}")
                yield from self.jobs[start : start + page_size]

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
            events.append(f"delete {name}")
            return True

    old = dt.timedelta(days=3)
    hook = RecordingHook([job(f"j{i}", finished="Complete", finished_ago=old) for i in range(4)])
    reap(hook, "druid", TWO_DAYS, page_size=2, now=NOW, overlord=FakeOverlord())
    assert events == ["page 0", "delete j0", "delete j1", "page 1", "delete j2", "delete j3"]


def test_reap_refuses_a_zero_page_size_before_listing() -> None:
    hook = FakeHook([job("old", finished="Complete", finished_ago=dt.timedelta(days=3))])
    with pytest.raises(DruidK8sConfigError, match="page_size"):
        reap(hook, "druid", TWO_DAYS, page_size=0, now=NOW, overlord=FakeOverlord())
    assert hook.pages_served == 0


OLD = dt.timedelta(days=3)


def test_a_job_whose_task_is_active_in_the_overlord_is_kept_saying_why() -> None:
    plan = select_jobs_to_reap(
        [
            job("active", finished="Failed", finished_ago=OLD),
            job("done", finished="Complete", finished_ago=OLD),
        ],
        NOW,
        TWO_DAYS,
    )
    statuses = {
        "index_parallel_active": OverlordTaskStatus("index_parallel_active", "RUNNING"),
        "index_parallel_done": OverlordTaskStatus("index_parallel_done", "SUCCESS"),
    }
    kept = keep_active_tasks(plan, statuses)
    assert [d.name for d in kept.to_delete] == ["done"]
    [active] = kept.to_keep
    assert active.verdict is Verdict.KEEP_TASK_ACTIVE
    assert active.explanation.startswith("its task is still RUNNING in the Overlord (Failed 3d ago")


def test_a_task_the_overlord_does_not_know_does_not_keep_its_finished_job() -> None:
    plan = select_jobs_to_reap([job("orphan", finished="Complete", finished_ago=OLD)], NOW, TWO_DAYS)
    assert [d.name for d in keep_active_tasks(plan, {}).to_delete] == ["orphan"]


def test_reap_asks_the_overlord_once_per_page_and_only_about_deletion_candidates() -> None:
    hook = FakeHook(
        [
            job("a", finished="Complete", finished_ago=OLD),
            job("b", finished="Complete", finished_ago=OLD),
            job("running-1"),
            job("running-2"),
            job("c", finished="Failed", finished_ago=OLD),
            job("young", finished="Complete", finished_ago=dt.timedelta(minutes=1)),
        ]
    )
    overlord = FakeOverlord({"index_parallel_b": "RUNNING", "index_parallel_a": "SUCCESS"})
    summary = reap(hook, "druid", TWO_DAYS, page_size=2, now=NOW, overlord=overlord)
    assert overlord.requests == [["index_parallel_a", "index_parallel_b"], ["index_parallel_c"]]
    assert hook.deleted == ["a", "c"]
    assert summary["kept_task_active"] == 1 and summary["deleted"] == 2


def test_an_unreachable_overlord_skips_every_deletion_of_the_sweep(caplog: pytest.LogCaptureFixture) -> None:
    hook = FakeHook([job(f"old-{i}", finished="Complete", finished_ago=OLD) for i in range(4)] + [job("run")])
    overlord = FakeOverlord(down=True)
    with caplog.at_level(logging.INFO, logger="druid_k8s_provider.reaper"):
        summary = reap(hook, "druid", TWO_DAYS, page_size=2, now=NOW, overlord=overlord)
    assert hook.deleted == []
    assert len(overlord.requests) == 1, "the sweep must not keep asking a down Overlord page after page"
    assert summary["kept_overlord_unreachable"] == 4 and summary["kept_running"] == 1
    assert "Skipping every deletion of this sweep: the Overlord could not be asked" in caplog.text
    assert "HTTP 503" in caplog.text


# -- the provider's suspended leftovers (launch_mode="airflow") ------------------------------------------


def suspended_job(
    name: str,
    *,
    created_ago: dt.timedelta = OLD,
    suspended: bool = True,
    ours: bool = True,
    deleting: bool = False,
) -> dict[str, Any]:
    """An unlabelled Job as the second pass lists it: the operator's Job created suspended before its
    submission (``ours``: with the Airflow identity annotations)."""
    annotations = {"task.id": f"index_parallel_{name}"}
    if ours:
        annotations |= {"airflow.apache.org/dag-id": "etl", "airflow.apache.org/task-id": "load"}
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "druid",
        "uid": f"uid-{name}",
        "resourceVersion": f"rv-{name}",
        "creationTimestamp": stamp(NOW - created_ago),
        "labels": {"druid.task.id": f"indexparallel{name}"},
        "annotations": annotations,
    }
    if deleting:
        metadata["deletionTimestamp"] = stamp(NOW)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": {"suspend": suspended}}


def test_old_suspended_leftovers_are_deleted_and_everything_else_unlabelled_is_kept_saying_why() -> None:
    plan = select_suspended_leftovers(
        [
            suspended_job("old"),
            suspended_job("young", created_ago=dt.timedelta(days=1)),
            suspended_job("released", suspended=False),
            suspended_job("someone-elses", ours=False),
            suspended_job("deleting", deleting=True),
        ],
        NOW,
        TWO_DAYS,
    )
    verdicts = {decision.name: decision.verdict for decision in plan.decisions}
    assert verdicts == {
        "old": Verdict.DELETE,
        "young": Verdict.KEEP_SUSPENDED_YOUNG,
        "released": Verdict.KEEP_UNLABELLED,
        "someone-elses": Verdict.KEEP_UNLABELLED,
        "deleting": Verdict.KEEP_BEING_DELETED,
    }
    [old] = plan.to_delete
    assert old.resource_version == "rv-old" and old.uid == "uid-old" and old.task_id == "index_parallel_old"
    assert old.explanation.startswith("suspended and never released since its create 3d ago, older than 2d")


def test_a_suspended_leftover_waits_at_least_an_hour_whatever_the_cleanup_delay() -> None:
    assert suspended_leftover_age(dt.timedelta(0)) == dt.timedelta(hours=1)
    assert suspended_leftover_age(TWO_DAYS) == TWO_DAYS
    minutes = [suspended_job("fresh", created_ago=dt.timedelta(minutes=5))]
    [fresh] = select_suspended_leftovers(minutes, NOW, dt.timedelta(0)).decisions
    assert fresh.verdict is Verdict.KEEP_SUSPENDED_YOUNG


def test_a_suspended_leftover_whose_task_is_active_is_kept_one_whose_task_ended_or_is_unknown_goes() -> None:
    plan = select_suspended_leftovers(
        [suspended_job("waiting"), suspended_job("ended"), suspended_job("unknown")], NOW, TWO_DAYS
    )
    statuses = {
        "index_parallel_waiting": OverlordTaskStatus("index_parallel_waiting", "RUNNING"),
        "index_parallel_ended": OverlordTaskStatus("index_parallel_ended", "FAILED"),
    }
    kept = keep_active_tasks(plan, statuses)
    assert [d.name for d in kept.to_delete] == ["ended", "unknown"]
    [waiting] = kept.to_keep
    assert waiting.verdict is Verdict.KEEP_TASK_ACTIVE
    assert waiting.explanation.endswith(
        "the operator releases the Job once the Overlord hands the task to its runner"
    )


def test_reap_deletes_suspended_leftovers_by_version_after_one_status_request_per_page() -> None:
    hook = FakeHook(
        [job("finished", finished="Complete", finished_ago=OLD)],
        unlabelled=[suspended_job("a"), suspended_job("b"), suspended_job("c")],
    )
    overlord = FakeOverlord({"index_parallel_b": "RUNNING"})
    summary = reap(hook, "druid", TWO_DAYS, page_size=2, now=NOW, overlord=overlord)
    assert overlord.requests == [
        ["index_parallel_finished"],
        ["index_parallel_a", "index_parallel_b"],
        ["index_parallel_c"],
    ]
    assert hook.deleted == ["finished", "a", "c"]
    assert hook.versions == {"finished": None, "a": "rv-a", "c": "rv-c"}
    assert summary["examined"] == 4 and summary["deleted"] == 3 and summary["kept_task_active"] == 1


def test_an_unreachable_overlord_keeps_the_suspended_leftovers_too() -> None:
    hook = FakeHook([], unlabelled=[suspended_job("a"), suspended_job("b")])
    summary = reap(hook, "druid", TWO_DAYS, now=NOW, overlord=FakeOverlord(down=True))
    assert hook.deleted == []
    assert summary["kept_overlord_unreachable"] == 2
