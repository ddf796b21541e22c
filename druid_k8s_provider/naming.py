"""Names, labels and annotations of peon Jobs, exactly as Druid's Kubernetes task runner makes them.

A platform team moving from the in-Overlord runner to this provider keeps its dashboards, ``kubectl``
selectors and clean-up scripts, so the Job name, the labels and the annotations must be byte-for-byte what
Druid produces. Where Druid can produce an invalid Kubernetes name or label, ours produces a valid one and
the docstring says so.

Re-attaching and reaping find Jobs by the label ``druid.k8s.peons=true`` and map them back to tasks by the
``task.id`` annotation (the original id): names are lossy and must never be parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import mmh3

if TYPE_CHECKING:
    from druid_k8s_provider.task import DruidTask

PEON_LABEL = "druid.k8s.peons"
TASK_ID_LABEL = "druid.task.id"
TASK_GROUP_ID_LABEL = "druid.task.group.id"
TASK_TYPE_LABEL = "druid.task.type"
TASK_DATASOURCE_LABEL = "druid.task.datasource"
#: Set by Druid's pod template adapter from 33.0.0; the Overlord's restore lists only Jobs carrying it with
#: its own ``overlordNamespace`` when that property is set.
OVERLORD_NAMESPACE_LABEL = "druid.overlord.namespace"

TASK_ID_ANNOTATION = "task.id"
TASK_TYPE_ANNOTATION = "task.type"
TASK_GROUP_ID_ANNOTATION = "task.group.id"
TASK_DATASOURCE_ANNOTATION = "task.datasource"
TLS_ENABLED_ANNOTATION = "tls.enabled"

#: The Airflow task instance a Job of ``launch_mode="airflow"`` was launched for (set by the operator; the
#: reaper knows the provider's suspended Jobs by them).
AIRFLOW_DAG_ID_ANNOTATION = "airflow.apache.org/dag-id"
AIRFLOW_TASK_ID_ANNOTATION = "airflow.apache.org/task-id"
AIRFLOW_RUN_ID_ANNOTATION = "airflow.apache.org/run-id"
AIRFLOW_MAP_INDEX_ANNOTATION = "airflow.apache.org/map-index"

RESERVED_LABEL_KEYS = frozenset(
    {PEON_LABEL, TASK_ID_LABEL, TASK_GROUP_ID_LABEL, TASK_TYPE_LABEL, TASK_DATASOURCE_LABEL}
)
RESERVED_ANNOTATION_KEYS = frozenset(
    {
        TASK_ID_ANNOTATION,
        TASK_TYPE_ANNOTATION,
        TASK_GROUP_ID_ANNOTATION,
        TASK_DATASOURCE_ANNOTATION,
        TLS_ENABLED_ANNOTATION,
    }
)

# Kubernetes limits (apimachinery validation): label values and name parts are at most 63 characters.
MAX_LABEL_LENGTH = 63
_JOB_NAME_PREFIX_LENGTH = 30
_NOT_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]")
_NOT_LABEL_CHARACTER = re.compile(r"[^A-Za-z0-9_.-]")
_LABEL_EDGE_CHARACTERS = "_.-"
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_DNS1123_SUBDOMAIN_LENGTH = 253


def task_id_hash(task_id: str) -> str:
    """MurmurHash3 x64 128-bit (seed 0) of the id's UTF-8 bytes, in the hex form Guava prints."""
    return mmh3.hash_bytes(task_id.encode("utf-8")).hex()


def job_name(task_id: str, prefix: str | None = None) -> str:
    """The Job name Druid gives a task: 30 lowercased alphanumerics, ``-``, the hash of the full task id.

    The alphanumerics are the id's, or from Druid 33 on those of ``druid.indexer.runner.k8sTaskPodNamePrefix``
    when it is set (apache/druid PR 17749; an empty prefix means none). At most 63 characters, a valid
    DNS-1123 label. Ours: an id without any alphanumeric character (Druid would produce the invalid name
    ``-<hash>``) gets the prefix ``task``; a prefix without one is refused by the configuration
    (:func:`pod_name_prefix_problem`).
    """
    source = prefix if prefix else task_id
    kept = _NOT_ALPHANUMERIC.sub("", source)[:_JOB_NAME_PREFIX_LENGTH].lower()
    return f"{kept or 'task'}-{task_id_hash(task_id)}"


