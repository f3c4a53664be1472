"""emoray's modules import each other without cycles, function-level imports included (a cycle
is hidden coupling: the gate, for one, is a step the job runs, not something the pipeline
calls into)."""

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from tests.conftest import REPO


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its body; a sub-package's modules
    by dotted name (`tools.bench`), its `__init__` by the sub-package's (`pipeline`)."""
    name = package.name
    modules = {".".join(p.relative_to(package).with_suffix("").parts): p
               for p in package.rglob("*.py") if p.name != "__init__.py"}
    modules |= {".".join(p.parent.relative_to(package).parts): p
                for p in package.rglob("*/__init__.py")}

    def known(dotted: str) -> str | None:
        inner = dotted[len(name) + 1:] if dotted.startswith(name + ".") else None
        return inner if inner in modules else None

    graph = {}
    for module, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                deps |= {m for a in node.names if (m := known(f"{node.module}.{a.name}"))}
                deps |= {m for m in [known(node.module)] if m}
            elif isinstance(node, ast.Import):
                deps |= {m for a in node.names if (m := known(a.name))}
        graph[module] = deps - {module}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        return e.args[1]
    return None


def test_emoray_has_no_import_cycle():
    graph = import_graph(REPO / "emoray")
    assert {"pipeline", "pipeline.run", "quality.gate", "quality.evaluate", "engines.seq2seq",
            "engines.base"} <= set(graph)
    assert not [m for m in graph if m.startswith("pipeline") and "quality.gate" in graph[m]]
    found = cycle(graph)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_the_product_never_imports_the_tools():
    """Benchmarks, the fault campaign, local S3, tiny models and the demo live in emoray.tools;
    only the CLI, which dispatches every command, reaches them."""
    graph = import_graph(REPO / "emoray")
    assert {"tools.bench", "tools.demo", "tools.tiny_model"} <= set(graph)
    product = {m: deps for m, deps in graph.items() if m.split(".")[0] not in ("tools", "cli")}
    assert {m: sorted(d for d in deps if d.startswith("tools."))
            for m, deps in product.items() if any(d.startswith("tools.") for d in deps)} == {}


def test_a_function_level_import_cycle_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert graph == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert sorted(cycle(graph)[:2]) == ["a", "b"]


def test_the_readme_code_map_is_generated_from_the_code(tmp_path):
    """The README's code map is `code_map.render()` of the code as it is: every package and
    module, each package's own summary."""
    from emoray.tools import code_map

    assert code_map.render() in (REPO / "README.md").read_text()
    modules = {p.stem for p in (REPO / "emoray").rglob("*.py") if p.name != "__init__.py"}
    assert modules <= set(re.findall(r"`(\w+)`", code_map.render()))
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The core. More."""\n')
    (package / "a.py").write_text("")
    (package / "sub" / "__init__.py").write_text('"""A part: what it holds. Details."""\n')
    (package / "sub" / "b.py").write_text("")
    assert code_map.render(package).splitlines()[2:] == [
        "| `pkg/` | The core | `a` |", "| `pkg/sub/` | A part: what it holds | `b` |"]
