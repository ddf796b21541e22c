"""docs/rbac.md shows the Role of docs/rbac.yaml, the one the test suite runs the provider with.

The manifest on the page is a copy (MkDocs cannot include files), and the page's table explains each rule;
both must say what the file says, or a platform team would grant something else than what was tested.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import yaml

DOCS = Path(__file__).resolve().parents[2] / "docs"
TABLE_ROW = re.compile(
    r"^\| `(?P<resource>[a-z/]+)`(?: \(`(?P<group>[a-z.]+)`\))? \| (?P<verbs>[^|]+) \|", re.M
)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen_rbac_page", DOCS / "gen_rbac_page.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()


def _role_rules() -> dict[tuple[str, str], set[str]]:
    documents = list(yaml.safe_load_all((DOCS / "rbac.yaml").read_text(encoding="utf-8")))
    roles = [document for document in documents if document and document.get("kind") == "Role"]
    assert len(roles) == 1, "docs/rbac.yaml should hold exactly one Role"
    rules: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in roles[0]["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules[(group, resource)] |= set(rule["verbs"])
    return dict(rules)


def test_the_page_shows_docs_rbac_yaml_verbatim() -> None:
    page = (DOCS / "rbac.md").read_text(encoding="utf-8")
    assert GENERATOR.committed_manifest_block(page) == GENERATOR.render_manifest_block(), (
        "docs/rbac.md no longer shows docs/rbac.yaml: run `.venv/bin/python docs/gen_rbac_page.py` and commit"
    )


def test_the_permission_table_lists_exactly_the_role_rules() -> None:
    page = (DOCS / "rbac.md").read_text(encoding="utf-8")
    table: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in TABLE_ROW.finditer(page):
        table[(row["group"] or "", row["resource"])] |= set(re.findall(r"`(\w+)`", row["verbs"]))
    assert dict(table) == _role_rules()


def test_the_page_offers_the_file_for_kubectl_apply() -> None:
    page = (DOCS / "rbac.md").read_text(encoding="utf-8")
    assert "](rbac.yaml)" in page
