"""Error messages quoted in the docs are the messages the package's code gives.

A user searching the docs for the message in a failed task's log must find it, so the docs quote messages
verbatim, each in a fenced block right after the marker ``<!-- quoted-message -->``. Variable parts are
written as ``<placeholders>``. Every literal stretch between placeholders must be made of the string
literals of ``druid_k8s_provider``'s code (constants and the fixed parts of f-strings; docstrings do not
count, they are not messages), in long pieces, and a quoted line that ends in fixed text must end where a
literal ends, so a message reworded in the code without the docs (or the other way round), or quoted
without its tail, fails here.
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
# problem, ". Fix: ", a fix), as the code joins them: the tail of one literal, whole literals, the head of
# one, with punctuation between them. Each part must be at least MIN_PIECE characters of one literal, or a
# whole literal (without its edge spaces) with a word in it; short common literals ("s", "id") cannot make
# up a message that is not in the code. Right after a placeholder any whole literal may start the stretch
# (the fixed part of an f-string after a value, such as "s): " in "{seconds}s): ").
MIN_PIECE = 8
# Separates the literals in the text searched, so no piece spans two of them.
SEPARATOR = "\x00"


@cache
def source_literals() -> tuple[str, ...]:
    """The text of every string literal in the package's code; f-strings contribute their fixed parts.

    Docstrings are left out: they describe messages in other words, and a quoted message pieced together
    from a docstring would pass while the code says something else.
    """
    literals: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                literals.append(node.value)
    return tuple(literals)


@cache
def _all_literals_text() -> str:
    return SEPARATOR + SEPARATOR.join(literal.strip() for literal in source_literals()) + SEPARATOR


def quoted_messages() -> list[tuple[str, str]]:
    """(page, message line) for every quoted message in the docs."""
    messages = []
    for page in sorted(DOCS.glob("*.md")):
        for block in QUOTED_BLOCK.finditer(page.read_text(encoding="utf-8")):
            messages += [(page.name, line.strip()) for line in block["body"].splitlines() if line.strip()]
    return messages


def literal_stretches(message: str) -> list[tuple[str, bool, bool]]:
    """The fixed text of a quoted message, cut at its placeholders, without edge quotes and spaces; each
    with whether a placeholder comes before it and whether it ends the message."""
    parts = [part.strip().strip("'\"`").strip() for part in PLACEHOLDER.split(message)]
    return [
        (part, index > 0, index == len(parts) - 1)
        for index, part in enumerate(parts)
        if len(re.sub(r"\W", "", part)) >= 2
    ]


def _longest_piece(text: str, *, starting_a_literal: bool) -> int:
    """Length of the longest prefix of ``text`` found inside one literal (prefixes of a match match too);
    with ``starting_a_literal``, only at the start of one."""
    haystack = _all_literals_text()
    lead = SEPARATOR if starting_a_literal else ""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if lead + text[:middle] in haystack:
            low = middle
        else:
            high = middle - 1
    return low


@cache
def _whole_literals() -> tuple[frozenset[str], frozenset[str]]:
    """(literals with a word of three characters or more, every non-blank literal), edge spaces stripped."""
    stripped = {literal.strip() for literal in source_literals()} - {""}
    return frozenset(text for text in stripped if len(re.sub(r"\W", "", text)) >= 3), frozenset(stripped)


def covered_by_source(stretch: str, after_placeholder: bool = False, ends_message: bool = False) -> bool:
    """True when ``stretch`` can be read off the package's literals the way the code puts a message
    together: the tail of one literal, then whole literals, then the head of one, joined by punctuation.

    Each piece is at least MIN_PIECE characters of one literal or a whole literal with a word in it (right
    after a placeholder, any whole literal); only the first piece may start inside a literal, and only the
    last may end inside one, unless the stretch ends the message (``ends_message``): its message ends with
    the end of a literal. Dynamic programming over the positions reached at the end of a literal (True) or
    inside one (False).
    """
    haystack = _all_literals_text()
    worded, every = _whole_literals()
    size = len(stretch)
    reachable: list[set[bool]] = [set() for _ in range(size + 1)]
    for literal in every if after_placeholder else worded:
        if stretch.startswith(literal):
            reachable[len(literal)].add(True)
    for length in range(MIN_PIECE, _longest_piece(stretch, starting_a_literal=False) + 1):
        reachable[length].add(stretch[:length] + SEPARATOR in haystack)
    if not re.match(r"\w", stretch):
        reachable[1].add(True)
    for position in range(1, size):
        if True not in reachable[position]:
            continue  # a piece that ended inside its literal can only end the stretch
        rest = stretch[position:]
        for length in range(MIN_PIECE, _longest_piece(rest, starting_a_literal=True) + 1):
            reachable[position + length].add(SEPARATOR + rest[:length] + SEPARATOR in haystack)
        for literal in worded:
            if rest.startswith(literal):
                reachable[position + len(literal)].add(True)
        if not re.match(r"\w", rest):
            reachable[position + 1].add(True)  # punctuation or space joining two parts
    return (True in reachable[size]) if ends_message else bool(reachable[size])


def test_the_docs_quote_messages_at_all() -> None:
    pages = {page for page, _ in quoted_messages()}
    assert {"operations.md", "adapters.md", "configuration.md"} <= pages


@pytest.mark.parametrize(("page", "message"), quoted_messages())
def test_quoted_message_occurs_in_the_package_source(page: str, message: str) -> None:
    stretches = literal_stretches(message)
    assert stretches, f"{page}: quoted message {message!r} has no fixed text to check"
    missing = [text for text, after, ends in stretches if not covered_by_source(text, after, ends)]
    assert not missing, (
        f"{page} quotes {message!r}, but {missing} is not in druid_k8s_provider's source: "
        "update the docs to the message the code gives"
    )


def test_a_reworded_message_is_caught() -> None:
    """The check itself: a message that is not in the code does not pass."""
    assert covered_by_source("the property is required and missing")
    assert not covered_by_source("the property is mandatory and absent")


def test_a_message_quoted_without_its_tail_is_caught() -> None:
    """The code adds " (<errorMsg>)" after this text: quoting the message as ending there does not pass."""
    cut = (
        "the Job did not finish within maxTaskDuration (plus K8sjobLaunchTimeout); the task was shut down in "
        "the Overlord"
    )
    assert covered_by_source(cut)
    assert not covered_by_source(cut, ends_message=True)
    assert covered_by_source("the property is required and missing", ends_message=True)


def test_a_docstring_is_no_message() -> None:
    """Only code literals count: a sentence of a docstring is not a message."""
    docstring = ast.get_docstring(ast.parse((PACKAGE / "launch" / "follow.py").read_text(encoding="utf-8")))
    assert docstring is not None
    first_sentence = docstring.split(". ")[0].replace("\n", " ")
    assert len(first_sentence) > 40
    assert not covered_by_source(first_sentence)
