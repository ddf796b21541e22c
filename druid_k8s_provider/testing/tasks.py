"""Small Druid tasks for tests and demos against the emulators, with the stand-in peon's context keys.

A real Druid would run them too: the stand-in keys in the task context are ignored by Druid.
"""

from __future__ import annotations

from typing import Any

import pendulum

from druid_k8s_provider.testing.standin_peon import DURATION_CONTEXT_KEY

#: The day the test tasks ingest by default, as Druid writes an interval.
DEFAULT_INTERVAL = "2026-01-01/2026-01-02"
DEFAULT_DATASOURCE = "wikipedia"
#: Short enough for tests, long enough for a test to see the task RUNNING.
DEFAULT_DURATION_SECONDS = 0.3


def index_parallel_task(
    task_id: str | None = None,
    interval: str = DEFAULT_INTERVAL,
    *,
    datasource: str = DEFAULT_DATASOURCE,
    **context: Any,
) -> dict[str, Any]:
    """An ``index_parallel`` task ingesting two inline JSON rows (``ts``, ``page``), one and two hours after
    the start of ``interval`` (``<start>/<end>``, ISO-8601), into ``datasource``, with DAY segments over
    ``interval``: the stand-in peon takes that interval's lock and publishes one segment for it.

    ``task_id`` becomes the task's ``id``; None leaves it out, as a DAG author does (the operator then
    derives one per attempt). ``context`` is the task context, over ``standinDurationSeconds`` =
    :data:`DEFAULT_DURATION_SECONDS`; the stand-in peon's keys steer it (``standinOutcome``,
    ``standinDurationSeconds``, ``standinRowCount``: see :mod:`druid_k8s_provider.testing.standin_peon`).

    Raises :class:`ValueError` when ``interval`` is not two ISO-8601 instants separated by ``/``.
    """
    start, separator, _ = interval.partition("/")
    if not separator:
        raise ValueError(f"interval {interval!r} is not '<start>/<end>' (e.g. {DEFAULT_INTERVAL!r})")
    parsed = pendulum.parse(start)
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"the start of interval {interval!r} is not an ISO-8601 date or instant")
    first = parsed.in_timezone("UTC")
    rows = "\n".join(
        f'{{"ts":"{first.add(hours=hour).format("YYYY-MM-DDTHH:mm:ss")}Z","page":"{page}"}}'
        for hour, page in ((1, "a"), (2, "b"))
    )
    task: dict[str, Any] = {
        "type": "index_parallel",
        "spec": {
            "dataSchema": {
                "dataSource": datasource,
                "timestampSpec": {"column": "ts", "format": "iso"},
                "dimensionsSpec": {"dimensions": ["page"]},
                "granularitySpec": {"segmentGranularity": "DAY", "intervals": [interval]},
            },
            "ioConfig": {
                "type": "index_parallel",
                "inputSource": {"type": "inline", "data": rows},
                "inputFormat": {"type": "json"},
            },
            "tuningConfig": {"type": "index_parallel"},
        },
        "context": {DURATION_CONTEXT_KEY: DEFAULT_DURATION_SECONDS, **context},
    }
    if task_id is not None:
        task["id"] = task_id
    return task
