"""An API server that drains before it stops, as a real kube-apiserver does on SIGTERM.

Observed on a real cluster: streams already open (a watch, a followed log) keep being served until they
end or the drain times out, new work is refused, and then the server is gone (connection refused) until the
new process is ready. Clients' recovery after a restart depends on exactly that sequence.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from druid_k8s_provider.testing import KubeEmulator


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def stream(kube: KubeEmulator, path: str, lines: list[bytes], ended: threading.Event) -> threading.Thread:
    """Read a streaming response line by line in a thread; ``ended`` is set however it ends."""

    def read() -> None:
        try:
            with urllib.request.urlopen(kube.url + path, timeout=30) as response:
                for line in response:
                    lines.append(line)
        except Exception:
            pass  # cut by the server
        finally:
            ended.set()

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def draining(kube: KubeEmulator, seconds: float) -> threading.Thread:
    thread = threading.Thread(
        target=kube.run, args=(kube.server.stop(drain=seconds),), kwargs={"timeout": 60}
    )
    thread.start()
    return thread


def refused(kube: KubeEmulator) -> bool:
    """Whether a new connection is refused (one that came as the server began to stop is cut: not yet)."""
    try:
        urllib.request.urlopen(kube.url + "/api/v1/namespaces/default/configmaps", timeout=5).close()
    except urllib.error.URLError as error:
        return isinstance(error.reason, ConnectionRefusedError)
    except ConnectionError:
        return False
    return False


def test_a_drain_keeps_open_watches_until_it_times_out_and_refuses_new_connections(
    kube: KubeEmulator,
) -> None:
    lines: list[bytes] = []
    ended = threading.Event()
    reader = stream(kube, "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=60", lines, ended)
    until(lambda: kube.metrics.open_watches == 1)
    stopping = draining(kube, seconds=1.5)
    until(lambda: refused(kube))
    kube.store.create("configmaps", "default", {"metadata": {"name": "during-the-drain"}})
    until(lambda: any(b"during-the-drain" in line for line in lines))  # the open watch is still served
    assert not ended.is_set()
    stopping.join()
    reader.join(timeout=5)
    assert ended.is_set(), "the drain is over: the stream was cut"
    assert refused(kube)


def test_a_followed_log_is_served_to_its_end_during_a_drain(kube: KubeEmulator) -> None:
    kube.store.create(
        "pods",
        "default",
        {"metadata": {"name": "peon"}, "spec": {"containers": [{"name": "main", "image": "peon"}]}},
    )
    kube.logs.mark_started("default", "peon", "main")
    kube.logs.append("default", "peon", "main", "first line")
    lines: list[bytes] = []
    ended = threading.Event()
    stream(kube, "/api/v1/namespaces/default/pods/peon/log?follow=true", lines, ended)
    until(lambda: lines == [b"first line\n"])
    stopping = draining(kube, seconds=30)
    until(lambda: refused(kube))
    kube.logs.append("default", "peon", "main", "last line")
    kube.logs.close("default", "peon", "main")
    assert ended.wait(5)
    assert lines == [b"first line\n", b"last line\n"]
    stopping.join(timeout=5)
    assert not stopping.is_alive(), "nothing left to serve: the drain ended before its time"


@pytest.mark.parametrize("drain", [0.0, 1.0])
def test_a_drained_server_starts_again_on_its_port(kube: KubeEmulator, drain: float) -> None:
    port = kube.server.port
    kube.restart_server(drain=drain)
    assert kube.server.port == port and not refused(kube)


@pytest.mark.parametrize("drain", [0.0, 0.5])
def test_a_request_racing_the_stop_is_answered_refused_or_cut_never_left_hanging(
    kube: KubeEmulator, drain: float
) -> None:
    outcomes = []
    for _ in range(20):
        stopping = draining(kube, seconds=drain)
        try:
            urllib.request.urlopen(kube.url + "/api/v1/namespaces/default/configmaps", timeout=5).close()
            outcomes.append("answered")
        except urllib.error.URLError as error:
            outcomes.append(type(error.reason).__name__)
        except ConnectionError as error:
            outcomes.append(type(error).__name__)
        stopping.join()
        kube.run(kube.server.start(kube.server.host, kube.server.port))
    assert "TimeoutError" not in outcomes, outcomes
