"""Tables over runs: test accuracy per model and test set, the runs' ensemble, and tests of
the difference between models.

All functions read the tidy tables of a results folder (see `cellclass.results`) and return
lists of dicts, ready to print, plot or write as CSV.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.checks import chance_levels, summary_rows
from cellclass.metrics import empirical_p_value, mcnemar_exact, welch_t_test


def summary_table(run_dir: str | Path) -> list[dict]:
    """Per (model, test set): n runs, mean, sd, 95 % CI, min and max test accuracy, and the
    accuracy of the runs' ensemble (mean probability over runs).

    The numbers are `cellclass.checks.summary_rows`' (the 95 % interval clipped to [0, 1]).
    Each row also has ``chance`` (the test set's majority-class share: what a constant answer
    scores) and ``collapsed`` (runs whose training accuracy never left chance).
    With control runs (shuffled labels), each real row gains ``p_vs_control``, the empirical
    p-value of its mean accuracy against the control runs' accuracies, and the control runs
    get rows of their own with model ``<model> (shuffled labels)``.
    """
    rows = [r for r in results.read_table(Path(run_dir) / results.RUNS_FILE) if _scored(r)]
    config_path = Path(run_dir) / results.CONFIG_FILE
    chances = chance_levels(results.read_json(config_path) if config_path.is_file() else {})
    predictions = results.read_table(Path(run_dir) / results.PREDICTIONS_FILE)
    groups = {(g["control"], g["model"], g["dataset"]): g for g in summary_rows(rows)}
    table = []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        extra = {"chance": chances.get(dataset, chances[""])}
        real, control = groups.get((0, model, dataset)), groups.get((1, model, dataset))
        if real:
            entry = {**real, **extra}
            del entry["control"]
            correct = ensemble_correct(predictions, model, dataset)
            entry["ensemble"] = float(correct.mean()) if len(correct) else float("nan")
            if control:
                shuffled = [
                    r["accuracy"]
                    for r in rows
                    if r.get("control") and (r["model"], r["dataset"]) == (model, dataset)
                ]
                entry["p_vs_control"] = empirical_p_value(entry["mean"], shuffled)
            table.append(entry)
        if control:
            numbers = {k: v for k, v in control.items() if k not in ("control", "collapsed")}
            table.append({**numbers, "model": f"{model} (shuffled labels)", **extra})
    return table


def ensemble_correct(predictions: list[dict], model: str, dataset: str) -> np.ndarray:
    """(N,) bool: is the mean-probability ensemble of the real runs right, per image (sorted
    by path)."""
    rows = [
        r
        for r in predictions
        if r["model"] == model and r["dataset"] == dataset and not r.get("control")
    ]
    if not rows:
        return np.zeros(0, dtype=bool)
    classes = [key[2:] for key in rows[0] if key.startswith("p_")]
    paths = sorted({r["path"] for r in rows})
    position = {path: i for i, path in enumerate(paths)}
    total = np.zeros((len(paths), len(classes)))
    truth = [""] * len(paths)
    for r in rows:
        i = position[r["path"]]
        total[i] += [r[f"p_{c}"] for c in classes]
        truth[i] = r["true"]
    predicted = [classes[j] for j in total.argmax(1)]
    return np.array([p == t for p, t in zip(predicted, truth, strict=True)])


def model_comparisons(run_dir: str | Path) -> list[dict]:
    """Every pair of models on every test set: Welch's t-test on the runs' accuracies and an
    exact McNemar test on the two ensembles' per-image answers."""
    rows = [
        r
        for r in results.read_table(Path(run_dir) / results.RUNS_FILE)
        if _scored(r) and not r.get("control")
    ]
    predictions = results.read_table(Path(run_dir) / results.PREDICTIONS_FILE)
    models = sorted({r["model"] for r in rows})
    out = []
    for dataset in sorted({r["dataset"] for r in rows}):
        for first, second in combinations(models, 2):
            a = [r["accuracy"] for r in rows if (r["model"], r["dataset"]) == (first, dataset)]
            b = [r["accuracy"] for r in rows if (r["model"], r["dataset"]) == (second, dataset)]
            if len(a) < 2 or len(b) < 2:
                continue
            entry = {"dataset": dataset, "first": first, "second": second}
            entry.update({f"runs_{k}": v for k, v in welch_t_test(a, b).items()})
            ca = ensemble_correct(predictions, first, dataset)
            cb = ensemble_correct(predictions, second, dataset)
            if len(ca) and len(ca) == len(cb):
                test = mcnemar_exact(ca, cb)
                entry.update(
                    {
                        "ensemble_difference": float(ca.mean() - cb.mean()),
                        "mcnemar_p": test["p_value"],
                    }
                )
            out.append(entry)
    return out


def _scored(row: dict) -> bool:
    """A runs.csv row with a numeric accuracy (hand-edited or foreign rows are left out)."""
    return isinstance(row.get("accuracy"), int | float)
