"""A stand-in for Druid's peon, for the Kubernetes emulator. It is NOT Apache Druid and ingests nothing.

On a real cluster the peon Job runs the ``apache/druid`` image: the peon reads its task from ``TASK_JSON``,
runs it, pushes its log and ``status.json`` to the task-log storage and exits. No Druid (and no Docker)
exists in the emulator, so this behaviour plays the peon's part just far enough for the provider to be
exercised end to end: it decodes the task the way the peon does, logs the phases a peon goes through, writes
Druid's ``TaskStatus`` where a peon with file task logs would, and exits with the task's outcome.

What it reads, as the peon would:

- The task: env ``TASK_JSON`` (base64 of the gzip of the task JSON; the overlord adapters set it directly,
  the custom template adapter through a fieldRef to the pod annotation ``task``). When the env is missing it
  reads the pod annotation ``task`` itself. Without either it fails like a peon without a task.
- The task-log location: env ``druid_indexer_logs_type`` and ``druid_indexer_logs_directory`` (the Druid
  image turns ``druid_*`` env vars into runtime properties, and the peon's container inherits them from the
  Overlord pod). With type ``file`` it writes ``<directory>/<task id>.status.json`` and
  ``<directory>/<task id>.log``, the names Druid's file task logs use. With any other type it writes nothing
  and says so in its log (it cannot reach S3 or HDFS).

What it does not do: read input data or build segments. The only "work" is a short sleep per phase.
Task-context keys, which a real Druid ignores, steer it for tests and demos:

- ``standinOutcome``: ``SUCCESS`` (default), ``FAILED`` (status FAILED, exit code 1) or ``NO_STATUS``
  (exit code 1 without writing ``status.json``, like a peon that died before reporting).
- ``standinDurationSeconds``: total run time, spread over the phases (default 1.5).
- ``standinRowCount``: rows the ingestion report says were processed (default: the inline input's rows).

With an Overlord: when its container has ``DRUID_K8S_EMULATOR_OVERLORD_URL`` (:data:`OVERLORD_URL_ENV`, set
on the Overlord pod of :class:`~druid_k8s_provider.testing.OverlordEmulator` and inherited by the Jobs that
clone it) it also acts toward that Overlord as a real peon of its task type: it reports its location and
status, takes its time-chunk locks (the task's intervals, see
:func:`~druid_k8s_provider.testing.overlord.lockbox.task_intervals`), allocates and publishes one segment
per interval (ingestion and compaction types), and writes ``<task id>.report.json`` (Druid's
``ingestionStatsAndErrors``) beside ``status.json``. A refused lock fails it as Druid's ``CliPeon`` fails
at start-up (the error line in its log, exit code 1, no ``status.json``); a refused allocation or publish
fails the task (status FAILED with the error). Without that variable it behaves as described above.
"""

from __future__ import annotations

import binascii
import contextlib
import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.job_builder import PEON_PORT, decompress_task
from druid_k8s_provider.task import DruidTask
from druid_k8s_provider.testing.overlord.lockbox import bucket, task_intervals
from druid_k8s_provider.testing.standin_actions import ActionFailed, OverlordClient, ingestion_report

if TYPE_CHECKING:
    from druid_k8s_provider.testing.behaviours import ContainerContext
    from druid_k8s_provider.testing.emulator import KubeEmulator

#: Image pattern (fnmatch) the stand-in is registered for: every tag of the official Druid image.
DRUID_IMAGE_PATTERN = "apache/druid*"
OUTCOME_CONTEXT_KEY = "standinOutcome"
DURATION_CONTEXT_KEY = "standinDurationSeconds"
DEFAULT_DURATION_SECONDS = 1.5
TASK_ANNOTATION = "task"
LOGS_TYPE_ENV = "druid_indexer_logs_type"
LOGS_DIRECTORY_ENV = "druid_indexer_logs_directory"
#: Env var of the Overlord pod (inherited by peons) giving the stand-in peon its Overlord's base URL.
OVERLORD_URL_ENV = "DRUID_K8S_EMULATOR_OVERLORD_URL"
ROWS_CONTEXT_KEY = "standinRowCount"
#: Task types that build and publish segments; the others (kill ...) only lock.
PUBLISHING_TASK_TYPES = frozenset({"index", "index_parallel", "compact", "index_hadoop"})

_OUTCOMES = ("SUCCESS", "FAILED", "NO_STATUS")
_PHASES = ("reading input", "persisting segments", "publishing segments")
_EXIT_SUCCESS = 0
_EXIT_FAILURE = 1
_EXIT_SIGTERM = 143
_CLI_PEON = "org.apache.druid.cli.CliPeon"


