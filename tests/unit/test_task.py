"""Parsing Druid task JSON: the fields the runner needs, where each Druid task type keeps them."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import DruidTask, derive_task_id


@pytest.mark.parametrize(
    ("spec", "data_source"),
    [
        ({"type": "kill", "dataSource": "wiki"}, "wiki"),
        ({"type": "compact", "dataSource": "wiki", "ioConfig": {"type": "compact"}}, "wiki"),
        ({"type": "index_parallel", "spec": {"dataSchema": {"dataSource": "wiki"}}}, "wiki"),
        (
            {"type": "index_kafka", "dataSchema": {"dataSource": "events"}, "ioConfig": {"topic": "t"}},
            "events",
        ),
        ({"type": "some_type", "spec": {"ioConfig": {"dataSource": "io"}}}, "io"),
        ({"type": "query_controller", "spec": {"destination": {"dataSource": "msq"}}}, "msq"),
        ({"type": "noop"}, None),
    ],
)
def test_datasource_is_found_where_the_task_type_keeps_it(
    spec: dict[str, object], data_source: str | None
) -> None:
    assert DruidTask.from_spec({**spec, "id": "t1"}).data_source == data_source


@pytest.mark.parametrize(
    ("task_type", "node_type", "serves_queries"),
    [
        ("index_parallel", None, False),
        ("kill", None, False),
        ("index_kafka", None, True),
        ("index_kinesis", None, True),
        ("index_realtime", "realtime", True),
        ("index_realtime_appenderator", "realtime", True),
        ("query_worker", None, True),
        ("query_controller", None, False),
    ],
)
def test_node_type_and_query_serving_follow_the_task_type(
    task_type: str, node_type: str | None, serves_queries: bool
) -> None:
    task = DruidTask.from_spec({"type": task_type, "id": "t1"})
    assert (task.node_type, task.serves_queries) == (node_type, serves_queries)


def test_parses_json_text_and_defaults_group_id_to_id() -> None:
    task = DruidTask.from_spec(
        '{"type": "kill", "id": "kill_1", "dataSource": "w", "context": {"priority": 5}}'
    )
    assert (task.id, task.type, task.group_id, task.context) == ("kill_1", "kill", "kill_1", {"priority": 5})


def test_explicit_group_id_is_kept() -> None:
    assert DruidTask.from_spec({"type": "kill", "id": "a", "groupId": "g"}).group_id == "g"


def test_default_id_is_used_and_written_into_the_spec_the_peon_receives() -> None:
    task = DruidTask.from_spec({"type": "kill", "dataSource": "w"}, default_id="kill_w_derived")
    assert task.id == "kill_w_derived"
    assert json.loads(task.to_json())["id"] == "kill_w_derived"


def test_id_in_the_spec_wins_over_the_default() -> None:
    assert DruidTask.from_spec({"type": "kill", "id": "mine"}, default_id="derived").id == "mine"


def test_task_does_not_share_the_callers_dict() -> None:
    original = {"type": "kill", "id": "a", "context": {"k": [1]}}
    task = DruidTask.from_spec(original)
    original["context"]["k"].append(2)  # type: ignore[index]
    assert task.spec["context"] == {"k": [1]}
    assert "id" in original and original == {"type": "kill", "id": "a", "context": {"k": [1, 2]}}


def test_java_opts_from_the_context() -> None:
    task = DruidTask.from_spec(
        {"type": "kill", "id": "a", "context": {"druid.indexer.runner.javaOpts": "-Xmx2g"}}
    )
    assert task.java_opts == "-Xmx2g"
    assert DruidTask.from_spec({"type": "kill", "id": "a"}).java_opts is None


@pytest.mark.parametrize(
    ("spec", "field", "fix_mentions"),
    [
        ("{not json", "task", "valid JSON"),
        ("[1, 2]", "task", "JSON object"),
        ({"id": "a"}, "task.type", "'type'"),
        ({"id": "a", "type": ""}, "task.type", "'type'"),
        ({"id": "a", "type": 3}, "task.type", "'type'"),
        ({"type": "kill"}, "task.id", "default_id"),
        ({"type": "kill", "id": ""}, "task.id", "non-empty"),
        ({"type": "kill", "id": "a/b"}, "task.id", "'/'"),
        ({"type": "kill", "id": ".hidden"}, "task.id", "leading '.'"),
        ({"type": "kill", "id": "a\tb"}, "task.id", "whitespace"),
        ({"type": "kill", "id": 7}, "task.id", "non-empty"),
        ({"type": "kill", "id": "a", "groupId": 1}, "task.groupId", "string"),
        ({"type": "kill", "id": "a", "context": []}, "task.context", "JSON object"),
        (
            {"type": "kill", "id": "a", "context": {"druid.indexer.runner.javaOpts": ["-Xmx1g"]}},
            "task.context.druid.indexer.runner.javaOpts",
            "one string",
        ),
    ],
)
def test_bad_task_json_is_refused_naming_the_field_and_the_fix(
    spec: object, field: str, fix_mentions: str
) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        DruidTask.from_spec(spec)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert fix_mentions in caught.value.fix


def test_id_with_spaces_is_accepted_like_druid_does() -> None:
    assert DruidTask.from_spec({"type": "kill", "id": "a b"}).id == "a b"


def test_derived_id_is_deterministic_readable_and_distinct_per_run_and_map_index() -> None:
    first = derive_task_id("etl", "load_wiki", "manual__2024-01-01T00:00:00+00:00", -1, "index_parallel")
    assert first == derive_task_id(
        "etl", "load_wiki", "manual__2024-01-01T00:00:00+00:00", -1, "index_parallel"
    )
    assert re.fullmatch(r"index_parallel_etl_load_wiki_[0-9a-f]{16}", first)
    other_run = derive_task_id("etl", "load_wiki", "manual__2024-01-02T00:00:00+00:00", -1, "index_parallel")
    mapped = derive_task_id("etl", "load_wiki", "manual__2024-01-01T00:00:00+00:00", 3, "index_parallel")
    assert len({first, other_run, mapped}) == 3
    assert re.fullmatch(r"index_parallel_etl_load_wiki_3_[0-9a-f]{16}", mapped)


@given(
    dag_id=st.text(min_size=1, max_size=250),
    task_id=st.text(min_size=1, max_size=250),
    run_id=st.text(max_size=250),
    map_index=st.integers(min_value=-1, max_value=10_000),
    task_type=st.sampled_from(["index_parallel", "kill", "compact", "index_kafka"]),
)
def test_derived_id_is_always_a_valid_druid_id(
    dag_id: str, task_id: str, run_id: str, map_index: int, task_type: str
) -> None:
    derived = derive_task_id(dag_id, task_id, run_id, map_index, task_type)
    assert len(derived) <= 255
    assert DruidTask.from_spec({"type": task_type}, default_id=derived).id == derived


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "index_parallel", "id": "t1", "context": {"when": datetime.datetime(2024, 1, 1)}},
        {"type": "index_parallel", "id": "t1", "context": {"ratio": float("nan")}},
        '{"type": "index_parallel", "id": "t1", "context": {"ratio": Infinity}}',
    ],
)
def test_values_json_cannot_carry_are_refused_naming_the_task(spec: Any) -> None:
    with pytest.raises(DruidK8sConfigError) as raised:
        DruidTask.from_spec(spec)
    assert raised.value.field == "druid_task"
    assert "ISO-8601" in raised.value.fix and "NaN" in raised.value.fix
