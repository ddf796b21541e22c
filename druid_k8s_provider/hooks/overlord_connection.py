"""The Overlord connection (``druid_ingest_default``) read the way the Apache Druid provider reads it.

Users of ``apache-airflow-providers-apache-druid`` already have this connection: its ``DruidHook`` builds
``<scheme>://<host>:<port>/<endpoint>`` with the scheme from the connection's ``schema`` field (else its
``conn_type``), the ``endpoint`` extra (``druid/indexer/v1/task`` in Airflow's default connection), HTTP
Basic auth from login and password, and the ``ca_bundle_path`` extra. The same connection works here
unchanged; the differences are fixes: a ``conn_type`` that is no scheme (the default connection's
``druid``) means ``http``, a missing ``endpoint`` means the default one, a missing port means the scheme's.

Everything is checked before the first request, so a typo gives a :class:`DruidK8sConfigError` naming the
field and the fix rather than a connection error at submit time. An error never quotes credentials: a host
written as ``user:password@host`` is shown as ``***@host``.

The ``console_url`` extra (else the ``[druid_k8s] console_url`` option, else the connection's own URL) is
where Druid's web console is served (the Router): the operator's extra link opens the task there.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowNotFoundException
from airflow.sdk import BaseHook

from druid_k8s_provider.errors import DruidK8sConfigError

#: The Overlord's task endpoint, relative to the server root: the Druid provider's ``endpoint`` default.
TASK_ENDPOINT = "druid/indexer/v1/task"
SCHEMES = ("http", "https")
_USERINFO = re.compile(r"^([^/@]*//)?[^/@]*@")
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
    ``console_url`` is the base URL of Druid's web console, without a trailing ``/``.
    """

    conn_id: str
    base_url: str
    auth: tuple[str, str] | None = field(default=None, repr=False)
    ca_bundle_path: str | None = None
    console_url: str = ""

    def url(self, path: str) -> str:
        """The full URL of a Druid path such as ``/druid/indexer/v1/task``."""
        return f"{self.base_url}{path}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password and the Basic-auth token made of it: never shown, in logs or errors."""
        if not self.auth or not self.auth[1]:
            return ()
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return self.auth[1], token


def _config_error(conn_id: str, name: str, problem: str, fix: str) -> DruidK8sConfigError:
    return DruidK8sConfigError(f"connection {conn_id!r} {name}", problem, fix)


def _shown(text: str) -> str:
    """``text`` quoted for an error, with the ``user:password@`` of a URL or host replaced by ``***@``."""
    return repr(_USERINFO.sub(lambda match: f"{match.group(1) or ''}***@", text))


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
            f"{_shown(host)} is a URL, not a host name",
            "put only the host name in host, the scheme (http/https) in schema and the port in port",
        )
    if "@" in host:
        raise _config_error(
            conn_id,
            "host",
            f"{_shown(host)} carries credentials",
            "put only the host name in host, and the user and password in login and password",
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


def _console_url(field_name: str, value: object) -> str:
    """A web console base URL, checked: http(s), a host, a valid port, no credentials; without a trailing
    ``/``."""
    fix = "set it to where Druid's web console is served (the Router), e.g. https://druid.example.com:8888"
    if not isinstance(value, str):
        raise DruidK8sConfigError(field_name, f"{value!r} is not a URL", fix)
    try:
        parts = urlsplit(value.strip())
        valid = parts.scheme in SCHEMES and bool(parts.hostname) and parts.port != 0  # .port checks it
    except ValueError:
        valid = False
    if not valid:
        raise DruidK8sConfigError(field_name, f"{_shown(value)} is not an http(s) URL with a host", fix)
    if parts.username or parts.password:
        raise DruidK8sConfigError(
            field_name, f"{_shown(value)} carries credentials, which the link would show to its viewers", fix
        )
    return value.strip().rstrip("/")


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
    default_console_url: str | None = None,
) -> OverlordEndpoint:
    """Validate the fields of an Airflow connection into an :class:`OverlordEndpoint`.

    ``default_console_url`` is the ``[druid_k8s] console_url`` option, used when the connection has no
    ``console_url`` extra; without either the console is looked for at the connection's own URL.

    Raises :class:`DruidK8sConfigError` naming the connection and the field for a missing or malformed host,
    a schema other than http/https, a bad port, an ``endpoint`` extra that is not the task endpoint, a
    ``ca_bundle_path`` that is no file, or a console URL that is no http(s) URL.
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
    if extra.get("console_url"):
        console_url = _console_url(f"connection {conn_id!r} extra 'console_url'", extra["console_url"])
    elif default_console_url:
        console_url = _console_url("[druid_k8s] console_url", default_console_url)
    else:
        console_url = base_url
    return OverlordEndpoint(
        conn_id=conn_id,
        base_url=base_url,
        auth=auth,
        ca_bundle_path=ca_bundle_path,
        console_url=console_url,
    )


def require_connection(conn_id: str, field: str) -> None:
    """Raise :class:`DruidK8sConfigError` naming ``field`` (where ``conn_id`` came from, e.g. the
    ``[druid_k8s] druid_ingest_conn_id`` option) when Airflow has no connection ``conn_id``."""
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise undefined_connection(conn_id, field) from None


def undefined_connection(conn_id: str, field: str = "druid_ingest_conn_id") -> DruidK8sConfigError:
    return DruidK8sConfigError(
        field,
        f"the Airflow connection {conn_id!r} is not defined, and the Overlord must know every task the "
        "provider runs (it holds the task's locks); Airflow also reads a connection it cannot parse (a "
        "port that is no number, JSON that does not parse) as undefined",
        "create it with the Overlord's host, port and schema (Admin > Connections, or an AIRFLOW_CONN_<ID> "
        f"environment variable), or correct it, or point {field} at an existing one",
    )
