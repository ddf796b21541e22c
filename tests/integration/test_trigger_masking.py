"""The triggerer never rendered the task, yet streams the peon's log: it must learn the credentials itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.sdk._shared.secrets_masker import redact

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.hooks.secrets import job_task_secrets
from druid_k8s_provider.job_builder import build_job
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import exits
from druid_k8s_provider.triggers.job import FINISHED, DruidK8sJobTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMESPACE = "druid"
SECRET = "AKIA-TRIGGER-ONLY-4242"
Druid = Any  # tests/integration/conftest.py DruidCluster


def test_the_trigger_masks_credentials_it_finds_in_the_jobs_task_payload(
    kube: KubeEmulator, druid: Druid
) -> None:
    druid.start(exits(0, ["peon done"]))
    task = DruidTask.from_spec(
        {
            "type": "index_parallel",
            "id": "masking_probe",
            "spec": {"ioConfig": {"inputSource": {"type": "s3", "accessKey": SECRET}}},
        }
    )
    hook = DruidK8sHook()
    manifest = build_job(
        task,
        hook.get_template_pod(NAMESPACE, pod_name="druid-overlord-0"),
        RunnerConfig.from_properties({"druid.indexer.runner.namespace": NAMESPACE}),
    )
    job, _ = hook.create_or_join_job(manifest)
    assert job_task_secrets(job) == [SECRET]
    assert redact(f"key={SECRET}") == f"key={SECRET}"  # nothing in this process knows it yet

    trigger = DruidK8sJobTrigger(job_name=manifest["metadata"]["name"], namespace=NAMESPACE)
    event = asyncio.run(anext(trigger.run()))
    assert event.payload["status"] == FINISHED
    assert redact(f"key={SECRET}") == "key=***"
