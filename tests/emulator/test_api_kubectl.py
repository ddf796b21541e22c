"""The real kubectl against the emulator: what users type, and what it prints back."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import yaml

from druid_k8s_provider.testing import KubeEmulator


def _yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest)


def test_create_get_and_already_exists(kubectl: Any, job_manifest: Any) -> None:
    manifest = _yaml(job_manifest("hello", labels={"app": "demo"}))
    created = kubectl("create", "-f", "-", stdin=manifest)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "job.batch/hello created"
    again = kubectl("create", "-f", "-", stdin=manifest)
    assert again.returncode == 1
    assert (
        'Error from server (AlreadyExists): error when creating "STDIN": jobs.batch "hello" already exists'
        in (again.stderr)
    )
    shown = json.loads(kubectl("get", "job", "hello", "-o", "json").stdout)
    assert shown["kind"] == "Job"
    assert shown["spec"]["template"]["metadata"]["labels"]["job-name"] == "hello"


def test_get_with_label_selectors(kubectl: Any, kube: KubeEmulator, job_manifest: Any) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        kube.store.create("jobs", "default", job_manifest(name, labels={"tier": tier}))
    result = kubectl("get", "jobs", "-l", "tier=web", "-o", "name")
    assert result.stdout.split() == ["job.batch/a", "job.batch/c"]
    result = kubectl("get", "jobs", "-l", "tier notin (web)", "-o", "json")
    assert [item["metadata"]["name"] for item in json.loads(result.stdout)["items"]] == ["b"]


def test_apply_creates_then_configures(kubectl: Any, job_manifest: Any) -> None:
    manifest = job_manifest("applied")
    first = kubectl("apply", "-f", "-", stdin=_yaml(manifest))
    assert first.stdout.strip() == "job.batch/applied created", first.stderr
    assert kubectl("apply", "-f", "-", stdin=_yaml(manifest)).stdout.strip() == "job.batch/applied unchanged"
    manifest["metadata"]["labels"] = {"changed": "yes"}
    changed = kubectl("apply", "-f", "-", stdin=_yaml(manifest))
    assert changed.stdout.strip() == "job.batch/applied configured", changed.stderr
    labels = json.loads(kubectl("get", "job", "applied", "-o", "json").stdout)["metadata"]["labels"]
    assert labels == {"changed": "yes"}


def test_not_found_as_kubectl_prints_it(kubectl: Any) -> None:
    result = kubectl("delete", "job", "ghost")
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error from server (NotFound): jobs.batch "ghost" not found'
    result = kubectl("get", "pod", "ghost")
    assert result.stderr.strip() == 'Error from server (NotFound): pods "ghost" not found'


def test_strict_field_validation_rejects_unknown_fields(kubectl: Any, job_manifest: Any) -> None:
    manifest = job_manifest("strict")
    manifest["spec"]["bogus"] = True
    result = kubectl("create", "-f", "-", stdin=_yaml(manifest))
    assert result.returncode == 1
    assert 'strict decoding error: unknown field "spec.bogus"' in result.stderr
    assert kubectl("get", "job", "strict").returncode == 1
    warned = kubectl("create", "--validate=warn", "-f", "-", stdin=_yaml(manifest))
    assert warned.returncode == 0
    assert 'unknown field "spec.bogus"' in warned.stderr


def test_delete_cascade_foreground_waits_for_the_pods(
    kubectl: Any, kube: KubeEmulator, job_manifest: Any
) -> None:
    job = kube.store.create("jobs", "default", job_manifest("fg"))
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "fg",
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube.store.create(
        "pods",
        "default",
        {
            "metadata": {"name": "fg-pod", "ownerReferences": [owner]},
            "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
        },
    )
    result = kubectl("delete", "job", "fg", "--cascade=foreground")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'job.batch "fg" deleted'
    assert kube.store.list("jobs") == [] and kube.store.list("pods") == []


def test_logs_of_a_job_and_wait_for_complete(kubectl: Any, kube: KubeEmulator, job_manifest: Any) -> None:
    job = kube.store.create("jobs", "default", job_manifest("done"))
    kube.store.create(
        "pods",
        "default",
        {
            "metadata": {"name": "done-x7k2p", "labels": job["spec"]["template"]["metadata"]["labels"]},
            "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
        },
    )
    kube.logs.append("default", "done-x7k2p", "main", "hello from the job")
    logs = kubectl("logs", "job/done")
    assert logs.stdout == "hello from the job\n", logs.stderr

    def complete() -> None:
        time.sleep(0.3)

        def finish(current: dict[str, Any]) -> None:
            current["status"] = {
                "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}],
            }

        kube.store.mutate("jobs", "default", "done", finish, subresource="status")

    threading.Thread(target=complete).start()
    waited = kubectl("wait", "--for=condition=complete", "job/done", "--timeout=10s")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "job.batch/done condition met"


def test_version_and_api_resources(kubectl: Any) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["minor"] == "32"
    resources = kubectl("api-resources", "-o", "name").stdout.split()
    assert {"pods", "jobs.batch", "configmaps", "events", "namespaces"} <= set(resources)


def test_get_prints_the_columns_users_know(kubectl: Any, kube: KubeEmulator, job_manifest: Any) -> None:
    kube.store.create("jobs", "default", job_manifest("printed"))

    def finish(job: dict[str, Any]) -> None:
        job["status"] = {
            "succeeded": 1,
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:03:20Z",
            "conditions": [{"type": "Complete", "status": "True"}],
        }

    kube.store.mutate("jobs", "default", "printed", finish, subresource="status")
    header, row = kubectl("get", "jobs").stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert row.split()[:4] == ["printed", "Complete", "1/1", "3m20s"]

    kube.store.create(
        "pods",
        "default",
        {"metadata": {"name": "crashing"}, "spec": {"containers": [{"name": "main", "image": "x:1"}]}},
    )

    def crash(pod: dict[str, Any]) -> None:
        pod["status"]["containerStatuses"] = [
            {
                "name": "main",
                "ready": False,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            }
        ]

    kube.store.mutate("pods", "default", "crashing", crash, subresource="status")
    header, row = kubectl("get", "pods").stdout.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row.split()[:4] == ["crashing", "0/1", "CrashLoopBackOff", "3"]


def test_imperative_creates_send_protobuf_and_work(kubectl: Any, kube: KubeEmulator) -> None:
    assert kubectl("create", "namespace", "imperative").stdout.strip() == "namespace/imperative created"
    created = kubectl(
        "create", "configmap", "cfg", "-n", "imperative", "--from-literal=a=1", "--from-literal=b="
    )
    assert created.returncode == 0, created.stderr
    assert kube.store.get("configmaps", "imperative", "cfg")["data"] == {"a": "1", "b": ""}
    job = kubectl("create", "job", "hello", "--image=busybox:1.36", "--", "sh", "-c", "echo hello")
    assert job.stdout.strip() == "job.batch/hello created", job.stderr
    spec = kube.store.get("jobs", "default", "hello")["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"]) == ("hello", "busybox:1.36")
    assert container["command"] == ["sh", "-c", "echo hello"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["selector"]["matchLabels"]  # defaulted by the server, as for a YAML create


def test_get_watch_prints_rows_as_objects_change(kubectl: Any, kube: KubeEmulator, pod_manifest: Any) -> None:
    def add_pod_later() -> None:
        time.sleep(0.5)
        kube.store.create("pods", "default", pod_manifest("watched"))

    threading.Thread(target=add_pod_later).start()
    watched = kubectl("get", "pods", "--watch", "--request-timeout=2s")
    header, row = watched.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row.split()[:4] == ["watched", "0/1", "Pending", "0"]


def test_server_dry_run_changes_nothing(kubectl: Any, kube: KubeEmulator, job_manifest: Any) -> None:
    manifest = job_manifest("dry")
    created = kubectl("apply", "--dry-run=server", "-f", "-", stdin=_yaml(manifest))
    assert created.stdout.strip() == "job.batch/dry created (server dry run)", created.stderr
    assert kube.store.list("jobs") == []
    kube.store.create("jobs", "default", manifest)
    version = kube.store.get("jobs", "default", "dry")["metadata"]["resourceVersion"]
    manifest["metadata"]["labels"] = {"new": "label"}
    configured = kubectl("apply", "--dry-run=server", "-f", "-", stdin=_yaml(manifest))
    assert configured.stdout.strip() == "job.batch/dry configured (server dry run)", configured.stderr
    deleted = kubectl("delete", "job", "dry", "--dry-run=server")
    assert deleted.stdout.strip() == 'job.batch "dry" deleted (server dry run)', deleted.stderr
    job = kube.store.get("jobs", "default", "dry")
    assert job["metadata"]["resourceVersion"] == version and job["metadata"]["labels"] == {}


def test_kubectl_run_sends_a_protobuf_pod(kubectl: Any, kube: KubeEmulator) -> None:
    result = kubectl(
        "run",
        "runner",
        "--image=busybox:1.36",
        "--restart=Never",
        "--labels=team=a",
        "--env=GREETING=hi",
        "--",
        "true",
    )
    assert result.stdout.strip() == "pod/runner created", result.stderr
    pod = kube.store.get("pods", "default", "runner")
    assert pod["metadata"]["labels"] == {"team": "a"}
    container = pod["spec"]["containers"][0]
    assert (container["image"], container["args"], container["env"]) == (
        "busybox:1.36",
        ["true"],
        [{"name": "GREETING", "value": "hi"}],
    )
    assert pod["spec"]["restartPolicy"] == "Never"


def test_server_side_apply_is_refused_with_a_way_out(kubectl: Any, job_manifest: Any) -> None:
    result = kubectl("apply", "--server-side", "-f", "-", stdin=_yaml(job_manifest("ssa")))
    assert result.returncode == 1
    assert "does not implement server-side apply" in result.stderr
