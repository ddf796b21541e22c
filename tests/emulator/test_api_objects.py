"""Object semantics through the official sync client: what a real API server fills in, refuses and deletes."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes.client import ApiException

from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.patch import strategic_merge_patch


def _status(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def _raw(
    kube: KubeEmulator, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> Any:
    """One HTTP call without a client library, returning the decoded JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(kube.url + path, data=data, method=method)
    request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_job_create_fills_selector_labels_and_defaults(
    k8s: Any, kube: KubeEmulator, job_manifest: Any
) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("fill"))
    job = _raw(kube, "GET", "/apis/batch/v1/namespaces/default/jobs/fill")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job["metadata"]["creationTimestamp"])
    uid = job["metadata"]["uid"]
    assert job["metadata"]["generation"] == 1
    assert int(job["metadata"]["resourceVersion"]) > 0
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": "fill",
        "controller-uid": uid,
        "job-name": "fill",
    }
    spec = job["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 6)
    assert (spec["completionMode"], spec["suspend"]) == ("NonIndexed", False)
    pod_spec = spec["template"]["spec"]
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    assert pod_spec["dnsPolicy"] == "ClusterFirst"
    assert pod_spec["schedulerName"] == "default-scheduler"
    container = pod_spec["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"  # tagged image; ":latest" or no tag means Always
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"


def test_pod_create_defaults_and_pending_status(k8s: Any, pod_manifest: Any) -> None:
    manifest = pod_manifest("p")
    manifest["spec"]["containers"][0]["image"] = "busybox"
    pod = k8s.api.sanitize_for_serialization(k8s.core.create_namespaced_pod("default", manifest))
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert pod["spec"]["serviceAccountName"] == "default"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert pod["spec"]["restartPolicy"] == "Always"


def test_generate_name_gives_a_unique_suffix(k8s: Any, pod_manifest: Any) -> None:
    manifest = pod_manifest("")
    manifest["metadata"] = {"generateName": "worker-"}
    first = k8s.core.create_namespaced_pod("default", manifest)
    second = k8s.core.create_namespaced_pod("default", manifest)
    assert first.metadata.name.startswith("worker-") and len(first.metadata.name) == len("worker-") + 5
    assert first.metadata.name != second.metadata.name


def test_already_exists_and_not_found_are_status_bodies(k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("dup"))
    with pytest.raises(ApiException) as exists:
        k8s.batch.create_namespaced_job("default", job_manifest("dup"))
    assert exists.value.status == 409
    assert _status(exists.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'jobs.batch "dup" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "dup", "group": "batch", "kind": "jobs"},
        "code": 409,
    }
    with pytest.raises(ApiException) as missing:
        k8s.core.read_namespaced_pod("ghost", "default")
    assert missing.value.status == 404
    assert _status(missing.value)["message"] == 'pods "ghost" not found'
    assert _status(missing.value)["details"] == {"name": "ghost", "kind": "pods"}


def test_invalid_name_and_labels_give_422_with_causes(k8s: Any, job_manifest: Any) -> None:
    with pytest.raises(ApiException) as invalid:
        k8s.batch.create_namespaced_job("default", job_manifest("Bad_Name", labels={"ok": "not ok!"}))
    status = _status(invalid.value)
    assert invalid.value.status == 422
    assert status["reason"] == "Invalid"
    assert status["message"].startswith(
        'Job.batch "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name"'
    )
    assert [cause["field"] for cause in status["details"]["causes"]] == ["metadata.name", "metadata.labels"]
    assert status["details"]["kind"] == "Job"


def test_job_pod_template_needs_a_job_restart_policy(k8s: Any, job_manifest: Any) -> None:
    manifest = job_manifest("always")
    del manifest["spec"]["template"]["spec"]["restartPolicy"]
    with pytest.raises(ApiException) as invalid:
        k8s.batch.create_namespaced_job("default", manifest)
    assert (
        'spec.template.spec.restartPolicy: Unsupported value: "Always"' in _status(invalid.value)["message"]
    )


def test_create_in_missing_namespace_is_404(k8s: Any) -> None:
    with pytest.raises(ApiException) as missing:
        k8s.core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    assert missing.value.status == 404
    assert _status(missing.value)["message"] == 'namespaces "nowhere" not found'


def test_stale_resource_version_conflicts(k8s: Any) -> None:
    created = k8s.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cm"}, "data": {"a": "1"}}
    )
    k8s.core.patch_namespaced_config_map("cm", "default", {"data": {"a": "2"}})
    created.data = {"a": "3"}
    with pytest.raises(ApiException) as conflict:
        k8s.core.replace_namespaced_config_map("cm", "default", created)
    assert conflict.value.status == 409
    assert _status(conflict.value)["message"] == (
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; please apply your '
        "changes to the latest version and try again"
    )


def test_resource_versions_increase_cluster_wide_and_noop_writes_keep_them(
    k8s: Any, job_manifest: Any
) -> None:
    first = k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    second = k8s.batch.create_namespaced_job("default", job_manifest("b"))
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    unchanged = k8s.core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": None}})
    assert unchanged.metadata.resource_version == first.metadata.resource_version


def test_generation_bumps_on_spec_change_only_and_status_is_separate(k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("gen"))
    relabelled = k8s.batch.patch_namespaced_job("gen", "default", {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.generation == 1
    suspended = k8s.batch.patch_namespaced_job("gen", "default", {"spec": {"suspend": True}})
    assert suspended.metadata.generation == 2
    # Status written through the main resource is ignored; through /status it lands and spec stays.
    ignored = k8s.batch.patch_namespaced_job("gen", "default", {"status": {"active": 1}})
    assert ignored.status.active is None
    with_status = k8s.batch.patch_namespaced_job_status(
        "gen", "default", {"status": {"active": 1}, "spec": {"suspend": False}}
    )
    assert with_status.status.active == 1
    assert with_status.spec.suspend is True
    assert with_status.metadata.generation == 2


def test_job_template_is_immutable(k8s: Any, job_manifest: Any) -> None:
    k8s.batch.create_namespaced_job("default", job_manifest("frozen"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "other:1"}]}}}}
    with pytest.raises(ApiException) as invalid:
        k8s.batch.patch_namespaced_job("frozen", "default", patch)
    assert invalid.value.status == 422
    assert "spec.template: Invalid value" in _status(invalid.value)["message"]
    assert "field is immutable" in _status(invalid.value)["message"]


