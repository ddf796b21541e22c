"""A container's environment as the kubelet builds it: literal values with ``$(VAR)`` expansion, fieldRef,
resourceFieldRef, configMapKeyRef/secretKeyRef and envFrom.

A missing ConfigMap or key is ``CreateContainerConfigError`` on a real node, with the exact messages below;
the container waits until the reference resolves.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from decimal import Decimal

from kubernetes.utils import parse_quantity

from druid_k8s_provider.testing.controllers.common import Obj, Resources, Store, container_requests


class ContainerConfigError(Exception):
    """The container cannot be created until its env references resolve (``CreateContainerConfigError``)."""


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are substituted, ``$$`` is a literal ``$``, an
    undefined reference stays as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def field_value(pod: Obj, field_path: str, host_ip: str, pod_ip: str) -> str:
    """Value of a downward-API ``fieldRef``; an unsupported path raises ContainerConfigError."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple: dict[str, str] = {
        "metadata.name": str(meta.get("name", "")),
        "metadata.namespace": str(meta.get("namespace", "")),
        "metadata.uid": str(meta.get("uid", "")),
        "spec.nodeName": str(spec.get("nodeName", "")),
        "spec.serviceAccountName": str(spec.get("serviceAccountName", "default")),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if field_path in simple:
        return simple[field_path]
    subscript = _SUBSCRIPT.match(field_path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))
    raise ContainerConfigError(f'unsupported fieldPath: "{field_path}"')


def resource_value(container: Obj, ref: Obj, node_allocatable: Resources) -> str:
    """Value of a ``resourceFieldRef``: the limit (node allocatable when unset) or request, divided and
    rounded up as the kubelet does."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    if kind == "limits":
        declared = (resources.get("limits") or {}).get(name)
        value = (
            parse_quantity(declared)
            if declared is not None
            else (node_allocatable.cpu if name == "cpu" else node_allocatable.memory)
        )
    elif kind == "requests":
        requests = container_requests(container)
        value = requests.cpu if name == "cpu" else requests.memory
    else:
        raise ContainerConfigError(f'unsupported resource: "{resource}"')
    if name not in ("cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f'unsupported resource: "{resource}"')
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(value / (divisor or Decimal(1))))


def _lookup(store: Store, kind: str, namespace: str, name: str) -> Obj | None:
    try:
        return store.get(kind, namespace, name)
    except Exception:  # missing object or a resource the emulator does not serve: both read as "not found"
        return None


def _decoded(obj: Obj, key: str) -> str:
    """A ConfigMap's value as is, a Secret's decoded from base64."""
    value = (obj.get("data") or {})[key]
    if obj.get("kind") == "Secret":
        return base64.b64decode(value).decode(errors="replace")
    return str(value)


def _keyed_value(store: Store, namespace: str, ref: Obj, kind: str) -> str | None:
    plural, noun = ("configmaps", "configmap") if kind == "ConfigMap" else ("secrets", "secret")
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional"))
    obj = _lookup(store, plural, namespace, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{noun} "{name}" not found')
    if key not in (obj.get("data") or {}):
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return _decoded(obj, key)


def container_env(
    store: Store,
    pod: Obj,
    container: Obj,
    *,
    host_ip: str,
    pod_ip: str,
    node_allocatable: Resources,
) -> dict[str, str]:
    """The environment the container's process sees, in Kubernetes precedence (envFrom, then env)."""
    namespace = str(pod["metadata"].get("namespace") or "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or ():
        prefix = str(source.get("prefix") or "")
        for field, plural, noun in (
            ("configMapRef", "configmaps", "configmap"),
            ("secretRef", "secrets", "secret"),
        ):
            ref = source.get(field)
            if ref is None:
                continue
            obj = _lookup(store, plural, namespace, str(ref.get("name", "")))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{noun} "{ref.get("name", "")}" not found')
            for key in obj.get("data") or {}:
                env[prefix + key] = _decoded(obj, key)
    for variable in container.get("env") or ():
        name = str(variable["name"])
        if "valueFrom" not in variable:
            env[name] = expand(str(variable.get("value", "")), env)
            continue
        source = variable["valueFrom"] or {}
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, str(source["fieldRef"].get("fieldPath", "")), host_ip, pod_ip)
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"], node_allocatable)
        elif "configMapKeyRef" in source:
            value = _keyed_value(store, namespace, source["configMapKeyRef"], "ConfigMap")
        elif "secretKeyRef" in source:
            value = _keyed_value(store, namespace, source["secretKeyRef"], "Secret")
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env
