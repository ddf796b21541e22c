"""What the emulator tells clients about itself: version, API discovery and OpenAPI v3 documents.

kubectl reads discovery to map ``job`` to ``jobs.batch``, and reads OpenAPI v3 before ``create``/``apply``:
when the create and patch operations of a kind accept a ``fieldValidation`` query parameter, kubectl trusts
the server to validate (and we do, see validation.py); otherwise it refuses with "failed to download
openapi". The schemas come from kubernetes-validate's copy of the Kubernetes OpenAPI definitions.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from druid_k8s_provider.testing.field_validation import all_definitions
from druid_k8s_provider.testing.resources import RESOURCES, ResourceType

KUBERNETES_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4-druid-k8s-emulator"}

_SCHEMA_NAMES = {
    "namespaces": "io.k8s.api.core.v1.Namespace",
    "pods": "io.k8s.api.core.v1.Pod",
    "events": "io.k8s.api.core.v1.Event",
    "configmaps": "io.k8s.api.core.v1.ConfigMap",
    "resourcequotas": "io.k8s.api.core.v1.ResourceQuota",
    "secrets": "io.k8s.api.core.v1.Secret",
    "jobs": "io.k8s.api.batch.v1.Job",
    "selfsubjectaccessreviews": "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    "selfsubjectrulesreviews": "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
}
_COMMON_SCHEMAS = (
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
)
_SUBRESOURCE_VERBS = {"status": ("get", "patch", "update"), "log": ("get",)}


def _group_versions() -> dict[str, list[ResourceType]]:
    grouped: dict[str, list[ResourceType]] = {}
    for rt in RESOURCES.values():
        grouped.setdefault(rt.api_version, []).append(rt)
    return grouped


def version_info() -> dict[str, str]:
    """``GET /version``."""
    return {
        **KUBERNETES_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T00:00:00Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def resource_list(group_version: str) -> dict[str, Any]:
    """``APIResourceList`` of one group/version, with subresources as ``pods/log`` entries."""
    resources: list[dict[str, Any]] = []
    for rt in _group_versions()[group_version]:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.plural in ("pods", "jobs"):
            entry["categories"] = ["all"]
        resources.append(entry)
        for subresource in rt.subresources:
            resources.append(
                {
                    "name": f"{rt.plural}/{subresource}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": "Pod" if subresource == "log" else rt.kind,
                    "verbs": list(_SUBRESOURCE_VERBS[subresource]),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _api_group(group: str) -> dict[str, Any]:
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"name": group, "versions": [version], "preferredVersion": version}


def discovery(path: str, server_address: str) -> dict[str, Any] | None:
    """The discovery document at ``path`` (``/api``, ``/apis/batch/v1``...), or None if there is none."""
    groups = sorted({rt.group for rt in RESOURCES.values() if rt.group})
    if path == "/version":
        return version_info()
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }
    if path == "/api/v1":
        return resource_list("v1")
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group(group) for group in groups]}
    parts = path.strip("/").split("/")
    if parts[0] == "apis" and len(parts) == 2 and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(parts[1])}
    if parts[0] == "apis" and len(parts) == 3 and parts[1] in groups and parts[2] == "v1":
        return resource_list(f"{parts[1]}/v1")
    return None


# ---------------------------------------------------------------------------------------------- OpenAPI v3


def _to_openapi(schema: Any) -> Any:
    """Rewrite a JSON-schema definition into OpenAPI 3.0 form (component refs, single ``type``)."""
    if isinstance(schema, dict):
        converted: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                converted[key] = "#/components/schemas/" + value.rsplit("/", 1)[-1]
            elif key == "type" and isinstance(value, list):
                kinds = [kind for kind in value if kind != "null"]
                converted[key] = kinds[0] if kinds else "object"
            else:
                converted[key] = _to_openapi(value)
        return converted
    if isinstance(schema, list):
        return [_to_openapi(item) for item in schema]
    return schema


def _references(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _references(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _references(item)


def _components(roots: list[str]) -> dict[str, Any]:
    definitions = all_definitions()
    wanted: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in wanted or name not in definitions:
            continue
        wanted[name] = _to_openapi(definitions[name])
        pending.extend(_references(definitions[name]))
    return wanted


def _parameter(name: str, location: str = "query", required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": location,
        "required": required,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _operation(
    rt: ResourceType, action: str, operation_id: str, schema_ref: str, with_body: bool
) -> dict[str, Any]:
    group_version_kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    parameters = [_parameter("dryRun"), _parameter("fieldManager")]
    if action in ("post", "put", "patch"):
        parameters.append(_parameter("fieldValidation"))
    if action == "patch":
        parameters.append(_parameter("force"))
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": group_version_kind,
        "parameters": parameters if action in ("post", "put", "patch", "delete") else [],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}},
            "401": {"description": "Unauthorized"},
        },
    }
    if with_body:
        media = (
            (
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            )
            if action == "patch"
            else ("*/*",)
        )
        body_schema = (
            {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
            if action == "patch"
            else {"$ref": schema_ref}
        )
        operation["requestBody"] = {"content": {m: {"schema": body_schema} for m in media}, "required": True}
    return operation


def _paths(rt: ResourceType) -> dict[str, Any]:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    collection = (
        f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
    )
    schema_ref = "#/components/schemas/" + _SCHEMA_NAMES[rt.plural]
    scope = "Namespaced" if rt.namespaced else ""
    group_id = rt.group.split(".")[0].capitalize() if rt.group else "Core"
    kind_id = f"{group_id}{rt.version.capitalize()}{scope}{rt.kind}"
    path_parameters = [_parameter("namespace", "path", True)] if rt.namespaced else []
    paths: dict[str, Any] = {
        collection: {
            "parameters": path_parameters,
            "post": _operation(rt, "post", f"create{kind_id}", schema_ref, True),
        }
    }
    if rt.create_only:
        return paths
    paths[collection]["get"] = _operation(rt, "list", f"list{kind_id}", schema_ref, False)
    item = f"{collection}/{{name}}"
    paths[item] = {
        "parameters": [_parameter("name", "path", True), *path_parameters],
        "get": _operation(rt, "get", f"read{kind_id}", schema_ref, False),
        "put": _operation(rt, "put", f"replace{kind_id}", schema_ref, True),
        "patch": _operation(rt, "patch", f"patch{kind_id}", schema_ref, True),
        "delete": _operation(rt, "delete", f"delete{kind_id}", schema_ref, False),
    }
    if "status" in rt.subresources:
        paths[f"{item}/status"] = {
            "parameters": [_parameter("name", "path", True), *path_parameters],
            "get": _operation(rt, "get", f"read{kind_id}Status", schema_ref, False),
            "put": _operation(rt, "put", f"replace{kind_id}Status", schema_ref, True),
            "patch": _operation(rt, "patch", f"patch{kind_id}Status", schema_ref, True),
        }
    return paths


@functools.cache
def _group_version_document(group_version: str) -> dict[str, Any]:
    resources = _group_versions()[group_version]
    paths: dict[str, Any] = {}
    for rt in resources:
        paths.update(_paths(rt))
    roots = [_SCHEMA_NAMES[rt.plural] for rt in resources] + list(_COMMON_SCHEMAS)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": _components(roots)},
    }


def _document_path(group_version: str) -> str:
    return f"api/{group_version}" if "/" not in group_version else f"apis/{group_version}"


@functools.cache
def _document_hash(group_version: str) -> str:
    encoded = json.dumps(_group_version_document(group_version), sort_keys=True).encode()
    return hashlib.sha512(encoded).hexdigest()[:128].upper()


def openapi_v3(path: str) -> dict[str, Any] | None:
    """``/openapi/v3`` (the index) or ``/openapi/v3/<api|apis/...>`` (one group-version document)."""
    relative = path.removeprefix("/openapi/v3").strip("/")
    if not relative:
        return {
            "paths": {
                _document_path(gv): {
                    "serverRelativeURL": f"/openapi/v3/{_document_path(gv)}?hash={_document_hash(gv)}"
                }
                for gv in _group_versions()
            }
        }
    for group_version in _group_versions():
        if relative == _document_path(group_version):
            return _group_version_document(group_version)
    return None
