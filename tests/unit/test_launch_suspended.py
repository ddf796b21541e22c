"""The Job of ``launch_mode="airflow"``: created suspended and unlabelled, released by one merge patch."""

from __future__ import annotations

import copy

import pytest
from test_job_builder_support import KILL_TASK, build, config, overlord_pod

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.launch.suspended import is_suspended, release_patch, suspended_unlabelled
from druid_k8s_provider.naming import PEON_LABEL
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
