"""The Job of ``launch_mode="airflow"`` before and at its release: pure manifest transformations.

Why a Job is created suspended and unlabelled (spec ``druid-overlord.md`` sections 4 and 5): the Overlord's
Kubernetes runner (Druid 35.0.0 and later) joins a Job that already exists, and a new leader adopts every
Job labelled ``druid.k8s.peons`` without taking its task's locks again. So the Job is created with
``spec.suspend: true`` (the Job controller makes no pod) and without that label (no restart can adopt it)
before the task is submitted, and released, by one merge patch (:func:`release_patch`), only once the
Overlord has handed the task to its runner (its locks are taken).

Kubernetes allows that patch: while a Job is suspended and has never started (no ``status.startTime``),
the labels and annotations of its pod template may change (mutable scheduling directives, GA in 1.27;
``validatePodTemplateUpdate`` in ``pkg/apis/batch/validation``); ``spec.suspend`` may always change.

A suspended Job never finishes, so ``ttlSecondsAfterFinished`` never removes it: whoever gives up on one
deletes it (:func:`deletable_while_suspended` says when that is safe), and the reaper deletes those left
behind. Before a later try reuses one, :func:`carried_task` reads back the task it would run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from druid_k8s_provider.adapters.common import MAIN_CONTAINER_NAME, TASK_ANNOTATION, decompress_task
from druid_k8s_provider.naming import PEON_LABEL, TASK_ID_ANNOTATION

#: What the custom template adapter puts in ``TASK_JSON``: a reference to the pod's ``task`` annotation.
_TASK_ANNOTATION_FIELD = f"metadata.annotations['{TASK_ANNOTATION}']"


def suspended_unlabelled(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a Job manifest (as :func:`~druid_k8s_provider.job_builder.build_job` made it) with
    ``spec.suspend: true`` and the ``druid.k8s.peons`` label removed from the Job's and its pod template's
    metadata; everything else unchanged. The input is not modified.

    Raises :class:`KeyError` for a manifest without ``spec.template`` (not a Job).
    """
    job = copy.deepcopy(dict(manifest))
    job["spec"]["suspend"] = True
    for metadata in (job.get("metadata"), job["spec"]["template"].get("metadata")):
        if metadata and metadata.get("labels"):
            metadata["labels"].pop(PEON_LABEL, None)
    return job


def release_patch() -> dict[str, Any]:
    """The JSON merge patch (``application/merge-patch+json``) that releases a suspended, unlabelled Job:
    the ``druid.k8s.peons: "true"`` label on the Job and its pod template, and ``spec.suspend: false``.

    Applied to a Job that is not suspended or has started, the API server refuses the pod template change
    (422, ``spec.template: field is immutable``), so the patch cannot relabel a running Job's pods.
    """
    label = {PEON_LABEL: "true"}
    return {
        "metadata": {"labels": dict(label)},
        "spec": {"suspend": False, "template": {"metadata": {"labels": dict(label)}}},
    }


def is_suspended(job: Mapping[str, Any]) -> bool:
    """Whether a Job as read from the API is suspended (``spec.suspend`` true)."""
    return bool((job.get("spec") or {}).get("suspend"))


def is_unlabelled(job: Mapping[str, Any]) -> bool:
    """Whether neither the Job nor its pod template carries the ``druid.k8s.peons`` label (no Overlord adopts
    it after a restart, and Druid's cleanup does not see it)."""
    template = (job.get("spec") or {}).get("template") or {}
    return all(
        PEON_LABEL not in ((metadata or {}).get("labels") or {})
        for metadata in (job.get("metadata"), template.get("metadata"))
    )


def deletable_while_suspended(job: Mapping[str, Any], task_id: str) -> bool:
    """Whether ``job`` (as read from the API) is still the suspended, unlabelled Job of ``task_id`` that no
    Overlord has released: only such a Job may be deleted by the provider (the Overlord's runner joins only a
    released one). A Job already being deleted, or of another task, is not."""
    metadata = job.get("metadata") or {}
    return (
        is_suspended(job)
        and is_unlabelled(job)
        and not metadata.get("deletionTimestamp")
        and (metadata.get("annotations") or {}).get(TASK_ID_ANNOTATION) == task_id
    )


def carried_task(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task JSON a Job would run, read back the way Druid's adapters write it: env ``TASK_JSON`` of
    container ``main`` (base64 of gzip, the overlord adapters), or, when that env refers to the pod's
    ``task`` annotation (the custom template adapter), that annotation. None when the Job carries no task
    the provider can read (no ``main`` container, no ``TASK_JSON``, a payload that does not decode)."""
    template = (job.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or ()
    main = next((c for c in containers if c.get("name") == MAIN_CONTAINER_NAME), None)
    variable = next((v for v in (main or {}).get("env") or () if v.get("name") == "TASK_JSON"), None)
    if variable is None:
        return None
    payload = variable.get("value")
    reference = ((variable.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
    if payload is None and reference == _TASK_ANNOTATION_FIELD:
        payload = ((template.get("metadata") or {}).get("annotations") or {}).get(TASK_ANNOTATION)
    if not isinstance(payload, str):
        return None
    try:
        return decompress_task(payload)
    except (ValueError, OSError, EOFError):  # not base64, not gzip (BadGzipFile), not a JSON object
        return None


def never_started(job: Mapping[str, Any]) -> bool:
    """Whether a Job as read from the API never ran: no ``status.startTime``, which the Job controller
    sets when it first runs a Job that is not suspended (so a Job released by the patch that returned it
    has no pod older than that answer)."""
    return not (job.get("status") or {}).get("startTime")
