"""The README's code map, generated from the code: one row per package of `emoray/`, with the
first sentence of the package's docstring and its modules. `tests/test_imports.py` checks the
README holds exactly this; after moving code, print it and paste it in:

    .venv/bin/python -m emoray.tools.code_map
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The `emoray` package folder."""


def summary(path: Path) -> str:
    """The first sentence of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.split()).split(". ")[0]
    return first.rstrip(".")


def render(root: Path = ROOT) -> str:
    """The code map as a Markdown table: the top-level package, then each sub-package."""
    lines = ["| package | what it holds | modules |", "| --- | --- | --- |"]
    for package in [root, *sorted(p.parent for p in root.glob("*/__init__.py"))]:
        modules = sorted(p.stem for p in package.glob("*.py") if p.name != "__init__.py")
        if not modules:
            continue
        name = str(package.relative_to(root.parent)) + "/"
        lines.append(f"| `{name}` | {summary(package / '__init__.py')} | "
                     + ", ".join(f"`{m}`" for m in modules) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
