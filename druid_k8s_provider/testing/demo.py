"""``make demo``: the provider's whole lifecycle on a machine with no cluster, no Docker and no Druid.

Run as ``python -m druid_k8s_provider.testing.demo`` from a clone of the repository. It

1. starts the Kubernetes API emulator in this process, and beside it the Overlord emulator
   (:class:`~druid_k8s_provider.testing.OverlordEmulator`: a stand-in Druid Overlord with its task queue,
   lockbox and Kubernetes runner, at the newest Druid version, with ``debugJobs`` so finished Jobs stay). The
   Overlord keeps a Running pod ``druid/druid-overlord-0`` (labels ``app=druid,component=overlord``), the
   template of every peon Job; the peons are the stand-in peon (see
   :mod:`druid_k8s_provider.testing.standin_peon`: not Druid, a test double) and take their locks from it;
2. points Airflow at both: ``AIRFLOW_HOME=./.demo/airflow``, the connections ``kubernetes_default`` (the
   emulator's kubeconfig) and ``druid_ingest_default`` (the Overlord's host and port, as the Apache Druid
   provider's users have it) through ``AIRFLOW_CONN_*``, the ``[druid_k8s]`` options through
   ``AIRFLOW__DRUID_K8S__*``, and the pool ``druid_k8s_peons``;
3. runs ``airflow dags test example_druid_k8s`` (every task is submitted to the Overlord, its Job released
   once the Overlord holds its locks), then ``airflow dags test druid_k8s_reaper`` with a
   ``taskCleanupDelay`` of a second so the finished Jobs are reaped, each as a subprocess talking to the
   emulators over HTTP;
4. prints, beside each Job created, the Overlord's view of its task (status, duration, and the ingestion
   report's rows processed / with errors / thrown away / unparseable), an excerpt of a peon log as Airflow
   logged it, and the Jobs reaped.

Everything it writes is under ``./.demo`` (``make clean`` removes it). Exit code 0 when both DAG runs
succeeded, the Overlord reports every task SUCCESS and the reaper deleted every Job the example created.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from druid_k8s_provider.hooks.overlord_api import INDEXER, OverlordTaskStatus
from druid_k8s_provider.launch.outcome import describe_report, report_summary
from druid_k8s_provider.naming import PEON_LABEL, TASK_ID_ANNOTATION
from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator

NAMESPACE = "druid"
OVERLORD_SELECTOR = "app=druid,component=overlord"
POOL = "druid_k8s_peons"
POOL_SLOTS = 2
EXAMPLE_DAG = "example_druid_k8s"
REAPER_DAG = "druid_k8s_reaper"
DEMO_CLEANUP_DELAY = "PT1S"
AIRFLOW_TIMEOUT_SECONDS = 240.0
_REAPER_SUMMARY = re.compile(r"Reaper summary: (\{.*?\})")
_DAG_RUN_STATE = re.compile(r"DagRun Finished: .*?\bstate=(\w+)")
# A peon line as the Airflow task log shows it: "<time> [info     ] <peon line> [airflow.task.operators...]"
_PEON_LINE_IN_TASK_LOG = re.compile(
    r"\[\w+\s*\] (?P<line>\S+ \w+ \[[^\]]+\] org\.apache\.druid\.\S+ - .*?) \[airflow\.task"
)
_EXCERPT_LINES = 8


class DemoFailed(RuntimeError):
    """A step of the demo failed; the message says which and where its full output is."""


@dataclass
class DemoResult:
    """What the demo observed, for the printed summary and for tests."""

    jobs_created: list[dict[str, Any]] = field(default_factory=list)
    dag_run_states: dict[str, str] = field(default_factory=dict)
    peon_log_excerpt: list[str] = field(default_factory=list)
    reaper_summary: dict[str, Any] = field(default_factory=dict)
    jobs_left: list[str] = field(default_factory=list)
    seconds: float = 0.0


def airflow_environment(
    workdir: Path, kube: KubeEmulator, overlord_url: str, runner_properties: Mapping[str, str]
) -> dict[str, str]:
    """The environment of the ``airflow`` subprocesses: a private Airflow home pointed at both emulators."""
    dags_folder = Path(__file__).resolve().parents[2] / "dags"
    if not (dags_folder / f"{EXAMPLE_DAG}.py").exists():
        raise DemoFailed(f"no {EXAMPLE_DAG}.py in {dags_folder}: run the demo from a clone of the repository")
    connection = {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": str(kube.kubeconfig_path), "namespace": NAMESPACE},
    }
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(connection),
            "AIRFLOW_CONN_DRUID_INGEST_DEFAULT": json.dumps(overlord_connection(overlord_url)),
            "AIRFLOW__DRUID_K8S__RUNNER_PROPERTIES": json.dumps(dict(runner_properties)),
            "AIRFLOW__DRUID_K8S__OVERLORD_POD_SELECTOR": OVERLORD_SELECTOR,
            "NO_PROXY": "*",
            "no_proxy": "*",
        }
    )
    return env


def overlord_connection(url: str) -> dict[str, Any]:
    """The ``druid_ingest_default`` connection (as JSON for ``AIRFLOW_CONN_*``) of an Overlord at ``url``,
    shaped as the Apache Druid provider's users have it: type ``druid``, host, port, schema, endpoint."""
    parsed = urlsplit(url)
    return {
        "conn_type": "druid",
        "host": parsed.hostname,
        "port": parsed.port,
        "schema": parsed.scheme,
        "extra": {"endpoint": "druid/indexer/v1/task"},
    }


