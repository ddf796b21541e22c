"""What the Overlord refuses at ``POST /druid/indexer/v1/task`` beyond an unknown type or a known id.

- **A task Jackson cannot construct** → 400 ``{"error": "Cannot construct instance of ..."}`` (the body
  ``OverlordResource.taskPost`` gives a deserialization failure). The batch ingestion tasks (``index``,
  ``index_parallel``) need ``spec.dataSchema``, whose ``DataSchema`` constructor checks ``dataSource`` with
  ``IdUtils.validateId("dataSource", ...)``: "Invalid value for field [dataSource]: must not be null". Without
  a ``dataSchema`` the task's own constructor fails on the null schema (a NullPointerException's text); the
  emulator says which field is missing in IdUtils' words instead.
- **An id longer than the metadata store's column** → 500 ``ErrorResponse``. ``IdUtils.validateId`` checks no
  length, but ``druid_tasks.id`` is ``VARCHAR(255)``: the insert fails, and
  ``SQLMetadataStorageActionHandler`` reports any statement failure for a task it does not find as a
  ``DruidException`` (persona OPERATOR, category RUNTIME_FAILURE, "Encountered metadata exception for task
  [<id>]"). Nothing is stored, so the task never runs: without this the emulator would accept the id and
  its runner would fail on file names built from it.
"""

from __future__ import annotations

from typing import Any

from druid_k8s_provider.task import DruidTask

#: The width of ``druid_tasks.id`` (``SQLMetadataConnector.createTaskTable``: ``VARCHAR(255)``).
TASK_ID_COLUMN_WIDTH = 255
#: The batch ingestion task types and the class Jackson names when it cannot construct one.
_INGESTION_TASK_CLASSES = {
    "index": "org.apache.druid.indexing.common.task.IndexTask",
    "index_parallel": "org.apache.druid.indexing.common.task.batch.parallel.ParallelIndexSupervisorTask",
}
_DATA_SCHEMA_CLASS = "org.apache.druid.segment.indexing.DataSchema"


class SubmissionRefused(Exception):
    """The Overlord refused the task before storing it: ``status`` and the JSON ``body`` it answers."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


def check_submission(task: DruidTask) -> None:
    """Raise :class:`SubmissionRefused` for a task a real Overlord would not store (see the module)."""
    _check_constructible(task)
    if len(task.id) > TASK_ID_COLUMN_WIDTH:
        raise SubmissionRefused(
            500,
            {
                "error": "druidException",
                "errorCode": "runtimeFailure",
                "persona": "OPERATOR",
                "category": "RUNTIME_FAILURE",
                "errorMessage": f"Encountered metadata exception for task [{task.id}]",
                "context": {"isTransient": "false"},
            },
        )


def _check_constructible(task: DruidTask) -> None:
    task_class = _INGESTION_TASK_CLASSES.get(task.type)
    if task_class is None:
        return
    spec = task.spec.get("spec")
    data_schema = spec.get("dataSchema") if isinstance(spec, dict) else None
    if not isinstance(data_schema, dict):
        raise _not_constructible(task_class, "Invalid value for field [dataSchema]: must not be null")
    if not data_schema.get("dataSource"):
        raise _not_constructible(_DATA_SCHEMA_CLASS, "Invalid value for field [dataSource]: must not be null")


def _not_constructible(java_class: str, problem: str) -> SubmissionRefused:
    message = f"Cannot construct instance of `{java_class}`, problem: {problem}"
    return SubmissionRefused(400, {"error": message})
