"""Routing of the API server: a Kubernetes REST path and method become the resource, namespace, name,
subresource and verb a request acts on, with the 404/405 answers a real API server gives."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web

from druid_k8s_provider.testing.api_errors import ApiError
from druid_k8s_provider.testing.resources import RESOURCES, ResourceType


@dataclass
class ResourceRequest:
    """A parsed resource path: which resource, where, which object and subresource, and the verb."""

    rt: ResourceType
    namespace: str
    name: str
    subresource: str
    verb: str


def parse_resource_request(request: web.Request) -> ResourceRequest | None:
    """Turn a REST path into a ResourceRequest; None for discovery and other non-resource paths."""
    parts = [unquote(part) for part in request.path.strip("/").split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    watch_path = rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = ""
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    rt = RESOURCES.get(rest[0])
    if rt is None or rt.group != group or rt.version != version:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and subresource not in rt.subresources:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if namespace and not rt.namespaced:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    method = request.method
    watching = watch_path or request.query.get("watch", "").lower() in ("true", "1")
    if method == "GET":
        verb = "watch" if watch_path or (watching and not name) else ("get" if name else "list")
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    if rt.create_only and verb != "create":
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    if verb == "create" and name and not (rt.plural == "pods" and subresource):
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )
    return ResourceRequest(rt, namespace, name, subresource, verb)