def run_airflow(arguments: Sequence[str], env: Mapping[str, str], log_file: Path) -> str:
    """Run one ``airflow`` CLI command; its output goes to ``log_file`` and is returned. Raises on failure."""
    command = [sys.executable, "-m", "airflow", *arguments]
    try:
        completed = subprocess.run(
            command,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=AIRFLOW_TIMEOUT_SECONDS,
            check=False,
        )
        output = completed.stdout
    except subprocess.TimeoutExpired as timeout:
        output = timeout.stdout if isinstance(timeout.stdout, str) else ""
        log_file.write_text(output)
        raise DemoFailed(
            f"`airflow {' '.join(arguments)}` did not finish within {AIRFLOW_TIMEOUT_SECONDS:.0f}s; "
            f"its output is in {log_file}"
        ) from None
    log_file.write_text(output)
    if completed.returncode != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise DemoFailed(
            f"`airflow {' '.join(arguments)}` exited with {completed.returncode}; "
            f"full output in {log_file}.\nLast lines:\n{tail}"
        )
    return output


def describe_jobs(kube: KubeEmulator, overlord_url: str) -> list[dict[str, Any]]:
    """Each peon Job (name, Druid task id, Job condition) beside the Overlord's view of its task: status,
    duration (ms) and the ingestion report's summary (:func:`~druid_k8s_provider.launch.outcome.
    report_summary`), from one batched ``POST taskStatus`` and one ``GET reports`` per task."""
    jobs = []
    for job in kube.store.list("jobs", NAMESPACE, label_selector=f"{PEON_LABEL}=true"):
        conditions = (job.get("status") or {}).get("conditions") or []
        condition = next(
            (
                c["type"]
                for c in conditions
                if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            ),
            "Running",
        )
        task_id = (job["metadata"].get("annotations") or {}).get(TASK_ID_ANNOTATION, "?")
        jobs.append({"name": job["metadata"]["name"], "task_id": task_id, "condition": condition})
    with httpx.Client(base_url=overlord_url, timeout=30, trust_env=False) as druid:
        answer = druid.post(f"{INDEXER}/taskStatus", json=[job["task_id"] for job in jobs]) if jobs else None
        statuses = {
            task_id: OverlordTaskStatus.from_json(status, task_id)
            for task_id, status in (answer.json() if answer is not None else {}).items()
        }
        for job in jobs:
            status = statuses.get(job["task_id"])
            reports = druid.get(f"{INDEXER}/task/{job['task_id']}/reports")
            job["status"] = status.status_code if status else "unknown to the Overlord"
            job["duration_ms"] = status.duration_ms if status else None
            job["report"] = report_summary(reports.json()) if reports.status_code == 200 else None
    return jobs


def peon_log_excerpt(airflow_output: str) -> list[str]:
    """The first peon's lines as they appeared in the Airflow task log, without Airflow's own decoration."""
    lines = [
        match["line"] for match in map(_PEON_LINE_IN_TASK_LOG.search, airflow_output.splitlines()) if match
    ]
    return lines[:_EXCERPT_LINES]


def dag_run_state(airflow_output: str) -> str:
    """The final state ``airflow dags test`` reported for the DAG run."""
    states = _DAG_RUN_STATE.findall(airflow_output)
    return states[-1] if states else "unknown"