def test_strategic_merge_patch_merges_containers_by_name(k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("smp", containers=("main", "side")))
    patch = {
        "metadata": {"annotations": {"note": "x"}},
        "spec": {"containers": [{"name": "side", "image": "busybox:1.37"}]},
    }
    pod = k8s.core.patch_namespaced_pod("smp", "default", patch)  # the client sends strategic merge patch
    assert [(c.name, c.image) for c in pod.spec.containers] == [
        ("main", "busybox:1.36"),
        ("side", "busybox:1.37"),
    ]
    assert pod.metadata.annotations == {"note": "x"}


def test_pod_spec_changes_other_than_images_are_forbidden(k8s: Any, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("fixed"))
    patch = {"spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "1"}]}]}}
    with pytest.raises(ApiException) as forbidden:
        k8s.core.patch_namespaced_pod("fixed", "default", patch)
    assert forbidden.value.status == 422
    assert "pod updates may not change fields other than" in _status(forbidden.value)["message"]


def test_strategic_merge_patch_of_env_finalizers_and_deletion_directives() -> None:
    current = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [
                {"name": "main", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
            ]
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}],
            "containers": [
                {"name": "main", "env": [{"name": "B", "value": "3"}, {"name": "A", "$patch": "delete"}]}
            ],
        },
    }
    result = strategic_merge_patch(current, patch)
    assert result["metadata"]["finalizers"] == ["a", "b"]
    assert result["spec"]["containers"] == [{"name": "main", "env": [{"name": "B", "value": "3"}]}]


