"""emoray's modules import each other without cycles, function-level imports included (a cycle
is hidden coupling: the gate, for one, is a step the job runs, not something the pipeline
calls into)."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from tests.conftest import REPO


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its body."""
    name = package.name
    modules = {p.stem for p in package.glob("*.py")}
    graph = {}
    for module in modules:
        deps = set()
        for node in ast.walk(ast.parse((package / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == name:
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(name + "."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith(name + ".")}
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
    assert {"pipeline", "gate", "evaluate", "seq2seq"} <= set(graph)
    assert "gate" not in graph["pipeline"]
    found = cycle(graph)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_a_function_level_import_cycle_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = import_graph(package)
    assert graph == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert sorted(cycle(graph)[:2]) == ["a", "b"]
