"""The worker's steps of ``launch_mode="airflow"`` before the wait: the suspended Job and the submission.

The Job is created suspended and unlabelled before its task is submitted
(:mod:`~druid_k8s_provider.launch.suspended`), so for a moment a Job exists for a task the Overlord does not
know. A suspended Job never finishes and carries no ``druid.k8s.peons`` label, so neither
``ttlSecondsAfterFinished`` nor Druid's cleanup would ever remove it. Hence:

- :func:`create_suspended` reuses this attempt's Job left by an earlier try only when it carries the task
  JSON about to be submitted (the derived id names the attempt, not the JSON): a Job of an older JSON is
  deleted and created anew while no Overlord knows the task; when the Overlord already has the task (an
  earlier try submitted it), that is what Druid runs, and the try follows it, saying the JSON differs.
- :func:`submit_suspended` submits, and when the submission fails, asks the Overlord whether it has the
  task after all (:func:`~druid_k8s_provider.launch_protocol.after_failed_submit`): if so it re-attaches;
  if the Overlord refused the task or does not know it, the Job is deleted (while still suspended and
  unlabelled, by a delete conditional on the version read) and the error says so; if the Overlord cannot
  be asked, the Job is kept for the retry, which submits the task and releases it, and the reaper deletes
  it if it stays behind (``druid_k8s_provider.reaper``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from druid_k8s_provider.errors import DruidK8sTaskError, OverlordApiError, TemplatePodNotFound
from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.hooks.overlord import DruidOverlordHook
from druid_k8s_provider.launch.suspended import (
    carried_task,
    deletable_while_suspended,
    is_suspended,
    suspended_unlabelled,
)
from druid_k8s_provider.launch.worker import submit
from druid_k8s_provider.launch_protocol import (
    AfterFailedSubmit,
    FoundJobStep,
    after_failed_submit,
    found_job_step,
    submit_refused,
)
from druid_k8s_provider.task import DruidTask

#: What happens to a suspended Job the provider could not delete: the reaper's rule for it.
REAPED_LATER = (
    "the reaper deletes it once it is older than taskCleanupDelay (at least an hour) if the Overlord "
    "does not know its task"
)


def build_or_follow(
    build: Callable[[], dict[str, Any]],
    overlord: DruidOverlordHook,
    task: DruidTask,
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    """``build()`` (the Job manifest, from the Overlord pod as template), or None when that pod cannot be
    found (an Overlord restarting) but the Overlord already has ``task``: a first try run a second time,
    which submitted it without asking first (:func:`~druid_k8s_provider.launch_protocol.first_try_decision`),
    follows that task and its Job instead of failing (one batched ``taskStatus``, only then). Raises
    :class:`TemplatePodNotFound` when the Overlord does not have the task either."""
    try:
        return build()
    except TemplatePodNotFound:
        if _knows(overlord, task.id) is not True:
            raise
    say(
        f"The Overlord pod (the Job's template) is not found, but the Overlord already has Druid task "
        f"{task.id} (an earlier run of this try submitted it): following it and its Job"
    )
    return None


def create_suspended(
    hook: DruidK8sHook,
    overlord: DruidOverlordHook,
    manifest: Mapping[str, Any],
    task: DruidTask,
    *,
    check_joined: Callable[[Mapping[str, Any]], None],
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> bool:
    """Create the Job of ``manifest`` suspended and unlabelled, or reuse this attempt's; whether ``task`` is
    still to be submitted (False: the Overlord already has it, follow it).

    A Job found under the name (409) goes through ``check_joined`` (which raises for a Job of another task
    instance), then :func:`~druid_k8s_provider.launch_protocol.found_job_step`; asking the Overlord costs one
    batched ``taskStatus``, only when the found Job carries another task JSON. Raises
    :class:`DruidK8sTaskError` when such a Job can neither be followed nor replaced.
    """
    job, created = hook.create_or_join_job(suspended_unlabelled(dict(manifest)))
    name, namespace = job["metadata"]["name"], job["metadata"].get("namespace")
    if created:
        say(
            f"Created the suspended Job {name} in namespace {namespace} for Druid task {task.id} "
            "(released once its locks are taken)"
        )
        return True
    check_joined(job)
    same = carried_task(job) == task.spec
    knows = not same and task.id in overlord.task_statuses([task.id])
    deletable = deletable_while_suspended(job, task.id)
    step = found_job_step(same_task=same, overlord_knows=knows, deletable=deletable)
    if step is FoundJobStep.JOIN:
        say(
            f"Found this attempt's suspended Job {name} in namespace {namespace} for Druid task {task.id} "
            "(left by an earlier try; released once its locks are taken)"
        )
        return True
    if step is FoundJobStep.FOLLOW_OVERLORD:
        warn(_differs(task.id, name))
        return False
    if step is FoundJobStep.REFUSE:
        raise DruidK8sTaskError(
            f"Job {name} in namespace {namespace} carries a task JSON that differs from this DAG's current "
            "one, is no longer suspended, and the Overlord does not know the task, so it can be neither "
            f"followed nor replaced. Fix: delete it (kubectl delete job {name} -n {namespace}), then clear "
            "the Airflow task",
            task_id=task.id,
            job_name=name,
        )
    say(
        f"This attempt's suspended Job {name} (left by an earlier try) carries a task JSON that differs from "
        f"this DAG's current one, and the Overlord does not know Druid task {task.id}: deleting it and "
        "creating it anew with the current JSON"
    )
    hook.delete_job(
        name,
        namespace,
        task_id=task.id,
        uid=job["metadata"].get("uid"),
        resource_version=job["metadata"].get("resourceVersion"),
    )
    fresh, created = hook.create_or_join_job(suspended_unlabelled(dict(manifest)))
    if not created and carried_task(fresh) != task.spec:
        raise DruidK8sTaskError(
            f"Job {name} in namespace {namespace} was created again with another task JSON while this try "
            "replaced it (another try of the same task instance runs at the same time). Fix: let that try "
            "finish, then clear this one",
            task_id=task.id,
            job_name=name,
        )
    return True


def reattach(
    hook: DruidK8sHook, task: DruidTask, job_name: str, namespace: str, warn: Callable[[str], None]
) -> bool:
    """On a re-attach to a task the Overlord has: whether our Job ``job_name`` is still suspended (its
    release is pending). Warns when the Job carries a task JSON other than the DAG's current ``task`` (an
    earlier try submitted it; Druid runs what it was given)."""
    job = hook.get_job(job_name, namespace, task_id=task.id)
    if job is None:
        return False
    if carried_task(job) not in (None, task.spec):
        warn(_differs(task.id, job_name))
    return is_suspended(job)


def _differs(task_id: str, job_name: str) -> str:
    return (
        f"Druid task {task_id} was submitted by an earlier try with the task JSON its Job {job_name} "
        "carries, which differs from this DAG's current task JSON; Druid runs what it was given, so "
        "this try follows it. To run the current JSON, mark this task failed (which shuts the Druid "
        "task down) and clear it: the next attempt submits the current JSON"
    )


def submit_suspended(
    overlord: DruidOverlordHook,
    hook: DruidK8sHook,
    task: DruidTask,
    *,
    job_name: str,
    namespace: str,
    say: Callable[[str], None],
) -> bool:
    """Submit ``task``, whose suspended Job ``job_name`` exists in ``namespace``; False when the Overlord
    already had it (re-attach). A failed submission raises its error, with a sentence saying what became
    of the Job (deleted, or kept and why)."""
    try:
        return submit(overlord, task, say)
    except Exception as failure:
        refused = isinstance(failure, OverlordApiError) and submit_refused(failure.status)
        step = after_failed_submit(refused=refused, overlord_knows=_knows(overlord, task.id))
        if step is AfterFailedSubmit.REATTACH:
            say(
                f"The submission of Druid task {task.id} failed ({failure}), but the Overlord has the task "
                "(a request of the submission reached it): re-attaching"
            )
            return False
        if step is AfterFailedSubmit.DELETE_JOB:
            fate = _delete_unsubmitted(hook, job_name, namespace, task.id)
        else:
            fate = (
                f"The Overlord could not be asked whether it has the task, so its suspended Job {job_name} "
                "is kept: a retry of this Airflow task submits the task and releases the Job, and "
                + REAPED_LATER
            )
        say(fate)
        _with_sentence(failure, fate)
        raise


def _knows(overlord: DruidOverlordHook, task_id: str) -> bool | None:
    """Whether the Overlord knows ``task_id`` (one batched ``taskStatus``); None when it cannot be asked."""
    try:
        return task_id in overlord.task_statuses([task_id])
    except OverlordApiError:
        return None


def _delete_unsubmitted(hook: DruidK8sHook, job_name: str, namespace: str, task_id: str) -> str:
    """Delete the suspended Job of a task the Overlord does not have; the sentence saying what happened."""
    try:
        job = hook.get_job(job_name, namespace, task_id=task_id)
        if job is None:
            return f"Its suspended Job {job_name} is already gone"
        if not deletable_while_suspended(job, task_id):
            return f"Its Job {job_name} was left alone: it is no longer suspended and unlabelled"
        metadata = job["metadata"]
        deleted = hook.delete_job(
            job_name,
            namespace,
            task_id=task_id,
            uid=metadata.get("uid"),
            resource_version=metadata.get("resourceVersion"),
        )
    except DruidK8sTaskError as exc:
        return f"Its suspended Job {job_name} could not be deleted ({exc}); {REAPED_LATER}"
    if not deleted:
        return f"Its Job {job_name} changed or went away while it was being deleted, and was left alone"
    return (
        f"The Overlord does not have Druid task {task_id}, so nothing would ever run its suspended Job "
        f"{job_name}: the Job was deleted"
    )


def _with_sentence(failure: Exception, sentence: str) -> None:
    """Put ``sentence`` at the end of ``failure``'s message (as a note, for an error not the provider's)."""
    if isinstance(failure, DruidK8sTaskError) and len(failure.args) == 1:
        failure.args = (f"{failure.args[0]}. {sentence}",)
    else:
        failure.add_note(sentence)
