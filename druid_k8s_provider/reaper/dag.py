"""The reaper as an Airflow DAG: :func:`~druid_k8s_provider.reaper.reap` every ``taskCleanupInterval``,
configured the way the operator is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.reaper.rules import human_duration
from druid_k8s_provider.reaper.sweep import reap

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from druid_k8s_provider.config import RunnerConfig

_NAMESPACE_PROPERTY = "druid.indexer.runner.namespace"


def resolve_runner_config(
    namespace: str | None = None,
    runner_properties: Mapping[str, Any] | None = None,
    runtime_properties_file: str | None = None,
) -> RunnerConfig:
    """Build the runner configuration the way the operator does: file, then Airflow config, then arguments.

    Layers, later wins: the Overlord ``runtime.properties`` (``runtime_properties_file``, else
    ``[druid_k8s] runtime_properties_file``), the JSON object in ``[druid_k8s] runner_properties``, the
    ``runner_properties`` argument, and finally ``namespace`` when given.
    """
    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.settings import layered_runner_properties

    properties = layered_runner_properties(runtime_properties_file, runner_properties)
    if namespace:
        properties[_NAMESPACE_PROPERTY] = namespace
    return RunnerConfig.from_properties(properties)


def create_reaper_dag(
    dag_id: str = "druid_k8s_reaper",
    kubernetes_conn_id: str | None = None,
    namespace: str | None = None,
    druid_ingest_conn_id: str | None = None,
    runner_properties: Mapping[str, Any] | None = None,
    runtime_properties_file: str | None = None,
    page_size: int = 500,
    start_date: dt.datetime | None = None,
    tags: Iterable[str] = ("druid", "kubernetes", "maintenance"),
) -> DAG:
    """Create the reaper DAG: one task deleting finished peon Jobs, every ``taskCleanupInterval``.

    The runner configuration is resolved when the DAG file is parsed (see :func:`resolve_runner_config`), so
    a missing namespace or a bad property shows up as an import error naming the property. The schedule is
    ``taskCleanupInterval``, without catchup and with one active run at a time (an overlapping sweep would
    only race the first one). The task's return value, pushed to XCom, is :func:`reap`'s summary.
    ``kubernetes_conn_id`` defaults to ``[druid_k8s] kubernetes_conn_id`` (itself ``kubernetes_default``),
    ``druid_ingest_conn_id`` (the Overlord asked which tasks are still active) to ``[druid_k8s]
    druid_ingest_conn_id`` (itself ``druid_ingest_default``).
    """
    from airflow.configuration import conf
    from airflow.sdk import DAG, task

    import druid_k8s_provider.reaper as reaper_package

    config = resolve_runner_config(namespace, runner_properties, runtime_properties_file)
    from druid_k8s_provider.settings import configured_overlord_conn_id

    conn_id = kubernetes_conn_id or conf.get("druid_k8s", "kubernetes_conn_id", fallback="kubernetes_default")
    overlord_conn_id = druid_ingest_conn_id or configured_overlord_conn_id()
    cleanup_delay = dt.timedelta(seconds=config.task_cleanup_delay.total_seconds())
    interval = dt.timedelta(seconds=config.task_cleanup_interval.total_seconds())
    if interval <= dt.timedelta(0):
        raise DruidK8sConfigError(
            "druid.indexer.runner.taskCleanupInterval", f"must be positive, got {interval}", "use e.g. PT10M"
        )

    with DAG(
        dag_id=dag_id,
        description=(
            f"Delete finished Druid peon Jobs in namespace {config.namespace!r} older than "
            f"taskCleanupDelay ({human_duration(cleanup_delay)})"
        ),
        schedule=interval,
        start_date=start_date or dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=list(tags),
        doc_md=reaper_package.__doc__,
    ) as dag:

        @task(task_id="reap_finished_peon_jobs", multiple_outputs=False)
        def reap_finished_peon_jobs() -> dict[str, Any]:
            from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
            from druid_k8s_provider.hooks.overlord import DruidOverlordHook

            hook = DruidK8sHook(
                kubernetes_conn_id=conn_id,
                namespace=config.namespace,
                disable_client_proxy=config.disable_client_proxy,
            )
            with DruidOverlordHook(overlord_conn_id) as overlord:
                return reap(hook, config.namespace, cleanup_delay, page_size=page_size, overlord=overlord)

        reap_finished_peon_jobs()
    return dag
