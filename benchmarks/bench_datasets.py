"""Reference vs strong recipe vs feature baseline on a suite of real and synthetic datasets.

For each dataset of `dataset_suite.DATASETS` (written at run time from installed packages and
generators, nothing downloaded), trains both recipes and the classical baseline with the same
seeds and splits (one experiment per dataset and input size, as bench_recipes.py does), prints
each dataset's rows as it finishes, and at the end one table: mean and sd of test accuracy over
runs, the test set's majority share, the published figure where one exists, and whether strong
beats both reference and baseline by more than the larger run-to-run sd.

    python benchmarks/bench_datasets.py --quick                       # smoke test, minutes
    python benchmarks/bench_datasets.py --datasets textures,density --runs 2
    python benchmarks/bench_datasets.py --sizes 128,256 --out bench-out   # all; about an hour+

With ``--out`` the data, the results folders and the table (``bench_datasets.csv``) stay
there, and running the same command again resumes: datasets already written are reused and
finished runs are not trained again (``run_experiment(resume=True)``).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from dataset_suite import DATASETS, FOOTNOTES, Folders

from cellclass import results
from cellclass.progress import Observer
from cellclass.summary import summary_table
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE, STRONG

# Tune on some datasets, report on the rest: whoever changes a recipe may look only at the
# "tuning" rows; the "held-out" rows say whether a change carries over to data nobody tuned on
# (issue 18: the recipes were tuned on the demo generator and did not transfer). Each group
# has real and synthetic data, an easy and a hard case.
ROLES = {
    "snf7": "tuning",  # demo, hard
    "snap29": "tuning",  # demo, easy
    "textures": "tuning",  # real, easy
    "aggregates": "tuning",  # synthetic, another generator than the demo's
    "elpv": "held-out",  # real solar cells, with a published figure
    "faces": "held-out",  # real, tiny images
    "density": "held-out",  # synthetic: a modest rise in puncta per cell
    "shape": "held-out",  # synthetic: nuclear shape, not spots
}
MODELS = (REFERENCE.label, STRONG.label, "features")
COLUMNS = (
    "dataset",
    "kind",
    "role",
    "size",
    "model",
    "runs",
    "mean",
    "sd",
    "majority",
    "published",
    "seconds_per_run",
    "strong_wins",
)
DONE_MARKER = ".complete"  # written into a dataset's folder once it is fully written


class RunPrinter(Observer):
    """Prints one line per finished run, so a long benchmark shows it is alive."""

    def run_finished(self, run: int, rows: list[dict]) -> None:
        for row in rows:
            print(
                f"    run {run} {row['model']:<10} {row['dataset']:<11}"
                f"{row['accuracy']:7.1%} {row['seconds']:6.0f} s",
                flush=True,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated names")
    parser.add_argument("--sizes", default="128", help="input sizes, e.g. 128,256")
    parser.add_argument("--runs", type=int, default=3, help="runs per recipe")
    parser.add_argument("--quick", action="store_true", help="fewer images and 1 run")
    parser.add_argument("--out", help="keep data, runs and table here; rerun to resume")
    return parser


def machine_lines() -> list[str]:
    """The CPU's model name and flags (lscpu) and torch's version."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    wanted = [line for line in lscpu.splitlines() if line.startswith(("Model name", "Flags"))]
    return [*(" ".join(line.split()) for line in wanted), f"torch {torch.__version__}"]


def dataset_folders(name: str, data_root: Path, quick: bool) -> Folders:
    """Write dataset ``name`` under ``data_root/name`` unless a finished copy is there."""
    folder = data_root / name
    build = DATASETS[name].build
    if (folder / DONE_MARKER).is_file():  # train and test, relative to the folder
        return Folders(*(folder / line for line in (folder / DONE_MARKER).read_text().split()))
    if folder.exists():  # half-written by an interrupted run: ours to remove
        shutil.rmtree(folder)
    started = time.perf_counter()
    folders = build(folder / "images", quick)
    relative = [str(path.relative_to(folder)) for path in (folders.train, folders.test)]
    (folder / DONE_MARKER).write_text("\n".join(relative))
    print(f"  {name}: data written in {time.perf_counter() - started:.1f} s", flush=True)
    return folders


