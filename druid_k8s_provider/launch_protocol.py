"""Decisions of the launch through the Overlord that need no I/O: which launch mode, which task id, whether to
submit, re-attach or only report.

Every task the provider runs is a task the Overlord knows (``POST /druid/indexer/v1/task``). Two facts of
Druid shape the rules here:

- **The runner's answer to an existing Job.** From Druid 35.0.0 (apache/druid PR 18406) the Kubernetes task
  runner joins a Job that already exists instead of failing on the create's 409, so the provider may build
  and create the Job itself (``launch_mode="airflow"``); before that only the Overlord may create it
  (``"overlord"``).
- **An id is accepted once.** The Overlord refuses an id it has ever stored, finished or not
  (``entryAlreadyExists``), so a retry that really runs the task again submits it under a new id: the
  provider derives one per attempt (:func:`druid_k8s_provider.task.attempt_task_id`) and asks the Overlord
  about the attempts so far, in one batched ``POST /druid/indexer/v1/taskStatus``, before deciding.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from druid_k8s_provider.config_names import RUNNER_PREFIX
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.naming import job_name_prefix
from druid_k8s_provider.task import attempt_task_id

#: The first Druid release whose Kubernetes runner joins an existing Job (apache/druid PR 18406).
JOINS_EXISTING_JOB_SINCE = (35, 0, 0)
LAUNCH_MODES = ("auto", "airflow", "overlord")
POD_NAME_PREFIX_PROPERTY = RUNNER_PREFIX + "k8sTaskPodNamePrefix"
NAMESPACE_PROPERTY = RUNNER_PREFIX + "namespace"
ADAPTER_TYPE_PROPERTY = RUNNER_PREFIX + "k8s.adapter.type"
#: The Overlord's runner settings that decide whether its runner joins the provider's Job.
JOIN_PROPERTIES = (POD_NAME_PREFIX_PROPERTY, NAMESPACE_PROPERTY, ADAPTER_TYPE_PROPERTY)
_PLAIN_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")

#: Druid's task states (``TaskState``): RUNNING covers waiting for locks, pending in the runner and running.
ACTIVE, SUCCESS, FAILED = "RUNNING", "SUCCESS", "FAILED"


def parse_druid_version(version: object) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a plain ``X.Y.Z`` version as ``GET /status`` reports it, else None.

    A null version (Druid built without a manifest), a snapshot (``35.0.0-SNAPSHOT``) or a vendor build
    (``35.0.0-imply``) gives None: their runner's behaviour cannot be read from the number.
    """
    if not isinstance(version, str):
        return None
    match = _PLAIN_VERSION.fullmatch(version.strip())
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class LaunchChoice:
    """The launch mode a task runs with and why (the reason goes into the task's log)."""

    mode: Literal["airflow", "overlord"]
    """``airflow`` (the provider creates the Job suspended, the Overlord's runner joins it) or ``overlord``
    (the Overlord creates the Job)."""
    reason: str


def check_launch_mode(requested: object, field: str = "launch_mode") -> str:
    """``requested`` when it is one of :data:`LAUNCH_MODES`; else :class:`DruidK8sConfigError` naming
    ``field`` (the argument, or the ``[druid_k8s] launch_mode`` option it came from)."""
    if isinstance(requested, str) and requested in LAUNCH_MODES:
        return requested
    kind = "" if isinstance(requested, str) else f" (of type {type(requested).__name__}, not a string)"
    raise DruidK8sConfigError(
        field,
        f"{requested!r}{kind} is not a launch mode",
        "use 'auto' (the default: chosen from the Overlord's version), 'airflow' (Druid 35.0.0 and "
        "later) or 'overlord' (any Druid with the Kubernetes task runner)",
    )


@dataclass(frozen=True)
class RunnerMismatch:
    """A runner setting of the Overlord that keeps its runner from joining the provider's Job: the Druid
    ``property`` and its value on our side and on the Overlord's (None: unset)."""

    property: str
    ours: str | None
    theirs: str | None

    def describe(self) -> str:
        """One sentence naming the property and both values."""
        return (
            f"the Overlord's {self.property} is {_shown(self.theirs)} and ours is {_shown(self.ours)}, so "
            f"{_CONSEQUENCES.get(self.property, _NAME_CONSEQUENCE)}"
        )


_NAME_CONSEQUENCE = (
    "its runner would name the task's Job differently, not join ours, and run the task in a Job of its own"
)
_CONSEQUENCES = {
    NAMESPACE_PROPERTY: "its runner would look for the task's Job in another namespace and create its own",
    ADAPTER_TYPE_PROPERTY: (
        "its runner would read the task back from our Job where its own adapter writes it, not where ours did"
    ),
}


def _shown(value: str | None) -> str:
    return "unset" if value is None else repr(value)


