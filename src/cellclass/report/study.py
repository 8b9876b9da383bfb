"""One page over several experiments of a study: the answer per dataset, first.

The 2019 study ran one binary experiment per dataset (Control vs Snap29, Control vs Snf7) and
read them side by side. `write_study_report` does the same over results folders written by
`cellclass.training.experiment.run_experiment`: for each dataset and model it states the finding
in one sentence (learnt, memorised, near chance; collapsed runs named), draws one box plot of
test accuracy over runs for all datasets, each with its own chance line, embeds each dataset's
training curves, and links to the dataset's full ``report.html``. The page is self-contained
(figures as data URIs, CSS inline).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import numpy as np

from cellclass._files import atomic_write_text
from cellclass.checks import chance_levels
from cellclass.figures import plots as figures
from cellclass.report.build import read_results
from cellclass.report.html import _percent
from cellclass.report.sections import _figure
from cellclass.summary import summary_table

__all__ = ["Finding", "study_findings", "write_study_report"]

LEARNT_MARGIN = 0.10  # a mean this far above chance, with the interval above chance: "learnt"
MEMORISED_TRAIN = 0.95  # final training accuracy at or above this ...
MEMORISED_GAP = 0.15  # ... with test accuracy this much lower: "memorised"


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
    last: dict[int, tuple[int, float]] = {}
    for row in epochs:
        if row["model"] == model and row["split"] == "train" and not row["control"]:
            if row["epoch"] >= last.get(row["run"], (-1, 0.0))[0]:
                last[row["run"]] = (row["epoch"], row["accuracy"])
    values = [accuracy for _, accuracy in last.values()]
    return float(np.mean(values)) if values else math.nan


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
        epochs = read_results(run_dir).epochs
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
                collapsed=int(row.get("collapsed", 0)),
                train=train,
                verdict=_verdict(row, train),
                sentence="",
            )
            found.append(_with_sentence(finding))
    return found


def _with_sentence(finding: Finding) -> Finding:
    return replace(finding, sentence=_sentence(finding))


def _boxplot(run_dirs: dict, out: Path, rng) -> dict | None:
    rows, chance = [], {}
    for name, run_dir in run_dirs.items():
        data = read_results(run_dir)
        levels = chance_levels(data.config)
        for row in data.runs:
            if not row["control"] and math.isfinite(row["accuracy"]):
                label = f"{name}: {row['dataset']}" if row["dataset"] != name else name
                rows.append(dict(row, dataset=label))
                chance[label] = levels.get(row["dataset"], levels[""])
    if not rows:
        return None
    path = figures.accuracy_boxplot(rows, out / "accuracy.png", chance=chance, rng=rng)
    caption = (
        "One point per run; dashed lines: chance (always answering the test set's most "
        "common class). Collapsed runs (constant output) sit on their chance line."
    )
    return _figure(path, "Test accuracy over runs, per dataset", caption, "accuracy.png")


def write_study_report(
    run_dirs: dict[str, str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    title: str = "cellclass study",
    notes: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """Write one self-contained HTML page over several results folders (one per dataset).

    Parameters
    ----------
    run_dirs : dict of str to path
        Dataset name -> results folder, in reading order; each should already hold its
        ``report.html`` (linked) and ``figures/curves-accuracy.png`` (embedded when present).
    out_path : path
        The HTML file to write; its folder gets a ``figures/`` folder for the box plot.
    title : str
        Page heading.
    notes : tuple of str
        Lines shown under the heading (e.g. how the protocol was reduced).
    seed : int
        Seeds the jitter of the box plot's points.

    Returns
    -------
    Path
        `out_path`.
    """
    out_path = Path(out_path)
    figure_dir = out_path.parent / "figures"
    findings = study_findings(run_dirs)
    datasets = []
    for name, run_dir in run_dirs.items():
        run_dir = Path(run_dir)
        curves = run_dir / "figures" / "curves-accuracy.png"
        relative = os.path.relpath(run_dir / "report.html", out_path.parent)
        caption = "Train near 100 % while the test set stays low means memorisation."
        datasets.append(
            {
                "name": name,
                "report": relative,
                "findings": [f for f in findings if f.dataset == name],
                "curves": _figure(curves, f"{name}: training curves", caption, str(curves))
                if curves.is_file()
                else None,
            }
        )
    context = {
        "title": title,
        "notes": list(notes),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "datasets": datasets,
        "boxplot": _boxplot(run_dirs, figure_dir, np.random.default_rng(seed)),
    }
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cellclass.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["percent"] = _percent
    html = environment.get_template("study.html.j2").render(context)
    atomic_write_text(out_path, html)
    return out_path
