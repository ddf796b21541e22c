"""What the API server checks on a write: names, labels, annotations, required fields, and what an update of a
Job may change, each problem a cause of a ``422 Invalid``.

Users hit ``422 Invalid`` for a bad name long before any pod runs, as on a cluster. The defaults the server
fills in are in ``defaults``; fields the schema does not know are dropped by ``field_validation``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from druid_k8s_provider.testing.selectors import (
    label_key_problems,
    label_value_problems,
    selector_from_match,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


@dataclass(frozen=True)
class Cause:
    """One field error of a ``422 Invalid`` Status (``details.causes[]``)."""

    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueForbidden
    field: str
    message: str

    def describe(self) -> str:
        """The ``field: message`` text the API server joins into the Status message."""
        return f"{self.field}: {self.message}"

    def to_api(self) -> dict[str, str]:
        """The cause as it appears in a Status body."""
        return {"reason": self.reason, "message": self.message, "field": self.field}


def _invalid(field: str, value: Any, why: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {json.dumps(value)}: {why}")


def _required(field: str, why: str = "") -> Cause:
    return Cause("FieldValueRequired", field, "Required value" + (f": {why}" if why else ""))


def name_causes(plural: str, name: str) -> list[Cause]:
    """Problems with ``metadata.name`` for ``plural`` (namespaces are DNS labels, others subdomains)."""
    if plural == "events":
        return (
            []
            if "/" not in name and name not in (".", "..")
            else [_invalid("metadata.name", name, "invalid")]
        )
    if plural == "namespaces":
        if len(name) > 63:
            return [_invalid("metadata.name", name, "must be no more than 63 characters")]
        return [] if _DNS_LABEL.match(name) else [_invalid("metadata.name", name, _LABEL_MESSAGE)]
    if len(name) > 253:
        return [_invalid("metadata.name", name, "must be no more than 253 characters")]
    return [] if _DNS_SUBDOMAIN.match(name) else [_invalid("metadata.name", name, _SUBDOMAIN_MESSAGE)]


def label_causes(labels: Mapping[str, Any] | None, field: str) -> list[Cause]:
    """Problems with a labels map at ``field`` (keys and values)."""
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        for problem in label_key_problems(key):
            causes.append(_invalid(field, key, problem))
        if not isinstance(value, str):
            causes.append(_invalid(f"{field}[{key}]", value, "must be a string"))
            continue
        for problem in label_value_problems(value):
            causes.append(_invalid(field, value, problem))
    return causes


def annotation_causes(annotations: Mapping[str, Any] | None) -> list[Cause]:
    """Problems with annotation keys and the 256 KiB total size limit."""
    causes: list[Cause] = []
    total = 0
    for key, value in (annotations or {}).items():
        for problem in label_key_problems(key):
            causes.append(_invalid("metadata.annotations", key, problem))
        total += len(key) + len(str(value))
    if total > 262144:
        causes.append(
            Cause("FieldValueTooLong", "metadata.annotations", "Too long: must have at most 262144 bytes")
        )
    return causes


def metadata_causes(plural: str, obj: Mapping[str, Any]) -> list[Cause]:
    """Name, label and annotation problems of an object being written."""
    metadata = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = metadata.get("name") or ""
    if not name:
        causes.append(_required("metadata.name", "name or generateName is required"))
    else:
        causes.extend(name_causes(plural, name))
    causes.extend(label_causes(metadata.get("labels"), "metadata.labels"))
    causes.extend(annotation_causes(metadata.get("annotations")))
    return causes


def _pod_spec_causes(spec: Mapping[str, Any] | None, field: str, *, job: bool) -> list[Cause]:
    if not isinstance(spec, Mapping):
        return [_required(field)]
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(_required(f"{field}.containers"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            where = f"{field}.{group}[{index}]"
            name = container.get("name") or ""
            if not name:
                causes.append(_required(f"{where}.name"))
            elif not _DNS_LABEL.match(name) or len(name) > 63:
                causes.append(_invalid(f"{where}.name", name, _LABEL_MESSAGE))
            elif name in seen:
                causes.append(
                    Cause("FieldValueDuplicate", f"{where}.name", f"Duplicate value: {json.dumps(name)}")
                )
            seen.add(name)
            if not container.get("image"):
                causes.append(_required(f"{where}.image"))
            for env_index, env in enumerate(container.get("env") or []):
                if not env.get("name"):
                    causes.append(_required(f"{where}.env[{env_index}].name"))
    restart_policy = spec.get("restartPolicy")
    if job and restart_policy not in ("OnFailure", "Never"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                f"{field}.restartPolicy",
                f'Unsupported value: {json.dumps(restart_policy)}: supported values: "OnFailure", "Never"',
            )
        )
    return causes


def spec_causes(plural: str, obj: Mapping[str, Any]) -> list[Cause]:
    """Required-field problems of pods and jobs (after defaulting, as the server validates)."""
    if plural == "pods":
        return _pod_spec_causes(obj.get("spec"), "spec", job=False)
    if plural == "jobs":
        spec = obj.get("spec") or {}
        template = spec.get("template")
        if not isinstance(template, Mapping):
            return [_required("spec.template")]
        causes = label_causes((template.get("metadata") or {}).get("labels"), "spec.template.metadata.labels")
        causes.extend(_pod_spec_causes(template.get("spec"), "spec.template.spec", job=True))
        for field in (
            "parallelism",
            "completions",
            "backoffLimit",
            "activeDeadlineSeconds",
            "ttlSecondsAfterFinished",
        ):
            value = spec.get(field)
            if value is not None and (not isinstance(value, int) or value < 0):
                causes.append(_invalid(f"spec.{field}", value, "must be greater than or equal to 0"))
        deadline = spec.get("activeDeadlineSeconds")
        if isinstance(deadline, int) and deadline == 0:
            causes.append(_invalid("spec.activeDeadlineSeconds", 0, "must be greater than 0"))
        return causes
    return []


def _scheduling_directives_mutable(old: Mapping[str, Any]) -> bool:
    """Whether the Job (as stored before the update) is suspended and has never started: only then may its
    pod template's scheduling directives change (``AllowMutableSchedulingDirectives`` in Kubernetes'
    ``pkg/registry/batch/job/strategy.go``: ``spec.suspend`` true and no ``status.startTime``)."""
    return bool((old.get("spec") or {}).get("suspend")) and not (old.get("status") or {}).get("startTime")


def _with_new_scheduling_directives(old_template: Any, new_template: Any) -> Any:
    """The old pod template with the fields a suspended, never-started Job may change taken from the new
    one: labels, annotations, ``nodeSelector``, ``tolerations``, ``schedulingGates`` and the node affinity
    (``validatePodTemplateUpdate`` in Kubernetes' ``pkg/apis/batch/validation``, GA in 1.27)."""
    if not isinstance(old_template, Mapping) or not isinstance(new_template, Mapping):
        return old_template
    template = copy.deepcopy(dict(old_template))
    new_metadata = new_template.get("metadata") or {}
    metadata = template.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        if key in new_metadata:
            metadata[key] = copy.deepcopy(new_metadata[key])
        else:
            metadata.pop(key, None)
    spec, new_spec = template.get("spec"), new_template.get("spec")
    if isinstance(spec, dict) and isinstance(new_spec, Mapping):
        for key in ("nodeSelector", "tolerations", "schedulingGates"):
            if key in new_spec:
                spec[key] = copy.deepcopy(new_spec[key])
            else:
                spec.pop(key, None)
        affinity = dict(spec.get("affinity") or {})
        affinity.pop("nodeAffinity", None)
        new_node_affinity = (new_spec.get("affinity") or {}).get("nodeAffinity")
        if new_node_affinity is not None:
            affinity["nodeAffinity"] = copy.deepcopy(new_node_affinity)
        if affinity:
            spec["affinity"] = affinity
        else:
            spec.pop("affinity", None)
    return template


def job_update_causes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Cause]:
    """A Job's selector and completions are immutable once created, and so is its pod template, except the
    scheduling directives (labels, annotations, node selection, tolerations, scheduling gates) of a Job that
    is suspended and has never started (real 422 "field is immutable"). Changed template labels must still
    be valid and match the selector."""
    causes: list[Cause] = []
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    old_template, new_template = old_spec.get("template"), new_spec.get("template")
    if _scheduling_directives_mutable(old):
        old_template = _with_new_scheduling_directives(old_template, new_template)
    if old_template != new_template:
        causes.append(_invalid("spec.template", new_template, "field is immutable"))
    elif old_spec.get("template") != new_template and isinstance(new_template, Mapping):
        metadata = new_template.get("metadata") or {}
        labels = metadata.get("labels")
        causes.extend(label_causes(labels, "spec.template.metadata.labels"))
        causes.extend(annotation_causes(metadata.get("annotations")))
        if not selector_from_match(new_spec.get("selector")).matches(labels):
            causes.append(
                _invalid(
                    "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
                )
            )
    if old_spec.get("selector") != new_spec.get("selector"):
        causes.append(_invalid("spec.selector", new_spec.get("selector"), "field is immutable"))
    if old_spec.get("completions") != new_spec.get("completions"):
        causes.append(_invalid("spec.completions", new_spec.get("completions"), "field is immutable"))
    return causes
