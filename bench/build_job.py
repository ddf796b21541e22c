"""``build_job`` throughput: Job manifests per second, per adapter, in one process on one core.

Building the manifest is the only CPU work the operator does per task besides HTTP; it includes encoding
the task JSON (gzip + base64 for ``TASK_JSON``) and deep-copying the template pod. Each adapter builds
``--count`` manifests for distinct tasks; the best of three rounds is reported, so a scheduling hiccup on a
shared machine does not count. Run ``python -m bench.build_job --help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, index_task, overlord_pod, private_airflow_home, write_result

ROUNDS = 3


def custom_template() -> dict[str, Any]:
    """A ``v1/PodTemplate`` as a ``customTemplateAdapter`` base."""
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "druid-peon-base"},
        "template": {
            "metadata": {"labels": {"tier": "peon"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "apache/druid:33.0.0", "args": ["peon"]}],
            },
        },
    }


def throughput(adapter: str, count: int) -> dict[str, Any]:
    """Manifests per second of one adapter (best of ``ROUNDS``), and the size of one manifest."""
    import json

    from druid_k8s_provider.config import RunnerConfig
    from druid_k8s_provider.job_builder import build_job
    from druid_k8s_provider.task import DruidTask

    config = RunnerConfig.from_properties(
        {"druid.indexer.runner.namespace": "druid", "druid.indexer.runner.k8s.adapter.type": adapter}
    )
    template = custom_template() if adapter == "customTemplateAdapter" else overlord_pod()
    tasks = [DruidTask.from_spec(index_task(number)) for number in range(count)]
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for task in tasks:
            build_job(task, template, config)
        best = min(best, time.perf_counter() - started)
    manifest_bytes = len(json.dumps(build_job(tasks[0], template, config)))
    return {
        "adapter": adapter,
        "count": count,
        "best_seconds": round(best, 4),
        "manifests_per_second": round(count / best),
        "manifest_bytes": manifest_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="manifests per adapter and round")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    private_airflow_home()
    adapters = []
    for adapter in ("overlordSingleContainer", "overlordMultiContainer", "customTemplateAdapter"):
        result = throughput(adapter, args.count)
        adapters.append(result)
        print(
            f"build_job {adapter}: {result['manifests_per_second']} manifests/s "
            f"({result['manifest_bytes']} bytes each)",
            flush=True,
        )
    write_result(args.results_dir, "build_job", {"adapters": adapters})
    return 0


if __name__ == "__main__":
    sys.exit(main())
