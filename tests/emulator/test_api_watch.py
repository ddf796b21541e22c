"""Watches as clients rely on them: ordered events, resume from a version, 410 then relist, bookmarks."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiException
from kubernetes_asyncio import client as async_client
from kubernetes_asyncio import config as async_config
from kubernetes_asyncio import watch as async_watch

from druid_k8s_provider.testing import KubeEmulator


def _stream_lines(kube: KubeEmulator, path: str, timeout: float = 10) -> list[dict[str, Any]]:
    with urllib.request.urlopen(kube.url + path, timeout=timeout) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def test_watch_from_version_replays_events_in_order(kube: KubeEmulator, k8s: Any) -> None:
    start = k8s.core.list_namespaced_config_map("default").metadata.resource_version
    k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    k8s.core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    k8s.core.delete_namespaced_config_map("a", "default")
    events = [
        (event["type"], event["object"].metadata.name, event["object"].metadata.resource_version)
        for event in watch.Watch().stream(
            k8s.core.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=1
        )
    ]
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    versions = [int(version) for _, _, version in events]
    assert versions == sorted(versions) and versions[0] > int(start)


def test_watch_without_version_starts_with_current_objects_then_streams(kube: KubeEmulator, k8s: Any) -> None:
    k8s.core.create_namespaced_config_map("default", {"metadata": {"name": "existing"}})

    def later() -> None:
        time.sleep(0.2)
        kube.store.create("configmaps", "default", {"metadata": {"name": "new"}})

    threading.Thread(target=later).start()
    seen = []
    stream = watch.Watch()
    for event in stream.stream(k8s.core.list_namespaced_config_map, "default", timeout_seconds=3):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            stream.stop()
    assert seen == [("ADDED", "existing"), ("ADDED", "new")]


def test_timeout_seconds_ends_the_stream_cleanly(kube: KubeEmulator) -> None:
    started = time.monotonic()
    assert _stream_lines(kube, "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1") == []
    assert 0.9 < time.monotonic() - started < 3


def test_version_older_than_history_gives_410_and_clients_relist() -> None:
    with KubeEmulator(cluster=False, history_window=5) as kube:
        old = kube.store.resource_version
        for index in range(10):
            kube.store.create("configmaps", "default", {"metadata": {"name": f"c{index}"}})
        events = _stream_lines(kube, f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={old}")
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith(f"too old resource version: {old} (")
        # What an informer does next: relist, then watch from the list's version.
        listed = json.loads(urllib.request.urlopen(kube.url + "/api/v1/namespaces/default/configmaps").read())
        assert len(listed["items"]) == 10
        fresh = _stream_lines(
            kube,
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"
            f"&resourceVersion={listed['metadata']['resourceVersion']}",
        )
        assert fresh == []


def test_sync_client_watch_raises_410_as_api_exception() -> None:
    with KubeEmulator(cluster=False, history_window=2) as kube:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=kube.kubeconfig_path)
        for index in range(5):
            kube.store.create("configmaps", "default", {"metadata": {"name": f"c{index}"}})
        with pytest.raises(ApiException) as gone:
            for _ in watch.Watch().stream(
                client.CoreV1Api(api).list_namespaced_config_map,
                "default",
                resource_version="1",
                timeout_seconds=1,
            ):
                pass
        assert gone.value.status == 410
        api.close()


def test_bookmarks_only_when_allowed() -> None:
    with KubeEmulator(cluster=False, bookmark_interval=0.2) as kube:
        base = "/apis/batch/v1/namespaces/default/jobs?watch=true&timeoutSeconds=1&resourceVersion=1"
        with_bookmarks = _stream_lines(kube, base + "&allowWatchBookmarks=true")
        assert with_bookmarks and {event["type"] for event in with_bookmarks} == {"BOOKMARK"}
        bookmark = with_bookmarks[0]["object"]
        assert bookmark == {
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {"resourceVersion": kube.store.resource_version},
        }
        assert _stream_lines(kube, base) == []


def test_filtered_watch_sees_objects_enter_and_leave_the_selector(kube: KubeEmulator) -> None:
    version = kube.store.resource_version
    kube.store.create("configmaps", "default", {"metadata": {"name": "x", "labels": {"team": "a"}}})
    kube.store.mutate("configmaps", "default", "x", lambda cm: cm["metadata"]["labels"].update(team="b"))
    kube.store.mutate("configmaps", "default", "x", lambda cm: cm["metadata"]["labels"].update(team="a"))
    events = _stream_lines(
        kube,
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&labelSelector=team%3Da"
        f"&resourceVersion={version}",
    )
    assert [event["type"] for event in events] == ["ADDED", "MODIFIED"]
    live = _stream_lines(kube, "/api/v1/configmaps?watch=1&timeoutSeconds=1&labelSelector=team%3Da")
    assert [(event["type"], event["object"]["metadata"]["name"]) for event in live] == [("ADDED", "x")]


def test_field_selector_watch_like_kubectl_wait(kube: KubeEmulator) -> None:
    kube.store.create("configmaps", "default", {"metadata": {"name": "wanted"}})
    kube.store.create("configmaps", "default", {"metadata": {"name": "other"}})
    events = _stream_lines(
        kube,
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dwanted",
    )
    assert [event["object"]["metadata"]["name"] for event in events] == ["wanted"]


async def test_asyncio_client_watch_resumes_from_version() -> None:
    async with KubeEmulator(cluster=False) as kube:
        api = await async_config.new_client_from_config(config_file=kube.kubeconfig_path)
        async with api:
            core = async_client.CoreV1Api(api)
            listed = await core.list_namespaced_config_map("default")
            await core.create_namespaced_config_map("default", {"metadata": {"name": "first"}})
            seen: list[tuple[str, str]] = []
            stream = async_watch.Watch()
            async for event in stream.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=listed.metadata.resource_version,
                timeout_seconds=2,
            ):
                seen.append((event["type"], event["object"].metadata.name))
                if len(seen) == 1:
                    kube.store.delete("configmaps", "default", "first")
                if len(seen) == 2:
                    stream.stop()
            assert seen == [("ADDED", "first"), ("DELETED", "first")]


def test_legacy_watch_path_for_one_object(kube: KubeEmulator) -> None:
    kube.store.create("configmaps", "default", {"metadata": {"name": "one"}})
    kube.store.create("configmaps", "default", {"metadata": {"name": "two"}})
    events = _stream_lines(kube, "/api/v1/watch/namespaces/default/configmaps/two?timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "two")]


def test_run_bridges_test_code_onto_the_emulator_loop(kube: KubeEmulator) -> None:
    import asyncio

    async def on_loop() -> bool:
        return asyncio.get_running_loop() is kube.loop

    assert kube.run(on_loop()) is True
    assert kube.run(lambda: kube.store.create("configmaps", "default", {"metadata": {"name": "x"}}))[
        "kind"
    ] == ("ConfigMap")


def test_compaction_expires_every_older_version(kube: KubeEmulator) -> None:
    version = kube.store.resource_version
    kube.store.create("configmaps", "default", {"metadata": {"name": "before"}})
    kube.store.compact()
    events = _stream_lines(kube, f"/api/v1/configmaps?watch=1&resourceVersion={version}")
    assert [(e["type"], e["object"]["reason"]) for e in events] == [("ERROR", "Expired")]


async def test_async_mode_restart_keeps_objects() -> None:
    async with KubeEmulator(cluster=False) as kube:
        kube.store.create("configmaps", "default", {"metadata": {"name": "kept"}})
        port = kube.server.port
        await kube.restart_server_async()
        assert kube.server.port == port
        api = await async_config.new_client_from_config(config_file=kube.kubeconfig_path)
        async with api:
            kept = await async_client.CoreV1Api(api).read_namespaced_config_map("kept", "default")
        assert kept.metadata.name == "kept"
