"""Reference vs strong recipe vs feature baseline on the demo phenotypes.

Writes the demo data and, on its hard dataset (Control vs Snf7-like, its own training and
test folders, as in the study), trains both recipes and the classical baseline with the same
seeds and splits, then prints mean and sd of test accuracy over runs per recipe and test set, the
runs' ensemble, and the tests of the differences.

    python benchmarks/bench_recipes.py                # 6 runs per recipe, 128-pixel inputs
    python benchmarks/bench_recipes.py --runs 12 --image-size 256

Targets (issue 10): on the hard phenotype the strong recipe's mean is at least 10 points
above the reference's and above the baseline; on the easy one it is no worse, with a
smaller sd.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cellclass import results
from cellclass.choices import PRECISIONS
from cellclass.summary import model_comparisons, summary_table
from cellclass.synthetic.folders import write_demo
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE, STRONG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=150, help="training images per class")
    parser.add_argument("--strong-epochs", type=int, default=STRONG.epochs)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="training")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_demo(Path(tmp) / "data", n_train=args.n_train, n_test=40, seed=0)
        hard = data.datasets["snf7"]  # the study's hard dataset, Control vs Snf7
        settings = ExperimentSettings(
            train_dir=str(hard.train),
            out=str(Path(tmp) / "run"),
            runs=args.runs,
            tests=(("snf7", str(hard.test)),),
            recipes=(
                REFERENCE,
                STRONG.__class__(**{**STRONG.__dict__, "epochs": args.strong_epochs}),
            ),
            baselines=("features",),
            image_size=args.image_size,
            precision=args.precision,
            cache_dir=str(Path(tmp) / "cache"),
        )
        started = time.perf_counter()
        out = run_experiment(settings)
        seconds = time.perf_counter() - started
        table, comparisons = summary_table(out), model_comparisons(out)
        seconds_per_run = _seconds_per_run(results.read_table(out / "runs.csv"))
    print(
        f"{args.runs} runs per recipe, {args.image_size}-pixel inputs, precision "
        f"{args.precision}, {seconds:.0f} s in all"
    )
    print(f"{'model':<12}{'test set':<10}{'mean':>8}{'sd':>8}{'ensemble':>10}")
    for row in table:
        print(
            f"{row['model']:<12}{row['dataset']:<10}{row['mean']:>8.1%}{row['sd']:>8.1%}"
            f"{row.get('ensemble', float('nan')):>10.1%}"
        )
    reference = seconds_per_run.get(REFERENCE.label)
    for model, run_seconds in seconds_per_run.items():
        ratio = f"  ({run_seconds / reference:.1f}x {REFERENCE.label})" if reference else ""
        print(f"{model:<12}{run_seconds:>8.0f} s per run (median){ratio}")
    for row in comparisons:
        print(
            f"{row['first']} vs {row['second']} on {row['dataset']}: "
            f"{row['runs_difference']:+.1%} (Welch p = {row['runs_p_value']:.3g}), "
            f"ensembles McNemar p = {row.get('mcnemar_p', float('nan')):.3g}"
        )


def _seconds_per_run(rows: list[dict]) -> dict[str, float]:
    """model -> median wall seconds of one run (training, every evaluation, checkpoint)."""
    seconds: dict[str, list[float]] = {}
    for (model, _, control), value in results.run_seconds(rows).items():
        if not control:
            seconds.setdefault(model, []).append(value)
    return {model: statistics.median(values) for model, values in seconds.items()}


if __name__ == "__main__":
    main()
