"""The package layout the README draws: modules import only downward, so no import cycle exists in src, lazy
(function-level) imports included."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_graph(src: Path) -> dict[str, set[str]]:
    """module -> the modules of ``src`` it imports anywhere in its file (top level or inside functions). A
    package's ``__init__`` counts as the package; a module importing from its own package is not an edge."""
    files: dict[str, tuple[Path, bool]] = {}
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, (path, is_init) in files.items():
        package = name.split(".") if is_init else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                related = target.startswith(name + ".") or name.startswith(target + ".")
                if target in files and target != name and not related:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_lazy_import_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .high import g\n")  # lazy: still an edge
    (pkg / "high.py").write_text("from .low import f\n")
    (pkg / "other.py").write_text("from . import low\n")
    cycle = find_cycle(module_graph(tmp_path))
    assert cycle is not None and set(cycle) == {"pkg.low", "pkg.high"} and cycle[0] == cycle[-1]
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    assert find_cycle(module_graph(tmp_path)) is None


def test_src_has_no_import_cycle():
    graph = module_graph(SRC)
    assert "nerft.inference.location" in graph["nerft.inference.vllm_backend"]  # the graph sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_inference_library_does_not_import_the_stages():
    stages = ("nerft.predict", "nerft.serve", "nerft.train", "nerft.evaluate", "nerft.tune", "nerft.export")
    graph = module_graph(SRC)
    for name, targets in graph.items():
        if name.startswith("nerft.inference"):
            upward = sorted(t for t in targets if t.startswith(stages))
            assert not upward, f"{name} imports {upward}"


def test_shared_modules_import_no_stage():
    """The shared vocabulary (answers, formats, modeling, ...) sits under every stage and the inference library."""
    above = ("nerft.__main__", "nerft.cli", "nerft.api", "nerft.spacy_component", "nerft.prepare", "nerft.demo", "nerft.distill", "nerft.predict", "nerft.serve", "nerft.train",
             "nerft.evaluate", "nerft.tune", "nerft.export", "nerft.inference")
    graph = module_graph(SRC)
    shared = [name for name in graph if name.count(".") == 1 and not name.startswith(above)]
    assert "nerft.answers" in shared and "nerft.modeling" in shared
    for name in shared:
        upward = sorted(t for t in graph[name] if t.startswith(above))
        assert not upward, f"{name} imports {upward}"


# The layers the README draws, lowest first: a module imports only its own layer or lower ones.
CLI = ("nerft.cli", "nerft.__main__", "nerft.api", "nerft.spacy_component")  # the entry points: the command
# line, the Python API and the spaCy component
STAGES = ("nerft.prepare", "nerft.train", "nerft.predict",
          "nerft.evaluate", "nerft.tune", "nerft.serve", "nerft.export", "nerft.distill", "nerft.demo")
LAYERS = ("shared vocabulary", "inference library", "stages", "entry points")


def layer_of(module: str) -> int:
    if module in CLI:
        return 3
    if any(module == s or module.startswith(s + ".") for s in STAGES):
        return 2
    return 1 if module == "nerft.inference" or module.startswith("nerft.inference.") else 0


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} ({LAYERS[layer_of(m)]}) imports {d} ({LAYERS[layer_of(d)]})"
            for m, deps in sorted(graph.items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]


def foreign_private_and_cli_imports(src: Path) -> list[str]:
    """Imports of another package's command-line module, or of another module's private (``_name``) names."""
    bad = []
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_init else parts)
        package = module.split(".") if is_init else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("nerft") or module in CLI:
                continue
            same_package = target.split(".")[:2] == module.split(".")[:2]
            names = [target, *(f"{target}.{a.name}" for a in node.names)]
            if not same_package and any(n.endswith(".cli") and n not in CLI for n in names):
                bad.append(f"{module} imports {target}'s command line")
            bad += [f"{module} imports {target}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__") and not same_package]
    return sorted(set(bad))


def test_layers_are_checked_on_a_made_up_package():
    graph = {"nerft.schema": {"nerft.tune"}, "nerft.tune": {"nerft.schema"}, "nerft.inference.base": set()}
    assert upward_imports(graph) == ["nerft.schema (shared vocabulary) imports nerft.tune (stages)"]


def test_nothing_imports_upward_and_no_stage_reaches_into_another():
    graph = module_graph(SRC)
    assert upward_imports(graph) == []
    assert foreign_private_and_cli_imports(SRC) == []
