"""The Job of ``launch_mode="airflow"``: created suspended and unlabelled, released by one merge patch."""

from __future__ import annotations

import copy

import pytest
from test_job_builder_support import KILL_TASK, build, config, container, overlord_pod, pod_template

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.launch.suspended import (
    carried_task,
    deletable_while_suspended,
    is_suspended,
    is_unlabelled,
    release_patch,
    suspended_unlabelled,
)
from druid_k8s_provider.naming import PEON_LABEL
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.patch import apply_patch
from druid_k8s_provider.triggers.overlord_board import OverlordBoard


def test_suspended_unlabelled_only_suspends_and_drops_the_peon_label() -> None:
    job = build(KILL_TASK, overlord_pod(), config(labels='{"team":"ingest"}'))
    original = copy.deepcopy(job)
    held = suspended_unlabelled(job)
    assert job == original  # the input is left as it was
    assert held["spec"]["suspend"] is True and is_suspended(held)
    assert PEON_LABEL not in held["metadata"]["labels"]
    assert PEON_LABEL not in held["spec"]["template"]["metadata"]["labels"]
    # Everything else is build_job's: the other labels, annotations, the pod spec, the Job's limits.
    expected = copy.deepcopy(original)
    expected["spec"]["suspend"] = True
    del expected["metadata"]["labels"][PEON_LABEL]
    del expected["spec"]["template"]["metadata"]["labels"][PEON_LABEL]
    assert held == expected
    assert held["metadata"]["labels"]["team"] == "ingest"


def test_release_patch_restores_the_job_build_job_made_and_resumes_it() -> None:
    job = build(KILL_TASK, overlord_pod(), config())
    released = apply_patch("application/merge-patch+json", suspended_unlabelled(job), release_patch())
    assert released["spec"]["suspend"] is False and not is_suspended(released)
    del released["spec"]["suspend"]
    assert released == job


def test_release_patch_is_fresh_each_time() -> None:
    patch = release_patch()
    patch["metadata"]["labels"]["x"] = "y"
    assert release_patch() == {
        "metadata": {"labels": {PEON_LABEL: "true"}},
        "spec": {"suspend": False, "template": {"metadata": {"labels": {PEON_LABEL: "true"}}}},
    }


@pytest.mark.parametrize("field", ["status_interval", "release_interval", "unknown_rounds"])
def test_board_refuses_intervals_and_round_counts_that_are_not_positive(field: str) -> None:
    with pytest.raises(DruidK8sConfigError) as refused:
        OverlordBoard(**{field: 0})
    assert refused.value.field == field


@pytest.mark.parametrize(
    "adapter",
    [
        pytest.param({}, id="overlordSingleContainer: env TASK_JSON"),
        pytest.param(
            {"k8s.adapter.type": "customTemplateAdapter"}, id="customTemplateAdapter: the annotation"
        ),
    ],
)
def test_carried_task_reads_back_the_task_the_job_was_built_with(adapter: dict[str, str]) -> None:
    template = pod_template() if adapter else overlord_pod()
    job = suspended_unlabelled(build(KILL_TASK, template, config(**adapter)))
    assert carried_task(job) == DruidTask.from_spec(KILL_TASK).spec
    changed = {**KILL_TASK, "interval": "2020-01-01/2021-01-01"}
    assert carried_task(job) != DruidTask.from_spec(changed).spec


@pytest.mark.parametrize(
    "payload",
    [None, "not base64 at all!", "aGVsbG8=", "H4sIAAAAAAAA_compressed_task_with_credentials"],
)
def test_carried_task_is_none_for_a_job_without_a_readable_task(payload: str | None) -> None:
    job = build(KILL_TASK, overlord_pod(), config())
    main = container(job)
    main["env"] = [var for var in main["env"] if var["name"] != "TASK_JSON"]
    if payload is not None:
        main["env"].append({"name": "TASK_JSON", "value": payload})
    assert carried_task(job) is None


def test_only_our_still_suspended_unlabelled_job_of_the_task_may_be_deleted() -> None:
    job = suspended_unlabelled(build(KILL_TASK, overlord_pod(), config()))
    task_id = KILL_TASK["id"]
    assert is_unlabelled(job) and deletable_while_suspended(job, task_id)
    assert not deletable_while_suspended(job, "another_task")
    released = apply_patch("application/merge-patch+json", job, release_patch())
    assert not is_unlabelled(released) and not deletable_while_suspended(released, task_id)
    deleting = copy.deepcopy(job)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not deletable_while_suspended(deleting, task_id)
