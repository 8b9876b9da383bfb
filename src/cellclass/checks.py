"""Is the result real? Plain-language checks of a results folder, for the top of the report.

`find_warnings` flags memorisation, accuracy indistinguishable from (or below) chance,
label-shuffled control runs that beat chance, large run-to-run spread, strong class imbalance,
leakage and training classes told apart by brightness alone; `summary_rows` gives the numbers
the checks (and the summary table) rest on.
Rows are dicts from ``runs.csv`` / ``epochs.csv`` with numbers already converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cellclass.metrics import summarize, wilson_interval

MEMORISATION_TRAIN = 0.95  # final train accuracy at or above this counts as "fits its images"
MEMORISATION_GAP = 0.15  # ... and a test mean this much lower is flagged as memorisation
IMBALANCE_RATIO = 3.0  # largest / smallest training class count above this is flagged
SPREAD_SD = 0.10  # run-to-run sd of test accuracy above this is flagged


@dataclass(frozen=True)
class ReportWarning:
    level: str  # "danger": the result may not be real; "warning": read the numbers with care
    title: str  # one line, with the numbers
    detail: str  # what it means and what to do


def summary_rows(runs: list[dict]) -> list[dict]:
    """Test accuracy over runs per (model, test set); control runs summarised separately.

    Parameters
    ----------
    runs : list of dict
        Rows of ``runs.csv`` with ``model``, ``dataset``, ``accuracy`` and optionally
        ``control`` (missing means 0).

    Returns
    -------
    list of dict
        ``model``, ``dataset``, ``control`` (0/1), ``n``, ``mean``, ``sd``, ``ci_low``,
        ``ci_high`` (95 % t interval clipped to [0, 1]; NaN with one run), ``min``, ``max``,
        ``collapsed`` (runs whose training never left chance); groups in order of first
        appearance, control groups last.
    """
    groups: dict[tuple[int, str, str], list[float]] = {}
    stuck: dict[tuple[int, str, str], int] = {}
    for row in runs:
        if math.isfinite(row["accuracy"]):
            key = (int(row.get("control") or 0), str(row["model"]), str(row["dataset"]))
            groups.setdefault(key, []).append(float(row["accuracy"]))
            stuck[key] = stuck.get(key, 0) + _is_collapsed(row)
    rows = []
    for key in sorted(groups, key=lambda key: key[0]):  # stable: keeps appearance order
        control, model, dataset = key
        numbers = summarize(groups[key])
        for bound in ("ci_low", "ci_high"):  # an accuracy lies in [0, 1]; NaN stays NaN
            numbers[bound] = float(np.clip(numbers[bound], 0.0, 1.0))
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "control": control,
                **numbers,
                "collapsed": stuck[key],
            }
        )
    return rows


def _is_collapsed(row: dict) -> int:
    value = row.get("collapsed")
    return int(isinstance(value, int | float) and math.isfinite(value) and value > 0)


def _interval(summary: dict, runs: list[dict]) -> tuple[float, float, str]:
    """95 % interval of a summary row: t over runs, or Wilson over images for a single run."""
    if summary["n"] >= 2:
        return summary["ci_low"], summary["ci_high"], f"95 % t interval over {summary['n']} runs"
    key = (summary["control"], summary["model"], summary["dataset"])
    row = next(r for r in runs if (r.get("control") or 0, r["model"], r["dataset"]) == key)
    n_images = int(row.get("n_images") or 0)
    if n_images < 1:
        return math.nan, math.nan, "no interval (n_images unknown)"
    low, high = wilson_interval(round(summary["mean"] * n_images), n_images)
    return low, high, f"95 % Wilson interval over {n_images} images of one run"


# ---------------------------------------------------------------- warnings
def find_warnings(
    runs: list[dict], epochs: list[dict], config: dict, predictions: list[dict] = ()
) -> list[ReportWarning]:
    """Plain-language warnings about whether the results are real, most serious first.

    Parameters
    ----------
    runs, epochs : list of dict
        Rows of ``runs.csv`` and ``epochs.csv`` (numbers converted).
    config : dict
        ``config.json``: uses ``class_names``, ``train.class_counts`` and the optional
        ``leakage`` list of near-duplicate pairs and ``confounds`` list of brightness
        confounds in the training folder.
    predictions : list of dict, optional
        Rows of ``predictions.csv``: count the answers naming a class a test set lacks.

    Returns
    -------
    list of ReportWarning
        "danger" warnings first, then "warning".
    """
    summary = summary_rows(runs)
    found = (
        _leakage_warnings(config)
        + _confound_warnings(config)
        + _memorisation_warnings(summary, epochs)
        + _chance_warnings(summary, runs, chance_levels(config))
        + _collapse_warnings(summary)
        + _spread_warnings(summary)
        + _imbalance_warnings(config)
        + _absent_class_warnings(config, predictions)
    )
    return sorted(found, key=lambda warning: warning.level != "danger")


def _final_train_accuracy(epochs: list[dict]) -> dict[str, float]:
    """Mean over (non-control) runs of each model's train accuracy at its last epoch."""
    last: dict[tuple[str, int], tuple[int, float]] = {}
    for row in epochs:
        key = (row["model"], row["run"])
        if row["split"] != "train" or row.get("control"):
            continue
        if math.isfinite(row["accuracy"]) and row["epoch"] >= last.get(key, (-1, 0.0))[0]:
            last[key] = (row["epoch"], row["accuracy"])
    per_model: dict[str, list[float]] = {}
    for (model, _), (_, accuracy) in last.items():
        per_model.setdefault(model, []).append(accuracy)
    return {model: float(np.mean(values)) for model, values in per_model.items()}


