"""The demo's reading of Airflow's output and its verdict, without running Airflow."""

from __future__ import annotations

from typing import Any

from druid_k8s_provider.testing.demo import (
    DemoResult,
    dag_run_state,
    overlord_connection,
    overlord_view,
    peon_log_excerpt,
    succeeded,
)

TASK_LOG = """\
2026-11-26T04:00:53.098194Z [info     ] Task started                   [airflow.api_fastapi.execution_api.routes.task_instances] ti_id=1
2026-11-26T04:00:53.279451Z [info     ] 2026-11-26T04:00:53,209 INFO [main] org.apache.druid.cli.CliPeon - Stand-in peon (druid-k8s-provider's emulator test double, not Apache Druid) [airflow.task.operators.druid_k8s_provider.operators.task.DruidK8sTaskOperator] loc=task.py:335
2026-11-26T04:00:53.279831Z [info     ] 2026-11-26T04:00:53,209 INFO [task-runner-0-priority-50] org.apache.druid.indexing.common.task.index_parallel - Phase: reading input, inline input source (5 rows) [airflow.task.operators.druid_k8s_provider.operators.task.DruidK8sTaskOperator] loc=task.py:335
2026-11-26T04:00:56.468215Z [info     ] DagRun Finished: dag_id=example_druid_k8s, run_id=manual__1, state=success, run_type=manual, [airflow.models.dagrun.DagRun] loc=dagrun.py:1315
"""  # noqa: E501


def test_excerpt_keeps_the_peon_lines_without_airflows_decoration() -> None:
    assert peon_log_excerpt(TASK_LOG) == [
        "2026-11-26T04:00:53,209 INFO [main] org.apache.druid.cli.CliPeon - Stand-in peon "
        "(druid-k8s-provider's emulator test double, not Apache Druid)",
        "2026-11-26T04:00:53,209 INFO [task-runner-0-priority-50] org.apache.druid.indexing.common.task."
        "index_parallel - Phase: reading input, inline input source (5 rows)",
    ]


def test_dag_run_state_is_read_from_the_final_dag_run_line() -> None:
    assert dag_run_state(TASK_LOG) == "success"
    assert dag_run_state("no such line") == "unknown"


def created_job(condition: str = "Complete", status: str = "SUCCESS", **overlord: Any) -> dict[str, Any]:
    return {"name": "job-a", "task_id": "a", "condition": condition, "status": status} | overlord


def result(condition: str = "Complete", status: str = "SUCCESS", left: tuple[str, ...] = ()) -> DemoResult:
    return DemoResult(
        jobs_created=[created_job(condition, status)],
        dag_run_states={"example_druid_k8s": "success", "druid_k8s_reaper": "success"},
        jobs_left=list(left),
    )


def test_demo_succeeds_only_when_every_job_succeeded_and_was_reaped() -> None:
    assert succeeded(result())
    assert not succeeded(result(condition="Failed", status="FAILED"))
    assert not succeeded(result(status="unknown to the Overlord"))
    assert not succeeded(result(condition="Complete", status="FAILED"))
    assert not succeeded(result(left=("job-a",)))
    assert not succeeded(DemoResult(dag_run_states={"example_druid_k8s": "success"}))


def test_the_overlords_view_of_a_task_shows_status_duration_and_rows() -> None:
    rows = {"processed": 5, "processedWithError": 1, "thrownAway": 0, "unparseable": 2}
    assert overlord_view(created_job(duration_ms=1530, report=rows)) == (
        "SUCCESS in 1.5s; rows processed 5, with errors 1, thrown away 0, unparseable 2"
    )
    assert overlord_view(created_job(status="FAILED", duration_ms=-1, report=None)) == (
        "FAILED; no ingestion report"
    )


def test_the_overlord_connection_is_the_apache_druid_providers_shape() -> None:
    assert overlord_connection("http://127.0.0.1:8081") == {
        "conn_type": "druid",
        "host": "127.0.0.1",
        "port": 8081,
        "schema": "http",
        "extra": {"endpoint": "druid/indexer/v1/task"},
    }
