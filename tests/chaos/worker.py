"""A stand-in Airflow worker: runs one try of ``DruidK8sTaskOperator`` in its own process.

The chaos suite SIGKILLs it at chosen points of the lifecycle and runs it again (the retry); the secrets
test greps what it leaves behind. It does what a task runner does that matters here: renders the template
fields, logs through Airflow's own structlog configuration *with* the secrets masker (as the supervisor
writes the task log), runs ``execute``, and when the operator defers, runs the trigger (as a triggerer
would, from its serialized form) and resumes with the named method. It writes the task log to
``log_file`` and a JSON report (return value, XCom, error, rendered template fields as Airflow stores them)
to ``report_file``.

At each lifecycle point it prints ``PHASE <name>`` and flushes; at the point named by ``freeze_at`` it stops
and waits for the parent to kill it, so a SIGKILL lands exactly there:
``before_create``, ``after_create``, ``waiting`` (the wait began; not frozen, the parent kills it a moment
later while the peon runs) and ``reading_logs`` (after the ``freeze_after_lines``-th peon log line).

Usage: ``python worker.py SPEC.json`` (``SPEC.json`` as written by the chaos suite).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def phase(name: str, freeze_at: str | None) -> None:
    """Announce a lifecycle point; freeze there (until SIGKILL) when it is the chosen one."""
    print(f"PHASE {name}", flush=True)
    if name == freeze_at:
        threading.Event().wait()


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    freeze_at = spec.get("freeze_at")

    from airflow.sdk.log import configure_logging

    log_stream = open(spec["log_file"], "a", encoding="utf-8")  # noqa: SIM115 (open for the process' life)
    configure_logging(output=log_stream, sending_to_supervisor=False, colored_console_log=False)

    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
    from druid_k8s_provider.operators.task import DruidK8sTaskOperator
    from druid_k8s_provider.triggers.job import JobFollower

    create_or_join = DruidK8sHook.create_or_join_job

    def instrumented_create(self: DruidK8sHook, manifest: Any) -> Any:
        phase("before_create", freeze_at)
        result = create_or_join(self, manifest)
        phase("after_create", freeze_at)
        return result

    follow = JobFollower.run

    async def instrumented_run(self: JobFollower) -> dict[str, Any]:
        phase("waiting", freeze_at)
        emit = self.emit_line
        shown = 0

        def counting_emit(line: str) -> None:
            nonlocal shown
            emit(line)
            shown += 1
            if shown == spec.get("freeze_after_lines"):
                phase("reading_logs", freeze_at)

        self.emit_line = counting_emit
        return await follow(self)

    DruidK8sHook.create_or_join_job = instrumented_create  # type: ignore[method-assign]
    JobFollower.run = instrumented_run  # type: ignore[method-assign]

    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id=spec.get("dag_id", "chaos"),
        task_id="druid",
        run_id=spec.get("run_id", "manual_1"),
        map_index=-1,
        try_number=spec.get("try_number", 1),
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )
    context: dict[str, Any] = {"ti": ti, "params": {}, "var": {}}
    report: dict[str, Any] = {"xcom": pushed}
    operator = DruidK8sTaskOperator(task_id="druid", **spec["operator"])
    try:
        operator.render_template_fields(context)
        report["rendered"] = _serialize_rendered_fields(operator)
        try:
            report["return_value"] = operator.execute(context)
        except TaskDeferred as deferred:
            classpath, kwargs = deferred.trigger.serialize()
            module, _, name = classpath.rpartition(".")
            trigger = getattr(importlib.import_module(module), name)(**kwargs)
            event = asyncio.run(anext(trigger.run()))
            method = getattr(operator, deferred.method_name)
            report["return_value"] = method(context, event.payload, **(deferred.kwargs or {}))
        if report["return_value"] is not None:
            pushed["return_value"] = report["return_value"]
    except Exception as error:
        operator.log.error("Task failed: %s", error)
        report["error"] = str(error)
        report["error_type"] = type(error).__name__
        report["traceback"] = traceback.format_exc()
    log_stream.flush()
    Path(spec["report_file"]).write_text(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
