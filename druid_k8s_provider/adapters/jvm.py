"""The peon's JVM options and the main container's memory, as Druid's overlord adapters derive them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from druid_k8s_provider.adapters.layout import DruidLayout
from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.config_names import RUNNER_PREFIX
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.task import DruidTask

PEON_PORT = 8100
PEON_TLS_PORT = 8091
DEFAULT_HEAP = "1g"
JAVA_OPTS_ARRAY_PROPERTY = RUNNER_PREFIX + "javaOptsArray"

# Guava's breaking whitespace, which Druid's option splitter uses, excludes the non-breaking spaces.
_NON_BREAKING_SPACES = "\u00a0\u2007\u202f"
# Java's \s: what Druid splits each option on before it looks for sizes.
_JAVA_WHITESPACE = re.compile(r"[ \t\n\x0b\f\r]+")
_DECIMAL_UNITS = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_BINARY_UNITS = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}


def java_options(task: DruidTask, config: RunnerConfig, layout: DruidLayout) -> list[str]:
    """The peon's JVM options, in Druid's order: runner array, task context, task directory (Druid 34+),
    then the port settings."""
    tls = config.enable_tls_port
    tls_port = PEON_TLS_PORT if tls else -1
    base_task_dir = (
        [f"-Ddruid.indexer.task.baseTaskDir={config.base_task_dir}"]
        if layout.task_dir_from_peon_script
        else []
    )
    return [
        *config.java_opts_array,
        *split_java_opts(task.java_opts or ""),
        *base_task_dir,
        f"-Ddruid.port={PEON_PORT}",
        f"-Ddruid.plaintextPort={PEON_PORT}",
        f"-Ddruid.tlsPort={tls_port}",
        f"-Ddruid.task.executor.tlsPort={tls_port}",
        f"-Ddruid.task.executor.enableTlsPort={'true' if tls else 'false'}",
    ]


def split_java_opts(text: str) -> list[str]:
    """Split options on white space outside double quotes, keeping the quotes, as Druid's splitter does."""
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    for character in text:
        if character == '"':
            in_quotes = not in_quotes
        if not in_quotes and character.isspace() and character not in _NON_BREAKING_SPACES:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(character)
    if current:
        tokens.append("".join(current))
    return tokens


def parse_human_readable_bytes(text: str) -> int:
    """Druid's human-readable byte sizes: ``k/m/g/t/p`` are powers of 1000, ``KiB``... powers of 1024."""
    stripped = text.strip()
    lowered = stripped.lower()
    multiplier = 1
    digits = stripped
    for units in (_BINARY_UNITS, _DECIMAL_UNITS):
        for suffix, factor in units.items():
            if lowered.endswith(suffix):
                multiplier, digits = factor, stripped[: -len(suffix)]
                break
        if multiplier != 1:
            break
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(
            f"{text!r} is not a size (a whole number, optionally with k, m, g, t, KiB, MiB, GiB, TiB)"
        )
    return int(digits) * multiplier


def container_memory_bytes(options: Sequence[str], sources: str = JAVA_OPTS_ARRAY_PROPERTY) -> int:
    """1.2 x (heap + direct memory), as Druid sizes the peon container (Java double arithmetic, truncated).

    Every option is first split on white space, so ``["-Xms2g -Xmx4g"]`` is read like
    ``["-Xms2g", "-Xmx4g"]``: the JVM gets the options through ``peon.sh``'s shell, which splits them
    (ours: Druid's adapters match ``-Xmx`` at the start of an element only). Heap is the last ``-Xmx``
    (default 1g), direct memory the last ``-XX:MaxDirectMemorySize=`` (default: the heap). ``sources``
    names where the options came from, for the error message.
    """
    words = [word for option in options for word in _JAVA_WHITESPACE.split(option) if word]
    heap = _last_size(words, "-Xmx", sources) or parse_human_readable_bytes(DEFAULT_HEAP)
    direct = _last_size(words, "-XX:MaxDirectMemorySize=", sources) or heap
    return int((heap + direct) * 1.2)


def _last_size(options: Sequence[str], prefix: str, sources: str) -> int | None:
    """The size given by the last option starting with ``prefix``, or None when there is none."""
    matching = [option for option in options if option.startswith(prefix)]
    if not matching:
        return None
    try:
        return parse_human_readable_bytes(matching[-1][len(prefix) :])
    except ValueError as error:
        raise DruidK8sConfigError(
            sources,
            f"JVM option {matching[-1]!r}: {error}",
            f"write the size as Druid reads it, e.g. {prefix}2g (10^9 bytes) or {prefix}2GiB (2^30 bytes)",
        ) from error
