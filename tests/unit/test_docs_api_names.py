"""The Python names, imports and arguments the docs show exist in the code.

A user copies the docs' examples; an example naming a module, class or argument the code does not have
fails for them on the first try. These tests resolve every ``druid_k8s_provider.*`` dotted name the pages
mention, import what every Python example imports from the provider, and check every keyword argument an
example passes to a provider callable against that callable's signature.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import druid_k8s_provider

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
DOTTED_NAME = re.compile(r"\bdruid_k8s_provider(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PYTHON_BLOCK = re.compile(r"```python\n(?P<code>.*?)\n```", re.DOTALL)


def resolve(dotted: str) -> Any:
    """Import the longest importable module prefix of ``dotted`` and walk attributes for the rest."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def dotted_names() -> list[tuple[str, str]]:
    found = set()
    for page in PAGES:
        for name in DOTTED_NAME.findall(page.read_text(encoding="utf-8")):
            found.add((page.name, name))
    return sorted(found)


def python_examples() -> list[tuple[str, str]]:
    examples = []
    for page in PAGES:
        for block in PYTHON_BLOCK.finditer(page.read_text(encoding="utf-8")):
            examples.append((page.name, block["code"]))
    return examples


def accepted_keywords(target: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``target`` accepts, following ``**kwargs`` up an operator's class hierarchy.

    Airflow's own base classes end the walk: their ``**kwargs`` are refused at run time, so the names
    collected so far are all an operator takes. None when anything goes (a function with ``**kwargs``).
    """
    if not inspect.isclass(target):
        parameters = inspect.signature(target).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    names: set[str] = set()
    for klass in target.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if klass.__module__.startswith("airflow.") or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


@pytest.mark.parametrize(("page", "name"), dotted_names())
def test_dotted_name_in_docs_exists(page: str, name: str) -> None:
    try:
        resolve(name)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{page} mentions {name}, which does not exist: {error}")


@pytest.mark.parametrize(("page", "code"), python_examples())
def test_python_example_imports_and_keywords_exist(page: str, code: str) -> None:
    tree = ast.parse(code)
    imported: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("druid_k8s_provider"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}: {node.module} has no {alias.name}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
            continue
        accepted = accepted_keywords(imported[node.func.id])
        if accepted is None:
            continue
        unknown = {keyword.arg for keyword in node.keywords if keyword.arg} - accepted
        assert not unknown, f"{page}: {node.func.id}() does not take {sorted(unknown)}"


def test_the_docs_have_python_examples_that_use_the_provider() -> None:
    provider_examples = [code for _, code in python_examples() if "druid_k8s_provider" in code]
    assert len(provider_examples) >= 3


def test_airflow_config_examples_use_options_the_provider_declares() -> None:
    declared = set(druid_k8s_provider.get_provider_info()["config"]["druid_k8s"]["options"])
    used = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.finditer(r"```ini\n(?P<body>.*?)\n```", text, re.DOTALL):
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(block["body"])
            if parser.has_section("druid_k8s"):
                used |= set(parser.options("druid_k8s"))
        used |= {name.lower() for name in re.findall(r"AIRFLOW__DRUID_K8S__([A-Z_]+)", text)}
    assert used, "the docs show no [druid_k8s] settings"
    assert used <= declared, (
        f"options the docs use but get_provider_info() does not declare: {used - declared}"
    )