def runner_mismatch(ours: Mapping[str, str | None], theirs: Mapping[str, str]) -> RunnerMismatch | None:
    """The first of :data:`JOIN_PROPERTIES` whose value differs between ``ours`` (our runner configuration,
    property → value or None when unset) and ``theirs`` (the Overlord's ``GET /status/properties``), else
    None.

    Druid 35's runner joins an existing Job only under the name it computes itself, in its namespace, and
    reads the task back as its own adapter writes it: so ``k8sTaskPodNamePrefix`` must give the same names
    (compared as Druid uses it: its letters and digits, lowercased, at most 30; unset and empty both mean
    "named after the task id"), ``namespace`` must be equal, and ``k8s.adapter.type`` must be equal when the
    Overlord lists it (an Overlord without it uses Druid's default, which the provider then cannot tell
    from a hidden one, so it is not compared).
    """
    for prop in JOIN_PROPERTIES:
        mine, other = ours.get(prop) or None, theirs.get(prop) or None
        if prop == ADAPTER_TYPE_PROPERTY and other is None:
            continue
        if prop == POD_NAME_PREFIX_PROPERTY:
            alike = job_name_prefix(mine) == job_name_prefix(other)
        else:
            alike = mine == other
        if not alike:
            return RunnerMismatch(prop, mine, other)
    return None


def choose_launch_mode(
    requested: str, druid_version: object, mismatch: RunnerMismatch | None = None
) -> LaunchChoice:
    """Resolve ``launch_mode`` against the Overlord's version (the ``version`` of ``GET /status``) and,
    when it could be read, the :func:`runner_mismatch` of its runner settings with ours.

    ``auto`` picks ``airflow`` from 35.0.0 on and ``overlord`` below it or when the version is not a plain
    ``X.Y.Z``, or when a runner setting differs (its runner would not join our Job: two peons for one task).
    ``airflow`` below 35.0.0 is refused: that Overlord would fail the task on the 409 of its own create and
    delete the provider's Job; so is ``airflow`` with a runner setting that differs. Raises
    :class:`DruidK8sConfigError` (field ``launch_mode``, or the differing property) for an unknown mode or
    those refusals, before anything is written.
    """
    choice = _by_version(requested, druid_version)
    if choice.mode == "airflow" and mismatch is not None:
        return _mismatched(requested, mismatch)
    return choice


def _by_version(requested: str, druid_version: object) -> LaunchChoice:
    check_launch_mode(requested)
    parsed = parse_druid_version(druid_version)
    joins = parsed is not None and parsed >= JOINS_EXISTING_JOB_SINCE
    described = f"Druid {druid_version}" if parsed else f"Druid version {druid_version!r} (not a plain X.Y.Z)"
    if requested == "overlord":
        return LaunchChoice("overlord", "launch_mode='overlord': the Overlord creates the Job")
    if requested == "airflow":
        if not joins:
            raise DruidK8sConfigError(
                "launch_mode",
                f"'airflow' needs an Overlord of Druid 35.0.0 or later, whose Kubernetes runner joins an "
                f"existing Job; this Overlord reports {described}, whose runner would fail the task and "
                "delete the Job",
                "use launch_mode='overlord' or 'auto' with this Overlord, or upgrade Druid to 35.0.0 or "
                "later",
            )
        return LaunchChoice("airflow", f"launch_mode='airflow' and {described} joins the provider's Job")
    if joins:
        return LaunchChoice(
            "airflow", f"auto: {described} (35.0.0 or later) joins a Job the provider creates"
        )
    return LaunchChoice(
        "overlord", f"auto: {described} is below 35.0.0 or unknown, so the Overlord creates the Job"
    )


def _mismatched(requested: str, mismatch: RunnerMismatch) -> LaunchChoice:
    if requested == "airflow":
        raise DruidK8sConfigError(
            mismatch.property,
            f"launch_mode='airflow' needs the Overlord's runner to join the provider's Job, but "
            f"{mismatch.describe()}",
            f"set {mismatch.property} to {_shown(mismatch.theirs)} in the operator's runner settings (or in "
            "[druid_k8s]), as in the Overlord's runtime.properties; or use launch_mode='overlord' or 'auto'",
        )
    return LaunchChoice("overlord", f"auto: {mismatch.describe()}; so the Overlord creates the Job")


class AttemptAction(enum.Enum):
    """What a (re)started Airflow task does with its Druid task."""

    SUBMIT = "submit"
    """Submit ``task_id`` (a new attempt, or the first): the Overlord has never seen it."""
    REATTACH = "reattach"
    """Follow ``task_id``: the Overlord still runs it (WAITING, PENDING or RUNNING)."""
    REPORT = "report"
    """Report ``task_id``'s SUCCESS and run nothing."""
    REFUSE = "refuse"
    """Run nothing and fail: ``task_id`` is written in the task JSON and already FAILED in Druid, which never
    accepts an id twice (the shell shows that task's log, then raises :func:`written_id_failed`)."""


