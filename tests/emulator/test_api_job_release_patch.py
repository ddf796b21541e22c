"""The pod template of a Job: immutable, except the scheduling directives of a suspended Job that never
started (Kubernetes 1.27 GA): what the release of a ``launch_mode="airflow"`` Job relies on, accepted and
refused as a real API server does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client import ApiException

from druid_k8s_provider.launch.suspended import release_patch

MERGE_PATCH = "application/merge-patch+json"


def _merge_patch(k8s: Any, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of a Job through the sync client (its own patch methods send other types)."""
    response = k8s.api.call_api(
        f"/apis/batch/v1/namespaces/default/jobs/{name}",
        "PATCH",
        header_params={"Content-Type": MERGE_PATCH, "Accept": "application/json"},
        body=patch,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    return dict(json.loads(response.data))


def _refusal(k8s: Any, name: str, patch: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        _merge_patch(k8s, name, patch)
    assert refused.value.status == 422
    return str(json.loads(refused.value.body)["message"])


def _template_labels(job: dict[str, Any]) -> dict[str, str]:
    return dict(job["spec"]["template"]["metadata"]["labels"])


def test_release_patch_of_a_suspended_job_that_never_started_is_accepted(k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("held", suspend=True))
    released = _merge_patch(k8s, "held", release_patch())
    assert released["spec"]["suspend"] is False
    assert released["metadata"]["labels"]["druid.k8s.peons"] == "true"
    labels = _template_labels(released)
    assert labels["druid.k8s.peons"] == "true"
    # The labels the API server put on the template stay: the selector still matches.
    assert labels["batch.kubernetes.io/job-name"] == "held"


def test_scheduling_directives_of_a_suspended_job_that_never_started_may_change(
    k8s: Any, job_manifest: Any
) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("placed", suspend=True))
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": {"note": "x"}},
                "spec": {
                    "nodeSelector": {"pool": "druid"},
                    "tolerations": [{"key": "druid", "operator": "Exists"}],
                },
            }
        }
    }
    placed = _merge_patch(k8s, "placed", patch)
    assert placed["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "druid"}
    assert placed["spec"]["template"]["metadata"]["annotations"] == {"note": "x"}


def test_the_template_of_a_job_that_is_not_suspended_is_immutable(k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("running"))
    message = _refusal(k8s, "running", release_patch())
    assert "spec.template" in message and "field is immutable" in message
    # The Job's own labels stay mutable.
    relabelled = _merge_patch(k8s, "running", {"metadata": {"labels": {"druid.k8s.peons": "true"}}})
    assert relabelled["metadata"]["labels"] == {"druid.k8s.peons": "true"}
    assert "druid.k8s.peons" not in _template_labels(relabelled)


def test_the_template_of_a_suspended_job_that_started_once_is_immutable(k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("paused", suspend=True))
    k8s.batch.patch_namespaced_job_status(
        "paused", "default", {"status": {"startTime": "2026-01-01T00:00:00Z"}}
    )
    message = _refusal(k8s, "paused", release_patch())
    assert "spec.template" in message and "field is immutable" in message
    job = k8s.batch.read_namespaced_job("paused", "default")
    assert job.spec.suspend is True  # the refused patch changed nothing, not even suspend


def test_a_suspended_job_that_never_started_keeps_its_containers_and_selector(
    k8s: Any, job_manifest: Any
) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("fixed", suspend=True))
    image = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "other:1"}]}}}}
    assert "field is immutable" in _refusal(k8s, "fixed", image)
    unmatched = {"spec": {"template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": None}}}}}
    assert "`selector` does not match template `labels`" in _refusal(k8s, "fixed", unmatched)
    bad_label = {"spec": {"template": {"metadata": {"labels": {"druid.k8s.peons": "not ok!"}}}}}
    assert "spec.template.metadata.labels" in _refusal(k8s, "fixed", bad_label)
