"""The three PATCH flavours of the Kubernetes API: JSON merge patch, strategic merge patch, JSON patch.

Clients pick one by Content-Type: the Python clients send strategic merge patches by default, kubectl apply
sends a strategic merge patch full of ``$setElementOrder`` directives, and controllers often send JSON merge
patches. Strategic merge follows the patch strategy of the fields we touch: lists of named things
(containers, env, ports, volumes...) merge by their key, ``finalizers`` merge as a set, everything else is
replaced, as in the Kubernetes schema.
"""

from __future__ import annotations

import copy
from typing import Any

from druid_k8s_provider.testing.api_errors import ApiError, bad_request

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Lists merged by key under strategic merge patch (field name -> merge key), per the Kubernetes schema.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ports": "containerPort",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}
# Lists of scalars merged as sets.
_MERGE_SCALAR_LISTS = {"finalizers"}


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch for the fields the emulator serves."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [item for item in result[field] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
        elif isinstance(value, list) and key in _MERGE_SCALAR_LISTS and isinstance(result.get(key), list):
            merged = list(result[key])
            merged.extend(item for item in value if item not in merged)
            result[key] = merged
        elif isinstance(value, dict):
            merged_value = strategic_merge_patch(result.get(key), value)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"map: {item!r} does not contain declared merge key: {merge_key}")
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("$")})
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(
            f"the server rejected our request due to an error in our request: invalid path {path!r}"
        )
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, parts: list[str]) -> tuple[Any, str]:
    current = document
    for part in parts[:-1]:
        if isinstance(current, list):
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(part)
    return current, parts[-1]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise bad_request(
            "the server rejected our request due to an error in our request: json patch must be a list"
        )
    document = copy.deepcopy(target)
    for operation in operations:
        op = operation.get("op") if isinstance(operation, dict) else None
        try:
            parts = _pointer(str(operation.get("path", "")))
            if op in ("add", "replace"):
                value = copy.deepcopy(operation["value"])
                document = _put(document, parts, value, insert=op == "add", must_exist=op == "replace")
            elif op == "remove":
                parent, last = _parent(document, parts)
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            elif op in ("move", "copy"):
                source = _pointer(str(operation["from"]))
                source_parent, source_last = _parent(document, source)
                value = source_parent[int(source_last) if isinstance(source_parent, list) else source_last]
                if op == "move":
                    if isinstance(source_parent, list):
                        del source_parent[int(source_last)]
                    else:
                        del source_parent[source_last]
                document = _put(document, parts, copy.deepcopy(value), insert=True, must_exist=False)
            elif op == "test":
                parent, last = _parent(document, parts)
                actual = parent[int(last) if isinstance(parent, list) else last]
                if actual != operation.get("value"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our request: "
                        f"testing value {operation.get('path')} failed",
                    )
            else:
                raise bad_request(
                    f"the server rejected our request due to an error in our request: unknown op {op!r}"
                )
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request: "
                f"jsonpatch {op} operation does not apply: doc is missing path: {operation.get('path')}",
            ) from None
    return document


def _put(document: Any, parts: list[str], value: Any, *, insert: bool, must_exist: bool) -> Any:
    if not parts:
        return value
    parent, last = _parent(document, parts)
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif insert:
            parent.insert(int(last), value)
        else:
            parent[int(last)] = value
    else:
        if must_exist and last not in parent:
            raise KeyError(last)
        parent[last] = value
    return document


def check_media_type(content_type: str) -> str:
    """The patch media type of a Content-Type header; 415 for types the emulator does not speak."""
    media = content_type.split(";")[0].strip().lower()
    if media in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH):
        return media
    accepted = f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}"
    if media == APPLY_PATCH:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the Kubernetes API emulator does not implement server-side apply; use client-side apply "
            f"(kubectl apply without --server-side) or another patch type - {accepted}",
        )
    raise ApiError(
        415, "UnsupportedMediaType", f"the body of the request was in an unknown format - {accepted}"
    )


def apply_patch(content_type: str, target: Any, patch: Any) -> Any:
    """Apply ``patch`` of the given Content-Type to ``target``."""
    media = check_media_type(content_type)
    if media == MERGE_PATCH:
        return json_merge_patch(target, patch)
    if media == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, patch)
    return json_patch(target, patch)
