"""One page over several experiments of a study: the answer per dataset, first.

The 2019 study ran one binary experiment per dataset (Control vs Snap29, Control vs Snf7) and
read them side by side. `write_study_report` does the same over results folders written by
`cellclass.training.experiment.run_experiment`: for each dataset and model it states the finding
in one sentence (learnt, memorised, near chance; collapsed runs named) with the full report's
"danger" warnings beside it (a confound, leakage, memorisation), draws one box plot of
test accuracy over runs for all datasets, each with its own chance line, embeds each dataset's
training curves, and links to the dataset's full ``report.html``. The page is self-contained
(figures as data URIs, CSS inline).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import jinja2
import numpy as np

from cellclass._files import atomic_write_text
from cellclass.checks import chance_levels, find_warnings
from cellclass.figures import plots as figures
from cellclass.report.build import read_results
from cellclass.report.findings import study_findings
from cellclass.report.html import embedded_figure, percent

__all__ = ["write_study_report"]


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
    return embedded_figure(path, "Test accuracy over runs, per dataset", caption, "accuracy.png")


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
        data = read_results(run_dir)
        dangers = [  # what may make the finding not real: confounds, leakage, memorisation
            w for w in find_warnings(data.runs, data.epochs, data.config) if w.level == "danger"
        ]
        datasets.append(
            {
                "name": name,
                "report": relative,
                "findings": [f for f in findings if f.dataset == name],
                "dangers": dangers,
                "curves": embedded_figure(curves, f"{name}: training curves", caption, str(curves))
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
    environment.filters["percent"] = percent
    html = environment.get_template("study.html.j2").render(context)
    atomic_write_text(out_path, html)
    return out_path
