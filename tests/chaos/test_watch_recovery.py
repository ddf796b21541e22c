"""A triggerer's shared watch must come back promptly after every interruption, not only the first few.

A triggerer runs for days; API server restarts, load-balancer idle cuts and 410s interrupt its watches now
and then. If each interruption made the next reconnect wait longer, a long-lived triggerer would end up blind
for half a minute after every hiccup, and deferred tasks would only notice their Job's end at the next
fallback poll (``poll_interval``, a minute by default). This cuts the watches of a waiting trigger five
times, each after the previous reconnect succeeded, and measures how long each reconnect (the relist)
takes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import TaskDeferred
from emulated_cluster import NAMESPACE, OVERLORD, connected_emulator

from druid_k8s_provider.hooks.druid_k8s import DruidK8sHook
from druid_k8s_provider.operators.task import DruidK8sTaskOperator
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.testing.behaviours import sleeps

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

INTERRUPTIONS = 5
#: A reconnect slower than this, after a watch that was healthy, is the backoff of an earlier outage.
PROMPT_RECONNECT_SECONDS = 2.0


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    images = {"peon:*": sleeps(120)}
    with connected_emulator(monkeypatch, images=images, overlords={OVERLORD: "peon:1"}) as emulator:
        yield emulator


def relisted_after(kube: KubeEmulator, lists_before: int, timeout: float) -> float | None:
    """Seconds until the Jobs watch relisted (a new ``list jobs``), or None within ``timeout``."""
    started = time.monotonic()
    while kube.metrics.count(verb="list", resource="jobs") <= lists_before:
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.02)
    return time.monotonic() - started


def test_the_shared_watch_reconnects_promptly_after_each_of_repeated_interruptions(
    kube: KubeEmulator,
) -> None:
    operator = DruidK8sTaskOperator(
        task_id="druid",
        druid_task={
            "type": "index_parallel",
            "id": "watch-recovery",
            "spec": {"dataSchema": {"dataSource": "wikipedia"}},
        },
        runner_properties={"druid.indexer.runner.namespace": NAMESPACE},
        overlord_pod_name=OVERLORD,
        deferrable=True,
    )
    ti = SimpleNamespace(
        dag_id="chaos", task_id="druid", run_id="r", map_index=-1, try_number=1, xcom_push=lambda **_: None
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti})
    loop = asyncio.new_event_loop()
    triggerer = threading.Thread(target=loop.run_forever, name="triggerer", daemon=True)
    triggerer.start()
    waiting = asyncio.run_coroutine_threadsafe(anext(deferred.value.trigger.run()), loop)
    gaps: list[float | None] = []
    try:
        assert relisted_after(kube, 0, timeout=10) is not None, "the trigger never listed the Jobs"
        time.sleep(0.3)  # let the watch open after the list
        for _ in range(INTERRUPTIONS):
            lists_before = kube.metrics.count(verb="list", resource="jobs")
            kube.faults.drop_watches()
            gap = relisted_after(kube, lists_before, timeout=PROMPT_RECONNECT_SECONDS + 1)
            gaps.append(None if gap is None else round(gap, 2))
            if gap is None or gap > PROMPT_RECONNECT_SECONDS:
                break
            time.sleep(0.3)  # healthy again: the watch is open
        assert not waiting.done(), "the trigger stopped waiting although the Job still runs"
    finally:
        waiting.cancel()
        loop.call_soon_threadsafe(loop.stop)
        triggerer.join(timeout=10)
        DruidK8sHook(namespace=NAMESPACE).delete_job(deferred.value.trigger.spec.job_name, NAMESPACE)
    slow = [gap for gap in gaps if gap is None or gap > PROMPT_RECONNECT_SECONDS]
    assert len(gaps) == INTERRUPTIONS and not slow, (
        f"seconds to reconnect after each interruption: {gaps}; each should take under "
        f"{PROMPT_RECONNECT_SECONDS}s once the watch was healthy again (the backoff is never reset)"
    )
