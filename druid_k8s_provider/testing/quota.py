"""ResourceQuota admission of the emulated API server: a pod create a quota has no room for is refused.

Kubernetes' ``ResourceQuota`` admission plugin checks every pod create against each quota of the namespace:
when the pod's requests or limits, added to what the namespace's pods already use, would exceed a quota's
``spec.hard``, the create is refused with ``403 Forbidden``::

    pods "<name>" is forbidden: exceeded quota: <quota>, requested: limits.memory=6G, used: limits.memory=0,
    limited: limits.memory=1Gi

(one line). A Job's pods are created by the Job controller, so a Job of a namespace whose quota is too small
is accepted and its controller then records a Warning ``FailedCreate`` event with ``Error creating: <that
message>`` and no pod appears. Usage is computed from the namespace's pods that have not ended (what the real
quota controller keeps in ``status.used``); the resources tracked are ``pods``, ``cpu``/``memory`` (the same
as ``requests.*``), ``requests.cpu``, ``requests.memory``, ``limits.cpu`` and ``limits.memory``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from druid_k8s_provider.testing.controllers.common import pod_is_terminal, pod_requests

_DECIMAL_SUFFIXES = (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))
_BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def _pod_limits(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """Sum of the regular containers' limits, or the largest init container's when that is larger."""
    spec = pod.get("spec") or {}

    def limits(containers: Iterable[Mapping[str, Any]]) -> list[dict[str, Decimal]]:
        return [
            {
                name: parse_quantity(value)
                for name, value in ((container.get("resources") or {}).get("limits") or {}).items()
                if name in ("cpu", "memory")
            }
            for container in containers
        ]

    total: dict[str, Decimal] = {}
    for container in limits(spec.get("containers") or ()):
        for name, value in container.items():
            total[name] = total.get(name, Decimal(0)) + value
    for init in limits(spec.get("initContainers") or ()):
        for name, value in init.items():
            total[name] = max(total.get(name, Decimal(0)), value)
    return total


def pod_usage(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What one pod counts against a quota, by quota resource name."""
    requests = pod_requests(pod)
    limits = _pod_limits(pod)
    return {
        "pods": Decimal(1),
        "cpu": requests.cpu,
        "memory": requests.memory,
        "requests.cpu": requests.cpu,
        "requests.memory": requests.memory,
        "limits.cpu": limits.get("cpu", Decimal(0)),
        "limits.memory": limits.get("memory", Decimal(0)),
    }


def format_quantity(name: str, value: Decimal) -> str:
    """A quantity as the API server prints it (``6G``, ``1Gi``, ``500m``, ``2``)."""
    if name.endswith("cpu") and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    whole = int(value)
    # The largest unit that divides the value exactly, decimal or binary (6000000000 is 6G, 2^30 is 1Gi).
    exact = [(size, suffix) for suffix, size in (*_DECIMAL_SUFFIXES, *_BINARY_SUFFIXES) if whole % size == 0]
    if whole and exact:
        size, suffix = max(exact)
        return f"{whole // size}{suffix}"
    return str(whole)


def _listing(values: Mapping[str, Decimal]) -> str:
    return ",".join(f"{name}={format_quantity(name, values[name])}" for name in sorted(values))


def quota_refusal(
    pod: Mapping[str, Any], quotas: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> str | None:
    """Why the quota admission refuses ``pod`` given the namespace's ``quotas`` and existing ``pods``
    (``exceeded quota: ...``), or None when every quota has room for it."""
    existing = [other for other in pods if not pod_is_terminal(other)]
    requested_all = pod_usage(pod)
    for quota in sorted(quotas, key=lambda obj: str(obj["metadata"]["name"])):
        hard = {
            name: parse_quantity(value)
            for name, value in ((quota.get("spec") or {}).get("hard") or {}).items()
            if name in requested_all
        }
        used = {name: sum((pod_usage(other)[name] for other in existing), Decimal(0)) for name in hard}
        exceeded = sorted(
            name for name in hard if requested_all[name] > 0 and used[name] + requested_all[name] > hard[name]
        )
        if exceeded:
            return (
                f"exceeded quota: {quota['metadata']['name']}, "
                f"requested: {_listing({name: requested_all[name] for name in exceeded})}, "
                f"used: {_listing({name: used[name] for name in exceeded})}, "
                f"limited: {_listing({name: hard[name] for name in exceeded})}"
            )
    return None
