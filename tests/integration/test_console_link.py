"""The operator's "Druid console" extra link: from a task in the Airflow UI to its Druid task in Druid's web
console, against both emulators.

Airflow 3 shows an extra link from XCom (the worker stores each link's URL under the link's ``xcom_key``
when a try ends, by calling its ``get_link``); the operator stores it as soon as the task is in the
Overlord. ``tests/integration/test_operator_dags_test.py`` checks the same through ``airflow dags test``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from test_operator_lifecycle import FakeTaskInstance, operator, run

from druid_k8s_provider import links
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.links import DruidConsoleLink, console_task_url
from druid_k8s_provider.testing import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

Druid = Any  # tests/integration/conftest.py DruidCluster
LINK_KEY = DruidConsoleLink().xcom_key
TI_KEY = SimpleNamespace(dag_id="druid_dag", task_id="ingest", run_id="manual__1", map_index=-1, try_number=1)


def stored_in_xcom(ti: FakeTaskInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's XCom, as the link reads it in a worker: what this task instance pushed."""
    monkeypatch.setattr(links, "XCom", SimpleNamespace(get_value=lambda *, ti_key, key: ti.xcom.get(key)))


def test_the_link_opens_the_submitted_task_in_the_console(kube: KubeEmulator, druid: Druid) -> None:
    druid.start()
    ti = FakeTaskInstance()
    op = operator()
    result = run(op, ti)
    expected = f"{druid.overlord.url}/unified-console.html#tasks/task_id={result['druid_task_id']}"
    assert ti.xcom[LINK_KEY] == expected
    assert DruidConsoleLink().get_link(op, ti_key=TI_KEY) == expected  # what Airflow stores at the try's end
    assert DruidConsoleLink().name == "Druid console"


def test_the_link_is_there_while_the_task_waits_deferred_and_after_it_resumes(
    kube: KubeEmulator, druid: Druid, monkeypatch: pytest.MonkeyPatch
) -> None:
    druid.start()
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        operator(deferrable=True).execute({"ti": ti})  # type: ignore[arg-type]
    task_id = deferred.value.trigger.spec.druid_task_id
    expected = f"{druid.overlord.url}/unified-console.html#tasks/task_id={task_id}"
    assert ti.xcom[LINK_KEY] == expected  # stored before the deferral: the UI shows it while it waits
    stored_in_xcom(ti, monkeypatch)
    resumed = operator(deferrable=True)  # the worker that resumes it is another process
    assert DruidConsoleLink().get_link(resumed, ti_key=TI_KEY) == expected


def test_the_console_url_extra_and_option_give_the_consoles_address(
    kube: KubeEmulator, druid: Druid, monkeypatch: pytest.MonkeyPatch
) -> None:
    druid.start()
    monkeypatch.setenv("AIRFLOW__DRUID_K8S__CONSOLE_URL", "https://druid-router.example.com:9088/")
    ti = FakeTaskInstance()
    result = run(operator(), ti)
    assert ti.xcom[LINK_KEY] == (
        f"https://druid-router.example.com:9088/unified-console.html#tasks/task_id={result['druid_task_id']}"
    )
    host, port = druid.overlord.url.removeprefix("http://").rsplit(":", 1)
    extra = {"console_url": "https://druid.example.com/console"}  # the connection's extra wins
    connection = {"conn_type": "druid", "host": host, "port": int(port), "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_DRUID_INGEST_DEFAULT", json.dumps(connection))
    ti = FakeTaskInstance(run_id="manual__2")
    result = run(operator(), ti)
    assert ti.xcom[LINK_KEY] == (
        f"https://druid.example.com/console/unified-console.html#tasks/task_id={result['druid_task_id']}"
    )


def test_there_is_no_link_before_the_task_is_in_the_overlord(
    kube: KubeEmulator, druid: Druid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input refused before the submission: nothing stored, and the link Airflow stores at the try's end is
    empty (a new try starts with the task instance's XCom cleared), which the UI shows as no link."""
    druid.start()
    ti = FakeTaskInstance()
    op = operator(launch_mode="kubernetes")
    with pytest.raises(DruidK8sConfigError):
        run(op, ti)
    assert LINK_KEY not in ti.xcom and op.druid_console_url is None
    stored_in_xcom(ti, monkeypatch)
    assert DruidConsoleLink().get_link(op, ti_key=TI_KEY) == ""


@pytest.mark.parametrize(
    ("console", "task_id", "url"),
    [
        ("http://router:8888", "index_wiki_attempt1", "http://router:8888/unified-console.html#tasks/task_id=index_wiki_attempt1"),
        ("https://d.example.com/druid", "a&b%c", "https://d.example.com/druid/unified-console.html#tasks/task_id=a%26b%25c"),
        ("https://d.example.com/unified-console.html", "t", "https://d.example.com/unified-console.html#tasks/task_id=t"),
    ],
)  # fmt: skip
def test_the_console_url_of_a_task(console: str, task_id: str, url: str) -> None:
    """The console's own filter form: ``&`` would end the filter and ``%`` start an escape, so they are
    escaped as the console escapes them."""
    assert console_task_url(console, task_id) == url
