"""The stand-in peon's side of the Overlord conversation: task actions over HTTP and the ingestion report.

A peon sends every task action to the leader's ``POST /druid/indexer/v1/action`` as Druid's
``TaskActionHolder`` (``{"task": <task JSON>, "action": {...}}``) with the internal client's credentials
(``druid_escalator_internalClientUsername`` / ``...Password``) when basic security is on. Like Druid's
``RemoteTaskActionClient`` it retries while no leader answers (503 or no connection); any other non-2xx
answer is final and raised as :class:`ActionFailed` with the message Druid's client builds:
``Error with status[500 Internal Server Error] and message[<body>]. Check overlord logs for details.``
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus
from typing import Any

import aiohttp

ACTION_PATH = "/druid/indexer/v1/action"
ESCALATOR_USER_ENV = "druid_escalator_internalClientUsername"
ESCALATOR_PASSWORD_ENV = "druid_escalator_internalClientPassword"
_RETRIES = 12
_FIRST_RETRY_SECONDS = 0.1
_MAX_RETRY_SECONDS = 2.0


class ActionFailed(Exception):
    """The Overlord answered an action with an error (message as Druid's ``IOE``)."""


class OverlordClient:
    """Sends one task's actions to the Overlord at ``url``."""

    def __init__(self, url: str, task: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self._url = url.rstrip("/") + ACTION_PATH
        self._task = dict(task)
        user, password = env.get(ESCALATOR_USER_ENV), env.get(ESCALATOR_PASSWORD_ENV)
        self._auth = aiohttp.BasicAuth(user, password or "") if user else None
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Send the actions inside over one HTTP session, its connection kept alive between them (as Druid's
        pooled HTTP client does), and close it after: a peon between its bursts of actions holds none."""
        async with aiohttp.ClientSession(auth=self._auth, trust_env=False) as session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    async def submit(self, action: Mapping[str, Any]) -> Any:
        """The action's ``result``; :class:`ActionFailed` for an error answer or no Overlord at all."""
        delay = _FIRST_RETRY_SECONDS
        last_problem = ""
        for _ in range(_RETRIES):
            try:
                if self._session is not None:
                    answered, result = await self._send(self._session, action)
                else:
                    async with aiohttp.ClientSession(auth=self._auth, trust_env=False) as session:
                        answered, result = await self._send(session, action)
                if answered:
                    return result
                last_problem = "503 Service Unavailable"
            except aiohttp.ClientConnectionError as error:
                last_problem = str(error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_SECONDS)
        raise ActionFailed(f"No leader Overlord answered the task action ({last_problem})")

    async def _send(self, session: aiohttp.ClientSession, action: Mapping[str, Any]) -> tuple[bool, Any]:
        """(True, result) for a 2xx answer, (False, None) for 503 (no leader); ActionFailed for any other."""
        async with session.post(self._url, json={"task": self._task, "action": dict(action)}) as response:
            body = await response.text()
            if response.status == HTTPStatus.SERVICE_UNAVAILABLE:
                return False, None
            if response.status // 100 == 2:
                return True, (await response.json()).get("result")
            phrase = HTTPStatus(response.status).phrase
            raise ActionFailed(
                f"Error with status[{response.status} {phrase}] and message[{body}]. "
                "Check overlord logs for details."
            )


def ingestion_report(
    task_id: str, rows: int, status: str, error_msg: str | None, segments_published: int = 0
) -> dict[str, Any]:
    """``report.json`` as a peon pushes it: ``ingestionStatsAndErrors`` with the build phase's row stats and
    the number of segments the task published (``segmentsPublished``)."""
    row_stats = {"processed": rows, "processedBytes": rows * 100, "processedWithError": 0}
    row_stats |= {"thrownAway": 0, "unparseable": 0}
    return {
        "ingestionStatsAndErrors": {
            "type": "ingestionStatsAndErrors",
            "taskId": task_id,
            "payload": {
                "ingestionState": "COMPLETED" if status == "SUCCESS" else "BUILD_SEGMENTS",
                "unparseableEvents": {},
                "rowStats": {"buildSegments": row_stats},
                "errorMsg": error_msg,
                "segmentAvailabilityConfirmed": False,
                "segmentAvailabilityWaitTimeMs": 0,
                "recordsProcessed": None,
                "segmentsRead": 0,
                "segmentsPublished": segments_published,
            },
        }
    }