def test_json_merge_patch_and_json_patch(k8s: Any, kube: KubeEmulator) -> None:
    k8s.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "m"}, "data": {"a": "1", "b": "2"}}
    )
    path = "/api/v1/namespaces/default/configmaps/m"
    merged = _raw(kube, "PATCH", path, {"data": {"a": None, "c": "3"}}, "application/merge-patch+json")
    assert merged["data"] == {"b": "2", "c": "3"}
    operations = [
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "add", "path": "/data/d", "value": "4"},
    ]
    patched = _raw(kube, "PATCH", path, operations, "application/json-patch+json")
    assert patched["data"] == {"b": "20", "c": "3", "d": "4"}
    with pytest.raises(urllib.error.HTTPError) as unsupported:
        _raw(kube, "PATCH", path, {"data": {}}, "application/apply-patch+yaml")
    assert unsupported.value.code == 415


def _owned_pod(k8s: Any, job: Any, name: str, pod_manifest: Any) -> None:
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    k8s.core.create_namespaced_pod("default", pod_manifest(name, ownerReferences=[owner]))


def _pod_names(k8s: Any) -> list[str]:
    return [pod.metadata.name for pod in k8s.core.list_namespaced_pod("default").items]


def test_background_deletion_collects_dependents(k8s: Any, job_manifest: Any, pod_manifest: Any) -> None:
    job = k8s.batch.create_namespaced_job("default", job_manifest("bg"))
    _owned_pod(k8s, job, "bg-pod", pod_manifest)
    result = k8s.api.sanitize_for_serialization(
        k8s.batch.delete_namespaced_job("bg", "default", propagation_policy="Background")
    )
    assert result["status"] == "Success" and result["details"]["uid"] == job.metadata.uid
    _wait_until(lambda: _pod_names(k8s) == [])


def test_default_job_deletion_orphans_pods_like_batch_v1(
    k8s: Any, job_manifest: Any, pod_manifest: Any
) -> None:
    job = k8s.batch.create_namespaced_job("default", job_manifest("orph"))
    _owned_pod(k8s, job, "orph-pod", pod_manifest)
    k8s.batch.delete_namespaced_job("orph", "default")  # no propagationPolicy: batch/v1 Jobs orphan
    _wait_until(lambda: not k8s.batch.list_namespaced_job("default").items)
    pod = k8s.core.read_namespaced_pod("orph-pod", "default")
    assert pod.metadata.owner_references is None


def test_foreground_deletion_waits_for_dependents(
    k8s: Any, kube: KubeEmulator, job_manifest: Any, pod_manifest: Any
) -> None:
    job = k8s.batch.create_namespaced_job("default", job_manifest("fg"))
    finalized = pod_manifest("fg-pod", finalizers=["example.com/hold"])
    finalized["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "fg",
            "uid": job.metadata.uid,
            "blockOwnerDeletion": True,
        }
    ]
    k8s.core.create_namespaced_pod("default", finalized)
    deleting = _raw(
        kube, "DELETE", "/apis/batch/v1/namespaces/default/jobs/fg", {"propagationPolicy": "Foreground"}
    )
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
    # The pod is held by its own finalizer, so the Job must stay visible, marked for deletion.
    _wait_until(
        lambda: k8s.core.read_namespaced_pod("fg-pod", "default").metadata.deletion_timestamp is not None
    )
    assert k8s.batch.read_namespaced_job("fg", "default").metadata.deletion_timestamp is not None
    k8s.core.patch_namespaced_pod("fg-pod", "default", {"metadata": {"finalizers": None}})
    _wait_until(lambda: not k8s.batch.list_namespaced_job("default").items)
    assert _pod_names(k8s) == []


def test_finalizers_keep_an_object_until_removed(k8s: Any) -> None:
    k8s.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "held", "finalizers": ["x.io/keep"]}}
    )
    k8s.core.delete_namespaced_config_map("held", "default")
    held = k8s.core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    k8s.core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        k8s.core.read_namespaced_config_map("held", "default")
    assert gone.value.status == 404


