"""Pod logs of the API server: one container's lines, whole or followed, with kubectl's options
(container, previous, timestamps, tailLines, limitBytes, sinceSeconds/sinceTime) and its errors."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from druid_k8s_provider.testing.api_errors import bad_request
from druid_k8s_provider.testing.logs import LogLine
from druid_k8s_provider.testing.server_base import HandlerBase, optional_int
from druid_k8s_provider.testing.server_routing import ResourceRequest
from druid_k8s_provider.testing.tables import parse_time

log = logging.getLogger(__name__)


class PodLogs(HandlerBase):
    """The ``pods/log`` subresource."""

    async def _pod_log(self, request: web.Request, parsed: ResourceRequest) -> web.StreamResponse:
        pod = self.store.get("pods", parsed.namespace, parsed.name)
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in spec.get("containers") or []]
        init_containers = [c["name"] for c in spec.get("initContainers") or []]
        query = request.query
        container = query.get("container", "")
        if not container:
            if len(containers) != 1:
                message = (
                    f"a container name must be specified for pod {parsed.name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
                if init_containers:
                    message += f" or one of the init containers: [{' '.join(init_containers)}]"
                raise bad_request(message)
            container = containers[0]
        if container not in containers and container not in init_containers:
            raise bad_request(f"container {container} is not valid for pod {parsed.name}")
        previous = query.get("previous", "").lower() in ("true", "1")
        self._check_log_readable(pod, container, previous)
        timestamps = query.get("timestamps", "").lower() in ("true", "1")
        follow = query.get("follow", "").lower() in ("true", "1") and not previous
        tail = optional_int(query.get("tailLines"), "tailLines")
        limit_bytes = optional_int(query.get("limitBytes"), "limitBytes")
        since_seconds = optional_int(query.get("sinceSeconds"), "sinceSeconds")
        since_ns = 0
        if since_seconds is not None:
            since_ns = time.time_ns() - since_seconds * 1_000_000_000
        elif query.get("sinceTime"):
            since_ns = int(parse_time(query["sinceTime"]).timestamp() * 1_000_000_000)
        lines = [
            line
            for line in self.logs.lines(parsed.namespace, parsed.name, container, previous)
            if line.timestamp_ns >= since_ns
        ]
        consumed = len(self.logs.lines(parsed.namespace, parsed.name, container, previous))
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []

        def render(text_line: LogLine) -> bytes:
            prefix = text_line.rfc3339nano() + " " if timestamps else ""
            return (prefix + text_line.text + "\n").encode()

        if not follow:
            body = b"".join(render(line) for line in lines)
            if limit_bytes is not None:
                body = body[:limit_bytes]
            return web.Response(body=body, content_type="text/plain")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        budget = limit_bytes if limit_bytes is not None else None
        try:
            for line in lines:
                budget = await self._write_limited(response, render(line), budget)
                if budget == 0:
                    return response
            async for line in self.logs.follow(parsed.namespace, parsed.name, container, start=consumed):
                budget = await self._write_limited(response, render(line), budget)
                if budget == 0:
                    return response
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # headers are sent: the only honest signal left is cutting the stream
            log.exception("emulator log stream %s failed", request.path_qs)
            if request.transport is not None:
                request.transport.abort()
        return response

    @staticmethod
    async def _write_limited(response: web.StreamResponse, data: bytes, budget: int | None) -> int | None:
        if budget is not None:
            data = data[:budget]
            budget -= len(data)
        await response.write(data)
        return budget

    def _check_log_readable(self, pod: dict[str, Any], container: str, previous: bool) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if previous:
            if not self.logs.has_previous(namespace, name, container):
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            return
        if self.logs.has_started(namespace, name, container):
            return
        status = pod.get("status") or {}
        statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
        reason = "ContainerCreating"
        for container_status in statuses:
            if container_status.get("name") != container:
                continue
            state = container_status.get("state") or {}
            if "running" in state or "terminated" in state:
                return
            reason = (state.get("waiting") or {}).get("reason") or reason
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
