"""Credentials found in a Job's own task payload, and scrubbed from text Airflow stores unmasked."""

from __future__ import annotations

from druid_k8s_provider.hooks.secrets import job_task_secrets, scrub
from druid_k8s_provider.job_builder import compress_task
from druid_k8s_provider.task import DruidTask

TASK = DruidTask.from_spec(
    {
        "type": "index_parallel",
        "id": "t",
        "spec": {"ioConfig": {"inputSource": {"secretAccessKey": "s3-SECRET"}}},
    }
)


def job_with(env: list[dict[str, str]] | None = None, annotations: dict[str, str] | None = None) -> dict:
    return {
        "spec": {
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"containers": [{"name": "main", "env": env or []}]},
            }
        }
    }


def test_secrets_come_from_task_json_or_the_task_annotation() -> None:
    payload = compress_task(TASK)
    assert job_task_secrets(job_with(env=[{"name": "TASK_JSON", "value": payload}])) == ["s3-SECRET"]
    assert job_task_secrets(job_with(annotations={"task": payload})) == ["s3-SECRET"]
    assert job_task_secrets(job_with(env=[{"name": "TASK_JSON", "value": "not base64 gzip"}])) == []
    assert job_task_secrets({}) == []


def test_scrub_replaces_every_secret_longest_first() -> None:
    assert scrub("user pw=abc123 and abc", ["abc", "abc123"]) == "user pw=*** and ***"
    assert scrub(None, ["x"]) is None


def test_kafka_jaas_passwords_are_found() -> None:
    from druid_k8s_provider.hooks.secrets import sensitive_values

    jaas = (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="kafka-Pw1";'
    )
    assert sensitive_values({"consumerProperties": {"sasl.jaas.config": jaas}}) == ["kafka-Pw1"]
