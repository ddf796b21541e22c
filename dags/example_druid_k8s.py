"""Example pipeline (DAG id ``example_druid_k8s``): ingest a small dataset, compact it, check the compaction.

Three steps, as a DAG author would write them:

1. ``ingest``: an ``index_parallel`` task ingesting a few inline JSON rows (page edits) for the day of the
   run into the datasource ``demo_wiki_edits``;
2. ``compact``: a ``compact`` task over the same day, once the ingestion succeeded;
3. ``compaction_job_finished``: a sensor on the compaction's Druid task id, as a downstream DAG would wait for
   a task it did not launch (it asks the Overlord first, then looks at the Job).

Every task is submitted to the Druid Overlord of the connection ``druid_ingest_default`` (the one users of
the Apache Druid provider already have), which holds its locks and records its outcome; the operator picks
the launch mode from the Overlord's version (``launch_mode="auto"``). Each Druid task runs as a Kubernetes
Job in the namespace of ``[druid_k8s] runner_properties`` / ``runtime_properties_file``, built from the
Overlord pod (``[druid_k8s] overlord_pod_selector``) by the operator (Druid 35.0.0 and later) or by the
Overlord itself (older Druid). The tasks have no ``id``: the operator derives one per
attempt from the DAG run, so a retry after a crash re-attaches and a retry after a failure runs again. The
Jobs in flight are bounded by the Airflow pool ``druid_k8s_peons``; create it with
``airflow pools set druid_k8s_peons 2 "Druid peon Jobs in flight" --include-deferred``.

The Overlord deletes each task's Job when the task completes. To keep finished Jobs for ``kubectl``, set
``druid.indexer.runner.debugJobs=true`` in the Overlord's ``runtime.properties`` (given to the operator it
has no effect: the Overlord decides); the ``druid_k8s_reaper`` DAG then deletes them after
``taskCleanupDelay`` once the Overlord no longer holds their task.
"""

from __future__ import annotations

import datetime as dt
import json

from airflow.sdk import DAG

from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.sensors.task import DruidK8sTaskSensor

DATASOURCE = "demo_wiki_edits"
DAY = "{{ ds }}/{{ macros.ds_add(ds, 1) }}"

ROWS = (
    ("01:12", "Apache_Druid", "en", "alice", 120, 4),
    ("01:47", "Apache_Airflow", "en", "bob", 57, 0),
    ("02:05", "Kubernetes", "de", "carla", 310, 12),
    ("02:30", "Apache_Druid", "fr", "dmitri", 18, 2),
    ("03:01", "Online_analytical_processing", "en", "alice", 76, 31),
)
# One JSON object per line, timestamped on the day of the run (``{{ ds }}`` is rendered by Airflow).
EDITS = "\n".join(
    json.dumps(
        {"timestamp": f"{{{{ ds }}}}T{time}:00Z", "page": page, "language": language, "user": user}
        | {"added": added, "deleted": deleted}
    )
    for time, page, language, user, added, deleted in ROWS
)

INGESTION_TASK = {
    "type": "index_parallel",
    "spec": {
        "dataSchema": {
            "dataSource": DATASOURCE,
            "timestampSpec": {"column": "timestamp", "format": "iso"},
            "dimensionsSpec": {"dimensions": ["page", "language", "user"]},
            "metricsSpec": [
                {"type": "count", "name": "edits"},
                {"type": "longSum", "name": "added", "fieldName": "added"},
                {"type": "longSum", "name": "deleted", "fieldName": "deleted"},
            ],
            "granularitySpec": {
                "type": "uniform",
                "segmentGranularity": "day",
                "queryGranularity": "hour",
                "rollup": True,
                "intervals": [DAY],
            },
        },
        "ioConfig": {
            "type": "index_parallel",
            "inputSource": {"type": "inline", "data": EDITS},
            "inputFormat": {"type": "json"},
            "appendToExisting": False,
        },
        "tuningConfig": {
            "type": "index_parallel",
            "partitionsSpec": {"type": "dynamic", "maxRowsPerSegment": 5000000},
            "maxNumConcurrentSubTasks": 1,
        },
    },
    "context": {"priority": 50},
}

COMPACTION_TASK = {
    "type": "compact",
    "dataSource": DATASOURCE,
    "ioConfig": {"type": "compact", "inputSpec": {"type": "interval", "interval": DAY}},
    "tuningConfig": {
        "type": "index_parallel",
        "partitionsSpec": {"type": "dynamic", "maxRowsPerSegment": 5000000},
        "maxNumConcurrentSubTasks": 1,
    },
    "context": {"priority": 25},
}

with DAG(
    dag_id="example_druid_k8s",
    description="index_parallel ingestion, then compaction, of a small inline dataset, as Kubernetes Jobs",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=30)},
    tags=["druid", "kubernetes", "example"],
    doc_md=__doc__,
):
    ingest = DruidK8sTaskOperator(
        task_id="ingest",
        druid_task=INGESTION_TASK,
        pool="druid_k8s_peons",
    )
    compact = DruidK8sTaskOperator(
        task_id="compact",
        druid_task=COMPACTION_TASK,
        pool="druid_k8s_peons",
    )
    compaction_job_finished = DruidK8sTaskSensor(
        task_id="compaction_job_finished",
        druid_task_id="{{ ti.xcom_pull(task_ids='compact')['druid_task_id'] }}",
        namespace="{{ ti.xcom_pull(task_ids='compact')['namespace'] }}",
        poke_interval=5,
        timeout=600,
    )
    ingest >> compact >> compaction_job_finished