def test_scheduled_pod_deletion_is_graceful(k8s: Any, kube: KubeEmulator, pod_manifest: Any) -> None:
    k8s.core.create_namespaced_pod("default", pod_manifest("running"))
    kube.store.mutate("pods", "default", "running", lambda pod: pod["spec"].update(nodeName="node-1"))
    deleting = k8s.core.delete_namespaced_pod("running", "default", grace_period_seconds=10)
    assert deleting.metadata.deletion_grace_period_seconds == 10
    assert k8s.core.read_namespaced_pod("running", "default").metadata.deletion_timestamp is not None
    # The kubelet confirms the containers stopped with a zero-grace delete.
    kube.store.delete("pods", "default", "running", grace_period_seconds=0)
    assert _pod_names(k8s) == []


def test_namespace_deletion_removes_its_contents(k8s: Any) -> None:
    k8s.core.create_namespace({"metadata": {"name": "scratch"}})
    k8s.core.create_namespaced_config_map("scratch", {"metadata": {"name": "c"}})
    k8s.core.delete_namespace("scratch")
    _wait_until(lambda: "scratch" not in [ns.metadata.name for ns in k8s.core.list_namespace().items])
    assert k8s.core.list_config_map_for_all_namespaces().items == []
    with pytest.raises(ApiException) as protected:
        k8s.core.delete_namespace("default")
    assert protected.value.status == 403


def test_label_and_field_selectors(k8s: Any, kube: KubeEmulator, pod_manifest: Any) -> None:
    for name, labels in (("a", {"tier": "x", "env": "prod"}), ("b", {"tier": "y"}), ("c", {})):
        k8s.core.create_namespaced_pod("default", pod_manifest(name, labels=labels))
    kube.store.mutate(
        "pods", "default", "b", lambda pod: pod["status"].update(phase="Running"), subresource="status"
    )

    def names(**selectors: str) -> list[str]:
        return [p.metadata.name for p in k8s.core.list_namespaced_pod("default", **selectors).items]

    assert names(label_selector="tier=x") == ["a"]
    assert names(label_selector="tier==x,env") == ["a"]
    assert names(label_selector="tier!=x") == ["b", "c"]
    assert names(label_selector="tier in (x,y)") == ["a", "b"]
    assert names(label_selector="tier notin (x)") == ["b", "c"]
    assert names(label_selector="!tier") == ["c"]
    assert names(field_selector="status.phase=Running") == ["b"]
    assert names(field_selector="metadata.name!=a,status.phase=Pending") == ["c"]
    with pytest.raises(ApiException) as bad:
        names(field_selector="spec.bogus=1")
    assert bad.value.status == 400
    assert _status(bad.value)["message"] == "field label not supported: spec.bogus"
    with pytest.raises(ApiException) as bad_label:
        names(label_selector="tier in (x")
    assert bad_label.value.status == 400


def test_pagination_over_1200_objects(kube: KubeEmulator, k8s: Any) -> None:
    for index in range(1200):
        kube.store.create("configmaps", "default", {"metadata": {"name": f"cm-{index:04d}"}})
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = k8s.core.list_namespaced_config_map("default", limit=500, _continue=token)
        pages += 1
        seen.extend(item.metadata.name for item in page.items)
        token = page.metadata._continue
        if pages == 1:
            assert page.metadata.remaining_item_count == 700
        if not token:
            break
    assert pages == 3
    assert seen == [f"cm-{index:04d}" for index in range(1200)]


def test_selfsubjectaccessreview_allows_everything_without_auth(k8s: Any) -> None:
    from kubernetes import client

    review = client.AuthorizationV1Api(k8s.api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "verb": "delete",
                    "group": "batch",
                    "resource": "jobs",
                    "namespace": "x",
                }
            }
        }
    )
    assert review.status.allowed is True
