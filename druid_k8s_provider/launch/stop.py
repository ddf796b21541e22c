"""A user's stop of a Druid task launched through the Overlord (mark failed/success, clear).

Order matters (spec ``druid-overlord.md`` sections 1 and 6): ``POST /task/{id}/shutdown`` first, so the
Overlord records FAILED ("Shutdown request from user"), releases the locks and deletes the Job it runs; then
the provider's own Job is deleted if it is still suspended (the Overlord never saw it run). A task still
queued for a runner thread can get a Job from the runner just after the shutdown: Jobs with the task's
``task.id`` annotation are looked for during :data:`LATE_JOB_WATCH_SECONDS` and deleted. A worker that only
goes away (SIGTERM of a deploy) does none of this: the task runs on and the next try re-attaches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from druid_k8s_provider.hooks.druid_k8s_async import DruidK8sAsyncHook
from druid_k8s_provider.hooks.k8s_api import PEON_SELECTOR, jobs_path, task_id_of
from druid_k8s_provider.hooks.overlord import DruidOverlordAsyncHook
from druid_k8s_provider.launch.suspended import is_suspended

#: How long after the shutdown a late Job of the task is looked for (the runner's thread may be creating
#: it as the shutdown arrives; its create follows within moments).
LATE_JOB_WATCH_SECONDS = 10.0
LATE_JOB_LOOK_SECONDS = 1.0


async def stop_task(
    *,
    druid_ingest_conn_id: str,
    kube: DruidK8sAsyncHook,
    namespace: str,
    task_id: str,
    own_job_name: str | None,
    say: Callable[[str], None],
) -> None:
    """Shut the task down in the Overlord, delete our still-suspended Job, then any late Job of the task."""
    async with DruidOverlordAsyncHook(druid_ingest_conn_id) as overlord:
        known = await overlord.shutdown_task(task_id)
    say(
        f"Asked the Overlord to shut down Druid task {task_id}"
        + ("" if known else " (it does not know the task)")
    )
    async with kube.session() as session:
        if own_job_name is not None:
            job = await session.get(jobs_path(namespace, own_job_name))
            if job is not None and task_id_of(job) == task_id and is_suspended(job):
                await session.delete_job(own_job_name, namespace)
                say(f"Deleted the suspended Job {own_job_name} (the Overlord never ran it)")
        deadline = asyncio.get_running_loop().time() + LATE_JOB_WATCH_SECONDS
        while True:
            items, _ = await session.list_objects(jobs_path(namespace), PEON_SELECTOR)
            for job in items:
                if task_id_of(job) == task_id and not (job["metadata"].get("deletionTimestamp")):
                    await session.delete_job(job["metadata"]["name"], namespace)
                    say(f"Deleted Job {job['metadata']['name']} of the stopped task {task_id}")
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(LATE_JOB_LOOK_SECONDS)
