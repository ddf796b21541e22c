"""A Druid task as data: what the runner needs to know about a task to build and track its Job.

The task JSON is the one a user would POST to the Overlord (``/druid/indexer/v1/task``). Only the fields the
runner uses are interpreted (id, type, groupId, dataSource, context); the rest is carried verbatim to the
peon in ``TASK_JSON``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from druid_k8s_provider.errors import DruidK8sConfigError

# Task types of Druid's core and bundled extensions. Used to catch typos in per-type settings (a template
# for ``index_paralel`` would silently never be used); types of other extensions are still accepted.
KNOWN_TASK_TYPES = frozenset(
    {
        "archive",
        "compact",
        "index",
        "index_hadoop",
        "index_kafka",
        "index_kinesis",
        "index_parallel",
        "index_realtime",
        "index_realtime_appenderator",
        "kill",
        "move",
        "noop",
        "partial_dimension_cardinality",
        "partial_dimension_distribution",
        "partial_index_generate",
        "partial_index_generic_merge",
        "partial_range_index_generate",
        "query_controller",
        "query_worker",
        "restore",
        "single_phase_sub_task",
    }
)
# Task types that embed a query stack (Druid's ``Task.supportsQueries()``): streaming ingestion, the legacy
# realtime tasks and MSQ workers (true for them since apache/druid PR 14437, although they are not queryable
# over HTTP). Their peons are started with ``--loadBroadcastSegments true`` so joins work.
QUERY_SERVING_TASK_TYPES = frozenset(
    {"index_kafka", "index_kinesis", "index_realtime", "index_realtime_appenderator", "query_worker"}
)
# Task types that announce themselves with a node type (Druid's ``Task.getNodeType()``): the legacy realtime
# tasks announce as ``realtime``; every other type has none and gets no ``--nodeType`` argument.
NODE_TYPE_BY_TASK_TYPE: Mapping[str, str] = {
    "index_realtime": "realtime",
    "index_realtime_appenderator": "realtime",
}
TASK_JAVA_OPTS_CONTEXT_KEY = "druid.indexer.runner.javaOpts"

_MAX_DERIVED_PART_LENGTH = 60
# The readable front of a derived id, before its hash: short enough that the id with an attempt suffix stays
# within MAX_DERIVED_ID_LENGTH (150 + "_" + 16 hex + "_attempt" + up to 25 digits).
_MAX_DERIVED_READABLE_LENGTH = 150
_NOT_ID_CHARACTER = re.compile(r"[^A-Za-z0-9_.-]+")
#: Upper bound of every id the provider derives (Druid stores ids in VARCHAR(255) metadata columns).
MAX_DERIVED_ID_LENGTH = 200
#: What separates a derived base id from its attempt number: ``<base>_attempt<n>``.
ATTEMPT_SEPARATOR = "_attempt"


def _id_problem(task_id: str) -> str | None:
    """Why Druid would refuse ``task_id`` (its ``IdUtils.validateId`` rules), or None."""
    if not task_id:
        return "the task id is empty"
    if task_id.startswith("."):
        return f"the task id {task_id!r} starts with '.'"
    if "/" in task_id:
        return f"the task id {task_id!r} contains '/'"
    for position, character in enumerate(task_id):
        if character != " " and (character.isspace() or not character.isprintable()):
            return f"the task id {task_id!r} contains the character {character!r} at position {position}"
    return None


def _string_at(document: Mapping[str, Any], *path: str) -> str | None:
    """The string at ``path`` in nested mappings, or None when any step is missing or not a string."""
    value: Any = document
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def _data_source_of(spec: Mapping[str, Any]) -> str | None:
    """The datasource where Druid's task types keep it.

    Kill, compact and archive tasks have it at the top level; batch ingestion in ``spec.dataSchema``;
    streaming tasks in a top-level ``dataSchema``; some tasks in their ``ioConfig``; MSQ in its destination.
    """
    candidates = (
        ("dataSource",),
        ("spec", "dataSchema", "dataSource"),
        ("dataSchema", "dataSource"),
        ("spec", "ioConfig", "dataSource"),
        ("ioConfig", "dataSource"),
        ("spec", "destination", "dataSource"),
    )
    for path in candidates:
        found = _string_at(spec, *path)
        if found:
            return found
    return None


@dataclass(frozen=True)
class DruidTask:
    """The runner's view of one Druid task.

    ``spec`` is the full task JSON, with ``id`` set, as the peon receives it. It is a private copy: changing
    the dict a task was parsed from does not change the task.
    """

    id: str
    type: str
    group_id: str
    data_source: str | None
    context: Mapping[str, Any]
    node_type: str | None
    serves_queries: bool
    spec: dict[str, Any] = field(repr=False)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | str, default_id: str | None = None) -> DruidTask:
        """Parse a task from its JSON (a string or an already decoded mapping).

        ``default_id`` is used when the JSON has no ``id`` (the operator derives one with
        :func:`derive_task_id`, so a retried Airflow task re-attaches to the same Job).
        """
        document = _decode(spec)
        task_type = document.get("type")
        if not isinstance(task_type, str) or not task_type.strip():
            raise DruidK8sConfigError(
                "task.type",
                "the task JSON has no 'type'" if task_type is None else f"'type' is {task_type!r}",
                'set \'type\' to the Druid task type, e.g. "index_parallel", "kill" or "compact"',
            )
        task_id = document.get("id", default_id)
        if task_id is None:
            raise DruidK8sConfigError(
                "task.id",
                "the task JSON has no 'id' and no default id was given",
                "set 'id' in the task JSON, or pass default_id (the operator derives one from the run)",
            )
        if not isinstance(task_id, str) or (problem := _id_problem(task_id)) is not None:
            raise DruidK8sConfigError(
                "task.id",
                f"'id' is {task_id!r}" if not isinstance(task_id, str) else problem or "",
                "use a non-empty id without '/', without a leading '.', without whitespace other than spaces",
            )
        group_id = document.get("groupId") or task_id
        if not isinstance(group_id, str):
            raise DruidK8sConfigError("task.groupId", f"'groupId' is {group_id!r}", "make 'groupId' a string")
        context = document.get("context")
        if context is None:
            context = {}
        if not isinstance(context, Mapping):
            raise DruidK8sConfigError(
                "task.context", f"'context' is {context!r}", "make 'context' a JSON object"
            )
        java_opts = context.get(TASK_JAVA_OPTS_CONTEXT_KEY)
        if java_opts is not None and not isinstance(java_opts, str):
            raise DruidK8sConfigError(
                f"task.context.{TASK_JAVA_OPTS_CONTEXT_KEY}",
                f"the value is {java_opts!r}, not a string",
                'give the extra JVM options as one string, e.g. "-Xmx2g -XX:MaxDirectMemorySize=1g"',
            )
        document["id"] = task_id
        return cls(
            id=task_id,
            type=task_type,
            group_id=group_id,
            data_source=_data_source_of(document),
            context=dict(context),
            node_type=NODE_TYPE_BY_TASK_TYPE.get(task_type),
            serves_queries=task_type in QUERY_SERVING_TASK_TYPES,
            spec=document,
        )

    @property
    def java_opts(self) -> str | None:
        """Extra JVM options the task asks for in its context (``druid.indexer.runner.javaOpts``)."""
        value = self.context.get(TASK_JAVA_OPTS_CONTEXT_KEY)
        return value if isinstance(value, str) else None

    def to_json(self) -> str:
        """The task JSON the peon receives, compact (it travels in an env var or an annotation)."""
        return json.dumps(self.spec, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _decode(spec: Mapping[str, Any] | str) -> dict[str, Any]:
    """A private, mutable copy of the task JSON, or a DruidK8sConfigError saying what is wrong with it."""
    if isinstance(spec, str):
        try:
            decoded = json.loads(spec)
        except json.JSONDecodeError as error:
            raise DruidK8sConfigError(
                "task",
                f"the task JSON does not parse: {error.msg} at line {error.lineno} column {error.colno}",
                "pass a valid JSON object (the body you would POST to /druid/indexer/v1/task)",
            ) from error
    else:
        decoded = spec
    if not isinstance(decoded, Mapping):
        raise DruidK8sConfigError(
            "task",
            f"the task is a {type(decoded).__name__}, not a JSON object",
            "pass the task as a JSON object (dict) or its JSON text",
        )
    try:
        # Druid's parser rejects NaN/Infinity and Python objects cannot travel at all: refuse them here,
        # not as an obscure peon start-up failure after the Job exists.
        json.dumps(decoded, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise DruidK8sConfigError(
            "druid_task",
            f"the task holds a value JSON cannot carry ({error})",
            "use only JSON values (strings, numbers, true/false, null, lists, objects); write dates as "
            "ISO-8601 strings, and no NaN or Infinity",
        ) from None
    return copy.deepcopy(dict(decoded))


def _id_part(text: str) -> str:
    """A readable fragment of an Airflow name for a Druid id: unusual characters become ``_``."""
    return _NOT_ID_CHARACTER.sub("_", text).strip("_.")[:_MAX_DERIVED_PART_LENGTH] or "x"


def derive_task_id(dag_id: str, task_id: str, run_id: str, map_index: int, task_type: str) -> str:
    """The base Druid task id of one Airflow task instance, the same every time it is computed.

    The id reads ``<type>_<dag>_<task>[_<map index>]_<hash>`` within ``[A-Za-z0-9_.-]``: the hash covers all
    inputs (run id included), so different runs and mapped instances never collide even when the readable
    parts are shortened (each to 60 characters, together to 150). At most 167 characters, so
    :func:`attempt_task_id` can name each submission of it within :data:`MAX_DERIVED_ID_LENGTH`.
    """
    fingerprint = json.dumps([dag_id, task_id, run_id, map_index, task_type], separators=(",", ":"))
    digest = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:16]
    parts = [_id_part(task_type), _id_part(dag_id), _id_part(task_id)]
    if map_index >= 0:
        parts.append(str(map_index))
    readable = "_".join(parts)[:_MAX_DERIVED_READABLE_LENGTH].rstrip("_.")
    return f"{readable}_{digest}"


def attempt_task_id(base_id: str, attempt: int) -> str:
    """The Druid task id of submission number ``attempt`` (1, 2, ...) of a derived base id.

    The Overlord never accepts an id twice, even for a finished task (``entryAlreadyExists``), so each attempt
    that really runs the task again needs its own id: ``<base>_attempt<n>``. Deterministic, distinct per
    attempt, within ``[A-Za-z0-9_.-]`` and :data:`MAX_DERIVED_ID_LENGTH` for a base from
    :func:`derive_task_id`. Raises ValueError for an attempt below 1 or an id that would be too long.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    derived = f"{base_id}{ATTEMPT_SEPARATOR}{attempt}"
    if len(derived) > MAX_DERIVED_ID_LENGTH:
        raise ValueError(
            f"the id of attempt {attempt} of {base_id!r} would be {len(derived)} characters, "
            f"more than {MAX_DERIVED_ID_LENGTH}"
        )
    return derived


def attempt_number(base_id: str, task_id: str) -> int | None:
    """Which attempt of ``base_id`` the id ``task_id`` names (the inverse of :func:`attempt_task_id`), or
    None when it is not one of them (another task's id, the bare base id, a user-written id)."""
    prefix = f"{base_id}{ATTEMPT_SEPARATOR}"
    if not task_id.startswith(prefix):
        return None
    number = task_id[len(prefix) :]
    if not number.isascii() or not number.isdigit() or number.startswith("0"):
        return None
    return int(number)
