"""Where the runner properties of an Airflow task come from, in the order Druid users expect.

Layers, later wins: the Overlord's ``runtime.properties`` file, the JSON object in the Airflow config option
``[druid_k8s] runner_properties``, then the properties given to the operator or the reaper DAG. The operator,
the sensor and the reaper all layer the same way, so one place decides it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.sdk import conf

from druid_k8s_provider.config import read_runtime_properties
from druid_k8s_provider.errors import DruidK8sConfigError

CONFIG_SECTION = "druid_k8s"
#: The Apache Druid provider's default Overlord connection.
DEFAULT_OVERLORD_CONN_ID = "druid_ingest_default"


def configured_overlord_conn_id() -> str:
    """``[druid_k8s] druid_ingest_conn_id``, else ``druid_ingest_default`` (the Apache Druid provider's)."""
    return conf.get(CONFIG_SECTION, "druid_ingest_conn_id", fallback="") or DEFAULT_OVERLORD_CONN_ID


def layered_runner_properties(
    runtime_properties_file: str | None = None, runner_properties: Mapping[str, Any] | str | None = None
) -> dict[str, Any]:
    """Druid property names to values: runtime.properties < ``[druid_k8s]`` < ``runner_properties``.

    ``runtime_properties_file`` falls back to ``[druid_k8s] runtime_properties_file``. Only ``druid.*`` keys
    of the file are kept: an Overlord file may carry JVM or logging settings too.
    """
    properties: dict[str, Any] = {}
    path = runtime_properties_file or conf.get(CONFIG_SECTION, "runtime_properties_file", fallback="")
    if path:
        file_properties = read_runtime_properties(path)
        properties.update({key: value for key, value in file_properties.items() if key.startswith("druid.")})
    configured = conf.get(CONFIG_SECTION, "runner_properties", fallback="") or None
    properties.update(json_object(f"[{CONFIG_SECTION}] runner_properties", configured))
    properties.update(json_object("runner_properties", runner_properties))
    return properties


def json_object(
    field: str,
    value: Any,
    what: str = "an object of Druid property names to values",
    example: str = '{"druid.indexer.runner.namespace": "druid"}',
) -> dict[str, Any]:
    """A dict from a dict or a JSON object string (None or "" gives {}); anything else names ``field``."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DruidK8sConfigError(field, f"not valid JSON ({exc.msg})", "give a JSON object") from None
        if isinstance(decoded, dict):
            return decoded
    raise DruidK8sConfigError(field, f"expected {what}, got {type(value).__name__}", f"give e.g. {example}")
