"""What a worker does before the wait: ask the Overlord, decide the attempt, create and submit.

Every Druid task the provider runs is submitted to the Overlord (spec ``druid-overlord.md`` section 6): the
Overlord holds its locks, publishes its segments, records its outcome and adopts its Job after a restart.
The steps, each a blocking call an Airflow shell makes in order:

1. :func:`plan_launch`: the Overlord's version (``GET /status``) and runner settings (``GET
   /status/properties``), each read once per process, pick the launch mode
   (:func:`~druid_k8s_provider.launch_protocol.choose_launch_mode`); one batched ``POST taskStatus`` over the
   task instance's attempt ids decides submit / re-attach / report
   (:func:`~druid_k8s_provider.launch_protocol.decide_attempt`), except on the first try of a derived id,
   which submits attempt 1 without asking
   (:func:`~druid_k8s_provider.launch_protocol.first_try_decision`). Without an Overlord connection nothing is
   written: the hook refuses, naming ``druid_ingest_conn_id``.
2. ``airflow`` mode: :func:`~druid_k8s_provider.launch.airflow_mode.create_suspended` creates the Job the way
   Druid's adapter would, but suspended and without the ``druid.k8s.peons`` label, so no pod runs and no
   Overlord adopts it before the task's locks are taken; this attempt's Job left by a crash between create
   and submit is reused when it carries the same task JSON.
3. :func:`submit`: ``POST /druid/indexer/v1/task``; ``entryAlreadyExists`` means an earlier try's submission
   went through: re-attach. In ``airflow`` mode
   :func:`~druid_k8s_provider.launch.airflow_mode.submit_suspended` wraps it, so a failed submission does
   not leave the suspended Job behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import OverlordApiError, TaskAlreadySubmitted
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.hooks.overlord_api import OverlordTaskStatus
from druid_k8s_provider.launch_protocol import (
    ADAPTER_TYPE_PROPERTY,
    JOIN_PROPERTIES,
    NAMESPACE_PROPERTY,
    POD_NAME_PREFIX_PROPERTY,
    AttemptDecision,
    LaunchChoice,
    TaskIdentity,
    choose_launch_mode,
    decide_attempt,
    first_try_decision,
    runner_mismatch,
)
from druid_k8s_provider.task import DruidTask

log = logging.getLogger(__name__)

#: The Overlord's version per Overlord URL, read once per process (``GET /status``): a worker runs many
#: tasks against the same Overlord, and a connection pointed elsewhere is another Overlord.
_VERSIONS: dict[str, str | None] = {}
#: The Overlord's runner settings (:data:`JOIN_PROPERTIES`) per Overlord URL, read once per process with
#: the version (``GET /status/properties``); None when they cannot be read.
_RUNNER_SETTINGS: dict[str, dict[str, str] | None] = {}


def overlord_version(overlord: DruidOverlordHook) -> str | None:
    """The Overlord's Druid version, from this process's cache or ``GET /status``."""
    url = overlord.endpoint.base_url
    if url not in _VERSIONS:
        _VERSIONS[url] = overlord.overlord_version()
    return _VERSIONS[url]


def overlord_runner_settings(overlord: DruidOverlordHook) -> dict[str, str] | None:
    """The Overlord's :data:`JOIN_PROPERTIES` that it lists, from this process's cache or
    ``GET /status/properties``; None (logged once per process and Overlord) when they cannot be read: a
    403 without the CONFIG READ permission, an Overlord without the path, or properties hidden by
    ``druid.server.hiddenProperties`` (no ``druid.indexer.runner.namespace``, which Druid's Kubernetes runner
    requires). Only those properties are kept: the others may hold secrets."""
    url = overlord.endpoint.base_url
    if url not in _RUNNER_SETTINGS:
        try:
            listed = overlord.runtime_properties()
        except OverlordApiError as exc:
            why = str(exc)
            listed = None
        else:
            why = f"the answer lists no {NAMESPACE_PROPERTY} (hidden by druid.server.hiddenProperties?)"
        settings = {name: listed[name] for name in JOIN_PROPERTIES if name in listed} if listed else None
        if settings is None or NAMESPACE_PROPERTY not in settings:
            log.warning(
                "The Overlord's runner settings could not be read (%s), so it cannot be checked before the "
                "launch that its runner names Jobs as ours (druid.indexer.runner.k8sTaskPodNamePrefix, "
                "namespace, k8s.adapter.type); if it runs the task in a Job of its own, ours is deleted "
                "while still suspended. Grant the connection's user READ on CONFIG to check it first",
                why,
            )
            settings = None
        _RUNNER_SETTINGS[url] = settings
    return _RUNNER_SETTINGS[url]


def our_runner_settings(config: RunnerConfig) -> dict[str, str | None]:
    """Our values of :data:`JOIN_PROPERTIES`, as :func:`runner_mismatch` compares them."""
    return {
        POD_NAME_PREFIX_PROPERTY: config.k8s_task_pod_name_prefix,
        NAMESPACE_PROPERTY: config.namespace,
        ADAPTER_TYPE_PROPERTY: config.adapter_type,
    }


@dataclass(frozen=True)
class LaunchPlan:
    """How this start of the Airflow task goes: the mode, the Druid version, what to do with which id.

    ``task`` carries the decided id; ``status`` is the Overlord's status of that id when it knows it.
    """

    choice: LaunchChoice
    druid_version: str | None
    decision: AttemptDecision
    task: DruidTask
    status: OverlordTaskStatus | None


def plan_launch(
    overlord: DruidOverlordHook,
    *,
    requested_mode: str,
    config: RunnerConfig,
    document: Mapping[str, Any],
    derived_base_id: str,
    try_number: int,
    say: Callable[[str], None],
) -> LaunchPlan:
    """Resolve the launch mode and decide the attempt (one request, none on the first try of a derived id;
    plus two once per process: the Overlord's version and runner settings, the latter only when the mode
    could be ``airflow``).

    ``document`` is the task JSON; an ``id`` in it is the user's, submitted as it is. ``config`` is our
    runner configuration, whose Job names must be the Overlord's for ``airflow`` mode
    (:func:`~druid_k8s_provider.launch_protocol.runner_mismatch`). Raises DruidK8sConfigError for a missing
    connection or a mode the Overlord's version or runner settings cannot run; a retry of a user-written id
    that FAILED is the decision :attr:`~druid_k8s_provider.launch_protocol.AttemptAction.REFUSE`.
    """
    DruidTask.from_spec(document, default_id=derived_base_id)  # bad task JSON: refused before any request
    version = overlord_version(overlord)
    mismatch = None
    if requested_mode != "overlord":
        theirs = overlord_runner_settings(overlord)
        mismatch = runner_mismatch(our_runner_settings(config), theirs) if theirs is not None else None
    choice = choose_launch_mode(requested_mode, version, mismatch)
    say(f"Launch mode {choice.mode}: {choice.reason}")
    written = document.get("id")
    identity = (
        TaskIdentity(str(written), user_written=True)
        if isinstance(written, str) and written
        else TaskIdentity(derived_base_id, user_written=False)
    )
    statuses: dict[str, OverlordTaskStatus] = {}
    decision = first_try_decision(identity, try_number)
    if decision is None:
        statuses = overlord.task_statuses(identity.candidate_ids(try_number))
        decision = decide_attempt(
            identity, try_number, {task_id: status.status_code for task_id, status in statuses.items()}
        )
    say(f"Druid task {decision.task_id}: {decision.action.value} ({decision.reason})")
    task = DruidTask.from_spec(document, default_id=decision.task_id)
    return LaunchPlan(choice, version, decision, task, statuses.get(decision.task_id))


def submit(overlord: DruidOverlordHook, task: DruidTask, say: Callable[[str], None]) -> bool:
    """Submit the task; False when the Overlord already had the id (an earlier try's submission went
    through before a crash): the caller re-attaches."""
    try:
        overlord.submit_task(task.spec)
    except TaskAlreadySubmitted:
        say(f"The Overlord already has Druid task {task.id} (an earlier try submitted it): re-attaching")
        return False
    say(f"Submitted Druid task {task.id} to the Overlord")
    return True
