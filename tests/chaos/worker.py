"""A stand-in Airflow worker: runs one try of ``DruidK8sTaskOperator`` in its own process.

The chaos suite SIGKILLs it at chosen points of the lifecycle and runs it again (the retry); the secrets
test greps what it leaves behind. It does what a task runner does that matters here: renders the template
fields, logs through Airflow's own structlog configuration *with* the secrets masker (as the supervisor
writes the task log), runs ``execute``, and when the operator defers, runs the trigger (as a triggerer
would: from its serialized form, knowing none of the worker's masks) and resumes with the named method on
a fresh, re-rendered operator (as a new worker would). It writes the task log to
``log_file`` and a JSON report (return value, XCom, error, rendered template fields as Airflow stores them,
and on deferral what Airflow stores for the triggerer) to ``report_file``.

At each lifecycle point it writes ``PHASE <spec path> <name>`` to stdout; at the point named by
``freeze_at`` it stops and waits for the parent to kill it, so a SIGKILL lands exactly there: each step of
the launch through the Overlord: ``before_create``, ``after_create`` (the Job is created, suspended, and the
task not yet submitted), ``after_submit`` (the Overlord has the task; its Job is still suspended),
``after_resume`` (the Job was labelled and resumed once the Overlord's runner had the task), ``waiting``
(the Job is followed; not frozen, the parent kills it a moment later while the peon runs) and
``reading_logs`` (after the ``freeze_after_lines``-th peon log line).

Usage: ``python worker.py SPEC.json`` runs one try. ``python worker.py --serve`` is a fork server: it imports
Airflow and the provider once, then for every spec path read from stdin forks a worker process for that try
and prints ``STARTED <spec path> <pid>`` and, when it ends, ``EXITED <spec path> <returncode>`` (negative: the
signal that killed it), so the parent can SIGKILL each try by pid without paying Airflow's import time
twenty times.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def report_line(line: str) -> None:
    """One line to stdout in one write: workers forked by the fork server share that pipe, and a single
    write of less than PIPE_BUF bytes is never interleaved with another process' output."""
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def phase(spec_path: str, name: str, freeze_at: str | None) -> None:
    """Announce a lifecycle point; freeze there (until SIGKILL) when it is the chosen one."""
    report_line(f"PHASE {spec_path} {name}")
    if name == freeze_at:
        threading.Event().wait()


def import_airflow_and_the_provider() -> None:
    """The imports that make a worker slow to start; the fork server pays them once."""
    for module in (
        "airflow.sdk.log",
        "airflow.sdk.execution_time.task_runner",
        "druid_k8s_provider.operators.task",
        "druid_k8s_provider.triggers.job",
    ):
        importlib.import_module(module)


def run_try(spec_path: str) -> int:
    """One try of the task described by the spec file; the report is written even when the task fails.

    The lifecycle points are found by wrapping the hook's create, the submission, the release and the
    waiter's ``run`` in this process only: the operator under test is the real one.
    """
    spec = json.loads(Path(spec_path).read_text())
    freeze_at = spec.get("freeze_at")

    from airflow.sdk.log import configure_logging

    log_stream = open(spec["log_file"], "a", encoding="utf-8")  # noqa: SIM115 (open for the process' life)
    configure_logging(output=log_stream, sending_to_supervisor=False, colored_console_log=False)

    from airflow.sdk._shared.secrets_masker import _secrets_masker
    from airflow.sdk.exceptions import TaskDeferred
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
    from druid_k8s_provider.launch import airflow_mode
    from druid_k8s_provider.launch import follow as follow_module
    from druid_k8s_provider.operators import task as operator_module
    from druid_k8s_provider.operators.task import DruidK8sTaskOperator
    from druid_k8s_provider.triggers.job import JobFollower

    create_or_join = DruidK8sHook.create_or_join_job

    def instrumented_create(self: DruidK8sHook, manifest: Any) -> Any:
        phase(spec_path, "before_create", freeze_at)
        result = create_or_join(self, manifest)
        phase(spec_path, "after_create", freeze_at)
        return result

    submit = operator_module.submit

    def instrumented_submit(*args: Any, **kwargs: Any) -> Any:
        accepted = submit(*args, **kwargs)
        phase(spec_path, "after_submit", freeze_at)
        return accepted

    release_job = follow_module.release_job

    async def instrumented_release(*args: Any, **kwargs: Any) -> Any:
        released = await release_job(*args, **kwargs)
        phase(spec_path, "after_resume", freeze_at)  # frozen here, the loop stops with the process
        return released

    follow = JobFollower.run

    async def instrumented_run(self: JobFollower) -> dict[str, Any]:
        phase(spec_path, "waiting", freeze_at)
        emit = self.emit_line
        shown = 0

        def counting_emit(line: str) -> None:
            nonlocal shown
            emit(line)
            shown += 1
            if shown == spec.get("freeze_after_lines"):
                phase(spec_path, "reading_logs", freeze_at)

        self.emit_line = counting_emit
        return await follow(self)

    DruidK8sHook.create_or_join_job = instrumented_create  # type: ignore[method-assign]
    operator_module.submit = instrumented_submit  # launch_mode="overlord"
    airflow_mode.submit = instrumented_submit  # launch_mode="airflow", inside submit_suspended
    follow_module.release_job = instrumented_release
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
            report["deferral"] = {"trigger": [classpath, kwargs], "method_kwargs": deferred.kwargs}
            # The triggerer is another process: it never saw the masks this worker registered.
            _secrets_masker().reset_masker()
            module, _, name = classpath.rpartition(".")
            trigger = getattr(importlib.import_module(module), name)(**kwargs)
            event = asyncio.run(anext(trigger.run()))
            # So is the worker that resumes the task: a fresh operator, rendered again, as Airflow does.
            _secrets_masker().reset_masker()
            operator = DruidK8sTaskOperator(task_id="druid", **spec["operator"])
            operator.render_template_fields(context)
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


def serve() -> int:
    """The fork server: one forked worker per spec path on stdin; reports pids and exit codes."""
    import_airflow_and_the_provider()

    def reap_child(spec_path: str, pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        report_line(f"EXITED {spec_path} {os.waitstatus_to_exitcode(status)}")

    for line in sys.stdin:
        spec_path = line.strip()
        if not spec_path:
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_try(spec_path)
            finally:
                sys.stdout.flush()
                os._exit(code)
        report_line(f"STARTED {spec_path} {pid}")
        threading.Thread(target=reap_child, args=(spec_path, pid), daemon=True).start()
    return 0


def main(arguments: list[str]) -> int:
    if arguments == ["--serve"]:
        return serve()
    (spec_path,) = arguments
    return run_try(spec_path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
