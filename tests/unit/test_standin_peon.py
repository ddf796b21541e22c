"""The stand-in peon: what a user sees from a "Druid" task in the emulator (log, status.json, exit code)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from druid_k8s_provider.job_builder import compress_task
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.behaviours import ContainerContext
from druid_k8s_provider.testing.standin_peon import decode_task_payload, standin_druid_image, standin_peon

TASK_ID = "index_parallel_wikipedia_2026-11-26T04:00:00.000Z"


def encode_task_payload(task: dict[str, Any]) -> str:
    """TASK_JSON as the job builder writes it."""
    return compress_task(DruidTask.from_spec(task))


def gzip_base64(document: Any) -> str:
    """A well-encoded payload whatever it holds (for tasks the job builder would refuse)."""
    return base64.b64encode(gzip.compress(json.dumps(document).encode())).decode()


def ingestion_task(**context: Any) -> dict[str, Any]:
    return {
        "type": "index_parallel",
        "id": TASK_ID,
        "spec": {
            "dataSchema": {"dataSource": "wikipedia"},
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {"type": "inline", "data": '{"a": 1}\n{"a": 2}\n{"a": 3}\n'},
                "inputFormat": {"type": "json"},
            },
        },
        "context": {"standinDurationSeconds": 0, **context},
    }


def container(
    env: dict[str, str], annotations: dict[str, str] | None = None, args: list[str] | None = None
) -> tuple[ContainerContext, list[str]]:
    lines: list[str] = []
    ctx = ContainerContext(
        container_name="main",
        image="apache/druid:33.0.0",
        command=["sh", "-c"],
        args=args if args is not None else ["/peon.sh /tmp/persistent/task 1"],
        env=env,
        pod={
            "metadata": {"name": "indexparallelwikipedia20261126-0-abcde", "annotations": annotations or {}}
        },
        log_sink=lines.append,
    )
    return ctx, lines


def file_logs_env(directory: Path, task: dict[str, Any]) -> dict[str, str]:
    return {
        "TASK_JSON": encode_task_payload(task),
        "TASK_DIR": "/tmp/persistent/task",
        "druid_indexer_logs_type": "file",
        "druid_indexer_logs_directory": str(directory),
    }


async def test_successful_task_logs_its_phases_and_pushes_status_json(tmp_path: Path) -> None:
    ctx, lines = container(file_logs_env(tmp_path, ingestion_task()))
    assert await standin_peon(ctx) == 0
    log = "\n".join(lines)
    assert "not Apache Druid" in lines[0]
    assert f"Running task[{TASK_ID}] of type[index_parallel] for datasource[wikipedia]" in log
    assert "Phase: reading input, inline input source (3 rows)" in log
    assert log.index("reading input") < log.index("persisting segments") < log.index("publishing segments")
    status = json.loads((tmp_path / f"{TASK_ID}.status.json").read_text())
    assert status["id"] == TASK_ID
    assert status["status"] == "SUCCESS"
    assert status["errorMsg"] is None
    assert isinstance(status["duration"], int)
    assert "Phase: publishing segments" in (tmp_path / f"{TASK_ID}.log").read_text()


async def test_failed_outcome_from_the_context_exits_1_with_a_failed_status(tmp_path: Path) -> None:
    ctx, lines = container(file_logs_env(tmp_path, ingestion_task(standinOutcome="FAILED")))
    assert await standin_peon(ctx) == 1
    status = json.loads((tmp_path / f"{TASK_ID}.status.json").read_text())
    assert status["status"] == "FAILED"
    assert "standinOutcome=FAILED" in status["errorMsg"]
    assert any(" ERROR " in line and "Task completed" in line for line in lines)


async def test_no_status_outcome_exits_1_without_status_json(tmp_path: Path) -> None:
    ctx, _ = container(file_logs_env(tmp_path, ingestion_task(standinOutcome="NO_STATUS")))
    assert await standin_peon(ctx) == 1
    assert not (tmp_path / f"{TASK_ID}.status.json").exists()
    assert (tmp_path / f"{TASK_ID}.log").exists()


async def test_custom_template_adapter_task_comes_from_the_pod_annotation() -> None:
    ctx, lines = container({}, annotations={"task": encode_task_payload(ingestion_task())})
    assert await standin_peon(ctx) == 0
    assert any(f"Running task[{TASK_ID}]" in line for line in lines)
    assert any("no status.json was pushed" in line for line in lines)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "no TASK_JSON env and no 'task' annotation"),
        ({"TASK_JSON": "not base64!"}, "TASK_JSON is not base64 of gzipped JSON"),
        ({"TASK_JSON": gzip_base64({"id": "x"})}, "task.type"),
        ({"TASK_JSON": gzip_base64(["not", "an", "object"])}, "TASK_JSON is not base64 of gzipped JSON"),
        ({"TASK_JSON": gzip_base64(ingestion_task(standinOutcome="MAYBE"))}, "Bad stand-in context"),
    ],
)
async def test_unreadable_task_fails_with_the_reason_in_the_log(env: dict[str, str], expected: str) -> None:
    ctx, lines = container(env)
    assert await standin_peon(ctx) == 1
    assert expected in lines[-1]
    assert " ERROR " in lines[-1]


async def test_the_task_json_is_never_logged(tmp_path: Path) -> None:
    task = ingestion_task()
    task["spec"]["ioConfig"]["inputSource"] = {"type": "s3", "properties": {"secretAccessKey": "hunter2"}}
    ctx, lines = container(file_logs_env(tmp_path, task))
    assert await standin_peon(ctx) == 0
    assert "Phase: reading input, input source of type [s3]" in "\n".join(lines)
    assert not any("hunter2" in line or ctx.env["TASK_JSON"] in line for line in lines)


async def test_sigterm_stops_the_task_with_143_and_a_failed_status(tmp_path: Path) -> None:
    ctx, lines = container(file_logs_env(tmp_path, ingestion_task(standinDurationSeconds=30)))
    running = asyncio.create_task(standin_peon(ctx))
    await asyncio.sleep(0.05)
    ctx.stopping.set()
    assert await asyncio.wait_for(running, 2) == 143
    assert any("Received SIGTERM" in line for line in lines)
    assert json.loads((tmp_path / f"{TASK_ID}.status.json").read_text())["status"] == "FAILED"


async def test_druid_image_without_a_task_idles_like_a_service_until_stopped() -> None:
    ctx, lines = container({"druid_service": "overlord"}, args=["overlord"])
    ctx.command = ["/druid.sh"]
    running = asyncio.create_task(standin_druid_image(ctx))
    await asyncio.sleep(0.05)
    assert not running.done()
    ctx.stopping.set()
    assert await asyncio.wait_for(running, 2) == 143
    assert "Stand-in Druid service [overlord]" in lines[0]


async def test_druid_image_started_as_a_peon_runs_the_task(tmp_path: Path) -> None:
    ctx, _ = container(file_logs_env(tmp_path, ingestion_task()))
    assert await standin_druid_image(ctx) == 0
    assert (tmp_path / f"{TASK_ID}.status.json").exists()


def test_payload_written_by_the_job_builder_decodes_to_the_task() -> None:
    assert decode_task_payload(encode_task_payload(ingestion_task())) == ingestion_task()
