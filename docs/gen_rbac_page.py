"""Copy docs/rbac.yaml into docs/rbac.md, so the page shows exactly the Role the tests enforce.

Run it after changing ``docs/rbac.yaml``::

    .venv/bin/python docs/gen_rbac_page.py

MkDocs has no include directive without plugins, so the manifest is copied between the markers of the page;
``tests/unit/test_docs_rbac.py`` fails when the copy and the file differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RBAC_MANIFEST = DOCS / "rbac.yaml"
RBAC_PAGE = DOCS / "rbac.md"
BEGIN_MARKER = "<!-- BEGIN RBAC MANIFEST: copied from docs/rbac.yaml by `python docs/gen_rbac_page.py` -->"
END_MARKER = "<!-- END RBAC MANIFEST -->"


def render_manifest_block() -> str:
    """The markers around a YAML code block holding docs/rbac.yaml verbatim."""
    manifest = RBAC_MANIFEST.read_text(encoding="utf-8").rstrip("\n")
    return f"{BEGIN_MARKER}\n```yaml\n{manifest}\n```\n{END_MARKER}"


def committed_manifest_block(page: str) -> str:
    """The text between (and including) the markers of the page."""
    start = page.index(BEGIN_MARKER)
    end = page.index(END_MARKER) + len(END_MARKER)
    return page[start:end]


def main() -> int:
    page = RBAC_PAGE.read_text(encoding="utf-8")
    updated = page.replace(committed_manifest_block(page), render_manifest_block())
    if updated != page:
        RBAC_PAGE.write_text(updated, encoding="utf-8")
        print(f"updated {RBAC_PAGE}")
    else:
        print(f"{RBAC_PAGE} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
