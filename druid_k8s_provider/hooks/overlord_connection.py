"""The Overlord connection (``druid_ingest_default``) read the way the Apache Druid provider reads it.

Users of ``apache-airflow-providers-apache-druid`` already have this connection: its ``DruidHook`` builds
``<scheme>://<host>:<port>/<endpoint>`` with the scheme from the connection's ``schema`` field (else its
``conn_type``), the ``endpoint`` extra (``druid/indexer/v1/task`` in Airflow's default connection), HTTP
Basic auth from login and password, and the ``ca_bundle_path`` extra. The same connection works here
unchanged; the differences are fixes: a ``conn_type`` that is no scheme (the default connection's
``druid``) means ``http``, a missing ``endpoint`` means the default one, a missing port means the scheme's.

Everything is checked before the first request, so a typo gives a :class:`DruidK8sConfigError` naming the
field and the fix rather than a connection error at submit time.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from druid_k8s_provider.errors import DruidK8sConfigError

#: The Overlord's task endpoint, relative to the server root: the Druid provider's ``endpoint`` default.
TASK_ENDPOINT = "druid/indexer/v1/task"
SCHEMES = ("http", "https")
_HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?)*"
)


@dataclass(frozen=True)
class OverlordEndpoint:
    """Where and how to reach the Overlord, validated.

    ``base_url`` is the server root plus any path prefix in front of Druid's paths (a router or ingress
    prefix taken from the ``endpoint`` extra), without a trailing ``/``: Druid's paths
    (``/druid/indexer/v1/...``, ``/status``) are appended to it. ``auth`` is the Basic-auth pair or None;
    ``ca_bundle_path`` the CA certificates that verify an https Overlord (None: the system's).
    """

    conn_id: str
    base_url: str
    auth: tuple[str, str] | None = field(default=None, repr=False)
    ca_bundle_path: str | None = None

    def url(self, path: str) -> str:
        """The full URL of a Druid path such as ``/druid/indexer/v1/task``."""
        return f"{self.base_url}{path}"


def _config_error(conn_id: str, name: str, problem: str, fix: str) -> DruidK8sConfigError:
    return DruidK8sConfigError(f"connection {conn_id!r} {name}", problem, fix)


def _scheme(conn_id: str, schema: str | None, conn_type: str | None, extra: Mapping[str, Any]) -> str:
    """The URL scheme: the ``schema`` field, else a ``schema`` extra, else the conn type when it is one."""
    chosen = schema or extra.get("schema")
    if not chosen:
        return conn_type.lower() if conn_type and conn_type.lower() in SCHEMES else "http"
    if not isinstance(chosen, str) or chosen.lower().rstrip(":/") not in SCHEMES:
        raise _config_error(
            conn_id,
            "schema",
            f"{chosen!r} is not a scheme the Overlord serves",
            "set the connection's schema to 'http' or 'https' (or leave it empty for http)",
        )
    return chosen.lower().rstrip(":/")


def _host(conn_id: str, host: str | None) -> str:
    """The host as it goes into a URL (an IPv6 address in brackets)."""
    if not host or not host.strip():
        raise _config_error(
            conn_id,
            "host",
            "the connection has no host",
            "set host to the Overlord's (or the Router's) host name, e.g. druid-overlord.druid.svc",
        )
    host = host.strip()
    if "://" in host or "/" in host:
        raise _config_error(
            conn_id,
            "host",
            f"{host!r} is a URL, not a host name",
            "put only the host name in host, the scheme (http/https) in schema and the port in port",
        )
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return f"[{address}]" if address.version == 6 else str(address)
    if not _HOST_NAME.fullmatch(host):
        raise _config_error(
            conn_id,
            "host",
            f"{host!r} is not a host name" + (" (a port belongs in the port field)" if ":" in host else ""),
            "set host to a DNS name or an IP address, and the port in port",
        )
    return host


def _port(conn_id: str, port: object) -> int | None:
    if port is None or port == "":
        return None
    if isinstance(port, bool) or not isinstance(port, int | str) or not str(port).isdigit():
        raise _config_error(conn_id, "port", f"{port!r} is not a port number", "set port to a number")
    number = int(port)
    if not 0 < number < 65536:
        raise _config_error(conn_id, "port", f"{number} is out of range", "set port between 1 and 65535")
    return number


def _path_prefix(conn_id: str, extra: Mapping[str, Any]) -> str:
    """The path in front of Druid's paths, from the ``endpoint`` extra ``[prefix/]druid/indexer/v1/task``."""
    endpoint = extra.get("endpoint") or TASK_ENDPOINT
    if not isinstance(endpoint, str):
        raise _config_error(
            conn_id, "extra 'endpoint'", f"{endpoint!r} is not a path", f"set it to {TASK_ENDPOINT!r}"
        )
    normalised = endpoint.strip().strip("/")
    if normalised != TASK_ENDPOINT and not normalised.endswith(f"/{TASK_ENDPOINT}"):
        raise _config_error(
            conn_id,
            "extra 'endpoint'",
            f"{endpoint!r} is not the Overlord's task endpoint",
            f"set it to {TASK_ENDPOINT!r} (after a proxy's path prefix, if any), or remove it",
        )
    prefix = normalised[: -len(TASK_ENDPOINT)].strip("/")
    return f"/{prefix}" if prefix else ""


def _ca_bundle(conn_id: str, extra: Mapping[str, Any]) -> str | None:
    path = extra.get("ca_bundle_path")
    if not path:
        return None
    if not isinstance(path, str) or not Path(path).is_file():
        raise _config_error(
            conn_id,
            "extra 'ca_bundle_path'",
            f"{path!r} is not a readable file",
            "point it at a PEM file of the CA certificates that signed the Overlord's certificate, or "
            "remove it to use the system's",
        )
    return path


def overlord_endpoint(
    conn_id: str,
    *,
    conn_type: str | None,
    host: str | None,
    port: object,
    schema: str | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any] | None,
) -> OverlordEndpoint:
    """Validate the fields of an Airflow connection into an :class:`OverlordEndpoint`.

    Raises :class:`DruidK8sConfigError` naming the connection and the field for a missing or malformed host,
    a schema other than http/https, a bad port, an ``endpoint`` extra that is not the task endpoint, or a
    ``ca_bundle_path`` that is no file.
    """
    extra = extra or {}
    scheme = _scheme(conn_id, schema, conn_type, extra)
    netloc = _host(conn_id, host)
    number = _port(conn_id, port)
    if number is not None:
        netloc = f"{netloc}:{number}"
    ca_bundle_path = _ca_bundle(conn_id, extra)
    auth = (login, password or "") if login else None
    base_url = f"{scheme}://{netloc}{_path_prefix(conn_id, extra)}"
    return OverlordEndpoint(conn_id=conn_id, base_url=base_url, auth=auth, ca_bundle_path=ca_bundle_path)