class TaskPayloadError(ValueError):
    """The peon could not get its task: no payload, or one that is not base64 of gzipped JSON."""


def decode_task_payload(payload: str) -> dict[str, Any]:
    """Decode ``TASK_JSON`` (or the ``task`` annotation) as the peon does: base64, gunzip, JSON object."""
    try:
        return decompress_task(payload)
    except (binascii.Error, OSError, EOFError, ValueError) as error:
        raise TaskPayloadError(f"TASK_JSON is not base64 of gzipped JSON ({error})") from error


def task_payload(ctx: ContainerContext) -> str:
    """The encoded task: env ``TASK_JSON``, else the pod's ``task`` annotation (custom template adapter)."""
    if ctx.env.get("TASK_JSON"):
        return ctx.env["TASK_JSON"]
    annotation = ((ctx.pod.get("metadata") or {}).get("annotations") or {}).get(TASK_ANNOTATION)
    if annotation:
        return str(annotation)
    raise TaskPayloadError(f"no TASK_JSON env and no {TASK_ANNOTATION!r} annotation on the pod")


def task_status(task_id: str, status: str, duration_ms: int, error_msg: str | None) -> dict[str, Any]:
    """Druid's ``TaskStatus`` JSON, as the peon pushes it to ``status.json``."""
    return {
        "id": task_id,
        "status": status,
        "duration": duration_ms,
        "errorMsg": error_msg,
        "location": {"host": None, "port": -1, "tlsPort": -1},
    }


