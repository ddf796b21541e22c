"""Strict field validation against the OpenAPI-derived JSON schemas of kubernetes-validate: the fields a
resource's schema does not declare, dropped as the API server's decoder drops them."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

_SCHEMA_FILES = {
    "pods": "pod-v1.json",
    "jobs": "job-batch-v1.json",
    "configmaps": "configmap-v1.json",
    "secrets": "secret-v1.json",
    "namespaces": "namespace-v1.json",
    "events": "event-v1.json",
    "selfsubjectaccessreviews": "selfsubjectaccessreview-authorization-v1.json",
    "selfsubjectrulesreviews": "selfsubjectrulesreview-authorization-v1.json",
}


def _schema_dir() -> Path | None:
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - kubernetes-validate is a test dependency
        return None
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    candidates = sorted((p for p in root.glob("v*-local") if p.is_dir()), key=lambda p: p.name)
    return candidates[-1] if candidates else None


@functools.cache
def all_definitions() -> dict[str, Any]:
    """All schema definitions keyed by their ``_definitions.json`` name."""
    directory = _schema_dir()
    if directory is None:
        return {}
    definitions_file = directory / "_definitions.json"
    loaded: dict[str, Any] = json.loads(definitions_file.read_text())["$defs"]
    return loaded


@functools.cache
def _root_schema(plural: str) -> dict[str, Any] | None:
    directory = _schema_dir()
    file_name = _SCHEMA_FILES.get(plural)
    if directory is None or file_name is None or not (directory / file_name).exists():
        return None
    loaded: dict[str, Any] = json.loads((directory / file_name).read_text())
    return loaded


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = schema.get("$ref")
    if isinstance(reference, str):
        return _resolve(all_definitions().get(reference.rsplit("/", 1)[-1], {}))
    return schema


def _unknown_fields(
    value: Any, schema: Mapping[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Yield (dotted path, containing dict, key) for every field the schema does not declare."""
    schema = _resolve(schema)
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in list(value.items()):
            child = f"{path}.{key}" if path else str(key)
            if properties is not None and key in properties:
                yield from _unknown_fields(item, properties[key], child)
            elif isinstance(additional, Mapping):
                yield from _unknown_fields(item, additional, child)
            elif properties is not None and additional is not True:
                yield child, value, key
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                yield from _unknown_fields(item, items, f"{path}[{index}]")


def prune_unknown_fields(plural: str, obj: dict[str, Any]) -> list[str]:
    """Remove fields the resource's schema does not know, as the API server's decoder does.

    Returns their dotted paths (``spec.bogus``, ``spec.template.spec.containers[0].x``) for the
    ``fieldValidation`` answer: a 400 under Strict, a Warning header under Warn.
    """
    schema = _root_schema(plural)
    if schema is None:
        return []
    found = list(_unknown_fields(obj, schema, ""))
    for _, container, key in found:
        container.pop(key, None)
    return [path for path, _, _ in found]