@dataclass(frozen=True)
class AttemptDecision:
    """The decision for one start of an Airflow task instance.

    ``attempt`` is the attempt number of ``task_id`` (None for an id written in the task JSON); ``reason``
    says in a sentence what the Overlord answered and why that leads to ``action``.
    """

    action: AttemptAction
    task_id: str
    attempt: int | None
    reason: str


@dataclass(frozen=True)
class TaskIdentity:
    """Where a task's Druid id comes from.

    ``base_id`` is the id written in the task JSON (``user_written``: submitted as it is, never changed) or
    the base derived from the task instance (:func:`druid_k8s_provider.task.derive_task_id`), whose
    attempts are submitted as ``<base>_attempt<n>``.
    """

    base_id: str
    user_written: bool

    def candidate_ids(self, try_number: int) -> list[str]:
        """The ids to ask the Overlord about, oldest first, in one batched ``taskStatus`` request.

        Each Airflow try submits at most one new attempt, so attempts 1 .. ``try_number`` cover every id this
        task instance can have submitted.
        """
        if self.user_written:
            return [self.base_id]
        return [attempt_task_id(self.base_id, attempt) for attempt in range(1, max(try_number, 1) + 1)]


def first_try_decision(identity: TaskIdentity, try_number: int) -> AttemptDecision | None:
    """The decision that needs no question to the Overlord, or None when the attempts so far must be asked
    about (:func:`decide_attempt`).

    The first try of a derived id submits attempt 1 without asking: the id names the task instance (dag,
    task, run, map index), and Airflow numbers every try it schedules anew (``try_number`` 1 only for the
    first; a retry, a clear and a reschedule after a crash count up), so no attempt of it can exist yet but
    one submitted by this very try, run a second time. That one answers the submission with
    ``entryAlreadyExists`` and the try re-attaches to it and reports its outcome, as after a lost answer. An
    id written in the task JSON is always asked about: another DAG run may have submitted it.
    """
    if identity.user_written or try_number > 1:
        return None
    return AttemptDecision(
        AttemptAction.SUBMIT,
        attempt_task_id(identity.base_id, 1),
        1,
        "the first try of this task instance, so no earlier attempt exists to ask the Overlord about",
    )


def decide_attempt(identity: TaskIdentity, try_number: int, statuses: Mapping[str, str]) -> AttemptDecision:
    """Submit, re-attach or report, from the Overlord's statuses of :meth:`TaskIdentity.candidate_ids`.

    ``statuses`` maps an id to its ``statusCode`` (RUNNING / SUCCESS / FAILED) as the batched
    ``POST /druid/indexer/v1/taskStatus`` answers it; ids the Overlord does not know are absent. The latest
    attempt the Overlord knows decides:

    - still active (RUNNING, which covers WAITING and PENDING; an unknown state counts as active, so a task
      is never run twice) → re-attach and follow it;
    - SUCCESS → report it and run nothing;
    - FAILED → submit the next attempt (the one after it, so an attempt whose submission was lost to a
      crash, and whose suspended Job may exist, is the one submitted);
    - none known → submit attempt 1.

    An id written in the task JSON is never changed: after its FAILED the decision is
    :attr:`AttemptAction.REFUSE` (the caller raises :func:`written_id_failed`, saying how to template the id
    per try).
    """
    if identity.user_written:
        return _decide_user_written(identity.base_id, statuses.get(identity.base_id))
    known = [
        (attempt, task_id, statuses[task_id])
        for attempt, task_id in enumerate(identity.candidate_ids(try_number), start=1)
        if task_id in statuses
    ]
    if not known:
        first = attempt_task_id(identity.base_id, 1)
        return AttemptDecision(
            AttemptAction.SUBMIT, first, 1, "the Overlord knows no attempt of this task yet"
        )
    attempt, task_id, state = known[-1]
    if state == FAILED:
        following = attempt_task_id(identity.base_id, attempt + 1)
        return AttemptDecision(
            AttemptAction.SUBMIT,
            following,
            attempt + 1,
            f"attempt {attempt} ({task_id}) FAILED in Druid, so this try runs attempt {attempt + 1}",
        )
    if state == SUCCESS:
        return AttemptDecision(
            AttemptAction.REPORT,
            task_id,
            attempt,
            f"attempt {attempt} ({task_id}) already SUCCEEDED in Druid",
        )
    return AttemptDecision(
        AttemptAction.REATTACH,
        task_id,
        attempt,
        f"attempt {attempt} ({task_id}) is still {state} in Druid: following it instead of running another",
    )