class _PeonLog:
    """Writes lines in the layout of Druid's log4j pattern and keeps them for the pushed task log."""

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx
        self.lines: list[str] = []

    def __call__(self, logger: str, message: str, level: str = "INFO", thread: str = "main") -> None:
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S,") + f"{now.microsecond // 1000:03d}"
        line = f"{stamp} {level} [{thread}] {logger} - {message}"
        self.lines.append(line)
        self._ctx.log(line)


def _input_source(task: DruidTask) -> dict[str, Any]:
    io_config = (task.spec.get("spec") or {}).get("ioConfig") or task.spec.get("ioConfig") or {}
    return dict(io_config.get("inputSource") or {})


def _describe_input(task: DruidTask) -> str:
    """What a peon would say it is reading, from the task spec, without reading anything."""
    if task.type == "compact":
        interval = (task.spec.get("ioConfig") or {}).get("inputSpec", {}).get("interval")
        return f"segments of datasource [{task.data_source}]" + (
            f" in interval [{interval}]" if interval else ""
        )
    source = _input_source(task)
    if source.get("type") == "inline":
        return f"inline input source ({_inline_rows(task)} rows)"
    if source.get("type"):
        return f"input source of type [{source['type']}]"
    return "task input"


def _push_task_logs(
    ctx: ContainerContext,
    peon_log: _PeonLog,
    task_id: str,
    status: dict[str, Any] | None,
    report: dict[str, Any] | None = None,
) -> None:
    """Write ``status.json`` (and ``report.json``) and the log where Druid's file task logs would; say why
    when it cannot."""
    logs_type = ctx.env.get(LOGS_TYPE_ENV, "")
    directory = ctx.env.get(LOGS_DIRECTORY_ENV, "")
    logger = "org.apache.druid.indexing.common.tasklogs.FileTaskLogs"
    if logs_type != "file" or not directory:
        peon_log(
            logger,
            f"Stand-in peon: task logs type [{logs_type or 'unset'}], directory [{directory or 'unset'}]; "
            f"it writes only type [file] with {LOGS_DIRECTORY_ENV} set, so no status.json was pushed",
            level="WARN",
        )
        return
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    if status is not None:
        (target / f"{task_id}.status.json").write_text(json.dumps(status))
        peon_log(logger, f"Wrote task status to: {target / f'{task_id}.status.json'}")
    if report is not None:
        (target / f"{task_id}.report.json").write_text(json.dumps(report))
        peon_log(logger, f"Wrote task reports to: {target / f'{task_id}.report.json'}")
    (target / f"{task_id}.log").write_text("\n".join(peon_log.lines) + "\n")


async def standin_peon(ctx: ContainerContext) -> int:
    """Play a Druid peon for one task in the emulator; returns the container's exit code (see module doc)."""
    started = time.monotonic()
    peon_log = _PeonLog(ctx)
    peon_log(
        _CLI_PEON,
        f"Stand-in peon (druid-k8s-provider's emulator test double, not Apache Druid), image [{ctx.image}], "
        f"pod [{ctx.env.get('HOSTNAME', ctx.pod.get('metadata', {}).get('name', '?'))}]",
    )
    try:
        task = DruidTask.from_spec(decode_task_payload(task_payload(ctx)))
    except (TaskPayloadError, DruidK8sConfigError) as error:
        peon_log(_CLI_PEON, f"Cannot read the task: {error}", level="ERROR")
        return _EXIT_FAILURE
    outcome = str(task.context.get(OUTCOME_CONTEXT_KEY, "SUCCESS")).upper()
    duration = task.context.get(DURATION_CONTEXT_KEY, DEFAULT_DURATION_SECONDS)
    rows = task.context.get(ROWS_CONTEXT_KEY, _inline_rows(task))
    if (
        outcome not in _OUTCOMES
        or not isinstance(duration, int | float)
        or duration < 0
        or not isinstance(rows, int)
        or rows < 0
    ):
        peon_log(
            _CLI_PEON,
            f"Bad stand-in context: {OUTCOME_CONTEXT_KEY} must be one of {', '.join(_OUTCOMES)}, "
            f"{DURATION_CONTEXT_KEY} a non-negative number of seconds and {ROWS_CONTEXT_KEY} a non-negative "
            "integer",
            level="ERROR",
        )
        return _EXIT_FAILURE

    overlord_url = ctx.env.get(OVERLORD_URL_ENV)
    client = OverlordClient(overlord_url, task.spec, ctx.env) if overlord_url else None
    runner = "org.apache.druid.indexing.overlord.SingleTaskBackgroundRunner"
    thread = f"task-runner-0-priority-{task.context.get('priority', 0)}"
    if client is not None:
        try:
            async with client.connected():
                await _start_with_overlord(ctx, client, task)
        except (ActionFailed, ValueError) as error:
            peon_log(_CLI_PEON, "Error when starting up.  Failing.", level="ERROR")
            peon_log(_CLI_PEON, _exception_line(error), level="ERROR")
            _push_task_logs(ctx, peon_log, task.id, None)
            return _EXIT_FAILURE
    peon_log(runner, f"Running task[{task.id}] of type[{task.type}] for datasource[{task.data_source}]")
    peon_log(runner, f"Task directory: {ctx.env.get('TASK_DIR', '/tmp/persistent/task')}")
    phase_seconds = duration / (len(_PHASES) + 1)
    for phase in _PHASES:
        detail = _describe_input(task) if phase == "reading input" else f"datasource[{task.data_source}]"
        peon_log(
            f"org.apache.druid.indexing.common.task.{task.type}", f"Phase: {phase}, {detail}", thread=thread
        )
        if await ctx.wait_or_stop(phase_seconds):
            peon_log(_CLI_PEON, "Received SIGTERM, stopping the task", level="WARN")
            _push_task_logs(
                ctx, peon_log, task.id, task_status(task.id, "FAILED", _elapsed_ms(started), "shutdown")
            )
            return _EXIT_SIGTERM
    await ctx.wait_or_stop(phase_seconds)

    error_msg = (
        f"Stand-in peon failed on purpose ({OUTCOME_CONTEXT_KEY}={outcome})" if outcome != "SUCCESS" else None
    )
    published = 0
    if client is not None and outcome == "SUCCESS" and task.type in PUBLISHING_TASK_TYPES:
        try:
            async with client.connected():
                published = await _publish_segments(client, task, peon_log)
        except (ActionFailed, ValueError) as error:
            peon_log(
                runner, f"Exception while running task[{task.id}]: {_exception_line(error)}", level="ERROR"
            )
            outcome, error_msg = "FAILED", _exception_line(error)
    status = task_status(
        task.id, "SUCCESS" if outcome == "SUCCESS" else "FAILED", _elapsed_ms(started), error_msg
    )
    peon_log(
        runner,
        f"Task completed with status: {json.dumps({k: status[k] for k in ('id', 'status', 'duration')})}",
        level="INFO" if outcome == "SUCCESS" else "ERROR",
    )
    if outcome == "NO_STATUS":
        peon_log(_CLI_PEON, "Exiting without reporting a status (standinOutcome=NO_STATUS)")
        _push_task_logs(ctx, peon_log, task.id, None)
        return _EXIT_FAILURE
    report = (
        ingestion_report(task.id, rows, status["status"], error_msg, segments_published=published)
        if client is not None
        else None
    )
    _push_task_logs(ctx, peon_log, task.id, status, report)
    if client is not None:
        with contextlib.suppress(ActionFailed):
            await client.submit({"type": "updateStatus", "status": status})
    peon_log(_CLI_PEON, "Stand-in peon done")
    return _EXIT_SUCCESS if outcome == "SUCCESS" else _EXIT_FAILURE


async def _start_with_overlord(ctx: ContainerContext, client: OverlordClient, task: DruidTask) -> None:
    """What a peon does before running its task: report location and status, take its locks (``isReady``)."""
    location = {"host": ctx.env.get("druid_host") or None, "port": PEON_PORT, "tlsPort": -1}
    await client.submit({"type": "updateLocation", "location": location})
    await client.submit({"type": "updateStatus", "status": task_status(task.id, "RUNNING", -1, None)})
    for interval in task_intervals(task):
        lock = await client.submit(
            {"type": "timeChunkLockTryAcquire", "lockType": "EXCLUSIVE", "interval": str(interval)}
        )
        if lock is None:
            raise ValueError(f"Task[{task.id}] is not ready: cannot acquire a lock on interval[{interval}]")


async def _publish_segments(client: OverlordClient, task: DruidTask, peon_log: _PeonLog) -> int:
    """Allocate one segment per interval of the task (today's bucket without intervals) and publish them;
    the number published (0 when the Overlord's transactional insert did not succeed)."""
    schema = (task.spec.get("spec") or {}).get("dataSchema") or task.spec.get("dataSchema") or {}
    granularity = (schema.get("granularitySpec") or {}).get("segmentGranularity") or "DAY"
    timestamps = [str(interval.start.isoformat()) for interval in task_intervals(task)] or [
        dt.datetime.now(dt.UTC).isoformat()
    ]
    segments = []
    for timestamp in timestamps:
        allocated = await client.submit(
            {
                "type": "segmentAllocate",
                "dataSource": task.data_source,
                "timestamp": timestamp,
                "queryGranularity": "NONE",
                "preferredSegmentGranularity": granularity,
                "sequenceName": f"{task.id}_0",
                "previousSegmentId": None,
                "skipSegmentLineageCheck": False,
                "lockGranularity": "TIME_CHUNK",
            }
        )
        if allocated is None:
            interval = bucket(timestamp, granularity)
            raise ValueError(
                f"Could not allocate segment for row with timestamp[{timestamp}] in [{interval}]"
            )
        segments.append(
            {
                **allocated,
                "loadSpec": {"type": "local", "path": f"/druid/segments/{task.data_source}/{task.id}"},
                "dimensions": "",
                "metrics": "",
                "binaryVersion": 9,
                "size": 0,
            }
        )
    result = await client.submit({"type": "segmentTransactionalInsert", "segments": segments})
    peon_log(
        "org.apache.druid.indexing.common.actions.RemoteTaskActionClient",
        f"Published {len(segments)} segment(s) of datasource[{task.data_source}]: "
        f"success[{result['success']}]",
    )
    return len(segments) if result["success"] else 0


def _exception_line(error: Exception) -> str:
    """The exception as Java prints it: Druid's IOE for an Overlord's error answer, ISE for the rest."""
    kind = "IOE" if isinstance(error, ActionFailed) else "ISE"
    return f"org.apache.druid.java.util.common.{kind}: {error}"


def _inline_rows(task: DruidTask) -> int:
    source = _input_source(task)
    if source.get("type") != "inline":
        return 0
    return len([row for row in str(source.get("data", "")).splitlines() if row.strip()])


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def is_peon(ctx: ContainerContext) -> bool:
    """Whether the container was started as a peon: it has a task payload or runs ``/peon.sh``."""
    annotations = (ctx.pod.get("metadata") or {}).get("annotations") or {}
    launched_peon = any("peon.sh" in part for part in (*ctx.command, *ctx.args))
    return launched_peon or "TASK_JSON" in ctx.env or TASK_ANNOTATION in annotations


async def standin_druid_image(ctx: ContainerContext) -> int:
    """The ``apache/druid`` image in the emulator: the stand-in peon for peons, an idle service otherwise.

    The same image runs the Overlord (the template pod) and the peons. A container that is not a peon stays
    up, as a Druid service does, until it is stopped, so a template pod can be Running.
    """
    if is_peon(ctx):
        return await standin_peon(ctx)
    service = " ".join(ctx.args) or ctx.container_name
    ctx.log(
        f"Stand-in Druid service [{service}] of druid-k8s-provider (not Apache Druid): idle until stopped"
    )
    await ctx.stopping.wait()
    return _EXIT_SIGTERM


def register_standin_peon(kube: KubeEmulator, pattern: str = DRUID_IMAGE_PATTERN) -> None:
    """Make containers whose image matches ``pattern`` (default ``apache/druid*``) run the stand-in.

    Peon containers run :func:`standin_peon`; other containers of the image (an Overlord used as template)
    idle until stopped, see :func:`standin_druid_image`.
    """
    kube.register_image(pattern, standin_druid_image)
