"""Run Apache Druid tasks as Kubernetes Jobs from Apache Airflow.

The package reproduces the semantics of Druid's Kubernetes task runner ("MiddleManager-less Druid"):
a pure core turns a Druid task, a template pod and the runner properties into a Job manifest, and a thin
Airflow shell (hook, operator, trigger, sensor, DAGs) does the I/O.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "druid-k8s-provider",
        "name": "Druid on Kubernetes",
        "description": (
            "Launch Apache Druid tasks as Kubernetes Jobs (MiddleManager-less Druid) from Airflow."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Druid on Kubernetes",
                "external-doc-url": "https://druid.apache.org/docs/latest/development/extensions-core/k8s-jobs",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Druid on Kubernetes",
                "python-modules": ["druid_k8s_provider.operators.task"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Druid on Kubernetes",
                "python-modules": ["druid_k8s_provider.sensors.task"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Druid on Kubernetes",
                "python-modules": [
                    "druid_k8s_provider.hooks.druid_k8s",
                    "druid_k8s_provider.hooks.overlord",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Druid on Kubernetes",
                "python-modules": [
                    "druid_k8s_provider.triggers.job",
                    "druid_k8s_provider.triggers.overlord_task",
                    "druid_k8s_provider.triggers.task_status",
                ],
            }
        ],
        "extra-links": ["druid_k8s_provider.links.DruidConsoleLink"],
        "config": {
            "druid_k8s": {
                "description": "Defaults for DruidK8sTaskOperator; operator arguments override them.",
                "options": {
                    "runtime_properties_file": {
                        "description": "Path of an Overlord runtime.properties file whose "
                        "druid.indexer.runner.* properties are the base configuration.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/druid/conf/druid/cluster/master/runtime.properties",
                        "default": "",
                    },
                    "runner_properties": {
                        "description": "JSON object of Druid runner property names to values, "
                        "layered over the runtime.properties file.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": '{"druid.indexer.runner.namespace": "druid"}',
                        "default": "",
                    },
                    "execution_config": {
                        "description": "Druid's task runner execution config (JSON object): its "
                        "podTemplateSelectStrategy (taskType or selectorBased) picks the pod template of "
                        "customTemplateAdapter tasks. An operator's execution_config replaces it.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": '{"type": "default", "podTemplateSelectStrategy": {"type": '
                        '"selectorBased", "selectors": [{"selectionKey": "small", "type": ["compact"]}]}}',
                        "default": "",
                    },
                    "kubernetes_conn_id": {
                        "description": "Airflow connection used to reach Kubernetes.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "kubernetes_default",
                        "default": "kubernetes_default",
                    },
                    "druid_ingest_conn_id": {
                        "description": "Airflow connection to the Druid Overlord (the Apache Druid "
                        "provider's): every task is submitted there, which holds its locks. Required.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "druid_ingest_default",
                        "default": "druid_ingest_default",
                    },
                    "launch_mode": {
                        "description": "Who creates the peon Job: auto (from the Overlord's version), "
                        "airflow (the provider, Druid 35.0.0 and later) or overlord (the Overlord).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "auto",
                        "default": "auto",
                    },
                    "console_url": {
                        "description": "Base URL of Druid's web console (the Router), for the operator's "
                        "'Druid console' link, when the Overlord connection has no console_url extra. "
                        "Unset: the connection's own URL (scheme, host, port).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://druid.example.com:8888",
                        "default": "",
                    },
                    "overlord_pod_selector": {
                        "description": "Label selector of the Overlord pod used as the template.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "app=druid,component=overlord",
                        "default": "",
                    },
                    "task_logs_location": {
                        "description": "No longer used by the operator: the Overlord reads the peons' "
                        "status.json and its status decides the outcome.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://druid/indexing-logs",
                        "default": "",
                    },
                },
            }
        },
    }
