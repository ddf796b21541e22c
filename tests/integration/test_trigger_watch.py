"""The trigger's waiting logic against the emulator over HTTP, with every Job and pod state scripted.

What a user notices: the task resumes within a second of the Job finishing, the peon's log appears once and
in order, hopeless pods fail fast with the reason and events, a vanished Job is reported, and a thousand
waiting tasks do not mean a thousand watches.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from druid_k8s_provider.hooks.druid_k8s import DruidK8sAsyncHook
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.triggers import watch as shared_watch_module
from druid_k8s_provider.triggers.job import (
    FINISHED,
    LAUNCH_FAILED,
    MISSING,
    DruidK8sJobTrigger,
    JobFollower,
    shared_watches,
)

NAMESPACE = "druid"  # the runner namespace the fixtures create
ScriptedJob = Any  # tests/integration/conftest.py ScriptedJob (conftest modules are not importable)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def follower(name: str, lines: list[str], **kwargs: Any) -> JobFollower:
    return JobFollower(
        job_name=name,
        namespace=NAMESPACE,
        druid_task_id=f"task-{name}",
        hook=DruidK8sAsyncHook(),
        emit_line=lines.append,
        **kwargs,
    )


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_finished_job_fires_fast_with_every_log_line_once_in_order(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-ok", "task-peon-ok")
    lines: list[str] = []
    waiting = asyncio.create_task(follower("peon-ok", lines).run())
    await asyncio.sleep(0.3)
    job.running()
    job.log("starting", "ingesting")
    await until(lambda: lines == ["starting", "ingesting"])
    job.log(*[f"row {i}" for i in range(50)], "done")
    job.exits(0)
    finished_at = time.monotonic()
    event = await waiting
    assert time.monotonic() - finished_at < 1.0
    assert event["status"] == FINISHED
    assert event["job"]["status"]["conditions"][0]["type"] == "Complete"
    assert event["pod"]["metadata"]["name"] == job.pod
    assert lines == ["starting", "ingesting", *[f"row {i}" for i in range(50)], "done"]
    assert "TASK_JSON" not in json.dumps(event)  # the triggerer logs events: no task payload in them


async def test_waiters_in_one_process_share_one_watch_per_kind(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_watch_module, "WATCH_KEEP_ALIVE_SECONDS", 0.5)
    jobs = [scripted(f"peon-{i}", f"task-{i}") for i in range(20)]
    waits = [asyncio.create_task(follower(job.name, [], stream_logs=False).run()) for job in jobs]
    await until(lambda: api.metrics.open_watches >= 2)
    await asyncio.sleep(0.3)
    for job in jobs:
        job.running()
    # Every pod runs: only the Jobs watch is still needed (the pods watch expires after its keep-alive).
    await until(lambda: api.metrics.open_watches == 1)
    assert not any(wait.done() for wait in waits)
    for job in jobs:
        job.exits(0)
    events = await asyncio.gather(*waits)
    assert {event["status"] for event in events} == {FINISHED}
    assert {event["pod"]["metadata"]["name"] for event in events} == {job.pod for job in jobs}
    assert api.metrics.peak_watches == 2  # one for the Jobs, one for the pods, whatever the number of waiters
    assert api.metrics.count("list", "jobs") == 1
    assert len(shared_watches()) == 1  # the Jobs watch outlives its last waiter for the keep-alive ...
    again = scripted("peon-again", "task-again")
    again.running()
    again.exits(0)
    assert (await follower(again.name, [], stream_logs=False).run())["status"] == FINISHED
    assert api.metrics.count("list", "jobs") == 1  # ... so a task arriving then needs no relist
    await until(lambda: shared_watches() == {} and api.metrics.open_watches == 0)


async def test_dropped_and_expired_watches_are_resumed_by_relisting(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-drop", "task-drop")
    lines: list[str] = []
    waiting = asyncio.create_task(follower("peon-drop", lines, poll_interval=600).run())
    await until(lambda: api.metrics.open_watches >= 2)
    lists_before = api.metrics.count("list", "jobs")
    api.faults.expire_next_watch(2)
    api.faults.drop_watches()
    await until(lambda: api.metrics.count("list", "jobs") > lists_before)
    job.running()
    job.log("after the drop")
    job.exits(0)
    event = await asyncio.wait_for(waiting, 10)
    assert event["status"] == FINISHED
    assert lines == ["after the drop"]


async def test_hopeless_waiting_reason_fails_fast_with_reason_and_events(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-badimage", "task-badimage")
    job.event("InspectFailed", 'Failed to apply default image tag "Bad Image": invalid reference format')
    job.waiting("InvalidImageName", 'Failed to apply default image tag "Bad Image"')
    started = time.monotonic()
    event = await follower("peon-badimage", [], launch_deadline=time.time() + 3600).run()
    assert time.monotonic() - started < 2
    assert event["status"] == LAUNCH_FAILED
    assert "InvalidImageName" in event["reason"] and "Bad Image" in event["reason"]
    assert "InspectFailed" in event["events"]


async def test_image_pull_errors_fail_only_after_the_grace(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-pull", "task-pull")
    job.waiting("ErrImagePull", "pull access denied for private/druid")
    started = time.monotonic()
    event = await follower("peon-pull", [], image_pull_grace_seconds=0.8).run()
    assert 0.7 < time.monotonic() - started < 3
    assert event["status"] == LAUNCH_FAILED and "pull access denied" in event["reason"]


async def test_launch_timeout_reports_why_the_pod_is_pending(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-pending", "task-pending")
    job.unschedulable("0/1 nodes are available: 1 Insufficient cpu.")
    job.event("FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
    event = await follower("peon-pending", [], launch_deadline=time.time() + 0.5).run()
    assert event["status"] == LAUNCH_FAILED
    assert "K8sjobLaunchTimeout" in event["reason"] and "Insufficient cpu" in event["reason"]
    assert "FailedScheduling" in event["events"]


async def test_a_job_deleted_while_waiting_is_reported_missing(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-gone", "task-gone")
    job.running()
    waiting = asyncio.create_task(follower("peon-gone", []).run())
    await asyncio.sleep(0.3)
    api.store.delete("jobs", NAMESPACE, job.name)
    event = await asyncio.wait_for(waiting, 5)
    assert event["status"] == MISSING


async def test_trigger_round_trips_through_serialize_and_resumes_the_log_cursor(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    """A triggerer restart rebuilds the trigger from its kwargs; lines before the cursor are not repeated."""
    job = scripted("peon-resume", "task-resume")
    job.running()
    job.log("before 1", "before 2")
    first: list[str] = []
    probe = follower("peon-resume", first)
    crashed = asyncio.create_task(probe.run())
    await until(lambda: len(first) == 2)
    crashed.cancel()  # the triggerer dies; its successor starts from the cursor the task handed over
    classpath, kwargs = DruidK8sJobTrigger(
        job_name=job.name, namespace=NAMESPACE, log_cursor=probe.log_cursor.to_dict()
    ).serialize()
    assert classpath == "druid_k8s_provider.triggers.job.DruidK8sJobTrigger"
    rebuilt = DruidK8sJobTrigger(**kwargs)
    resumed: list[str] = []
    rebuilt._emit_line = resumed.append  # type: ignore[method-assign]
    job.log("after")
    job.exits(0)
    event = await asyncio.wait_for(anext(rebuilt.run()), 10)
    assert event.payload["status"] == FINISHED
    assert resumed == ["after"]


async def test_a_healthy_watch_means_no_polling_and_a_silent_one_falls_back_to_polls(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    job = scripted("peon-quiet", "task-quiet")
    job.running()
    waiting = asyncio.create_task(follower("peon-quiet", [], poll_interval=0.5, stream_logs=False).run())
    await until(lambda: api.metrics.open_watches >= 2)
    gets_before = api.metrics.count("get", "jobs")
    await asyncio.sleep(2.0)  # bookmarks every 0.5 s keep the watch demonstrably alive
    assert api.metrics.count("get", "jobs") == gets_before

    api.faults.add(verb="watch", latency=30)  # reconnecting watches now hang without a word
    api.faults.drop_watches()
    await asyncio.sleep(1.5)
    job.exits(0)  # no watch sees this; the fallback poll must
    event = await asyncio.wait_for(waiting, 10)
    assert event["status"] == FINISHED
    assert api.metrics.count("get", "jobs") > gets_before
    api.faults.clear()
