"""The demo's reading of Airflow's output and its verdict, without running Airflow."""

from __future__ import annotations

from druid_k8s_provider.testing.demo import DemoResult, dag_run_state, peon_log_excerpt, succeeded

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


def result(condition: str = "Complete", status: str = "SUCCESS", left: tuple[str, ...] = ()) -> DemoResult:
    return DemoResult(
        jobs_created=[{"name": "job-a", "task_id": "a", "condition": condition, "status": status}],
        dag_run_states={"example_druid_k8s": "success", "druid_k8s_reaper": "success"},
        jobs_left=list(left),
    )


def test_demo_succeeds_only_when_every_job_succeeded_and_was_reaped() -> None:
    assert succeeded(result())
    assert not succeeded(result(condition="Failed", status="FAILED"))
    assert not succeeded(result(status="no status.json"))
    assert not succeeded(result(left=("job-a",)))
    assert not succeeded(DemoResult(dag_run_states={"example_druid_k8s": "success"}))
