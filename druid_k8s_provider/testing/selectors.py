"""Label and field selectors, parsed and matched the way the Kubernetes API server does it.

Clients (kubectl ``-l``, the Python clients' ``label_selector=``, ``kubectl wait`` with
``fieldSelector=metadata.name=NAME``) depend on the exact grammar, and on a ``400 BadRequest`` for a
selector the server does not understand, so both are reproduced here rather than approximated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=,()]+)")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A selector the API server would refuse; the message is the one it sends in the 400 Status."""


def label_key_problems(key: str) -> list[str]:
    """Why ``key`` is not a valid label/annotation key (empty when it is), in the API server's words."""
    problems: list[str] = []
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        problems.append("prefix part must be non-empty")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        problems.append(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character"
        )
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _LABEL_NAME.match(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return problems


def label_value_problems(value: str) -> list[str]:
    """Why ``value`` is not a valid label value (empty when it is), in the API server's words."""
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _LABEL_VALUE.match(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ]
    return []


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector: ``key``, an operator and its values."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object carrying ``labels`` satisfies this clause (missing key: only != and notin)."""
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" match objects without the key, as the API server does.
        return labels.get(self.key) not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; an empty one matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether all requirements hold for ``labels``."""
        present = labels or {}
        return all(requirement.matches(present) for requirement in self.requirements)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - the pattern accepts every non-space character
            raise SelectorError(f"unable to parse requirement: unexpected input at {position}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def _check_key(key: str) -> None:
    problems = label_key_problems(key)
    if problems:
        raise SelectorError(
            f'unable to parse requirement: values[0][{key}]: Invalid value: "{key}": {problems[0]}'
        )


def _check_value(key: str, value: str) -> None:
    problems = label_value_problems(value)
    if problems:
        raise SelectorError(
            f'unable to parse requirement: values[0][{key}]: Invalid value: "{value}": {problems[0]}'
        )


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``text`` with the grammar of ``kubectl -l`` / ``labelSelector=``.

    Raises SelectorError (a 400 BadRequest on the wire) on anything the API server rejects.
    """
    if not text or not text.strip():
        return LabelSelector()
    tokens = _tokenize(text)
    requirements: list[Requirement] = []
    index = 0

    def expect_more() -> str:
        if index >= len(tokens):
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        return tokens[index]

    while index < len(tokens):
        token = expect_more()
        if token == "!":
            index += 1
            key = expect_more()
            _check_key(key)
            requirements.append(Requirement(key, "!exists"))
            index += 1
        else:
            key = token
            _check_key(key)
            index += 1
            if index >= len(tokens) or tokens[index] == ",":
                requirements.append(Requirement(key, "exists"))
            else:
                operator = tokens[index]
                index += 1
                if operator in ("=", "==", "!="):
                    value = ""
                    if index < len(tokens) and tokens[index] != ",":
                        value = tokens[index]
                        index += 1
                    _check_value(key, value)
                    requirements.append(Requirement(key, "!=" if operator == "!=" else "=", (value,)))
                elif operator in ("in", "notin"):
                    if expect_more() != "(":
                        raise SelectorError(
                            f"unable to parse requirement: found '{tokens[index]}', expected: '('"
                        )
                    index += 1
                    values: list[str] = []
                    while expect_more() != ")":
                        if tokens[index] != ",":
                            _check_value(key, tokens[index])
                            values.append(tokens[index])
                        index += 1
                    index += 1
                    if not values:
                        values.append("")
                    requirements.append(Requirement(key, operator, tuple(values)))
                else:
                    raise SelectorError(
                        f"unable to parse requirement: found '{operator}', expected: "
                        "'=', '!=', '==', 'in', notin'"
                    )
        if index < len(tokens):
            if tokens[index] != ",":
                raise SelectorError(f"unable to parse requirement: found '{tokens[index]}', expected: ','")
            index += 1
            if index >= len(tokens):
                raise SelectorError("unable to parse requirement: found '', expected: identifier")
    return LabelSelector(tuple(requirements))


def selector_from_match(selector: Mapping[str, Any] | None) -> LabelSelector:
    """Turn an API ``LabelSelector`` object (matchLabels + matchExpressions) into a matcher."""
    if not selector:
        return LabelSelector()
    requirements = [Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expression in selector.get("matchExpressions") or []:
        operator = operators[expression["operator"]]
        requirements.append(Requirement(expression["key"], operator, tuple(expression.get("values") or ())))
    return LabelSelector(tuple(requirements))


def _nested(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


# Field labels each resource supports, as the API server registers them; anything else is a 400.
SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "jobs": ("metadata.name", "metadata.namespace", "status.successful"),
    "events": (
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "namespaces": ("metadata.name", "status.phase"),
    "configmaps": ("metadata.name", "metadata.namespace"),
    "secrets": ("metadata.name", "metadata.namespace", "type"),
}


@dataclass(frozen=True)
class FieldRequirement:
    """One ``field=value`` / ``field!=value`` clause."""

    field: str
    value: str
    negated: bool


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector, bound to the resource whose fields it may name."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` satisfies every clause."""
        for requirement in self.requirements:
            if requirement.field == "source":
                actual = _nested(obj, "source.component") or _nested(obj, "reportingComponent")
            else:
                actual = _nested(obj, requirement.field)
            if (actual == requirement.value) == requirement.negated:
                return False
        return True

    def name(self) -> str | None:
        """The exact ``metadata.name`` asked for, if any (lets lookups skip a scan)."""
        for requirement in self.requirements:
            if requirement.field == "metadata.name" and not requirement.negated:
                return requirement.value
        return None


def parse_field_selector(text: str | None, plural: str) -> FieldSelector:
    """Parse ``fieldSelector=`` for ``plural``; unsupported fields are refused as the server does."""
    if not text or not text.strip():
        return FieldSelector()
    requirements: list[FieldRequirement] = []
    for clause in text.split(","):
        clause = clause.strip()
        if not clause:
            continue
        operator = next(op for op in ("!=", "==", "=", "") if op in clause)
        if not operator:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{clause}'")
        field, _, value = clause.partition(operator)
        negated = operator == "!="
        field = field.strip()
        if field not in SUPPORTED_FIELDS.get(plural, ("metadata.name", "metadata.namespace")):
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, value.strip(), negated))
    return FieldSelector(tuple(requirements))
