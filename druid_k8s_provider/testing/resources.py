"""The resources the emulated API server registers: group/version/kind, scope, subresources and verbs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pendulum

from druid_k8s_provider.testing.api_errors import ApiError

Obj = dict[str, Any]
T = TypeVar("T")
_ATOMS = frozenset({str, int, float, bool, type(None)})


def copy_object(value: T) -> T:
    """A deep copy of an object in API form (dicts, lists, strings, numbers, booleans, null).

    Same result as ``copy.deepcopy`` for such trees, at about a third of its cost: the store copies each
    object several times per write (the stored version, the caller's, each listener's), which at thousands
    of pods was most of the emulator's time. Any other type inside is copied by ``copy.deepcopy``; shared
    sub-objects come out as separate copies (API objects share none).
    """
    return cast(T, _copied(value))


def _copied(value: Any) -> Any:
    kind = value.__class__
    if kind is dict:
        return {key: item if item.__class__ in _ATOMS else _copied(item) for key, item in value.items()}
    if kind is list:
        return [item if item.__class__ in _ATOMS else _copied(item) for item in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


@dataclass(frozen=True)
class ResourceType:
    """How the API server registers a resource: its group/version/kind, scope and subresources."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Objects whose spec changes bump metadata.generation (pods did not, in the releases we mirror).
    tracks_generation: bool = False
    # Pods and namespaces answer DELETE with the object; other resources with a Success Status.
    returns_deleted_object: bool = False
    # Only ever created (SelfSubjectAccessReview): no storage, no list/watch.
    create_only: bool = False
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``jobs.batch`` / ``pods``: the name used in the server's error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Job.batch`` / ``Pod``: the name used in 422 Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def singular(self) -> str:
        """Lower-case kind, as discovery reports it."""
        return self.kind.lower()


RESOURCES: dict[str, ResourceType] = {
    rt.plural: rt
    for rt in (
        ResourceType(
            "namespaces",
            "Namespace",
            "",
            "v1",
            False,
            ("ns",),
            ("status",),
            returns_deleted_object=True,
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        ),
        ResourceType("pods", "Pod", "", "v1", True, ("po",), ("status", "log"), returns_deleted_object=True),
        ResourceType("events", "Event", "", "v1", True, ("ev",)),
        ResourceType("configmaps", "ConfigMap", "", "v1", True, ("cm",)),
        ResourceType("resourcequotas", "ResourceQuota", "", "v1", True, ("quota",), ("status",)),
        ResourceType("secrets", "Secret", "", "v1", True),
        ResourceType("jobs", "Job", "batch", "v1", True, (), ("status",), tracks_generation=True),
        ResourceType(
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "v1",
            False,
            create_only=True,
            verbs=("create",),
        ),
        ResourceType(
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            "authorization.k8s.io",
            "v1",
            False,
            create_only=True,
            verbs=("create",),
        ),
    )
}

STORED_RESOURCES = tuple(plural for plural, rt in RESOURCES.items() if not rt.create_only)
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


def resource_type(plural: str) -> ResourceType:
    """The registered resource ``plural``, or a 404 as the server gives for unknown paths."""
    try:
        return RESOURCES[plural]
    except KeyError:
        raise ApiError(404, "NotFound", "the server could not find the requested resource") from None


def list_key(obj: Obj) -> str:
    """``namespace/name``: the order lists are returned in and what continue tokens point at."""
    metadata = obj["metadata"]
    return f"{metadata.get('namespace', '')}/{metadata['name']}"


def now_timestamp() -> str:
    """The current time as Kubernetes serialises ``metav1.Time`` (seconds, UTC, ``Z``)."""
    return pendulum.now("UTC").format("YYYY-MM-DDTHH:mm:ss[Z]")