def _memorisation_warnings(summary, epochs) -> list[ReportWarning]:
    train = _final_train_accuracy(epochs)
    found = []
    for row in (r for r in summary if not r["control"] and r["model"] in train):
        fit = train[row["model"]]
        if fit >= MEMORISATION_TRAIN and row["mean"] < fit - MEMORISATION_GAP:
            found.append(
                ReportWarning(
                    "danger",
                    f"Memorisation: {row['model']} reaches {fit:.1%} on its training images "
                    f"but {row['mean']:.1%} on {row['dataset']}",
                    "The network fits the training images almost perfectly yet does far worse on "
                    "this test set, so it has learnt features of the training images that do not "
                    "carry over. Check the training curves; try augmentation, fewer epochs, or "
                    "training images taken under the same conditions as this test set.",
                )
            )
    return found


def chance_levels(config: dict) -> dict[str, float]:
    """Per test set, the accuracy of always answering its most common class (at least 1/K).

    A network that outputs one constant class scores this much: on a test set holding only two
    of three training classes, that is 50 %, not 33 %.
    """
    uniform = 1.0 / max(1, len(config.get("class_names", [])))
    levels = {}
    for name, info in (config.get("tests") or {}).items():
        counts = [n for n in (info.get("class_counts") or {}).values() if n]
        levels[name] = max(uniform, max(counts) / sum(counts)) if counts else uniform
    return levels | {"": uniform}


def _chance_warnings(summary, runs, chances: dict[str, float]) -> list[ReportWarning]:
    found = []
    for row in summary:
        chance = chances.get(row["dataset"], chances[""])
        low, high, method = _interval(row, runs)
        name = f"{row['model']} on {row['dataset']}"
        numbers = (
            f"mean {row['mean']:.1%}, {method} [{low:.1%}, {high:.1%}], chance {chance:.1%} "
            "(always answering the most common class)"
        )
        if row["control"] and low > chance:
            found.append(
                ReportWarning(
                    "danger",
                    f"Label-shuffled control runs beat chance: {name}",
                    f"{numbers}. Without real labels the network should guess; doing better "
                    "points to leakage between training and test images, a class-specific "
                    "artefact (file format, brightness, folder), or a bug.",
                )
            )
        elif not row["control"] and low <= chance <= high:
            found.append(
                ReportWarning(
                    "danger",
                    f"Accuracy indistinguishable from chance: {name}",
                    f"{numbers}. The network has not shown that it can tell these classes apart "
                    "on this test set; more runs or more test images narrow the interval.",
                )
            )
        elif not row["control"] and high < chance:
            found.append(
                ReportWarning(
                    "danger",
                    f"Accuracy below chance: {name}",
                    f"{numbers}. Worse than guessing usually means the test folders' class "
                    "names or order do not match the training folders.",
                )
            )
    return found


