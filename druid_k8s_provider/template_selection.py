"""Which pod template a task gets under ``customTemplateAdapter``: Druid's pod template selection strategies.

Druid keeps the choice in the task runner's dynamic execution config (``POST
/druid/indexer/v1/k8s/taskrunner/executionconfig``), a JSON document such as::

    {"type": "default",
     "podTemplateSelectStrategy": {"type": "selectorBased", "selectors": [
         {"selectionKey": "lowMemory", "context.tags": {"tier": ["small"]}, "type": ["compact"]},
         {"selectionKey": "kafka", "dataSource": ["clicks", "views"]}]}}

- ``taskType`` (the default): the template of the task's type
  (``druid.indexer.runner.k8s.podTemplate.<type>``), else the base one.
- ``selectorBased``: the selectors are tried in order; the first whose conditions all hold names the
  template (``druid.indexer.runner.k8s.podTemplate.<selectionKey>``). Within a condition any listed value
  will do: ``type`` lists task types, ``dataSource`` datasources, ``context.tags`` maps a tag of the task's
  ``context.tags`` to its accepted values. When no selector matches, or no template is configured under the
  key, the base template is used.

The same document is accepted here (operator argument or ``[druid_k8s] execution_config``), checked before
anything is launched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import DruidTask

TASK_TYPE_STRATEGY = "taskType"
SELECTOR_BASED_STRATEGY = "selectorBased"
_SELECTOR_FIELDS = frozenset({"selectionKey", "context.tags", "type", "dataSource"})
_EXAMPLE = (
    '{"type": "default", "podTemplateSelectStrategy": {"type": "selectorBased", "selectors": '
    '[{"selectionKey": "small", "type": ["compact"]}]}}'
)


@dataclass(frozen=True)
class TemplateSelector:
    """One selector: every condition given must hold; ``None`` means the condition is not used."""

    selection_key: str
    task_types: frozenset[str] | None = None
    data_sources: frozenset[str] | None = None
    context_tags: Mapping[str, frozenset[str]] | None = None

    def matches(self, task: DruidTask) -> bool:
        """Whether ``task`` satisfies every condition of this selector."""
        if self.task_types is not None and task.type not in self.task_types:
            return False
        if self.data_sources is not None and task.data_source not in self.data_sources:
            return False
        if self.context_tags is not None:
            tags = task.context.get("tags")
            tags = tags if isinstance(tags, Mapping) else {}
            for tag, accepted in self.context_tags.items():
                value = tags.get(tag)
                if not isinstance(value, str) or value not in accepted:
                    return False
        return True


@dataclass(frozen=True)
class TemplateSelection:
    """The pod template selection strategy of an execution config."""

    strategy: str = TASK_TYPE_STRATEGY
    selectors: tuple[TemplateSelector, ...] = ()

    def template_key(self, task: DruidTask) -> str | None:
        """The ``podTemplate.<key>`` suffix to try first for ``task`` (the base template is the fallback)."""
        if self.strategy == TASK_TYPE_STRATEGY:
            return task.type
        return next((s.selection_key for s in self.selectors if s.matches(task)), None)


def _refuse(
    field: str, problem: str, fix: str = f"give Druid's execution config, e.g. {_EXAMPLE}"
) -> NoReturn:
    raise DruidK8sConfigError(field, problem, fix)


def _values(field: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        _refuse(field, f"expected a non-empty list of strings, got {value!r}", f'give e.g. ["{field}-value"]')
    return frozenset(value)


def _selector(field: str, raw: Any) -> TemplateSelector:
    if not isinstance(raw, Mapping):
        _refuse(field, f"expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SELECTOR_FIELDS)
    if unknown:
        _refuse(
            f"{field}.{unknown[0]}",
            f"unknown selector field (Druid's are {', '.join(sorted(_SELECTOR_FIELDS))})",
            "remove it, or match on type, dataSource or context.tags",
        )
    key = raw.get("selectionKey")
    if not isinstance(key, str) or not key.strip():
        _refuse(
            f"{field}.selectionKey",
            f"expected the name of a pod template, got {key!r}",
            "name the template: selectionKey K picks druid.indexer.runner.k8s.podTemplate.K",
        )
    tags = raw.get("context.tags")
    context_tags: dict[str, frozenset[str]] | None = None
    if tags is not None:
        if not isinstance(tags, Mapping) or not tags:
            _refuse(
                f"{field}.context.tags",
                f"expected an object of tag names to lists of values, got {tags!r}",
                'give e.g. {"tier": ["small", "medium"]}',
            )
        context_tags = {
            str(tag): _values(f"{field}.context.tags.{tag}", values) for tag, values in tags.items()
        }
    return TemplateSelector(
        selection_key=key,
        task_types=_values(f"{field}.type", raw["type"]) if "type" in raw else None,
        data_sources=_values(f"{field}.dataSource", raw["dataSource"]) if "dataSource" in raw else None,
        context_tags=context_tags,
    )


def parse_execution_config(field: str, document: Mapping[str, Any]) -> TemplateSelection:
    """Druid's task runner execution config → its pod template selection; errors name the JSON path.

    An empty document is Druid's default (select by task type).
    """
    if not document:
        return TemplateSelection()
    if document.get("type", "default") != "default":
        _refuse(f"{field}.type", f"unknown execution config type {document.get('type')!r}", 'give "default"')
    unknown = sorted(set(document) - {"type", "podTemplateSelectStrategy"})
    if unknown:
        _refuse(f"{field}.{unknown[0]}", "not a field of Druid's execution config", "remove it")
    strategy = document.get("podTemplateSelectStrategy")
    if strategy is None:
        return TemplateSelection()
    where = f"{field}.podTemplateSelectStrategy"
    if not isinstance(strategy, Mapping):
        _refuse(where, f"expected an object, got {type(strategy).__name__}")
    kind = strategy.get("type")
    if kind == TASK_TYPE_STRATEGY:
        if set(strategy) - {"type"}:
            _refuse(
                where, f"the {TASK_TYPE_STRATEGY} strategy takes no settings", 'give {"type": "taskType"}'
            )
        return TemplateSelection()
    if kind != SELECTOR_BASED_STRATEGY:
        _refuse(
            f"{where}.type",
            f"unknown strategy {kind!r}",
            f'give "{TASK_TYPE_STRATEGY}" or "{SELECTOR_BASED_STRATEGY}"',
        )
    selectors = strategy.get("selectors")
    if not isinstance(selectors, list):
        _refuse(f"{where}.selectors", f"expected a list of selectors, got {selectors!r}")
    return TemplateSelection(
        SELECTOR_BASED_STRATEGY,
        tuple(_selector(f"{where}.selectors[{index}]", raw) for index, raw in enumerate(selectors)),
    )
