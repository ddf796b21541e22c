"""The Overlord's Kubernetes task runner, against the Kubernetes emulator's real HTTP API.

What it does, as apache/druid's ``KubernetesTaskRunner`` / ``KubernetesPeonLifecycle`` /
``DirectKubernetesPeonClient`` do (spec ``druid-overlord.md`` section 4):

- :meth:`KubernetesRunner.run`: at most ``capacity`` tasks are launched at once, the others stay PENDING.
  A launch builds the Job with the project's own :func:`~druid_k8s_provider.job_builder.build_job` from the
  Overlord pod and the runner properties and creates it. If the Job already exists, Druid before 35.0.0
  fails the task on the create's 409 (and deletes that Job when shutting the task down); 35.0.0 and later
  (apache/druid PR 18406) join the existing Job instead.
- The pod is looked up at most 10 times with exponential back-off (1 s doubling, at most 60 s: about four
  minutes, times ``pod_lookup_scale``), then the pod must get an IP within ``K8sjobLaunchTimeout``; either
  failing fails the task with Druid's generic "Failed to run task. See overlord logs for more details."
  while the Overlord's log says why (pod not found, or the Job's latest event).
- The outcome is read only from ``<task-log dir>/<task id>.status.json``; absent: FAILED "Peon did not
  report status successfully.". The pod's log is pushed to ``<task id>.log``; the Job is deleted at
  completion unless ``debugJobs``.
- :meth:`restore` (a new leader) lists the Jobs labelled ``druid.k8s.peons`` and joins each one whose task
  it can read back from the Job (``TASK_JSON`` of container ``main``, or the ``task`` annotation).

One task's life is in ``peon_lifecycle``; the client and the state kept of the tasks in ``runner_client``.
"""

from __future__ import annotations

import asyncio
import logging

from druid_k8s_provider import naming
from druid_k8s_provider.job_builder import peon_job_name
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.jobs import job_finish_time, read_task_from_job
from druid_k8s_provider.testing.overlord.peon_lifecycle import PeonLifecycle
from druid_k8s_provider.testing.overlord.runner_client import WorkItem, cancel_and_wait

log = logging.getLogger(__name__)

#: First Druid release whose runner joins an existing Job instead of failing on the 409 (PR 18406).
JOIN_EXISTING_JOB_SINCE = (35, 0, 0)


class KubernetesRunner(PeonLifecycle):
    """Runs tasks as Jobs in the emulated cluster; reports each outcome through ``on_outcome``."""

    # ------------------------------------------------------------------ tasks

    def _job_name(self, task: DruidTask) -> str:
        """The name this Druid version gives the task's Job (``k8sTaskPodNamePrefix`` from 33.0.0 on)."""
        return peon_job_name(task.id, self.config, druid_version=self._druid_version)

    def run(self, task: DruidTask) -> WorkItem:
        """Hand a ready task to the runner: PENDING until a slot is free and its pod is up."""
        item = WorkItem(task, self._job_name(task))
        self.items[task.id] = item
        item.lifecycle = asyncio.create_task(self._lifecycle(item, join=False), name=f"peon-{task.id}")
        return item

    def join(self, task: DruidTask, job_name: str) -> WorkItem:
        """Take over a task whose Job exists (restore): no create, wait for its pod and its end."""
        item = WorkItem(task, job_name)
        self.items[task.id] = item
        item.lifecycle = asyncio.create_task(self._lifecycle(item, join=True), name=f"peon-{task.id}")
        return item

    async def shutdown(self, task_id: str) -> None:
        """Stop following the task and delete its Job (``KubernetesPeonLifecycle.shutdown``)."""
        item = self.items.pop(task_id, None)
        if item is None:
            return
        await cancel_and_wait(item.lifecycle)
        await self._delete_job(item.job_name)

    async def restore(self) -> list[tuple[DruidTask, str]]:
        """(task, Job name) of the labelled Jobs in the runner's namespace; unreadable Jobs are logged."""
        selector = ",".join(
            [naming.PEON_LABEL, *(f"{key}={value}" for key, value in self._restore_labels.items())]
        )
        listed = await self._read(
            lambda: self._batch.list_namespaced_job(
                self.config.namespace, label_selector=selector, _preload_content=False
            )
        )
        tasks = []
        for job in listed.get("items") or []:
            name = job["metadata"]["name"]
            try:
                tasks.append((read_task_from_job(job), name))
            except ValueError as error:
                self._log(f"ERROR Failed to restore task from Job[{name}] at startup: {error}")
        return tasks

    async def delete_finished_jobs_older_than(self, seconds: float, now: float) -> list[str]:
        """Delete labelled Jobs that finished more than ``seconds`` ago (the runner's cleanup thread)."""
        listed = await self._read(
            lambda: self._batch.list_namespaced_job(
                self.config.namespace, label_selector=naming.PEON_LABEL, _preload_content=False
            )
        )
        deleted = []
        for job in listed.get("items") or []:
            finished = job_finish_time(job)
            if finished is not None and now - finished > seconds:
                await self._delete_job(job["metadata"]["name"])
                deleted.append(job["metadata"]["name"])
        return deleted
