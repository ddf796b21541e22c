"""Pure rules the emulated cluster applies: image references, kubexit command lines, ``$(VAR)`` expansion,
scheduling requests and QoS classes. Fast, no emulator needed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from druid_k8s_provider.testing.controllers.common import Resources, pod_requests, qos_class
from druid_k8s_provider.testing.controllers.env import expand
from druid_k8s_provider.testing.controllers.runtime import normalize_image, parse_go_duration, parse_kubexit


@pytest.mark.parametrize(
    ("image", "normalized"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("apache/druid:30.0.0", "docker.io/apache/druid:30.0.0"),
        ("localhost:5000/peon", "localhost:5000/peon:latest"),
        ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
        ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ],
)
def test_valid_image_references_are_fully_qualified(image: str, normalized: str) -> None:
    assert normalize_image(image) == normalized


@pytest.mark.parametrize("image", ["", "Busybox", "busy box", "apache/druid:", "apache//druid", "-x"])
def test_invalid_image_references_are_refused(image: str) -> None:
    assert normalize_image(image) is None


def test_kubexit_command_lines_as_the_job_builder_writes_them() -> None:
    main = parse_kubexit(["/bin/sh", "-c", '/kubexit/kubexit /bin/sh -c "/peon.sh /tmp/task 1 --x \\"y\\""'])
    assert main is not None
    assert main.child_argv == ["/bin/sh", "-c", '/peon.sh /tmp/task 1 --x "y"']
    assert not main.ignores_failure
    sidecar = parse_kubexit(["/bin/sh", "-c", '/kubexit/kubexit /bin/sh -c "sleep 1000" || true'])
    assert sidecar is not None and sidecar.ignores_failure
    direct = parse_kubexit(["/kubexit/kubexit", "python", "-m", "app"])
    assert direct is not None and direct.child_argv == ["python", "-m", "app"]


@pytest.mark.parametrize("argv", [[], ["sh", "-c", "echo kubexit"], ["sh", "-c", 'unbalanced "quote']])
def test_commands_without_kubexit_are_left_alone(argv: list[str]) -> None:
    assert parse_kubexit(argv) is None


def test_kubexit_grace_period_is_a_go_duration() -> None:
    assert parse_go_duration("30s", 0) == 30
    assert parse_go_duration("1m30s", 0) == 90
    assert parse_go_duration("250ms", 0) == 0.25
    assert parse_go_duration("soon", 7) == 7


def test_variable_references_expand_as_kubernetes_does() -> None:
    env = {"NAME": "peon", "DIR": "/tmp"}
    assert expand("$(DIR)/$(NAME).log", env) == "/tmp/peon.log"
    assert expand("$$(NAME) costs $$5", env) == "$(NAME) costs $5"
    assert expand("$(MISSING) stays", env) == "$(MISSING) stays"


@given(st.text(alphabet=st.characters(blacklist_characters="$")))
def test_text_without_dollars_is_unchanged(text: str) -> None:
    assert expand(text, {"A": "b"}) == text


def _container(cpu: str | None = None, memory: str | None = None, limits: bool = False) -> dict[str, Any]:
    amounts = {key: value for key, value in (("cpu", cpu), ("memory", memory)) if value is not None}
    return {"name": "c", "image": "x:1", "resources": {"limits" if limits else "requests": amounts}}


def test_pod_requests_count_native_sidecars_with_both_init_and_regular_containers() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {**_container(cpu="100m"), "restartPolicy": "Always"},
                _container(cpu="2", memory="1Gi"),
            ],
            "containers": [_container(cpu="500m", memory="256Mi")],
        }
    }
    # the big init container runs next to the sidecar: 2.1 CPU; afterwards 0.6 CPU; memory peaks at 1Gi
    assert pod_requests(pod) == Resources(Decimal("2.1"), Decimal(1024**3))


def test_limits_without_requests_count_as_requests() -> None:
    assert pod_requests(
        {"spec": {"containers": [_container(cpu="1", memory="1Gi", limits=True)]}}
    ) == Resources(Decimal(1), Decimal(1024**3))


@pytest.mark.parametrize(
    ("containers", "qos"),
    [
        ([{"name": "c", "image": "x:1"}], "BestEffort"),
        ([_container(cpu="1", memory="1Gi", limits=True)], "Guaranteed"),
        ([_container(cpu="1")], "Burstable"),
    ],
)
def test_qos_class(containers: list[dict[str, Any]], qos: str) -> None:
    assert qos_class({"spec": {"containers": containers}}) == qos
