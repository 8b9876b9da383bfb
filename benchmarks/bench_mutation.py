"""Mutation score of the core modules: how many small planted bugs the test suite catches.

For each module, every comparison, arithmetic or boolean operator and every small integer
constant is mutated once (``<`` -> ``<=``, ``+`` -> ``-``, ``and`` -> ``or``, ``True`` ->
``False``, ``n`` -> ``n + 1``); the module's test files run against each mutant (stopping at
the first failure) and the mutant counts as killed when they fail. Prints one line per module
and the surviving mutants' lines, to read and judge (some are equivalent).

A line marked ``# pragma: no mutate (why)`` is left alone, as mutmut does: tuning constants
whose every value gives the same results (thread counts, chunk and buffer sizes, when to
release memory). Their count is printed as ``skipped``; the reason stays on the line.

    python benchmarks/bench_mutation.py                           # all core modules
    python benchmarks/bench_mutation.py metrics/_scores.py --max 40

It rewrites one source file at a time and restores it afterwards (also on Ctrl-C); run it on a
clean checkout, not while editing. Minutes per module on 2 cores; not part of CI.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cellclass"
CORE = {  # module -> the test files that exercise it
    "data/folders.py": [
        "tests/test_folders.py",
        "tests/test_properties.py",
        "tests/test_promises.py",
    ],
    "data/normalization.py": [
        "tests/test_images.py",
        "tests/test_cache.py",
        "tests/test_properties.py",
        "tests/test_train_flags.py",
    ],
    "data/cache.py": ["tests/test_cache.py", "tests/test_promises.py", "tests/test_hostile.py"],
    "training/jobs.py": [
        "tests/test_jobs.py",
        "tests/test_experiment.py",
        "tests/test_promises.py",
    ],
    "training/experiment.py": [
        "tests/test_jobs.py",
        "tests/test_experiment.py",
        "tests/test_promises.py",
        "tests/test_hostile.py",
    ],
    "training/train.py": ["tests/test_train.py", "tests/test_train_loop.py"],
    "results.py": [
        "tests/test_results.py",
        "tests/test_properties.py",
        "tests/test_promises.py",
        "tests/test_hostile.py",
    ],
    "predict.py": ["tests/test_predict.py", "tests/test_promises.py", "tests/test_recipes.py"],
    "summary.py": ["tests/test_summary.py", "tests/test_experiment.py", "tests/test_promises.py"],
    "metrics/_scores.py": ["tests/test_metrics.py", "tests/test_properties.py"],
    "report/findings.py": ["tests/test_findings.py", "tests/test_report.py"],
    "report/build.py": ["tests/test_report.py"],
}
SWAPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add,
    ast.Mult: ast.Div, ast.Div: ast.Mult, ast.And: ast.Or, ast.Or: ast.And,
}  # fmt: skip


NO_MUTATE = "pragma: no mutate"


def mutation_sites(tree: ast.AST, lines: list[str] | None = None) -> list[tuple[ast.AST, str]]:
    """(node, kind) of every mutable operator or constant, in source order; with the source
    ``lines``, none on a line marked ``# pragma: no mutate``."""
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS:
            sites.append((node, "compare"))
        elif isinstance(node, ast.BinOp | ast.BoolOp) and type(node.op) in SWAPS:
            sites.append((node, "operator"))
        elif isinstance(node, ast.Constant) and type(node.value) in (bool, int):
            sites.append((node, "constant"))
    if lines is not None:
        sites = [site for site in sites if NO_MUTATE not in lines[site[0].lineno - 1]]
    return sorted(sites, key=lambda site: (site[0].lineno, site[0].col_offset))


def mutate(node: ast.AST, kind: str):
    """Apply the mutation in place; return a function that undoes it."""
    if kind == "compare":
        old = node.ops[0]
        node.ops[0] = SWAPS[type(old)]()
        return lambda: node.ops.__setitem__(0, old)
    if kind == "operator":
        old = node.op
        node.op = SWAPS[type(old)]()
        return lambda: setattr(node, "op", old)
    old = node.value
    node.value = (not old) if isinstance(old, bool) else old + 1
    return lambda: setattr(node, "value", old)


def killed(tests: list[str]) -> bool:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=900)
    return done.returncode != 0


def score_module(
    module: str, tests: list[str], limit: int | None
) -> tuple[int, int, int, list[str]]:
    """(killed, mutants, skipped by pragma, survivors' lines) of one module."""
    path = PACKAGE / module
    original = path.read_text(encoding="utf-8")
    tree = ast.parse(original)
    skipped = len(mutation_sites(tree)) - len(mutation_sites(tree, original.splitlines()))
    sites = mutation_sites(tree, original.splitlines())[:limit]
    survivors, n_killed = [], 0
    try:
        for node, kind in sites:
            undo = mutate(node, kind)
            path.write_text(ast.unparse(tree), encoding="utf-8")
            if killed(tests):
                n_killed += 1
            else:
                survivors.append(f"{module}:{node.lineno} {kind}: {ast.unparse(node)[:60]}")
            undo()
    finally:
        path.write_text(original, encoding="utf-8")
    return n_killed, len(sites), skipped, survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="paths under src/cellclass (default: core)")
    parser.add_argument("--max", type=int, default=None, help="mutants per module at most")
    args = parser.parse_args()
    chosen = {m: CORE.get(m, ["tests"]) for m in args.modules} if args.modules else CORE
    print(f"{'module':<24}{'killed':>8}{'mutants':>9}{'score':>8}{'skipped':>9}{'seconds':>9}")
    for module, tests in chosen.items():
        started = time.perf_counter()
        n_killed, total, skipped, survivors = score_module(module, tests, args.max)
        score = n_killed / total if total else float("nan")
        seconds = time.perf_counter() - started
        row = f"{module:<24}{n_killed:>8}{total:>9}{score:>8.0%}{skipped:>9}{seconds:>9.0f}"
        print(row, flush=True)
        for line in survivors:  # read each: equivalent, or a missing test?
            print(f"    survived {line}", flush=True)


if __name__ == "__main__":
    main()
