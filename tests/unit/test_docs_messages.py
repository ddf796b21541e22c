"""Error messages quoted in the docs still occur in the package's source.

A user searching the docs for the message in a failed task's log must find it, so the docs quote messages
verbatim, each in a fenced block right after the marker ``<!-- quoted-message -->``. Variable parts are
written as ``<placeholders>``. Every literal stretch between placeholders must be made of the string
literals of ``druid_k8s_provider`` (constants and the fixed parts of f-strings), in long pieces, so a
message reworded in the code without the docs (or the other way round) fails here.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

import druid_k8s_provider

DOCS = Path(__file__).resolve().parents[2] / "docs"
PACKAGE = Path(druid_k8s_provider.__file__).resolve().parent
MARKER = "<!-- quoted-message -->"
QUOTED_BLOCK = re.compile(re.escape(MARKER) + r"\s*\n(?:\s*\n)*```[^\n]*\n(?P<body>.*?)\n```", re.DOTALL)
PLACEHOLDER = re.compile(r"<[^<>\n]+>")
# A stretch may be stitched from several literals (messages are built from parts: a property name, a
# problem, ". Fix: ", a fix), but each part must be at least MIN_PIECE characters of one literal, or a whole
# literal (without its edge spaces) with a word in it, or punctuation between them; short common literals
# ("s", "id") cannot make up a message that is not in the code.
MIN_PIECE = 8


@cache
def source_literals() -> tuple[str, ...]:
    """The text of every string literal in the package; f-strings contribute their fixed parts."""
    literals: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.append(node.value)
    return tuple(literals)


@cache
def _all_literals_text() -> str:
    return "\x00".join(source_literals())


def quoted_messages() -> list[tuple[str, str]]:
    """(page, message line) for every quoted message in the docs."""
    messages = []
    for page in sorted(DOCS.glob("*.md")):
        for block in QUOTED_BLOCK.finditer(page.read_text(encoding="utf-8")):
            messages += [(page.name, line.strip()) for line in block["body"].splitlines() if line.strip()]
    return messages


def literal_stretches(message: str) -> list[str]:
    """The fixed text of a quoted message, cut at its placeholders, without edge quotes and spaces."""
    stretches = [part.strip().strip("'\"`").strip() for part in PLACEHOLDER.split(message)]
    return [stretch for stretch in stretches if len(re.sub(r"\W", "", stretch)) >= 2]


def _longest_literal_prefix(text: str) -> int:
    """Length of the longest prefix of ``text`` found inside one literal (prefixes of a match match too)."""
    haystack = _all_literals_text()
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if text[:middle] in haystack:
            low = middle
        else:
            high = middle - 1
    return low


def covered_by_source(stretch: str) -> bool:
    """True when ``stretch`` can be read off the package's literals (see MIN_PIECE).

    Dynamic programming over positions: from a reachable position, a piece may end anywhere from MIN_PIECE
    characters on up to the longest literal prefix there (every shorter prefix of a match matches too), at
    the end of a whole literal, or one punctuation character further.
    """
    whole_literals = {
        literal.strip() for literal in source_literals() if len(re.sub(r"\W", "", literal)) >= 3
    }
    reachable = [False] * (len(stretch) + 1)
    reachable[0] = True
    for position in range(len(stretch)):
        if not reachable[position]:
            continue
        rest = stretch[position:]
        for length in range(MIN_PIECE, _longest_literal_prefix(rest) + 1):
            reachable[position + length] = True
        for literal in whole_literals:
            if rest.startswith(literal):
                reachable[position + len(literal)] = True
        if not re.match(r"\w", rest):
            reachable[position + 1] = True  # punctuation or space joining two parts
    return reachable[len(stretch)]


def test_the_docs_quote_messages_at_all() -> None:
    pages = {page for page, _ in quoted_messages()}
    assert {"operations.md", "adapters.md", "configuration.md"} <= pages


@pytest.mark.parametrize(("page", "message"), quoted_messages())
def test_quoted_message_occurs_in_the_package_source(page: str, message: str) -> None:
    stretches = literal_stretches(message)
    assert stretches, f"{page}: quoted message {message!r} has no fixed text to check"
    missing = [stretch for stretch in stretches if not covered_by_source(stretch)]
    assert not missing, (
        f"{page} quotes {message!r}, but {missing} is not in druid_k8s_provider's source: "
        "update the docs to the message the code gives"
    )


def test_a_reworded_message_is_caught() -> None:
    """The check itself: a message that is not in the code does not pass."""
    assert covered_by_source("the property is required and missing")
    assert not covered_by_source("the property is mandatory and absent")
