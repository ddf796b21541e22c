"""What happened in the emulated cluster during a benchmark phase, as the store's change listener saw it:
each peon Job's task, when its main container ran and when the Job ended; and the set-up of N tasks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import NAMESPACE, overlord_task
from druid_k8s_provider.hooks.job_state import is_finished


@dataclass
class Clock:
    """What happened in the emulated cluster, from the store's change listener (no list, no copy)."""

    task_of_job: dict[str, str] = field(default_factory=dict)
    pod_running: dict[str, float] = field(default_factory=dict)  # job name -> main container running
    job_ended: dict[str, float] = field(default_factory=dict)  # job name -> Complete or Failed condition
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: Any) -> None:
        """The store's event fan-out hook: the shared event, read here, never changed (so never copied)."""
        self.on_change(event.type, event.plural, event.obj)

    def on_change(self, event_type: str, plural: str, obj: dict[str, Any]) -> None:
        if plural == "jobs" and event_type == "ADDED":
            task_id = (obj["metadata"].get("annotations") or {}).get("task.id")
            if task_id:
                with self.lock:
                    self.task_of_job[obj["metadata"]["name"]] = task_id
        elif plural == "jobs" and event_type == "MODIFIED" and is_finished(obj):
            with self.lock:
                self.job_ended.setdefault(obj["metadata"]["name"], time.time())
        elif plural == "pods" and event_type == "MODIFIED":
            job = (obj["metadata"].get("labels") or {}).get("job-name")
            for status in (obj.get("status") or {}).get("containerStatuses") or ():
                if job and status.get("name") == "main" and "running" in (status.get("state") or {}):
                    with self.lock:
                        self.pod_running.setdefault(job, time.time())


def submit_and_wait_for_pods(overlord: Any, clock: Clock, n: int, seconds: float) -> list[dict[str, Any]]:
    """Submit N tasks to the Overlord, wait until each one's pod runs; what each trigger needs to know."""
    import httpx

    with httpx.Client(base_url=overlord.url, timeout=120, trust_env=False) as http:
        for number in range(n):
            task = overlord_task(number, seconds, f"index_parallel_bench_{number:05d}")
            http.post("/druid/indexer/v1/task", json=task).raise_for_status()
    deadline = time.monotonic() + 120.0 + n * 0.1
    while True:
        with clock.lock:
            running = {job: clock.task_of_job[job] for job in clock.pod_running if job in clock.task_of_job}
        if len(running) >= n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(running)} of {n} peon pods were running in time")
        time.sleep(0.2)
    return [{"name": job, "namespace": NAMESPACE, "task_id": task_id} for job, task_id in running.items()]
