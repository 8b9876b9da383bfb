"""The answer of a results folder in words: one `Finding` per model and test set.

Each finding says how well a model did on a test set over its runs, against that test set's
chance, whether it learnt, memorised or stayed near chance, and how many runs collapsed; the
report and the page over a study's datasets open with these sentences.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.checks import MEMORISATION_GAP, MEMORISATION_TRAIN
from cellclass.summary import model_comparisons, summary_table

__all__ = ["Finding", "comparison_sentences", "study_findings"]

LEARNT_MARGIN = 0.10  # a mean this far above chance, with the interval above chance: "learnt"
# "memorised": the report's warning and the finding use one rule (`cellclass.checks`)
MEMORISED_TRAIN, MEMORISED_GAP = MEMORISATION_TRAIN, MEMORISATION_GAP


@dataclass(frozen=True)
class Finding:
    dataset: str  # the experiment (results folder) name
    test: str  # its test set
    model: str  # recipe label
    n: int  # runs
    mean: float  # test accuracy over runs
    sd: float
    minimum: float
    chance: float  # the test set's majority-class share
    collapsed: int  # runs whose training never left chance
    train: float  # mean final training accuracy over runs (NaN when not recorded)
    verdict: str  # "learnt", "memorised", "near chance" or "above chance"
    sentence: str  # the finding in words


def _final_train(epochs: list[dict], model: str) -> float:
    """Mean over the model's real runs of their last epoch's training accuracy."""
    rows = [
        r for r in epochs if r["model"] == model and r["split"] == "train" and not r.get("control")
    ]
    last = {row["run"]: row["accuracy"] for row in sorted(rows, key=lambda row: row["epoch"])}
    return float(np.mean(list(last.values()))) if last else math.nan


def _verdict(row: dict, train: float) -> str:
    above = row["mean"] - row["chance"]
    interval_above = not math.isfinite(row["ci_low"]) or row["ci_low"] > row["chance"]
    if train >= MEMORISED_TRAIN and row["mean"] < train - MEMORISED_GAP and above < 0.15:
        return "memorised"
    if above >= LEARNT_MARGIN and interval_above:
        return "learnt"
    if above < 0.05 or not interval_above:
        return "near chance"
    return "above chance"


def _sentence(f: Finding) -> str:
    text = (
        f"{f.model} reaches {f.mean:.1%} on {f.test} (sd {f.sd:.1%} over {f.n} runs, lowest "
        f"{f.minimum:.1%}; chance {f.chance:.0%})"
    )
    if math.isfinite(f.train):
        text += f", {f.train:.1%} on its training images"
    words = {
        "learnt": "it learnt the difference",
        "memorised": "it memorised its training images without learning what carries over",
        "near chance": "it did not tell the classes apart",
        "above chance": "above chance, but not by much",
    }
    text += f": {words[f.verdict]}."
    if f.collapsed:
        text += f" {f.collapsed} of {f.n} runs never left chance (constant output)."
    return text


def study_findings(run_dirs: dict[str, str | os.PathLike]) -> list[Finding]:
    """One finding per (dataset, test set, model) over the real (not control) runs."""
    found = []
    for name, run_dir in run_dirs.items():
        epochs = results.read_table(Path(run_dir) / results.EPOCHS_FILE)
        for row in summary_table(run_dir):
            if "ensemble" not in row:  # control-run rows
                continue
            train = _final_train(epochs, row["model"])
            finding = Finding(
                dataset=name,
                test=row["dataset"],
                model=row["model"],
                n=int(row["n"]),
                mean=row["mean"],
                sd=row["sd"],
                minimum=row["min"],
                chance=row["chance"],
                collapsed=int(row["collapsed"]),
                train=train,
                verdict=_verdict(row, train),
                sentence="",
            )
            found.append(_with_sentence(finding))
    return found


def _with_sentence(finding: Finding) -> Finding:
    return replace(finding, sentence=_sentence(finding))


def comparison_sentences(run_dir: str | os.PathLike) -> list[str]:
    """One sentence per pair of models and test set: the difference and whether it is real."""
    sentences = []
    for row in model_comparisons(run_dir):
        diff, p = row["runs_difference"], row["runs_p_value"]
        better, worse = (
            (row["first"], row["second"]) if diff >= 0 else (row["second"], row["first"])
        )
        verdict = "a real difference" if p < 0.05 else "not distinguishable with these runs"
        sentences.append(
            f"On {row['dataset']}, {better} is {abs(diff):.1%} above {worse} over runs "
            f"(Welch p = {p:.2g}): {verdict}."
        )
    return sentences
