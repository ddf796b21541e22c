"""Bearer-token RBAC, discovery/OpenAPI as kubectl reads them, and the foreground CLI."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client import ApiException

from druid_k8s_provider.testing import KubeEmulator, emulator

READER_RULES = [
    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
]


def _fetch(url: str, token: str | None = None, ca_pem: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rbac_tokens_401_and_403_like_a_real_server() -> None:
    with KubeEmulator(
        cluster=False, tokens={"reader-token": {"user": "reader", "rules": READER_RULES}}
    ) as kube:
        assert kube.url.startswith("https://") and kube.ca_certificate  # kubectl sends tokens over TLS only
        status, body = _fetch(kube.url + "/api/v1/namespaces/default/pods", ca_pem=kube.ca_certificate)
        assert (status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
        assert _fetch(kube.url + "/api/v1/namespaces/default/pods", "wrong", kube.ca_certificate)[0] == 401
        api = config.new_client_from_config(config_file=kube.kubeconfig_path)  # carries reader-token
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        assert core.list_namespaced_pod("default").items == []
        with pytest.raises(ApiException) as denied:
            batch.create_namespaced_job("default", {"metadata": {"name": "x"}})
        status_body = json.loads(denied.value.body)
        assert denied.value.status == 403
        assert status_body["message"] == (
            'jobs.batch is forbidden: User "reader" cannot create resource "jobs" in API group "batch" '
            'in the namespace "default"'
        )
        assert status_body["details"] == {"group": "batch", "kind": "jobs"}
        with pytest.raises(ApiException) as denied_named:
            batch.delete_namespaced_job("x", "default")
        assert json.loads(denied_named.value.body)["message"].startswith(
            'jobs.batch "x" is forbidden: User "reader" cannot delete resource "jobs"'
        )
        reviews = client.AuthorizationV1Api(api)

        def allowed(verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
            attributes = {"verb": verb, "resource": resource, "group": group, "subresource": subresource}
            review = reviews.create_self_subject_access_review({"spec": {"resourceAttributes": attributes}})
            return bool(review.status.allowed)

        assert allowed("get", "pods", subresource="log")
        assert not allowed("create", "jobs", group="batch")
        api.close()


def test_rules_must_be_lists() -> None:
    with pytest.raises(ValueError, match="needs verbs as a list"):
        KubeEmulator(
            cluster=False, tokens={"t": [{"apiGroups": [""], "resources": ["pods"], "verbs": "get"}]}
        )


def test_kubectl_auth_can_i_uses_the_same_rules(kubectl: Any) -> None:
    # The fixture's emulator has auth off: everything is allowed, as kubectl reports.
    assert kubectl("auth", "can-i", "create", "jobs.batch").stdout.strip() == "yes"
    with KubeEmulator(cluster=False, tokens={"reader-token": READER_RULES}) as kube:

        def can_i(*arguments: str) -> str:
            command = ["kubectl", "--kubeconfig", kube.kubeconfig_path, "auth", "can-i", *arguments]
            return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()

        assert can_i("get", "pods", "--subresource=log") == "yes"
        assert can_i("create", "jobs.batch") == "no"


def test_rules_review_lists_the_token_rules_for_clients_and_kubectl(kubectl: Any) -> None:
    # One SelfSubjectRulesReview answers "what may I do here" in a single request (kubectl auth can-i --list).
    with KubeEmulator(cluster=False, tokens={"reader-token": READER_RULES}) as kube:
        api = config.new_client_from_config(config_file=kube.kubeconfig_path)
        try:
            review = client.AuthorizationV1Api(api).create_self_subject_rules_review(
                {"spec": {"namespace": "default"}}
            )
        finally:
            api.close()
        granted = {(tuple(rule.api_groups), tuple(rule.resources)) for rule in review.status.resource_rules}
        for rule in READER_RULES:
            assert (tuple(rule["apiGroups"]), tuple(rule["resources"])) in granted
        assert review.status.incomplete is False
        command = [
            "kubectl",
            "--kubeconfig",
            kube.kubeconfig_path,
            "auth",
            "can-i",
            "--list",
            "-n",
            "default",
        ]
        listed = subprocess.run(command, capture_output=True, text=True, timeout=20)
        assert listed.returncode == 0, listed.stderr
        assert "pods/log" in listed.stdout and "selfsubjectrulesreviews.authorization.k8s.io" in listed.stdout


def test_discovery_documents(kube: KubeEmulator) -> None:
    groups = _fetch(kube.url + "/apis")[1]
    assert [group["name"] for group in groups["groups"]] == ["authorization.k8s.io", "batch"]
    core = _fetch(kube.url + "/api/v1")[1]
    names = {resource["name"] for resource in core["resources"]}
    assert {"pods", "pods/log", "pods/status", "configmaps", "events", "namespaces"} <= names
    batch = _fetch(kube.url + "/apis/batch/v1")[1]
    assert {resource["name"] for resource in batch["resources"]} == {"jobs", "jobs/status"}


def test_openapi_v3_lets_kubectl_trust_server_side_validation(kube: KubeEmulator) -> None:
    index = _fetch(kube.url + "/openapi/v3")[1]
    assert set(index["paths"]) == {"api/v1", "apis/batch/v1", "apis/authorization.k8s.io/v1"}
    document = _fetch(kube.url + index["paths"]["apis/batch/v1"]["serverRelativeURL"])[1]
    create = document["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs"]["post"]
    assert create["x-kubernetes-group-version-kind"] == {"group": "batch", "version": "v1", "kind": "Job"}
    assert "fieldValidation" in [parameter["name"] for parameter in create["parameters"]]
    job_schema = document["components"]["schemas"]["io.k8s.api.batch.v1.Job"]
    assert job_schema["properties"]["spec"]["$ref"] == "#/components/schemas/io.k8s.api.batch.v1.JobSpec"


def test_cluster_true_without_the_cluster_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator, "CLUSTER_MODULE", "druid_k8s_provider.testing.no_such_cluster")
    with pytest.raises(RuntimeError, match=r"KubeEmulator\(cluster=False\)"), KubeEmulator(cluster=True):
        pass


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "druid_k8s_provider.testing.cli",
            "serve",
            "--no-cluster",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not kubeconfig.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the CLI never wrote its kubeconfig"
            time.sleep(0.05)
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        status, version = _fetch(server + "/version")
        assert status == 200 and version["major"] == "1"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