def run_demo(workdir: Path) -> DemoResult:
    """Run the whole demo under ``workdir``; see the module docstring."""
    started = time.monotonic()
    workdir = workdir.resolve()
    (workdir / "airflow").mkdir(parents=True, exist_ok=True)
    task_logs = workdir / "task-logs"
    task_logs.mkdir(exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    result = DemoResult()
    # The Overlord's runtime.properties keep finished Jobs (debugJobs, the Overlord's own setting) for the
    # summary and the reaper; Airflow's [druid_k8s] runner_properties need only the namespace.
    airflow_properties = {"druid.indexer.runner.namespace": NAMESPACE}
    overlord_properties = {**airflow_properties, "druid.indexer.runner.debugJobs": "true"}
    with (
        KubeEmulator() as kube,
        OverlordEmulator(kube, runner_properties=overlord_properties, task_log_dir=task_logs) as overlord,
    ):
        _say(
            f"Kubernetes emulator at {kube.url}; Overlord emulator (Druid {overlord.druid_version}) at "
            f"{overlord.url}, its pod {overlord.namespace}/druid-overlord-0 Running"
        )

        env = airflow_environment(workdir, kube, overlord.url, airflow_properties)
        _say("Preparing Airflow (db migrate, pool) in", env["AIRFLOW_HOME"])
        run_airflow(["db", "migrate"], env, logs / "db-migrate.log")
        run_airflow(
            ["pools", "set", POOL, str(POOL_SLOTS), "Druid peon Jobs in flight", "--include-deferred"],
            env,
            logs / "pool.log",
        )

        _say(f"Running `airflow dags test {EXAMPLE_DAG}` ...")
        example_output = run_airflow(["dags", "test", EXAMPLE_DAG], env, logs / f"{EXAMPLE_DAG}.log")
        result.jobs_created = describe_jobs(kube, overlord.url)
        result.dag_run_states[EXAMPLE_DAG] = dag_run_state(example_output)
        result.peon_log_excerpt = peon_log_excerpt(example_output)

        reaper_env = airflow_environment(
            workdir,
            kube,
            overlord.url,
            {**airflow_properties, "druid.indexer.runner.taskCleanupDelay": DEMO_CLEANUP_DELAY},
        )
        time.sleep(1.1)  # let the Jobs age past the demo's one-second taskCleanupDelay
        _say(f"Running `airflow dags test {REAPER_DAG}` (taskCleanupDelay {DEMO_CLEANUP_DELAY}) ...")
        reaper_output = run_airflow(["dags", "test", REAPER_DAG], reaper_env, logs / f"{REAPER_DAG}.log")
        summaries = _REAPER_SUMMARY.findall(reaper_output)
        if not summaries:
            raise DemoFailed(f"the reaper logged no summary; see {logs / f'{REAPER_DAG}.log'}")
        result.reaper_summary = json.loads(summaries[-1])
        result.dag_run_states[REAPER_DAG] = dag_run_state(reaper_output)
        result.jobs_left = [job["metadata"]["name"] for job in kube.store.list("jobs", NAMESPACE)]
    result.seconds = time.monotonic() - started
    return result


def print_summary(result: DemoResult, workdir: Path) -> None:
    """What a first-time user reads: what ran, what it created, what the peon said, what was reaped."""
    print(
        "\n=== druid-k8s-provider demo: Kubernetes emulator + Overlord emulator + stand-in peon "
        "(no cluster, no Druid) ==="
    )
    for dag_id, state in result.dag_run_states.items():
        print(f"DAG run {dag_id}: {state}")
    print(f"Jobs created by {EXAMPLE_DAG}: {len(result.jobs_created)}, with the Overlord's view of each task")
    for job in result.jobs_created:
        print(f"  {job['name']}  Job {job['condition']}  (task.id={job['task_id']})")
        print(f"    Overlord: {overlord_view(job)}")
    print("Peon log excerpt, as streamed into the Airflow task log:")
    for line in result.peon_log_excerpt:
        print(f"  {_compact(line)[:140]}")
    summary = result.reaper_summary
    print(
        f"Reaper: examined {summary.get('examined')}, deleted {summary.get('deleted')}, "
        f"already gone {summary.get('already_gone')}, kept running {summary.get('kept_running')}, "
        f"kept young {summary.get('kept_young')}"
    )
    print(f"Jobs left in namespace {NAMESPACE!r}: {len(result.jobs_left)}")
    print(f"Done in {result.seconds:.0f}s. Full Airflow output: {workdir / 'logs'}")


def overlord_view(job: Mapping[str, Any]) -> str:
    """``SUCCESS in 1.2s; rows processed 5, with errors 0, thrown away 0, unparseable 0`` for one task."""
    duration = job.get("duration_ms")
    took = f" in {duration / 1000:.1f}s" if isinstance(duration, int) and duration >= 0 else ""
    report = job.get("report")
    return f"{job['status']}{took}; " + (describe_report(report) if report else "no ingestion report")


def succeeded(result: DemoResult) -> bool:
    """Both DAG runs succeeded, every Job completed and the Overlord reports its task SUCCESS, and the reaper
    removed them all."""
    return (
        bool(result.jobs_created)
        and all(state == "success" for state in result.dag_run_states.values())
        and all(job["condition"] == "Complete" and job["status"] == "SUCCESS" for job in result.jobs_created)
        and not result.jobs_left
    )


def _compact(peon_line: str) -> str:
    """Shorten a Druid log line for the terminal: time of day only, ``org.apache.druid`` as ``o.a.d``."""
    return re.sub(r"^\d{4}-\d{2}-\d{2}T", "", peon_line).replace("org.apache.druid.", "o.a.d.")


def _say(*parts: str) -> None:
    print("[demo]", *parts, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"), help="where the demo writes (./.demo)")
    arguments = parser.parse_args(argv)
    try:
        result = run_demo(arguments.workdir)
    except DemoFailed as failure:
        print(f"[demo] FAILED: {failure}", file=sys.stderr)
        return 1
    print_summary(result, arguments.workdir.resolve())
    return 0 if succeeded(result) else 1


if __name__ == "__main__":
    sys.exit(main())
