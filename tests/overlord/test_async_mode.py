"""``async with OverlordEmulator(kube)`` on the test's own loop, beside ``async with KubeEmulator()``."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from druid_k8s_provider.testing import KubeEmulator, OverlordEmulator
from druid_k8s_provider.testing.tasks import index_parallel_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_async_mode_runs_a_submitted_task_and_restarts() -> None:
    async with (
        KubeEmulator() as kube,
        OverlordEmulator(kube, start_delay=0.5, pod_lookup_scale=0.01, poll_interval=0.05) as overlord,
        httpx.AsyncClient(base_url=overlord.url, trust_env=False) as http,
    ):
        task = index_parallel_task("index_parallel_wikipedia_async")
        assert (await http.post("/druid/indexer/v1/task", json=task)).status_code == 200
        await overlord.restart_async()
        status_path = f"/druid/indexer/v1/task/{task['id']}/status"
        status = (await http.get(status_path)).json()["status"]
        while status["statusCode"] == "RUNNING":
            await asyncio.sleep(0.05)
            status = (await http.get(status_path)).json()["status"]
        assert status["statusCode"] == "SUCCESS"
