"""The package is a house of floors that follows the flow data → model → trajectory → statistics → extraction →
features → density → detectors → book: no import circle, and no import running back up a floor.

Every ``import`` of the package's own modules is read with ``ast``, at module level and inside functions
(the lazy imports count too). ``python tests/test_layers.py`` prints the graph floor by floor.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "diffpath_core"

FLOORS = {  # the lowest floor first; a module may import its own floor (without a circle) or any floor below
    "foundations": ("errors", "store", "progress", "runtime", "methods"),
    "data and models": ("datasets", "datasets.images", "datasets.folders", "datasets.registry", "datasets.offline",
                        "datasets.paper", "datasets.downloads", "datasets.defects", "schedule", "improved_diffusion",
                        "models"),
    "network on images": ("trajectory", "sampling", "train"),
    "path statistics": ("statistics",),
    "extraction": ("cache", "extraction", "distributed"),
    "features and density": ("features", "maps", "detectors", "metrics"),
    "detectors and protocols": ("api", "evaluate", "validation", "one_class"),
    "book and command line": ("report", "plots", "notebook", "book", "findings", "cli"),
    "package": ("__init__",),
}
FLOOR = {module: level for level, modules in enumerate(FLOORS.values()) for module in modules}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's own modules that ``path`` imports (anywhere in the file)."""
    here = _module_name(path)
    package = list(path.relative_to(PACKAGE).parts[:-1])  # what a relative import starts from
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("diffpath_core"):
                prefix = node.module[len("diffpath_core."):] if node.module != "diffpath_core" else ""
            else:
                continue
            candidates = [f"{prefix}.{a.name}" if prefix else a.name for a in node.names] + [prefix]
            found |= {c for c in candidates if c in modules}
            if prefix and prefix not in modules and not any(c in modules for c in candidates):
                raise AssertionError(f"{path.name}: import of unknown package module {prefix!r}")
        elif isinstance(node, ast.Import):
            found |= {a.name[len("diffpath_core."):] for a in node.names
                      if a.name.startswith("diffpath_core.") and a.name[len("diffpath_core."):] in modules}
    return found - {here}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_module_has_a_floor():
    graph = import_graph()
    assert sorted(set(graph) - set(FLOOR)) == [], "a new module needs a floor in FLOORS"
    assert sorted(set(FLOOR) - set(graph)) == [], "FLOORS names a module that does not exist"


def test_no_import_circle():
    assert _find_cycle(import_graph()) is None, f"import circle: {' → '.join(_find_cycle(import_graph()))}"


def test_no_import_runs_up_a_floor():
    upward = [f"{a} ({list(FLOORS)[FLOOR[a]]}) imports {b} ({list(FLOORS)[FLOOR[b]]})"
              for a, targets in import_graph().items() for b in sorted(targets) if FLOOR[b] > FLOOR[a]]
    assert upward == []


def test_the_checker_sees_lazy_and_relative_imports():
    """The graph is read correctly: known edges of each kind are found (so the checks above can fail)."""
    graph = import_graph()
    assert "runtime" in graph["extraction"]            # module level, relative
    assert "extraction" in graph["cli"]                # inside a function
    assert "store" in graph["datasets.images"]         # two dots
    assert {"datasets.offline", "datasets.paper"} <= graph["datasets"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


if __name__ == "__main__":
    graph = import_graph()
    for level, (floor, modules) in enumerate(FLOORS.items()):
        print(f"{level} {floor}")
        for module in modules:
            print(f"    {module:<20} → {', '.join(sorted(graph[module])) or '—'}")
    pytest.main([__file__, "-q", "-p", "no:cacheprovider"])
