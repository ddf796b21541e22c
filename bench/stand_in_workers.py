"""The stand-in worker pool of :mod:`bench.triggerer`: the Apache Druid provider's ``DruidOperator`` in N
threads, one worker slot each.

Started by the benchmark; it imports the provider, prints READY, reads its order (the connections'
environment and N Druid task specs) from stdin, and runs ``DruidOperator(json_index_file=<spec>).execute``
at the operator's defaults (``timeout=1``: a status GET every second) in one thread per task, started evenly
over the order's ``spread`` seconds. In Airflow each would hold a worker slot (a process) for the whole run;
here they share one process, so their CPU and RSS are a lower bound of what N worker slots cost. Writes when
each ``execute`` returned, its CPU time and peak RSS to ``--result``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import private_airflow_home, take_order

#: Stack size of each worker thread: the operator needs little, and a thousand default stacks add up.
THREAD_STACK_BYTES = 512 * 1024


def run_workers(tasks: list[dict[str, Any]], spread: float) -> dict[str, dict[str, Any]]:
    """``DruidOperator.execute`` per task, one thread each; when each returned, by Druid task id."""
    from airflow.providers.apache.druid.operators.druid import DruidOperator

    fired: dict[str, dict[str, Any]] = {}
    start = time.monotonic()

    def work(index: int, task: dict[str, Any]) -> None:
        time.sleep(max(0.0, start + index * spread / len(tasks) - time.monotonic()))
        operator = DruidOperator(task_id=f"druid_{index}", json_index_file=json.dumps(task))
        try:
            operator.execute({})  # type: ignore[arg-type]
            status = "SUCCESS"
        except Exception as error:  # the operator raises AirflowException for FAILED
            status = f"error: {error}"
        fired[task["id"]] = {"at": time.time(), "status": status}

    threading.stack_size(THREAD_STACK_BYTES)
    threads = [threading.Thread(target=work, args=(i, task), daemon=True) for i, task in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return fired


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    private_airflow_home()
    import psutil
    from airflow.providers.apache.druid.operators.druid import DruidOperator  # noqa: F401 (import early)

    order = take_order(args.log)
    me = psutil.Process()
    cpu_at_go = sum(me.cpu_times()[:2])
    fired = run_workers(order["tasks"], order["spread"])
    args.result.write_text(
        json.dumps(
            {
                "fired": fired,
                "cpu_seconds": sum(me.cpu_times()[:2]) - cpu_at_go,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
