"""Pod template selection (spec section 5): Druid's ``taskType`` and ``selectorBased`` strategies."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_job_builder_support import build, config, pod_template

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.job_builder import load_pod_template
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.template_selection import parse_execution_config

CUSTOM = {"k8s.adapter.type": "customTemplateAdapter"}


def task(task_type: str = "index_parallel", data_source: str = "wikipedia", **tags: str) -> DruidTask:
    spec: dict[str, Any] = {
        "type": task_type,
        "id": f"{task_type}_{data_source}_1",
        "spec": {"dataSchema": {"dataSource": data_source}},
    }
    if tags:
        spec["context"] = {"tags": tags}
    return DruidTask.from_spec(spec)


def selector_based(*selectors: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "default",
        "podTemplateSelectStrategy": {"type": "selectorBased", "selectors": list(selectors)},
    }


SELECTORS = selector_based(
    {"selectionKey": "smallCompactions", "type": ["compact"], "context.tags": {"tier": ["small", "tiny"]}},
    {"selectionKey": "clickstream", "dataSource": ["clicks", "views"]},
    {"selectionKey": "anyCompaction", "type": ["compact"]},
)


@pytest.mark.parametrize(
    "document", [{}, {"type": "default"}, {"podTemplateSelectStrategy": {"type": "taskType"}}]
)
def test_the_default_strategy_picks_the_task_types_template(document: dict[str, Any]) -> None:
    selection = parse_execution_config("execution_config", document)
    assert selection.template_key(task("kill")) == "kill"


@pytest.mark.parametrize(
    ("candidate", "key"),
    [
        (task("compact", tier="small"), "smallCompactions"),  # every condition of the first selector holds
        (task("compact", tier="large"), "anyCompaction"),  # a tag value outside the list: the next selector
        (task("compact"), "anyCompaction"),  # no tags at all
        (task("compact", "clicks", tier="tiny"), "smallCompactions"),  # the first match wins, in order
        (task("index_parallel", "views"), "clickstream"),  # any listed datasource will do
        (task("index_parallel", "wikipedia", tier="small"), None),  # nothing matches: the base template
    ],
)
def test_selectors_are_tried_in_order_and_all_conditions_of_one_must_hold(
    candidate: DruidTask, key: str | None
) -> None:
    assert parse_execution_config("execution_config", SELECTORS).template_key(candidate) == key


def _write(tmp_path: Path, name: str, image: str) -> str:
    template = pod_template()
    template["template"]["spec"]["containers"][0]["image"] = image
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(template), encoding="utf-8")
    return str(path)


def test_the_selected_key_names_the_template_and_unmatched_or_unconfigured_keys_fall_back_to_base(
    tmp_path: Path,
) -> None:
    cfg = config(
        **CUSTOM,
        **{
            "k8s.podTemplate.base": _write(tmp_path, "base", "druid:base"),
            "k8s.podTemplate.smallCompactions": _write(tmp_path, "small", "druid:small"),
            "k8s.podTemplate.compact": _write(tmp_path, "compact", "druid:compact-by-type"),
        },
    )
    selection = parse_execution_config("execution_config", SELECTORS)

    def image(candidate: DruidTask) -> str:
        loaded = load_pod_template(cfg, candidate, selection)
        return str(loaded["template"]["spec"]["containers"][0]["image"])

    assert image(task("compact", tier="small")) == "druid:small"
    # "anyCompaction" has no template: the base one, not the task type's (selectors replace type mapping).
    assert image(task("compact")) == "druid:base"
    assert image(task("index_parallel", "wikipedia")) == "druid:base"
    job = build(
        task("compact", tier="small").spec,
        load_pod_template(cfg, task("compact", tier="small"), selection),
        cfg,
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "druid:small"
    # Druid 31+ names the chosen template on the Job and its pod (apache/druid PR 16772).
    assert job["metadata"]["annotations"]["task.jobTemplate"] == "smallCompactions"
    assert job["spec"]["template"]["metadata"]["annotations"]["task.jobTemplate"] == "smallCompactions"
    base_job = build(task("compact").spec, load_pod_template(cfg, task("compact"), selection), cfg)
    assert base_job["metadata"]["annotations"]["task.jobTemplate"] == "base"


def test_without_a_base_template_an_unmatched_task_is_refused_naming_the_base_property() -> None:
    selection = parse_execution_config("execution_config", SELECTORS)
    with pytest.raises(DruidK8sConfigError) as caught:
        load_pod_template(config(**CUSTOM), task("index_parallel"), selection)
    assert caught.value.field == "druid.indexer.runner.k8s.podTemplate.base"
    assert "needs a base pod template" in caught.value.problem


def _with(path: str, value: Any) -> dict[str, Any]:
    """SELECTORS with the value at a dotted path (list indexes as numbers) replaced; None removes it."""
    document = copy.deepcopy(SELECTORS)
    *parents, last = path.split("/")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return document


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"type": "dynamic"}, "execution_config.type"),
        ({"type": "default", "strategy": {}}, "execution_config.strategy"),
        ({"podTemplateSelectStrategy": "selectorBased"}, "execution_config.podTemplateSelectStrategy"),
        (
            {"podTemplateSelectStrategy": {"type": "byLabel"}},
            "execution_config.podTemplateSelectStrategy.type",
        ),
        (
            {"podTemplateSelectStrategy": {"type": "taskType", "selectors": []}},
            "execution_config.podTemplateSelectStrategy",
        ),
        (
            _with("podTemplateSelectStrategy/selectors", None),
            "execution_config.podTemplateSelectStrategy.selectors",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/0/selectionKey", None),
            "execution_config.podTemplateSelectStrategy.selectors[0].selectionKey",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/1/selectionKey", " "),
            "execution_config.podTemplateSelectStrategy.selectors[1].selectionKey",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/1/dataSource", "clicks"),
            "execution_config.podTemplateSelectStrategy.selectors[1].dataSource",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/2/type", []),
            "execution_config.podTemplateSelectStrategy.selectors[2].type",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/0/context.tags", {"tier": "small"}),
            "execution_config.podTemplateSelectStrategy.selectors[0].context.tags.tier",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/0/context.tags", []),
            "execution_config.podTemplateSelectStrategy.selectors[0].context.tags",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/2/taskType", ["compact"]),
            "execution_config.podTemplateSelectStrategy.selectors[2].taskType",
        ),
        (
            _with("podTemplateSelectStrategy/selectors/1", "clickstream"),
            "execution_config.podTemplateSelectStrategy.selectors[1]",
        ),
    ],
)
def test_a_malformed_execution_config_is_refused_naming_the_json_path_and_the_fix(
    document: dict[str, Any], field: str
) -> None:
    with pytest.raises(DruidK8sConfigError) as caught:
        parse_execution_config("execution_config", document)
    assert caught.value.field == field
    assert "Fix:" in str(caught.value)
