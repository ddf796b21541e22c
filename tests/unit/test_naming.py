"""Job names, labels and annotations must be exactly Druid's, and always valid for Kubernetes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from druid_k8s_provider import naming
from druid_k8s_provider.task import DruidTask

SPEC_EXAMPLE_ID = (
    "api-issued_kill_wikipedia3_omjobnbc_1000-01-01T00:00:00.000Z"
    "_2023-05-14T00:00:00.000Z_2023-05-15T17:03:01.220Z"
)
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def test_job_name_of_the_spec_example_is_druids() -> None:
    assert (
        naming.job_name(SPEC_EXAMPLE_ID) == "apiissuedkillwikipedia3omjobnb-18ed64f09a02fab468b9bba38739871f"
    )


def test_id_label_of_the_spec_example_is_druids() -> None:
    assert (
        naming.id_label_value(SPEC_EXAMPLE_ID)
        == "apiissuedkillwikipedia3omjobnbc10000101t000000000z20230514t0000"
    )


def test_job_name_of_an_id_without_alphanumerics_is_still_valid() -> None:
    name = naming.job_name("___")
    assert name == f"task-{naming.task_id_hash('___')}"
    assert DNS1123_LABEL.fullmatch(name)


@given(st.text(min_size=1))
def test_any_task_id_gives_a_valid_deterministic_job_name_ending_in_its_hash(task_id: str) -> None:
    name = naming.job_name(task_id)
    assert len(name) <= 63
    assert DNS1123_LABEL.fullmatch(name), name
    assert name == naming.job_name(task_id)
    assert name.endswith("-" + naming.task_id_hash(task_id))
    assert re.fullmatch(r"[0-9a-f]{32}", naming.task_id_hash(task_id))


@given(st.text())
def test_label_forms_of_any_text_are_valid_label_values(text: str) -> None:
    assert naming.label_value_problem(naming.label_value(text)) is None
    assert naming.label_value_problem(naming.id_label_value(text)) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("wikipedia", "wikipedia"),
        ("wiki pedia/2024", "wikipedia2024"),
        ("__hidden.ds-", "hidden.ds"),
        ("...", ""),
        ("é-data_source", "data_source"),
        ("a" * 62 + "-b", "a" * 62),  # cut in front of '-': ours strips it so the value stays valid
    ],
)
def test_label_value_rule(raw: str, expected: str) -> None:
    assert naming.label_value(raw) == expected


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("team", True),
        ("example.com/team", True),
        ("app.kubernetes.io/name", True),
        ("Team_1.x", True),
        ("", False),
        ("/team", False),
        ("Example.com/team", False),
        ("team-", False),
        ("a" * 64, False),
        ("a/b/c", False),
    ],
)
def test_label_key_validation(key: str, valid: bool) -> None:
    assert (naming.label_key_problem(key) is None) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [("", True), ("v1.2_x-y", True), ("-x", False), ("x y", False), ("a" * 64, False), ("ok\n", False)],
)
def test_label_value_validation(value: str, valid: bool) -> None:
    assert (naming.label_value_problem(value) is None) is valid


def _kill_task() -> DruidTask:
    return DruidTask.from_spec(
        {"type": "kill", "id": SPEC_EXAMPLE_ID, "groupId": "Group/One", "dataSource": "wikipedia 3"}
    )


def test_peon_labels_put_user_labels_first_then_druids() -> None:
    labels = naming.peon_labels(_kill_task(), {"team": "ingest"})
    assert list(labels) == [
        "team",
        "druid.k8s.peons",
        "druid.task.id",
        "druid.task.group.id",
        "druid.task.type",
        "druid.task.datasource",
    ]
    assert labels == {
        "team": "ingest",
        "druid.k8s.peons": "true",
        "druid.task.id": "apiissuedkillwikipedia3omjobnbc10000101t000000000z20230514t0000",
        "druid.task.group.id": "groupone",
        "druid.task.type": "kill",
        "druid.task.datasource": "wikipedia3",
    }


@pytest.mark.parametrize("tls", [True, False])
def test_peon_annotations_keep_original_values(tls: bool) -> None:
    annotations = naming.peon_annotations(_kill_task(), {"owner": "me"}, tls_enabled=tls)
    assert annotations == {
        "owner": "me",
        "task.id": SPEC_EXAMPLE_ID,
        "task.type": "kill",
        "task.group.id": "Group/One",
        "task.datasource": "wikipedia 3",
        "tls.enabled": "true" if tls else "false",
    }


def test_task_without_datasource_gets_no_datasource_label_or_annotation() -> None:
    task = DruidTask.from_spec({"type": "noop", "id": "noop_1"})
    assert "druid.task.datasource" not in naming.peon_labels(task, {})
    assert "task.datasource" not in naming.peon_annotations(task, {}, tls_enabled=False)


CLICKSTREAM_ID = "index_parallel_web_clickstream_events_eu_region_hourly_rollup_2024-05-01T00:00:00.000Z_try1"


def test_a_pod_name_prefix_replaces_the_id_part_of_the_job_name() -> None:
    """Issue 17 item 1 (apache/druid PR 17749): letters and digits of the prefix, lowercased, at most 30,
    then the hash of the full task id."""
    assert (
        naming.job_name(CLICKSTREAM_ID, "Nightly_Orders") == "nightlyorders-5a8b23807b2132a88feef67ffd87787b"
    )
    assert naming.job_name(CLICKSTREAM_ID).endswith("-5a8b23807b2132a88feef67ffd87787b")


def test_a_pod_name_prefix_is_cut_to_30_characters_and_an_empty_one_is_none() -> None:
    long_prefix = "Team-" + "x" * 40
    assert naming.job_name("kill_a", long_prefix) == "team" + "x" * 26 + "-" + naming.task_id_hash("kill_a")
    assert naming.job_name("kill_a", "") == naming.job_name("kill_a")
    assert naming.pod_name_prefix_problem("a_b") is None
    assert naming.pod_name_prefix_problem("__") is not None
