"""The operator's extra link: one click from a task in the Airflow UI to its Druid task in Druid's console.

Druid's web console (served by the Router) routes with the URL's hash: its Tasks view is ``#tasks``, and
filters on its columns follow as ``#tasks/<column><mode><value>``; the console itself goes to one task with
the exact-match filter ``task_id=<id>`` (escaping ``&`` and ``%`` in the value, which would otherwise end the
filter). So a task's page is ``<console>/unified-console.html#tasks/task_id=<id>``.

Airflow 3 resolves an operator's extra links from XCom: the worker stores each link's URL under the link's
``xcom_key`` when a try ends (and the API server reads it back). The operator stores it as soon as the task
is in the Overlord, so the link works while the task runs; before that (bad input refused, a try that ended
before its submission) there is no link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: The console's page, below its base URL.
CONSOLE_PAGE = "unified-console.html"
#: The operator attribute holding the link once the task is in the Overlord.
CONSOLE_URL_ATTRIBUTE = "druid_console_url"


def console_task_url(console_url: str, task_id: str) -> str:
    """The console's Tasks view filtered to exactly ``task_id``.

    ``console_url`` is the console's base URL (scheme, host, port and any proxy path, without a trailing
    ``/``), or the URL of its page itself (ending in ``.html``).
    """
    page = console_url if console_url.endswith(".html") else f"{console_url}/{CONSOLE_PAGE}"
    value = task_id.replace("%", "%25").replace("&", "%26")
    return f"{page}#tasks/task_id={value}"


class DruidConsoleLink(BaseOperatorLink):
    """The "Druid console" link: the operator's Druid task in Druid's web console (empty until the task is
    in the Overlord)."""

    name = "Druid console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The URL the operator recorded for this try (when it ran in this process), else the one stored in
        XCom under :attr:`xcom_key` (a try resumed after deferral), else ``""``."""
        recorded = getattr(operator, CONSOLE_URL_ATTRIBUTE, None)
        if recorded:
            return str(recorded)
        stored = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return str(stored) if stored else ""
