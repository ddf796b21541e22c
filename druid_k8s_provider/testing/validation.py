"""What the API server checks and fills in on a write: names, labels, required fields and defaults.

Real clients and our own code read back fields they never sent (a Job's ``spec.selector``, the template
labels ``job-name`` / ``controller-uid``, container ``imagePullPolicy``...), and users hit ``422 Invalid``
for a bad name long before any pod runs. Both behaviours are reproduced here, as on a cluster.
Strict field validation (unknown fields) uses the JSON schemas shipped with kubernetes-validate.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
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

CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"


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


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_pod_spec(spec: dict[str, Any], *, admitted_pod: bool) -> None:
    """Fill the pod spec defaults the API server sets (and, for real pods, what admission adds)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            container.setdefault("resources", {})
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", _image_pull_policy(str(container.get("image", ""))))
            for port in container.get("ports") or []:
                port.setdefault("protocol", "TCP")
            for env in container.get("env") or []:
                field_ref = (env.get("valueFrom") or {}).get("fieldRef")
                if isinstance(field_ref, dict):
                    field_ref.setdefault("apiVersion", "v1")
    if admitted_pod:
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault(
            "tolerations",
            [
                {
                    "key": f"node.kubernetes.io/{taint}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for taint in ("not-ready", "unreachable")
            ],
        )


def _qos_class(spec: Mapping[str, Any]) -> str:
    containers = list(spec.get("containers") or [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        set((r.get("limits") or {}).keys()) >= {"cpu", "memory"}
        and all(
            (r.get("requests") or r.get("limits") or {}).get(k) == r["limits"][k] for k in ("cpu", "memory")
        )
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def apply_create_defaults(plural: str, obj: dict[str, Any]) -> None:
    """Defaults and server-owned fields for a new object; ``metadata.uid`` must already be set."""
    metadata = obj["metadata"]
    if plural == "pods":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec, admitted_pod=True)
            # Resource requests default to limits, as the API server does for pods.
            for container in spec.get("containers") or []:
                resources = container.get("resources") or {}
                if resources.get("limits"):
                    requests = resources.setdefault("requests", {})
                    for key, value in resources["limits"].items():
                        requests.setdefault(key, value)
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
    elif plural == "jobs":
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        if spec.get("parallelism") is None:
            spec["parallelism"] = 1
        if spec.get("completions") is None and spec["parallelism"] == 1:
            spec["completions"] = 1
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        template = spec.get("template")
        if isinstance(template, dict):
            if not spec.get("manualSelector"):
                spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: metadata["uid"]}}
                labels = template.setdefault("metadata", {}).setdefault("labels", {})
                labels[CONTROLLER_UID_LABEL] = metadata["uid"]
                labels[JOB_NAME_LABEL] = metadata["name"]
                labels[LEGACY_CONTROLLER_UID_LABEL] = metadata["uid"]
                labels[LEGACY_JOB_NAME_LABEL] = metadata["name"]
            template.setdefault("metadata", {})
            pod_spec = template.get("spec")
            if isinstance(pod_spec, dict):
                default_pod_spec(pod_spec, admitted_pod=False)
        obj["status"] = {}
    elif plural == "namespaces":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
        metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = metadata["name"]
    elif plural == "events":
        obj.setdefault("count", 1)
    elif plural == "secrets":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            # The API server folds stringData into data (base64) and never stores or returns it.
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()


# ----------------------------------------------------------------------------------------------------
# Strict field validation against the OpenAPI-derived JSON schemas of kubernetes-validate.

_SCHEMA_FILES = {
    "pods": "pod-v1.json",
    "jobs": "job-batch-v1.json",
    "configmaps": "configmap-v1.json",
    "secrets": "secret-v1.json",
    "namespaces": "namespace-v1.json",
    "events": "event-v1.json",
    "selfsubjectaccessreviews": "selfsubjectaccessreview-authorization-v1.json",
    "selfsubjectrulesreviews": "selfsubjectrulesreview-authorization-v1.json",
}


def _schema_dir() -> Path | None:
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - kubernetes-validate is a test dependency
        return None
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    candidates = sorted((p for p in root.glob("v*-local") if p.is_dir()), key=lambda p: p.name)
    return candidates[-1] if candidates else None


@functools.cache
def all_definitions() -> dict[str, Any]:
    """All schema definitions keyed by their ``_definitions.json`` name."""
    directory = _schema_dir()
    if directory is None:
        return {}
    definitions_file = directory / "_definitions.json"
    loaded: dict[str, Any] = json.loads(definitions_file.read_text())["$defs"]
    return loaded


@functools.cache
def _root_schema(plural: str) -> dict[str, Any] | None:
    directory = _schema_dir()
    file_name = _SCHEMA_FILES.get(plural)
    if directory is None or file_name is None or not (directory / file_name).exists():
        return None
    loaded: dict[str, Any] = json.loads((directory / file_name).read_text())
    return loaded


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    reference = schema.get("$ref")
    if isinstance(reference, str):
        return _resolve(all_definitions().get(reference.rsplit("/", 1)[-1], {}))
    return schema


def _unknown_fields(
    value: Any, schema: Mapping[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Yield (dotted path, containing dict, key) for every field the schema does not declare."""
    schema = _resolve(schema)
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in list(value.items()):
            child = f"{path}.{key}" if path else str(key)
            if properties is not None and key in properties:
                yield from _unknown_fields(item, properties[key], child)
            elif isinstance(additional, Mapping):
                yield from _unknown_fields(item, additional, child)
            elif properties is not None and additional is not True:
                yield child, value, key
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                yield from _unknown_fields(item, items, f"{path}[{index}]")


def prune_unknown_fields(plural: str, obj: dict[str, Any]) -> list[str]:
    """Remove fields the resource's schema does not know, as the API server's decoder does.

    Returns their dotted paths (``spec.bogus``, ``spec.template.spec.containers[0].x``) for the
    ``fieldValidation`` answer: a 400 under Strict, a Warning header under Warn.
    """
    schema = _root_schema(plural)
    if schema is None:
        return []
    found = list(_unknown_fields(obj, schema, ""))
    for _, container, key in found:
        container.pop(key, None)
    return [path for path, _, _ in found]
