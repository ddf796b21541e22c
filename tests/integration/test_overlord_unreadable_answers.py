"""The Overlord's answers spoiled on the way (a proxy's login page, garbage) after the task was submitted:
nothing is lost, nothing runs twice, and the error says so.

A reverse proxy (tests/integration/overlord_proxy.py) sits between the operator and the Overlord emulator:
every request reaches the Overlord, which stores a submission and runs the task as usual, but the operator
reads what the proxy makes of the answer. Before the submission such an answer is refused before any write
(the bad-input corpus); here it comes after it: the submission itself, the status and task-list rounds of
the wait, the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from overlord_proxy import OverlordProxy
from structlog.testing import capture_logs
from test_bad_input_corpus import connect_druid
from test_operator_lifecycle import FakeTaskInstance, logged, operator, run

from druid_k8s_provider.errors import OverlordAnswerUnreadable, OverlordApiError
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

INDEXER = "/druid/indexer/v1"
Druid = Any  # tests/integration/conftest.py DruidCluster


@pytest.fixture
def proxy(druid: Druid, monkeypatch: pytest.MonkeyPatch) -> Iterator[OverlordProxy]:
    """An Overlord of Druid 38 (``launch_mode`` auto: airflow) behind the proxy, ``druid_ingest_default``
    pointing at the proxy. The runner looks for a released Job's pod as long as Druid does (about four
    minutes), so a retry that comes after a failed try finds the task still waiting for it."""
    druid.start(pod_lookup_scale=1.0)
    with OverlordProxy(druid.overlord.url) as spoiling:
        connect_druid(monkeypatch, spoiling.url)
        yield spoiling


def submissions(proxy: OverlordProxy) -> int:
    return proxy.forwarded[("POST", f"{INDEXER}/task")]


def test_a_submission_answered_with_a_login_page_goes_on_when_the_overlord_stored_the_task(
    kube: KubeEmulator, proxy: OverlordProxy
) -> None:
    proxy.spoil("POST", f"{INDEXER}/task")
    with capture_logs() as logs:
        result = run(operator(), FakeTaskInstance())
    assert result["status"] == "SUCCESS"
    assert any("could not be read" in line and "going on with it" in line for line in logged(logs))
    assert proxy.spoiled[("POST", f"{INDEXER}/task")] == 1
    assert submissions(proxy) == 1 and kube.metrics.creates("jobs") == 1


def test_a_submission_nobody_can_confirm_fails_the_try_and_the_retry_re_attaches(
    kube: KubeEmulator, proxy: OverlordProxy
) -> None:
    """The answer to the submission and to every question whether the Overlord has the task (its status,
    the batched status: a first try asks none before it submits) are spoiled: the try fails saying what the
    next one does, and keeps the suspended Job; the next one re-attaches (one Druid task, one Job) instead
    of submitting again."""
    proxy.spoil("POST", f"{INDEXER}/task")
    proxy.spoil("GET", f"{INDEXER}/task/[^/]+/status")
    proxy.spoil("POST", f"{INDEXER}/taskStatus")
    ti = FakeTaskInstance()
    with pytest.raises(OverlordAnswerUnreadable) as raised:
        run(operator(), ti)
    message = str(raised.value)
    assert "'druid_ingest_default'" in message and "POST /druid/indexer/v1/task" in message
    assert "re-attaches to it if it was stored" in message and "never runs twice" in message
    assert "is kept: a retry of this Airflow task submits the task and releases the Job" in message
    proxy.heal()
    ti.try_number = 2
    with capture_logs() as logs:
        result = run(operator(), ti)
    assert result["status"] == "SUCCESS"
    assert any("reattach" in line for line in logged(logs)), logged(logs)
    assert submissions(proxy) == 1 and kube.metrics.creates("jobs") == 1


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
@pytest.mark.parametrize(
    ("method", "path", "after"),
    [
        # A first try asks nothing before its submission: every batched status is the wait's.
        ("POST", f"{INDEXER}/taskStatus", 0),
        # The release check of a lone waiter (the worker's task; the triggerer's only task): its status.
        ("GET", f"{INDEXER}/task/[^/]+/status", 0),
    ],
    ids=["status-rounds", "release-check"],
)
def test_garbage_while_waiting_ends_the_try_clearly_and_the_retry_re_attaches(
    kube: KubeEmulator, proxy: OverlordProxy, deferrable: bool, method: str, path: str, after: int
) -> None:
    proxy.spoil(
        method, path, body=b"\x00\x9f\x92garbage{", content_type="application/octet-stream", after=after
    )
    ti = FakeTaskInstance()
    with pytest.raises(OverlordApiError) as raised:
        run(operator(deferrable=deferrable), ti)
    message = str(raised.value)
    assert message.startswith("Druid task 'index_parallel_druid_dag_ingest_"), message
    assert re.search(f"{method} {path}", message) and "'druid_ingest_default'" in message
    assert "not the JSON Druid sends" in message and "Fix:" in message
    assert "the task was left as it is and the next try re-attaches to it" in message
    assert sum(count for (_, spoiled), count in proxy.spoiled.items() if re.fullmatch(path, spoiled)) >= 1
    proxy.heal()
    ti.try_number = 2
    result = run(operator(deferrable=deferrable), ti)
    assert result["status"] == "SUCCESS"
    assert submissions(proxy) == 1 and kube.metrics.creates("jobs") == 1


def test_an_unreadable_report_is_a_warning_and_the_outcome_stands(
    kube: KubeEmulator, proxy: OverlordProxy
) -> None:
    proxy.spoil("GET", f"{INDEXER}/task/[^/]+/reports", body='{"ingestionStatsAndErrors": "rows: lots"')
    with capture_logs() as logs:
        result = run(operator(), FakeTaskInstance())
    assert result["status"] == "SUCCESS" and result["report"] is None
    assert sum(proxy.spoiled.values()) == 1
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert any("The ingestion report of Druid task" in line and "is missing" in line for line in warnings)
    assert any("'druid_ingest_default'" in line for line in warnings)
