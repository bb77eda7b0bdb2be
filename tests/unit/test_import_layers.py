"""The package's layers: no import circle, and no module imports a layer above its own.

Imports are read from the source (no module is imported), at module level and inside functions alike (a late
import of a higher layer is an upward import too); ``if TYPE_CHECKING:`` blocks are annotations only and are left
out. The layers follow the data flow (STYLE.md): building blocks → data, assignment, losses → models → what runs a
model (evaluation, inference, export, inspection, plots) → the training engine → the API and the commands.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "detcli"

LAYERS: dict[str, int] = {
    # 0: building blocks every layer may use
    "errors": 0, "structures": 0, "cpus": 0, "fileio": 0, "console": 0, "progress": 0, "distributed": 0,
    "geometry": 0, "config": 0, "cli_help": 0, "sources": 0,
    # 1: reading data, assigning labels, losses, the shared post-processing
    "data": 1, "assigners": 1, "losses": 1, "postprocess": 1,
    # 2: the detectors, the checkpoint record, the resolved run record
    "models": 2, "checkpoints": 2, "run_spec": 2,
    # 3: what runs a model
    "evaluation": 3, "inference": 3, "export": 3, "inspect": 3, "plots": 3,
    # 4: training
    "engine": 4,
    # 5: the public API and the commands' library side; 6: the command line
    "api": 5, "app": 5, "interrupt": 5, "cli": 6, "__main__": 6,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, known: set[str]) -> set[str]:
    """detcli modules ``path`` imports (submodules named in ``from x import y`` included)."""
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("detcli"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("detcli"))
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m in known}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    # the root package only re-exports the API lazily (``detcli.load`` …); every submodule import passes through it
    return {m: _imports(p, set(mods)) - {m, "detcli"} for m, p in mods.items() if m != "detcli"}


def _layer(module: str) -> int:
    top = module.split(".")[1]
    assert top in LAYERS, f"{module}: add its package to LAYERS (a new top-level module needs a layer)"
    return LAYERS[top]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_circle() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
              for m, deps in sorted(_graph().items()) for d in sorted(deps) if _layer(d) > _layer(m)]
    assert upward == []


def test_the_engine_and_evaluation_do_not_import_plots_at_module_level() -> None:
    """Plots are drawn by the plots hook, which imports them when a run starts."""
    mods = _modules()
    for name, path in mods.items():
        if name.startswith(("detcli.engine", "detcli.evaluation")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
            assert not [m for m in top if m.startswith("detcli.plots")], name
