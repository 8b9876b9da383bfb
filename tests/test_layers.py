"""The package layering of shared/DESIGN.md, checked on every module's imports.

Each top-level module or sub-package of cellclass sits in a layer; a module may import from
lower layers and from its own package, never from a higher layer or from another package of
its own layer. Imports inside functions count too. ``KNOWN`` lists the edges that break the
rule today, each to be removed by the redesign (issue 16); a new violation fails, and so does
an entry of ``KNOWN`` that no longer occurs (so the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import cellclass

PACKAGE = Path(cellclass.__file__).parent

LAYERS = {  # shared/DESIGN.md's layers, with finer steps where its packages build on each other
    "progress": 0,
    "choices": 0,  # choices and defaults shared with the command line (imports nothing)
    "_files": 0,
    "_lazy": 0,
    "csv_cells": 0,
    "results": 1,
    "metrics": 1,
    "checks": 2,  # run rows -> summaries and warnings, on metrics alone (summary builds on it)
    "data": 2,
    "synthetic": 2,
    "models": 3,
    "prepare": 4,
    "inspection": 4,
    "training": 5,
    "predict": 6,
    "summary": 6,
    "figures": 6,
    "explain": 7,
    "export": 7,
    "blind": 7,
    "report": 8,
    "demo": 9,
    "study": 10,
    "experiment": 9,  # shim: the old path of cellclass.training's experiment API
    "recipes": 9,  # shim: the old path of cellclass.training.recipes
    "cli": 11,
    "__main__": 12,
}

KNOWN: set[tuple[str, str]] = set()  # (importer, imported) edges that break the layering today


def _component(module: str) -> str:
    """cellclass.training.train -> "training"; cellclass.results -> "results"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cellclass":
                found |= {f"cellclass.{alias.name}" for alias in node.names}
            elif node.module.startswith("cellclass."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cellclass.")}
    return found


def _edges() -> set[tuple[str, str, str]]:
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(relative.parts) == 1:
            continue
        importer = relative.parts[0].removesuffix(".py")
        for module in _imports(path):
            imported = _component(module)
            if imported and imported != importer and imported != "__version__":
                edges.add((importer, imported, str(relative)))
    return edges


def test_every_component_has_a_layer():
    components = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()}
    components -= {"__init__", "__pycache__"}
    assert components <= set(LAYERS), sorted(components - set(LAYERS))


def test_imports_go_only_downward():
    bad = {}
    for importer, imported, where in _edges():
        if LAYERS[imported] >= LAYERS[importer] and (importer, imported) not in KNOWN:
            bad.setdefault((importer, imported), []).append(where)
    assert not bad, "upward or same-layer imports: " + "; ".join(
        f"{a} -> {b} ({', '.join(sorted(w))})" for (a, b), w in sorted(bad.items())
    )


def test_known_violations_still_exist():
    seen = {(a, b) for a, b, _ in _edges()}
    assert KNOWN <= seen, f"fixed, remove from KNOWN: {sorted(KNOWN - seen)}"


def test_the_old_python_paths_still_work():
    """The README's first examples used these paths before the move (thin shims)."""
    from cellclass.experiment import ExperimentSettings, run_experiment
    from cellclass.recipes import REFERENCE, STRONG
    from cellclass.report import write_report
    from cellclass.training import ExperimentSettings as moved

    assert ExperimentSettings is moved and callable(run_experiment) and callable(write_report)
    assert REFERENCE.model == "badger" and STRONG.label == "strong"
