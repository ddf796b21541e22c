"""What the API server fills in on a create: pod spec defaults (and what admission adds to a real pod), a
Job's selector and template labels, and the server-owned fields of the other resources. Real clients and our
own code read back fields they never sent (a Job's ``spec.selector``, the template labels ``job-name`` /
``controller-uid``, container ``imagePullPolicy``...)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"


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
