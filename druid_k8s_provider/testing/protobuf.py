"""Decoding of protobuf request bodies, which kubectl's typed clients send (``kubectl create``,
``kubectl run``, ``kubectl auth can-i``), into the JSON form of the object."""

from __future__ import annotations

import base64
import datetime
import functools
import json
import struct
from pathlib import Path
from typing import Any

from druid_k8s_provider.testing.api_errors import bad_request
from druid_k8s_provider.testing.resources import ResourceType


def _protobuf_fields(data: bytes) -> dict[int, list[Any]]:
    """Split one protobuf message into its fields (varints as int, length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    position = 0

    def varint() -> int:
        nonlocal position
        value, shift = 0, 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    while position < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields.setdefault(number, []).append(varint())
        elif wire_type == 2:
            length = varint()
            fields.setdefault(number, []).append(data[position : position + length])
            position += length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            fields.setdefault(number, []).append(data[position : position + size])
            position += size
        else:
            raise bad_request("unable to decode the protobuf request body")
    return fields


@functools.cache
def _protobuf_schema() -> dict[str, dict[str, list[str]]]:
    """Field numbers of the Kubernetes protobuf encoding for the kinds the emulator serves.

    Generated from the k8s.io/api ``generated.proto`` descriptors (as embedded in kubectl 1.32): message
    name -> field number -> [json name, type, (message name | map value type), ("repeated")].
    """
    document = json.loads(Path(__file__).with_name("protobuf_schema.json").read_text())
    messages: dict[str, dict[str, list[str]]] = document["messages"]
    return messages


_PROTOBUF_PACKAGES = {"": "k8s.io.api.core.v1", "batch": "k8s.io.api.batch.v1"}
_MAP_SCALARS = ("string", "bytes", "bool", "int", "quantity", "time", "intorstring", "raw")


def _signed(value: Any) -> int:
    number = int(value) if not isinstance(value, bytes) else int.from_bytes(value, "little", signed=True)
    return number - (1 << 64) if number >= 1 << 63 else number


def _protobuf_timestamp(fields: dict[int, list[Any]], micro: bool) -> str | None:
    seconds = _signed(fields.get(1, [0])[-1])
    nanos = _signed(fields.get(2, [0])[-1])
    if not seconds and not nanos:
        return None
    text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{nanos // 1000:06d}Z" if micro else f"{text}Z"


def _protobuf_value(kind: str, target: str | None, value: Any) -> Any:
    """One decoded field value (``value`` is an int for varints, bytes otherwise)."""
    if kind == "string":
        return bytes(value).decode()
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return _signed(value)
    if kind in ("double", "float"):
        return struct.unpack("<d" if len(value) == 8 else "<f", bytes(value))[0]
    if kind == "message":
        return _protobuf_message(str(target), bytes(value))
    nested = _protobuf_fields(bytes(value))
    if kind in ("time", "microtime"):
        return _protobuf_timestamp(nested, micro=kind == "microtime")
    if kind == "quantity":
        return bytes(nested.get(1, [b""])[-1]).decode()
    if kind == "intorstring":
        if _signed(nested.get(1, [0])[-1]) == 1:
            return bytes(nested.get(3, [b""])[-1]).decode()
        return _signed(nested.get(2, [0])[-1])
    if kind == "raw":
        raw = bytes(nested.get(1, [b""])[-1])
        return json.loads(raw) if raw else None
    if kind == "duration":
        return f"{_signed(nested.get(1, [0])[-1]) / 1e9:g}s"
    raise bad_request(f"unable to decode a protobuf field of type {kind}")


def _is_zero(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and value in ("", 0, {})) or value is False


def _protobuf_message(name: str, data: bytes) -> dict[str, Any]:
    """A protobuf message in its JSON form; zero values are left out, as Go's omitempty does."""
    schema = _protobuf_schema().get(name)
    if schema is None:
        raise bad_request(f"unable to decode a protobuf {name}")
    decoded: dict[str, Any] = {}
    for number, values in _protobuf_fields(data).items():
        field_schema = schema.get(str(number))
        if field_schema is None:
            continue  # a field newer than the schema: dropped, as an older server does
        json_name, kind = field_schema[0], field_schema[1]
        if kind == "map":
            value_kind = field_schema[2]
            entries: dict[str, Any] = {}
            for entry in values:
                pair = _protobuf_fields(bytes(entry))
                key = bytes(pair.get(1, [b""])[-1]).decode()
                default: Any = 0 if value_kind in ("bool", "int") else b""
                raw_value = pair.get(2, [default])[-1]
                if value_kind in _MAP_SCALARS:
                    entries[key] = _protobuf_value(value_kind, None, raw_value)
                else:
                    entries[key] = _protobuf_value("message", value_kind.lstrip("."), raw_value)
            if entries:
                decoded[json_name] = entries
            continue
        target = field_schema[2] if kind == "message" else None
        if field_schema[-1] == "repeated":
            if kind in ("int", "bool") and values and isinstance(values[0], bytes):
                values = _packed_varints(b"".join(values))
            decoded[json_name] = [_protobuf_value(kind, target, value) for value in values]
            continue
        converted = _protobuf_value(kind, target, values[-1])
        if not _is_zero(converted):
            decoded[json_name] = converted
    return decoded


def _packed_varints(data: bytes) -> list[int]:
    values: list[int] = []
    value, shift = 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value, shift = 0, 0
    return values


def decode_protobuf_object(raw: bytes, rt: ResourceType) -> dict[str, Any]:
    """A protobuf request body (the ``k8s\\0`` envelope around runtime.Unknown) in its JSON form.

    kubectl's typed clients send protobuf: ``kubectl create job/namespace/configmap``, ``kubectl run``,
    ``kubectl auth can-i``.
    """
    if not raw.startswith(b"k8s\x00"):
        raise bad_request("the protobuf request body lacks the Kubernetes envelope")
    try:
        unknown = _protobuf_fields(raw[4:])
        type_meta = _protobuf_fields(bytes(unknown[1][0])) if 1 in unknown else {}
        kind = bytes(type_meta.get(2, [b""])[-1]).decode() or rt.kind
        package = _PROTOBUF_PACKAGES.get(rt.group, f"k8s.io.api.{rt.group.split('.')[0]}.{rt.version}")
        body = _protobuf_message(f"{package}.{kind}", bytes(unknown[2][0]))
    except (IndexError, KeyError, UnicodeDecodeError, struct.error):
        raise bad_request("unable to decode the protobuf request body") from None
    return {"apiVersion": rt.api_version, "kind": kind, **body}