def job_name_prefix(prefix: str | None) -> str | None:
    """What a ``k8sTaskPodNamePrefix`` puts before the hash in Druid's Job names (as :func:`job_name` keeps
    it), or None when the names come from the task ids (prefix unset, empty, or without letters and
    digits)."""
    return _NOT_ALPHANUMERIC.sub("", prefix or "")[:_JOB_NAME_PREFIX_LENGTH].lower() or None


def pod_name_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start Job names (it has no letter or digit to keep), or None."""
    if prefix and not _NOT_ALPHANUMERIC.sub("", prefix):
        return (
            f"{prefix!r} has no letters or digits, so every Job name would start with '-', which Kubernetes "
            "refuses"
        )
    return None


def id_label_value(value: str) -> str:
    """Druid's label form of a task or group id: alphanumerics only, lowercased, first 63 characters."""
    return _NOT_ALPHANUMERIC.sub("", value).lower()[:MAX_LABEL_LENGTH]


def label_value(value: str) -> str:
    """Druid's label form of a task type or datasource: a valid Kubernetes label value.

    Characters outside ``[A-Za-z0-9_.-]`` are dropped, ``_.-`` are stripped from both ends, the first 63
    characters kept. Ours: the end is stripped again after truncation, because a value cut in front of a
    ``-`` would otherwise be refused by the API server.
    """
    kept = _NOT_LABEL_CHARACTER.sub("", value).strip(_LABEL_EDGE_CHARACTERS)
    return kept[:MAX_LABEL_LENGTH].rstrip(_LABEL_EDGE_CHARACTERS)


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label or annotation key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"key {key!r} has an empty prefix before '/'"
    if slash and (len(prefix) > _MAX_DNS1123_SUBDOMAIN_LENGTH or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"key prefix {prefix!r} is not a DNS-1123 subdomain (lowercase alphanumerics, '-', '.')"
    if not name:
        return f"key {key!r} has an empty name"
    if len(name) > MAX_LABEL_LENGTH:
        return f"key name {name!r} is longer than {MAX_LABEL_LENGTH} characters"
    if not _QUALIFIED_NAME_PART.fullmatch(name):
        return (
            f"key name {name!r} must consist of alphanumerics, '-', '_' or '.', "
            "and start and end with an alphanumeric"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid Kubernetes label value, or None."""
    if len(value) > MAX_LABEL_LENGTH:
        return f"value {value!r} is longer than {MAX_LABEL_LENGTH} characters"
    if value and not _QUALIFIED_NAME_PART.fullmatch(value):
        return (
            f"value {value!r} must be empty or consist of alphanumerics, '-', '_' or '.', "
            "and start and end with an alphanumeric"
        )
    return None


def peon_labels(task: DruidTask, user_labels: Mapping[str, str]) -> dict[str, str]:
    """Labels of the Job and its pod template: the user's labels, then the runner's own."""
    labels = dict(user_labels)
    labels[PEON_LABEL] = "true"
    labels[TASK_ID_LABEL] = id_label_value(task.id)
    labels[TASK_GROUP_ID_LABEL] = id_label_value(task.group_id)
    labels[TASK_TYPE_LABEL] = label_value(task.type)
    if task.data_source is not None:
        labels[TASK_DATASOURCE_LABEL] = label_value(task.data_source)
    return labels


def peon_annotations(
    task: DruidTask, user_annotations: Mapping[str, str], tls_enabled: bool
) -> dict[str, str]:
    """Annotations of the Job and its pod template: the user's, then the original task values.

    ``task.id`` holds the original id: it is how a Job is mapped back to its task.
    """
    annotations = dict(user_annotations)
    annotations[TASK_ID_ANNOTATION] = task.id
    annotations[TASK_TYPE_ANNOTATION] = task.type
    annotations[TASK_GROUP_ID_ANNOTATION] = task.group_id
    if task.data_source is not None:
        annotations[TASK_DATASOURCE_ANNOTATION] = task.data_source
    annotations[TLS_ENABLED_ANNOTATION] = "true" if tls_enabled else "false"
    return annotations