def _collapse_warnings(summary) -> list[ReportWarning]:
    """One warning per model whose runs collapsed (counted once, on its first test set)."""
    seen, found = set(), []
    for row in summary:
        if row["control"] or not row["collapsed"] or row["model"] in seen:
            continue
        seen.add(row["model"])
        found.append(
            ReportWarning(
                "warning",
                f"{row['collapsed']} of {row['n']} {row['model']} runs never left chance",
                "Their training accuracy stayed at the share of the largest class: the network "
                "answered one class for every image (a collapsed run, e.g. dead ReLUs after the "
                "first steps). They count in the mean at chance level; read the box plot, where "
                "they sit at the bottom, and compare the runs that learned.",
            )
        )
    return found


def _spread_warnings(summary) -> list[ReportWarning]:
    return [
        ReportWarning(
            "warning",
            f"Large run-to-run spread: {row['model']} on {row['dataset']} "
            f"(sd {row['sd']:.1%} over {row['n']} runs, {row['min']:.1%} to {row['max']:.1%})",
            "Test accuracy depends strongly on the random seed, so a single run says little; "
            "report the mean and interval over runs, not the best run.",
        )
        for row in summary
        if not row["control"] and row["n"] >= 2 and row["sd"] > SPREAD_SD
    ]


def _imbalance_warnings(config: dict) -> list[ReportWarning]:
    counts = config.get("train", {}).get("class_counts", {})
    if len(counts) < 2:
        return []
    listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
    smallest, largest = min(counts.values()), max(counts.values())
    if smallest == 0:
        empty = [name for name, count in counts.items() if count == 0]
        return [
            ReportWarning(
                "danger",
                f"No training images for class {', '.join(empty)}",
                f"Training images per class: {listed}.",
            )
        ]
    if largest / smallest <= IMBALANCE_RATIO:
        return []
    return [
        ReportWarning(
            "warning",
            f"Strong class imbalance in training: {largest / smallest:.1f} to 1",
            f"Training images per class: {listed}. A network can score well by favouring the "
            "large class; read per-class recall in the confusion matrices, and consider "
            "balancing the folders.",
        )
    ]


def _leakage_warnings(config: dict) -> list[ReportWarning]:
    pairs = config.get("leakage") or []
    if not pairs:
        return []
    shown = "; ".join(" ↔ ".join(map(str, _pair_items(pair))) for pair in pairs[:5])
    more = f" (and {len(pairs) - 5} more)" if len(pairs) > 5 else ""
    return [
        ReportWarning(
            "danger",
            f"Leakage: {len(pairs)} near-duplicate image pairs across training and test",
            f"{shown}{more}. Test accuracy on copies of training images overstates how well the "
            "network generalises; remove the duplicates or split by source field.",
        )
    ]


def _absent_class_warnings(config: dict, predictions) -> list[ReportWarning]:
    """Test sets lacking some of the model's classes: answers naming those are always wrong,
    and chance is the folder's majority share, not 1 / the number of classes."""
    names = list(config.get("class_names") or [])
    found = []
    for test, info in (config.get("tests") or {}).items():
        counts = info.get("class_counts") or {}
        absent = [name for name in names if not counts.get(name)]
        if not absent or not counts:
            continue
        rows = [r for r in predictions if r.get("dataset") == test and not r.get("control")]
        wrong = sum(str(r.get("predicted")) in absent for r in rows)
        answered = f" {wrong} of {len(rows)} answers over all runs named them." if rows else ""
        chance = max(counts.values()) / sum(counts.values())
        found.append(
            ReportWarning(
                "warning",
                f"{test} has no images of {', '.join(absent)}",
                f"The models can answer {len(names)} classes; on {test} every answer naming "
                f"{' or '.join(absent)} is wrong.{answered} Chance on {test} is its majority "
                f"class's share, {chance:.0%}, not 1/{len(names)}.",
            )
        )
    return found


def _confound_warnings(config: dict) -> list[ReportWarning]:
    lines = config.get("confounds") or []
    if not lines:
        return []
    return [
        ReportWarning(
            "danger",
            "Possible confound: the training classes differ in brightness",
            "; ".join(lines) + ". A network fed raw intensities can learn the imaging conditions "
            "instead of the biology: it then fits its training images and fails on images "
            "taken another day. Image the classes alike, mix them within each session, or "
            "compare with a model that standardises each image (the strong recipe).",
        )
    ]


def _pair_items(pair) -> list:
    return list(pair.values()) if isinstance(pair, dict) else list(pair)
