"""Optional bearer-token authentication and Role-rule authorization, answered as a real API server does.

Users run the provider under service accounts with narrow Roles; a missing permission must surface as the
same ``403 Forbidden`` text they would see on a cluster, so tests can check our error messages name it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Rule = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class User:
    """An authenticated caller; ``rules`` None means unrestricted (auth disabled)."""

    name: str
    rules: tuple[Rule, ...] | None


class Unauthorized(Exception):
    """No or unknown bearer token (HTTP 401)."""


def _matches(values: Sequence[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _resource_matches(resources: Sequence[str], resource: str, subresource: str) -> bool:
    full = f"{resource}/{subresource}" if subresource else resource
    return "*" in resources or full in resources or (bool(subresource) and f"*/{subresource}" in resources)


class Authorizer:
    """Maps bearer tokens to users and Role rules.

    ``tokens`` maps a token to a list of rules (``apiGroups``, ``resources`` incl. subresources like
    ``pods/log``, ``verbs``, optional ``resourceNames``), or to ``{"user": name, "rules": [...]}``. With no
    tokens, authentication is off: any request, with or without a token, may do anything.
    """

    def __init__(self, tokens: Mapping[str, Any] | None = None) -> None:
        self._users: dict[str, User] = {}
        for token, value in (tokens or {}).items():
            if isinstance(value, Mapping):
                name = str(value.get("user") or token)
                rules = value.get("rules") or []
            else:
                name, rules = token, value
            self._users[token] = User(name, tuple(_checked_rule(rule, token) for rule in rules))
        self.enabled = bool(self._users)
        self.default_token = next(iter(self._users), None) or "emulator-" + secrets.token_hex(8)

    def authenticate(self, authorization_header: str | None) -> User:
        """The caller behind ``Authorization: Bearer <token>``; raises Unauthorized when auth is on."""
        if not self.enabled:
            return User("system:admin", None)
        if not authorization_header or not authorization_header.startswith("Bearer "):
            raise Unauthorized()
        user = self._users.get(authorization_header.removeprefix("Bearer ").strip())
        if user is None:
            raise Unauthorized()
        return user

    @staticmethod
    def allows(
        user: User, verb: str, group: str, resource: str, subresource: str = "", name: str = ""
    ) -> bool:
        """Whether any of the user's rules grants the request."""
        if user.rules is None:
            return True
        for rule in user.rules:
            if not _matches(rule.get("verbs", ()), verb):
                continue
            if not _matches(rule.get("apiGroups", ()), group):
                continue
            if not _resource_matches(rule.get("resources", ()), resource, subresource):
                continue
            names = rule.get("resourceNames") or ()
            if names and name not in names:
                continue
            return True
        return False


SELF_REVIEW_RESOURCES = ("selfsubjectaccessreviews", "selfsubjectrulesreviews")

# What every authenticated user may do on a real cluster (ClusterRole system:basic-user): ask about itself.
_BASIC_USER_RULE = {
    "verbs": ["create"],
    "apiGroups": ["authorization.k8s.io"],
    "resources": list(SELF_REVIEW_RESOURCES),
}


def rules_review(user: User, body: Mapping[str, Any]) -> dict[str, Any]:
    """A SelfSubjectRulesReview answer: every rule the caller holds in ``spec.namespace``.

    Tokens carry namespace-wide Role rules, so the same rules apply in every namespace; with auth off the
    caller may do anything, which a real server reports as wildcard rules.
    """
    spec = dict(body.get("spec") or {})
    if user.rules is None:
        resource_rules: list[dict[str, Any]] = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
        non_resource_rules = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
    else:
        resource_rules = [_BASIC_USER_RULE]
        for rule in user.rules:
            entry = {key: list(rule.get(key, ())) for key in ("verbs", "apiGroups", "resources")}
            if rule.get("resourceNames"):
                entry["resourceNames"] = list(rule["resourceNames"])
            resource_rules.append(entry)
        non_resource_rules = [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*"]}]
    metadata = dict(body.get("metadata") or {})
    metadata.setdefault("creationTimestamp", None)
    return {
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": False,
        },
    }


def forbidden_message(
    user: str, verb: str, group: str, resource: str, subresource: str, namespace: str, name: str
) -> str:
    """The 403 message of a real server, e.g. ``jobs.batch is forbidden: User "x" cannot create ...``."""
    qualified = f"{resource}.{group}" if group else resource
    subject = f'{qualified} "{name}"' if name else qualified
    full_resource = f"{resource}/{subresource}" if subresource else resource
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{full_resource}" in API group '
        f'"{group}"{scope}'
    )


def _checked_rule(rule: Any, token: str) -> Rule:
    if not isinstance(rule, Mapping):
        raise ValueError(
            f"tokens[{token!r}]: each rule must be a mapping with apiGroups, resources and verbs"
        )
    for key in ("apiGroups", "resources", "verbs"):
        values = rule.get(key)
        if not isinstance(values, Sequence) or isinstance(values, str):
            raise ValueError(
                f'tokens[{token!r}]: rule {dict(rule)!r} needs {key} as a list, e.g. {key}: ["*"]'
            )
    return rule
