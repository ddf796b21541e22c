"""Preflight: check, before anything is created, that the Kubernetes identity holds every permission it needs.

Without it a missing permission surfaces in the middle of the lifecycle: a missing ``watch`` after the Job
was created, a missing ``delete`` only after the peon ran (leaving the Job behind). Asking the API server
first turns every such case into one early, precise error: which verb, on which resource, in which
namespace, and where the rule to add is (``docs/rbac.yaml``). It asks with one ``SelfSubjectRulesReview`` per
namespace (every rule the identity holds there, what ``kubectl auth can-i --list`` shows), so the check costs
one request per task instead of one per permission; a cluster that refuses rules reviews, or says its answer
is incomplete (an authorizer other than RBAC, such as a webhook), is asked one ``SelfSubjectAccessReview``
per permission still unanswered (what ``kubectl auth can-i`` does).

:data:`ROLE_RULES` is the least-privilege Role of ``docs/rbac.yaml``, mirrored here so the installed
package needs no docs folder; a test keeps the two equal. Creating a ``SelfSubjectAccessReview`` needs no
rule of ours: every cluster grants both reviews to all authenticated users (ClusterRole
``system:basic-user``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from druid_k8s_provider.config_names import CUSTOM_TEMPLATE_ADAPTER
from druid_k8s_provider.errors import MissingPermission
from druid_k8s_provider.hooks.k8s_errors import ApiCallFailed, translate_failure

if TYPE_CHECKING:
    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook

ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
RULES_REVIEW_PATH = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
#: Statuses of a rules review that mean "this cluster will not answer that", not "the identity may not":
#: 404 on a server without the API, 403 where an admission policy or authorizer forbids it.
_RULES_REVIEW_UNAVAILABLE = (403, 404)

#: The rules of the Role in docs/rbac.yaml (spec section 6): what the operator, trigger, sensor and reaper
#: actually call, and nothing more.
ROLE_RULES: tuple[Mapping[str, Sequence[str]], ...] = (
    {
        "apiGroups": ("batch",),
        "resources": ("jobs",),
        "verbs": ("get", "list", "watch", "create", "patch", "delete"),
    },
    {"apiGroups": ("",), "resources": ("pods",), "verbs": ("get", "list", "watch")},
    {"apiGroups": ("",), "resources": ("pods/log",), "verbs": ("get",)},
    {"apiGroups": ("",), "resources": ("events",), "verbs": ("list",)},
)


@dataclass(frozen=True, order=True)
class Permission:
    """One verb on one resource (``resource`` may carry a subresource: ``pods/log``) of an API group."""

    verb: str
    resource: str
    group: str = ""

    def __str__(self) -> str:
        """``create jobs.batch``, ``get pods/log``: the resource as ``kubectl auth can-i`` names it."""
        base, _, subresource = self.resource.partition("/")
        qualified = f"{base}.{self.group}" if self.group else base
        return f"{self.verb} {qualified}/{subresource}" if subresource else f"{self.verb} {qualified}"

    def as_rule(self) -> dict[str, list[str]]:
        """The Role rule that grants exactly this permission, as it is written in YAML."""
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": [self.verb]}

    def granted_by(self, rule: Mapping[str, Any]) -> bool:
        """Whether one RBAC rule of a rules review grants this permission on every object of the resource.

        As the RBAC authorizer matches: ``*`` stands for any verb, group or resource (subresources included),
        ``*/log`` for that subresource of any resource; a rule limited by ``resourceNames`` does not grant
        the list, watch and create calls the provider makes, so it never counts.
        """
        if rule.get("resourceNames"):
            return False
        resources = rule.get("resources") or ()
        _, _, subresource = self.resource.partition("/")
        resource_matches = (
            "*" in resources
            or self.resource in resources
            or bool(subresource and f"*/{subresource}" in resources)
        )
        return (
            resource_matches
            and any(verb in ("*", self.verb) for verb in rule.get("verbs") or ())
            and any(group in ("*", self.group) for group in rule.get("apiGroups") or ())
        )

    def access_review(self, namespace: str) -> dict[str, Any]:
        """A ``SelfSubjectAccessReview`` asking whether the caller holds this permission in ``namespace``."""
        resource, _, subresource = self.resource.partition("/")
        attributes = {"namespace": namespace, "verb": self.verb, "group": self.group, "resource": resource}
        if subresource:
            attributes["subresource"] = subresource
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }


def permissions_of(rules: Iterable[Mapping[str, Sequence[str]]]) -> tuple[Permission, ...]:
    """Every (verb, resource, group) a list of Role rules grants, in rule order."""
    return tuple(
        Permission(verb, resource, group)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    )


#: What a task needs in the runner namespace: launch, join, wait (watch), logs, launch-failure events, delete.
LIFECYCLE_PERMISSIONS = permissions_of(ROLE_RULES)
#: What the reaper needs: list the peon Jobs, delete the finished ones.
REAPER_PERMISSIONS = (Permission("list", "jobs", "batch"), Permission("delete", "jobs", "batch"))
#: What reading the Overlord pod (the template of overlord adapters) needs where it lives.
TEMPLATE_POD_PERMISSIONS = (Permission("get", "pods"), Permission("list", "pods"))

Requirements = Mapping[str, Sequence[Permission]]


def operator_requirements(config: RunnerConfig) -> dict[str, tuple[Permission, ...]]:
    """The permissions a task needs, by namespace: the lifecycle in the runner namespace, plus reading the
    template pod in ``overlordNamespace`` when an overlord adapter reads it from another namespace."""
    requirements = {config.namespace: LIFECYCLE_PERMISSIONS}
    overlord_namespace = config.overlord_namespace or config.namespace
    if config.adapter_type != CUSTOM_TEMPLATE_ADAPTER and overlord_namespace != config.namespace:
        requirements[overlord_namespace] = TEMPLATE_POD_PERMISSIONS
    return requirements


def reaper_requirements(namespace: str) -> dict[str, tuple[Permission, ...]]:
    """The permissions a reaper sweep of ``namespace`` needs."""
    return {namespace: REAPER_PERMISSIONS}


def missing_permissions(hook: DruidK8sHook, requirements: Requirements) -> list[tuple[Permission, str]]:
    """(permission, namespace) pairs the hook's identity lacks: one rules review per namespace, access
    reviews only for what it leaves open.

    Transient API failures are retried by the hook; any other failure (including being refused the access
    review itself) raises the hook's usual error naming the call and the fix.
    """
    missing: list[tuple[Permission, str]] = []
    for namespace, permissions in requirements.items():
        rules, complete = _rules_in(hook, namespace)
        for permission in permissions:
            if any(permission.granted_by(rule) for rule in rules):
                continue
            if complete or not _access_review_allows(hook, permission, namespace):
                missing.append((permission, namespace))
    return missing


def _rules_in(hook: DruidK8sHook, namespace: str) -> tuple[list[Mapping[str, Any]], bool]:
    """The identity's resource rules in ``namespace`` and whether they are the whole answer.

    ``([], False)`` when the cluster does not serve rules reviews: every permission is then asked one by one.
    """
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    try:
        review = hook.request("POST", RULES_REVIEW_PATH, body=body)
    except ApiCallFailed as exc:
        if exc.status in _RULES_REVIEW_UNAVAILABLE:
            return [], False
        raise translate_failure(
            exc,
            f"asking the API server what the identity may do in namespace {namespace!r} "
            "(SelfSubjectRulesReview, granted to every authenticated user by system:basic-user)",
            conn_id=hook.kubernetes_conn_id,
            task_id=None,
            job_name=None,
        ) from exc
    status = (review or {}).get("status") or {}
    rules = [rule for rule in status.get("resourceRules") or () if isinstance(rule, Mapping)]
    return rules, not status.get("incomplete") and not status.get("evaluationError")


def _access_review_allows(hook: DruidK8sHook, permission: Permission, namespace: str) -> bool:
    try:
        review = hook.request("POST", ACCESS_REVIEW_PATH, body=permission.access_review(namespace))
    except ApiCallFailed as exc:
        raise translate_failure(
            exc,
            f"asking the API server whether the identity may {permission} in namespace "
            f"{namespace!r} (SelfSubjectAccessReview, granted to every authenticated user by "
            "system:basic-user)",
            conn_id=hook.kubernetes_conn_id,
            task_id=None,
            job_name=None,
        ) from exc
    return bool(((review or {}).get("status") or {}).get("allowed"))


def check_permissions(
    hook: DruidK8sHook,
    requirements: Requirements,
    *,
    task_id: str | None = None,
    job_name: str | None = None,
) -> None:
    """Raise :class:`MissingPermission` naming every missing verb, resource and namespace; else return.

    Call it before the first write (the operator before creating the Job, the reaper before its sweep), so a
    too narrow Role fails the task at once and leaves nothing behind.
    """
    missing = missing_permissions(hook, requirements)
    if not missing:
        return
    listed = ", ".join(f"{permission} in namespace {namespace}" for permission, namespace in missing)
    rules = "; ".join(
        f"{permission}: {permission.as_rule()} in the Role of namespace {namespace}"
        for permission, namespace in missing
    )
    # Whole phrases as literals: the docs quote this message and a test finds it in the source.
    if len(missing) == 1:
        summary, pointer = (
            f"missing permission: {listed} — add it to the Role",
            "(see docs/rbac.yaml); rule to add:",
        )
    else:
        summary, pointer = (
            f"missing permissions: {listed} — add them to the Role",
            "(see docs/rbac.yaml); rules to add:",
        )
    identity = f"bound to the identity of Airflow connection {hook.kubernetes_conn_id!r}"
    raise MissingPermission(
        f"{summary} {identity} {pointer} {rules}",
        task_id=task_id,
        job_name=job_name,
    )
