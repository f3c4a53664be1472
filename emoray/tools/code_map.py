"""The README's code map, generated from the code: one row per package of `emoray/`, with the
first sentence of the package's docstring and its modules. `tests/test_imports.py` checks the
README holds exactly this; after moving code, write it into the README:

    .venv/bin/python -m emoray.tools.code_map --write README.md
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


def write(readme: Path) -> None:
    """Replace the code map table in `readme` (from its header row to the blank line after it)
    with the current one."""
    text = readme.read_text()
    start = text.index("| package | what it holds | modules |")
    end = text.index("\n\n", start)
    readme.write_text(text[:start] + render() + text[end:])


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        write(Path(sys.argv[2]))
    else:
        print(render())
