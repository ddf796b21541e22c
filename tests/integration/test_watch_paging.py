"""The shared watch's list in pages, and waiters that wait for a (re)list instead of reading for themselves.

What a user notices: a triggerer with thousands of deferred tasks gets every outcome (and keeps only a
small part of each peon in memory) even when its first list of every peon is more than one page, when the
API server compacts its history in the middle of that list, and when the list is slow; and a slow list is
not made slower by every waiting task reading its own Job and pods meanwhile (the emulator counts each
request).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import pytest

from druid_k8s_provider.hooks import druid_k8s_async
from druid_k8s_provider.hooks.druid_k8s import DruidK8sAsyncHook
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.triggers.job import FINISHED, JobFollower, shared_watches
from druid_k8s_provider.triggers.watch import SharedWatch

NAMESPACE = "druid"  # the runner namespace the fixtures create
ScriptedJob = Any  # tests/integration/conftest.py ScriptedJob (conftest modules are not importable)
PAGE_SIZE = 5
PEONS = 12  # three pages

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def follower(name: str) -> JobFollower:
    return JobFollower(
        job_name=name,
        namespace=NAMESPACE,
        druid_task_id=f"task-{name}",
        hook=DruidK8sAsyncHook(),
        stream_logs=False,
    )


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def jobs_watch() -> SharedWatch:
    (watch,) = (watch for key, watch in shared_watches().items() if key[-1] == "jobs")
    return watch


def after_each_jobs_page(monkeypatch: pytest.MonkeyPatch, action: Callable[[int], None]) -> None:
    """Call ``action(page number)`` as each page of the Jobs watch's list comes in (the pods' are left be)."""
    heard = SharedWatch._heard
    pages = 0

    def counting(self: SharedWatch) -> None:
        nonlocal pages
        if self.path.endswith("/jobs"):
            pages += 1
            action(pages)
        heard(self)

    monkeypatch.setattr(SharedWatch, "_heard", counting)


@pytest.fixture
def peons(api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]) -> list[ScriptedJob]:
    jobs = [scripted(f"peon-{i:02}", f"task-{i:02}") for i in range(1, PEONS + 1)]
    for job in jobs:
        job.running()
    return jobs


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(druid_k8s_async, "LIST_PAGE_SIZE", PAGE_SIZE)


async def test_a_list_of_several_pages_misses_neither_its_objects_nor_a_change_made_meanwhile(
    api: KubeEmulator,
    peons: list[ScriptedJob],
    scripted: Callable[[str, str], ScriptedJob],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def create_between_pages(page: int) -> None:
        if page == 1:  # sorts before the continue token: only the watch from the list's version shows it
            scripted("peon-00-late", "task-late")

    after_each_jobs_page(monkeypatch, create_between_pages)
    waits = [asyncio.create_task(follower(job.name).run()) for job in peons]
    await until(lambda: any(key[-1] == "jobs" for key in shared_watches()) and jobs_watch().synced.is_set())
    assert {job.name for job in peons} <= set(jobs_watch().objects)  # every page of the list is cached
    await until(lambda: "peon-00-late" in jobs_watch().objects)
    for job in peons:
        job.exits(0)
    # A triggerer caches a Job per deferred task: of its pod template only the task (the triggerer masks its
    # credentials before logging the peon's lines), not the runner's pod spec.
    for cached in jobs_watch().objects.values():
        (main,) = cached["spec"]["template"]["spec"]["containers"]
        assert main == {"name": "main", "env": [{"name": "TASK_JSON", "value": ANY}]}
    assert '"image"' not in json.dumps(jobs_watch().objects)
    events = await asyncio.gather(*waits)
    assert [event["status"] for event in events] == [FINISHED] * PEONS
    assert {event["job"]["spec"]["activeDeadlineSeconds"] for event in events} == {600}
    assert api.metrics.count("list", "jobs") == 3  # 12 Jobs in pages of 5
    assert api.metrics.count("get", "jobs") == 0  # nobody read their Job for themselves


async def test_a_continue_token_expiring_mid_list_starts_the_list_again(
    api: KubeEmulator, peons: list[ScriptedJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    def compact_once(page: int) -> None:
        if page == 1:  # the namespace moves on and etcd compacts past the first page's continue token
            peons[0].event("Pulled", "Successfully pulled image")
            api.store.compact()

    after_each_jobs_page(monkeypatch, compact_once)
    waits = [asyncio.create_task(follower(job.name).run()) for job in peons]
    await until(lambda: any(key[-1] == "jobs" for key in shared_watches()) and jobs_watch().synced.is_set())
    assert sorted(jobs_watch().objects) == [job.name for job in peons]
    for job in peons:
        job.exits(0)
    events = await asyncio.gather(*waits)
    assert [event["status"] for event in events] == [FINISHED] * PEONS
    assert api.metrics.count("list", "jobs", status=410) == 1
    assert api.metrics.count("list", "jobs", status=200) == 1 + 3  # the first page, then the whole list


async def test_waiters_wait_for_a_slow_list_or_relist_instead_of_reading_for_themselves(
    api: KubeEmulator, peons: list[ScriptedJob]
) -> None:
    first, later = peons[: PEONS // 2], peons[PEONS // 2 :]
    # The first list is slower than waiters used to wait for it (five seconds) before reading directly.
    api.faults.add(verb="list", resource="jobs", latency=6.0, count=1)
    waits = [asyncio.create_task(follower(job.name).run()) for job in first]
    await until(lambda: any(key[-1] == "jobs" for key in shared_watches()) and jobs_watch().synced.is_set())
    watch = jobs_watch()
    await until(lambda: api.metrics.open_watches >= 1)

    # The watch breaks and its relist is slow; more tasks defer meanwhile, and the first ones finish.
    api.faults.add(verb="list", resource="jobs", latency=3.0, count=1)
    # The namespace moves on, then etcd compacts: whether the Jobs stream was already open (it breaks) or
    # only opening from the list's version (410), the watch cannot resume: it relists.
    peons[0].event("Pulled", "Successfully pulled image")
    api.store.compact()
    api.faults.drop_watches()
    await until(lambda: not watch.synced.is_set())
    waits += [asyncio.create_task(follower(job.name).run()) for job in later]
    for job in first:
        job.exits(0)
    await until(watch.synced.is_set)
    for job in later:
        job.exits(0)

    events = await asyncio.gather(*waits)
    assert [event["status"] for event in events] == [FINISHED] * PEONS
    assert api.metrics.count("get", "jobs") == 0
    assert api.metrics.count("list", "jobs") == 2 * 3  # the list and the relist, three pages each
