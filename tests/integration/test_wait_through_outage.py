"""A waiter reading the API while the API server is down keeps trying; only a deadline or a stop ends it.

The waiter looks at its Job on its own timers (the fallback poll, the deadlines) too; when such a look
fails because the server is away, it must neither give up nor sleep through the server's return: it keeps
retrying with the capped back-off, and the watch's relist wakes it as soon as the cache is current again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_trigger_watch import follower, until

from druid_k8s_provider.hooks.druid_k8s import RetryPolicy
from druid_k8s_provider.testing import KubeEmulator
from druid_k8s_provider.triggers.job import ERROR, FINISHED

ScriptedJob = Any  # tests/integration/conftest.py ScriptedJob (conftest modules are not importable)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: Longer than one call's whole retry budget (about 5 s), so the looks made during the outage fail for good.
OUTAGE_SECONDS = 10.0
#: How soon after the server is back the outcome must be known: a few of the capped pauses.
PROMPT_SECONDS = 3 * RetryPolicy().max_wait + 2.0


async def stop_api(api: KubeEmulator) -> None:
    await asyncio.to_thread(api.run, api.server.stop())


async def start_api(api: KubeEmulator) -> None:
    await asyncio.to_thread(api.run, api.server.start(api.server.host, api.server.port))


async def test_a_waiter_that_looked_during_an_outage_sees_the_end_once_the_server_is_back(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob], caplog: pytest.LogCaptureFixture
) -> None:
    job = scripted("peon-outage", "task-outage")
    job.running()
    job.log("before the outage")
    lines: list[str] = []
    # A short fallback poll makes the waiter look (and fail) again and again while the server is down.
    waiting = asyncio.create_task(follower("peon-outage", lines, poll_interval=0.5).run())
    await until(lambda: lines == ["before the outage"])
    await stop_api(api)
    job.log("during the outage")
    job.exits(0)
    with caplog.at_level(logging.WARNING):
        await asyncio.sleep(OUTAGE_SECONDS)
        assert not waiting.done()
        await start_api(api)
        back = time.monotonic()
        event = await asyncio.wait_for(waiting, 60)
    late = time.monotonic() - back
    # Its look failed meanwhile and was retried: by the read's own retries (``jobs/peon-outage``) or, once
    # those gave up, by the waiter ("still waiting").
    assert any(
        "still waiting" in record.getMessage() or "jobs/peon-outage failed" in record.getMessage()
        for record in caplog.records
    ), "it looked meanwhile"
    assert event["status"] == FINISHED
    assert lines == ["before the outage", "during the outage"]
    assert late < PROMPT_SECONDS, f"the outcome came {late:.1f}s after the API server was back"


async def test_the_deadline_still_ends_a_wait_through_an_outage(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    scripted("peon-deadline", "task-deadline").running()
    waiting = asyncio.create_task(
        follower("peon-deadline", [], stream_logs=False, completion_deadline=time.time() + 2.0).outcome()
    )
    await until(lambda: api.metrics.open_watches >= 2)
    await stop_api(api)
    event = await asyncio.wait_for(waiting, 60)  # the server never comes back
    assert event["status"] == ERROR
    assert "Connect" in event["error"]


async def test_stopping_a_wait_ends_it_during_an_outage(
    api: KubeEmulator, scripted: Callable[[str, str], ScriptedJob]
) -> None:
    scripted("peon-stopped", "task-stopped").running()
    waiting = asyncio.create_task(follower("peon-stopped", [], poll_interval=0.5).run())
    await until(lambda: api.metrics.open_watches >= 2)
    await stop_api(api)
    await asyncio.sleep(2.0)  # retrying by now
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 10)