def _decide_user_written(task_id: str, state: str | None) -> AttemptDecision:
    if state is None:
        return AttemptDecision(AttemptAction.SUBMIT, task_id, None, "the Overlord does not know this id yet")
    if state == SUCCESS:
        return AttemptDecision(AttemptAction.REPORT, task_id, None, "this id already SUCCEEDED in Druid")
    if state == FAILED:
        return AttemptDecision(
            AttemptAction.REFUSE,
            task_id,
            None,
            "this id already FAILED in Druid, which never accepts it again",
        )
    return AttemptDecision(
        AttemptAction.REATTACH, task_id, None, f"this id is still {state} in Druid: following it"
    )


def written_id_failed(task_id: str) -> DruidK8sConfigError:
    """The refusal of a retry whose task JSON names ``task_id``, which already FAILED in Druid (field
    ``task.id``, saying how to template the id per try)."""
    return DruidK8sConfigError(
        "task.id",
        f"the Overlord already has a FAILED task with the id {task_id!r} written in the task JSON, and "
        "Druid never accepts an id twice, so a retry cannot run it again",
        "leave 'id' out of the task JSON: the provider then derives a new id for each attempt and "
        "re-attaches after a crash; or template the id per try, e.g. "
        '"id": "my_index_{{ ds_nodash }}_{{ ti.try_number }}" (a crashed try\'s task is then not '
        "re-attached)",
    )


class AfterFailedSubmit(enum.Enum):
    """What becomes of the suspended Job of ``launch_mode="airflow"`` when its task's submission failed."""

    REATTACH = "reattach"
    """The Overlord has the task after all (a request of the submission reached it): follow it."""
    DELETE_JOB = "delete_job"
    """The Overlord does not have the task: delete the suspended Job, nothing would ever run it."""
    KEEP_JOB = "keep_job"
    """It cannot be told whether the Overlord has the task: keep the Job (a retry submits the task and
    releases it; the reaper deletes it once it is old and the Overlord does not know its task)."""


def submit_refused(status: int | None) -> bool:
    """Whether the final answer to ``POST /druid/indexer/v1/task`` refused the task for good.

    A 4xx refusal (401, 403, 400 other than ``entryAlreadyExists``, 404 ...) comes from a server that read
    the request and did not store the task; the earlier tries of that submission, if any, ended in a
    retryable answer or a lost connection, and one of them storing the task would have turned this answer
    into ``entryAlreadyExists`` (Druid's ``TaskQueue.add`` looks the id up first). 408, 429 and 5xx (after
    the retries) and no answer at all (``status`` None) leave it open whether a request got through.
    """
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def after_failed_submit(*, refused: bool, overlord_knows: bool | None) -> AfterFailedSubmit:
    """Decide the fate of the suspended Job whose task's submission failed.

    ``refused``: :func:`submit_refused` of the final answer. ``overlord_knows``: whether the Overlord, asked
    after the failure (one batched ``taskStatus``), knows the task id; None when it could not be asked.
    The Overlord knowing the task wins (it may hand the task to its runner, which joins the Job); a task it
    does not know, or a refused one when it cannot be asked, can never be run from that Job.
    """
    if overlord_knows:
        return AfterFailedSubmit.REATTACH
    if overlord_knows is False or refused:
        return AfterFailedSubmit.DELETE_JOB
    return AfterFailedSubmit.KEEP_JOB


class FoundJobStep(enum.Enum):
    """What to do with this attempt's Job found by the create of ``launch_mode="airflow"`` (409)."""

    JOIN = "join"
    """It carries the task about to be submitted: reuse it."""
    REPLACE = "replace"
    """It carries another task JSON and no Overlord knows the task: delete it and create it anew."""
    FOLLOW_OVERLORD = "follow_overlord"
    """The Overlord already has the task (submitted with the Job's JSON by an earlier try): follow it."""
    REFUSE = "refuse"
    """It carries another task JSON, the Overlord does not know the task, and the Job is no longer a
    suspended, unlabelled one the provider may delete."""


def found_job_step(*, same_task: bool, overlord_knows: bool, deletable: bool) -> FoundJobStep:
    """Decide about a Job found under this attempt's name.

    The derived task id names the task instance and the attempt, not the task JSON: a DAG changed between two
    tries finds the first try's Job, which would run the old JSON. ``same_task``: the Job's task JSON
    (:func:`~druid_k8s_provider.launch.suspended.carried_task`) equals the one about to be submitted;
    ``overlord_knows``: the Overlord knows the task id; ``deletable``: the Job is still suspended and
    unlabelled (:func:`~druid_k8s_provider.launch.suspended.deletable_while_suspended`).
    """
    if same_task:
        return FoundJobStep.JOIN
    if overlord_knows:
        return FoundJobStep.FOLLOW_OVERLORD
    return FoundJobStep.REPLACE if deletable else FoundJobStep.REFUSE
