"""The reaper: periodic deletion of finished peon Jobs, as Druid's Kubernetes task runner does it, and of the
provider's suspended leftovers.

Druid deletes, every ``taskCleanupInterval``, the Jobs labelled ``druid.k8s.peons=true`` that finished
(condition ``Complete`` or ``Failed``) longer than ``taskCleanupDelay`` ago. Jobs kept by ``debugJobs``, Jobs
of Airflow tasks whose worker died before cleaning up, and Jobs on clusters without a TTL controller all end
up here. A Job whose task the Overlord still holds (RUNNING: waiting, pending or running) is never deleted,
whatever its Kubernetes state: the Overlord may still join it or read its pod, and a Job gone before the
runner's create makes it launch the ingestion a second time (spec ``druid-overlord.md`` section 6).

It also deletes what only the provider leaves behind: with ``launch_mode="airflow"`` a Job is created
suspended and without the peon label before its task is submitted, and one whose submission never went
through (a worker that died in between, an Overlord that could not be reached) never finishes, so neither
``ttlSecondsAfterFinished`` nor Druid's cleanup would ever remove it. Such a Job (still suspended and
unlabelled, with the operator's ``airflow.apache.org/dag-id`` annotation) goes once it is older than
``taskCleanupDelay`` (and at least an hour), unless the Overlord holds its task.

The package has three layers, so each can be tested on its own:

- :mod:`.rules` is pure. :func:`select_jobs_to_reap`: given Job dicts and the current time it says, for every
  Job, whether to delete it and why; it never deletes a running Job, a Job finished less than
  ``taskCleanupDelay`` ago, a Job without the peon label or a Job already being deleted.
  :func:`keep_active_tasks` turns the deletions of a plan whose task the Overlord reports active into "kept"
  decisions. :func:`select_suspended_leftovers` does the same for the unlabelled Jobs of the second pass.
- :mod:`.sweep`: :func:`reap` walks the peon Jobs of a namespace (then its unlabelled Jobs of Druid tasks)
  page by page through a hook, asks the Overlord about the tasks of a page's deletion candidates in ONE
  batched ``POST /druid/indexer/v1/taskStatus``, deletes what is left and returns counts. Memory stays flat
  in the number of Jobs: one page is held at a time. An Overlord that cannot be asked stops every deletion
  of the sweep (never delete blind).
- :mod:`.dag`: :func:`create_reaper_dag` builds the Airflow DAG that runs :func:`reap` every
  ``taskCleanupInterval``.
"""

from __future__ import annotations

from druid_k8s_provider.reaper.dag import create_reaper_dag, resolve_runner_config
from druid_k8s_provider.reaper.rules import (
    JobDecision,
    ReapPlan,
    Verdict,
    decide,
    finished_at,
    keep_active_tasks,
    parse_kubernetes_time,
    select_jobs_to_reap,
    select_suspended_leftovers,
    suspended_leftover_age,
    withhold_deletions,
)
from druid_k8s_provider.reaper.sweep import PeonJobClient, TaskStatusReader, reap

__all__ = [
    "JobDecision",
    "PeonJobClient",
    "ReapPlan",
    "TaskStatusReader",
    "Verdict",
    "create_reaper_dag",
    "decide",
    "finished_at",
    "keep_active_tasks",
    "parse_kubernetes_time",
    "reap",
    "resolve_runner_config",
    "select_jobs_to_reap",
    "select_suspended_leftovers",
    "suspended_leftover_age",
    "withhold_deletions",
]
