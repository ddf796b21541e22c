"""Credentials inside a Druid task spec, found so Airflow's secrets masker can hide them everywhere.

A task spec may carry S3 keys, JDBC passwords (also inside ``connectURI``s), tokens. The operator registers
them when it renders the task; the trigger registers them again in the triggerer, from the Job's own
``TASK_JSON``, because the peon's log is streamed there and a careless peon may print them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from druid_k8s_provider.job_builder import TASK_ANNOTATION, decompress_task

#: Keys whose string values in a task spec are credentials (S3 keys, JDBC passwords, tokens ...).
SENSITIVE_KEY = re.compile(
    r"password|passwd|secret|token|credential|api_?key|private_?key|access_?key$|(^|_)key$", re.IGNORECASE
)
#: A password in a URI: a ``password=`` query parameter, or the ``user:password@`` of the authority.
URI_PASSWORD = re.compile(r"[?&;]password=([^&;#\s]+)|://[^/:@\s]+:([^/@\s]+)@", re.IGNORECASE)
#: A quoted password option, as in Kafka's ``sasl.jaas.config`` (``... password="p";``).
QUOTED_PASSWORD = re.compile(r"\bpassword\s*=\s*\"([^\"]+)\"", re.IGNORECASE)


def sensitive_values(document: Any) -> list[str]:
    """Every credential in a task spec: strings under credential-like keys, passwords inside URIs (Druid's
    SQL input source takes ``connectURI``s such as ``jdbc:mysql://db/shop?password=...``) and quoted
    password options (Kafka's ``sasl.jaas.config``)."""
    found: list[str] = []
    if isinstance(document, Mapping):
        for key, value in document.items():
            if isinstance(value, str) and value and SENSITIVE_KEY.search(str(key)):
                found.append(value)
            else:
                found.extend(sensitive_values(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(sensitive_values(item))
    elif isinstance(document, str):
        for pattern in (URI_PASSWORD, QUOTED_PASSWORD):
            found.extend(group for match in pattern.finditer(document) for group in match.groups() if group)
    return found


def task_payload_of(job: Mapping[str, Any]) -> str | None:
    """The compressed task a Job hands its peon: ``TASK_JSON`` of the main container, or the pod template's
    ``task`` annotation (custom template adapter)."""
    template = (job.get("spec") or {}).get("template") or {}
    for container in (template.get("spec") or {}).get("containers") or ():
        if container.get("name") == "main":
            for variable in container.get("env") or ():
                if variable.get("name") == "TASK_JSON" and variable.get("value"):
                    return str(variable["value"])
    annotation = ((template.get("metadata") or {}).get("annotations") or {}).get(TASK_ANNOTATION)
    return str(annotation) if annotation else None


def task_payload_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A Job's pod template cut down to the task it carries, where :func:`task_payload_of` reads it back
    (main's ``TASK_JSON``, the template's ``task`` annotation); {} when it carries neither."""
    kept: dict[str, Any] = {}
    annotation = ((template.get("metadata") or {}).get("annotations") or {}).get(TASK_ANNOTATION)
    if annotation is not None:
        kept["metadata"] = {"annotations": {TASK_ANNOTATION: annotation}}
    for container in (template.get("spec") or {}).get("containers") or ():
        if container.get("name") != "main":
            continue
        task_env = [entry for entry in container.get("env") or () if entry.get("name") == "TASK_JSON"]
        if task_env:
            kept["spec"] = {"containers": [{"name": "main", "env": task_env}]}
    return kept


def job_task_secrets(job: Mapping[str, Any]) -> list[str]:
    """The credentials of the task a Job runs ([] when its payload cannot be read)."""
    payload = task_payload_of(job)
    if payload is None:
        return []
    with contextlib.suppress(ValueError, OSError, EOFError):
        return sensitive_values(decompress_task(payload))
    return []


def scrub(text: str | None, secrets: list[str]) -> str | None:
    """``text`` with every credential replaced by ``***``, for values Airflow stores unmasked (XCom).

    Longest first, so a secret that contains another is replaced whole.
    """
    if not text:
        return text
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
