"""Druid's periodic clean-up of finished peon Jobs, as an Airflow DAG (DAG id ``druid_k8s_reaper``).

Every ``taskCleanupInterval`` (default 10 minutes) it deletes, in the runner namespace, the Jobs labelled
``druid.k8s.peons=true`` that finished more than ``taskCleanupDelay`` ago (default 2 days), with their pods.
It never touches running Jobs, Jobs without that label, or Jobs whose Druid task is still active in the
Overlord (asked once per page of Jobs, with one batched ``POST /druid/indexer/v1/taskStatus``); when the
Overlord cannot be asked, the run deletes nothing and logs why. The summary of each run is in XCom.

Configuration comes from the ``[druid_k8s]`` section of the Airflow config (or its environment variables):
``runtime_properties_file`` and/or ``runner_properties`` must give ``druid.indexer.runner.namespace``;
``kubernetes_conn_id`` names the Kubernetes connection (default ``kubernetes_default``) and
``druid_ingest_conn_id`` the Overlord's (default ``druid_ingest_default``). For example::

    export AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES='{"druid.indexer.runner.namespace": "druid"}'

To run it with another connection or namespace, copy this file and pass them to ``create_reaper_dag``.
"""

from __future__ import annotations

from druid_k8s_provider.reaper import create_reaper_dag

dag = create_reaper_dag(dag_id="druid_k8s_reaper")
