"""A DAG using the provider the way a user would, for ``airflow dags test`` against the emulator.

Runner settings come from the ``[druid_k8s]`` Airflow config section (set through environment variables by
the test), so the DAG itself only says what to run.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor

WIKIPEDIA = {
    "type": "index_parallel",
    "spec": {"dataSchema": {"dataSource": "wikipedia"}, "ioConfig": {"type": "index_parallel"}},
}
# A credential in the task spec, as S3 or JDBC input sources carry them: it must never reach a log.
WITH_CREDENTIAL = {
    **WIKIPEDIA,
    "spec": {
        **WIKIPEDIA["spec"],
        "ioConfig": {
            "type": "index_parallel",
            "inputSource": {"type": "s3", "accessKey": "AKIA-TEST-1234567"},
        },
    },
}

with DAG(
    dag_id="druid_k8s_emulator",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["druid", "test"],
):
    in_worker = DruidK8sTaskOperator(task_id="ingest_in_worker", druid_task=WITH_CREDENTIAL, deferrable=False)
    deferred = DruidK8sTaskOperator(
        task_id="ingest_deferred",
        druid_task={**WIKIPEDIA, "id": "index_parallel_wikipedia_{{ ds_nodash }}"},
        deferrable=True,
    )
    wait = DruidK8sTaskSensor(
        task_id="wait_for_deferred",
        druid_task_id="{{ ti.xcom_pull(task_ids='ingest_deferred')['druid_task_id'] }}",
        namespace="druid",
        poke_interval=1,
        timeout=60,
    )
    in_worker >> deferred >> wait