def run_one(name: str, size: int, folders: Folders, root: Path, runs: int) -> Path:
    """One experiment: both recipes and the baseline on one dataset at one input size."""
    settings = ExperimentSettings(
        train_dir=str(folders.train),
        out=str(root / "runs" / f"{name}-{size}"),
        runs=runs,
        tests=((name, str(folders.test)),),
        recipes=(REFERENCE, STRONG),
        baselines=("features",),
        image_size=size,
        cache_dir=str(root / "cache"),
    )
    resume = (Path(settings.out) / results.CONFIG_FILE).is_file()
    return run_experiment(settings, resume=resume, observer=RunPrinter())


def table_rows(name: str, size: int, out: Path) -> list[dict]:
    """The benchmark table's rows of one experiment, in the order of MODELS."""
    summary = {row["model"]: row for row in summary_table(out) if row["dataset"] == name}
    seconds: dict[str, list[float]] = {}
    run_rows = [
        row for row in results.read_table(out / results.RUNS_FILE) if row["dataset"] == name
    ]
    for (model, _, control), value in results.run_seconds(run_rows).items():
        if not control:
            seconds.setdefault(model, []).append(value)
    spec = DATASETS[name]
    rows = []
    for model in MODELS:
        found = summary.get(model, {})
        rows.append(
            {
                "dataset": name,
                "kind": spec.kind,
                "role": ROLES[name],
                "size": size,
                "model": model,
                "runs": found.get("n", 0),
                "mean": found.get("mean", math.nan),
                "sd": found.get("sd", math.nan),
                "majority": found.get("chance", math.nan),
                "published": spec.published,
                "seconds_per_run": statistics.median(seconds.get(model, [math.nan])),
            }
        )
    wins = strong_wins(rows)
    return [{**row, "strong_wins": wins} for row in rows]


def strong_wins(rows: list[dict]) -> str:
    """ "yes" when strong's mean beats every other model's by more than the larger of the two
    run-to-run sds; "no" otherwise; "n/a" without sds (a single run)."""
    by_model = {row["model"]: row for row in rows}
    strong = by_model[STRONG.label]
    others = [row for row in rows if row["model"] != STRONG.label]
    if any(math.isnan(row["sd"]) for row in rows):
        return "n/a"
    beaten = [strong["mean"] - row["mean"] > max(strong["sd"], row["sd"]) for row in others]
    return "yes" if all(beaten) else "no"


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'dataset':<11}{'kind':<10}{'role':<9}{'size':>5} {'model':<10}{'runs':>5}"
        f"{'mean':>8}{'sd':>7}{'majority':>9}  {'s/run':>6}  {'strong wins':<12}published"
    )
    print(header)
    for row in rows:
        sd = "-" if math.isnan(row["sd"]) else f"{row['sd']:.1%}"
        print(
            f"{row['dataset']:<11}{row['kind']:<10}{row['role']:<9}{row['size']:>5} "
            f"{row['model']:<10}{row['runs']:>5}{row['mean']:>8.1%}{sd:>7}"
            f"{row['majority']:>9.1%}  {row['seconds_per_run']:>6.0f}  "
            f"{row['strong_wins']:<12}{row['published']}"
        )
    for mark, note in FOOTNOTES.items():
        if any(mark in row["published"] for row in rows):
            print(f"{mark} {note}")


def main() -> None:
    args = build_parser().parse_args()
    names = [name for name in args.datasets.split(",") if name]
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        raise SystemExit(f"--datasets: unknown {unknown}; choose from {', '.join(DATASETS)}")
    sizes = [int(size) for size in args.sizes.split(",")]
    runs = 1 if args.quick else args.runs
    machine = machine_lines()
    print("\n".join(machine), flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root = root / ("quick" if args.quick else "full")
        rows = []
        for name in names:
            print(f"{name} ({DATASETS[name].about}, {ROLES[name]})", flush=True)
            folders = dataset_folders(name, root / "data", args.quick)
            for size in sizes:
                out = run_one(name, size, folders, root, runs)
                finished = table_rows(name, size, out)
                print_table(finished)
                rows += finished
    total = time.perf_counter() - started
    print()
    print("\n".join(machine))
    print(f"{runs} run(s) per recipe, {'quick' if args.quick else 'full'} data, {total:.0f} s")
    print_table(rows)
    if args.out:
        path = Path(args.out) / "bench_datasets.csv"
        results.write_table(path, list(COLUMNS), rows)
        print(f"table written to {path}")


if __name__ == "__main__":
    main()
