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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from druid_k8s_provider.naming import PEON_LABEL


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


def never_started(job: Mapping[str, Any]) -> bool:
    """Whether a Job as read from the API never ran: no ``status.startTime``, which the Job controller
    sets when it first runs a Job that is not suspended (so a Job released by the patch that returned it
    has no pod older than that answer)."""
    return not (job.get("status") or {}).get("startTime")
