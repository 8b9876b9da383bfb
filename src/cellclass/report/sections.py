"""Pieces of the HTML report that need no image loading (`cellclass.report.build` assembles them).

Figure entries with the PNG embedded (`embedded_figure`), the pooled confusion and calibration
figures of one test set, prediction rows with temperature-scaled confidences
(`calibrated_rows`), and the explain section with its per-test-set figures placed beside the
prediction panels.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.explain.probes import recalibrate
from cellclass.explain.step import explain_section
from cellclass.figures import plots as figures
from cellclass.metrics import confusion_matrix, expected_calibration_error, reliability_bins

__all__ = ["calibrated_rows"]


def embedded_figure(path: Path, title: str, caption: str, file: str | None = None) -> dict:
    """A figure entry for the template, with the PNG embedded as a base64 data URI.

    file : where the PNG lies, relative to the results folder (default ``figures/<name>``).
    """
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return {
        "title": title,
        "caption": caption,
        "file": file or f"figures/{path.name}",
        "src": f"data:image/png;base64,{encoded}",
    }


def calibrated_rows(rows: list[dict], class_names: list[str], temperature: float) -> list[dict]:
    """predictions.csv rows with ``p_<class>`` and ``confidence`` temperature-scaled, as
    `cellclass predict` reports them for the same run; rows without probabilities unchanged."""
    columns = [f"p_{name}" for name in class_names]
    out = []
    for row in rows:
        probs = np.array([[row.get(c, math.nan) for c in columns]], dtype=np.float64)  # (1, K)
        if not np.isfinite(probs).all():
            out.append(row)
            continue
        scaled = recalibrate(probs / probs.sum(), temperature)[0]  # (K,)
        new = {**row, **dict(zip(columns, scaled.tolist(), strict=True))}
        new["confidence"] = float(scaled[class_names.index(row["predicted"])])
        out.append(new)
    return out


def pooled_figures(rows, label: str, class_names: list[str], out: Path) -> list[dict]:
    """Confusion matrix and reliability diagram of all (non-control) runs on one test set."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({r[key] for r in rows for key in ("true", "predicted")} - set(index))
    if unknown:
        raise ValueError(
            f"predictions.csv names classes {unknown} missing from config.json "
            f"class_names {class_names}; the results folder is inconsistent"
        )
    y_true = np.array([index[r["true"]] for r in rows])  # (N,)
    y_pred = np.array([index[r["predicted"]] for r in rows])  # (N,)
    n_runs = len({r["run"] for r in rows})
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    path = figures.confusion_figure(
        matrix, class_names, out / f"confusion-{results.file_slug(label)}.png", title=label
    )
    pooled = f"All images of {n_runs} run{'' if n_runs == 1 else 's'} pooled."
    entries = [embedded_figure(path, "Confusion matrix", pooled)]
    columns = [f"p_{name}" for name in class_names]
    probs = np.array([[r.get(column, math.nan) for column in columns] for r in rows])  # (N, K)
    if np.isfinite(probs).all():
        probs /= probs.sum(axis=1, keepdims=True)  # undo rounding in the CSV
        bins = reliability_bins(probs, y_true)
        ece = expected_calibration_error(probs, y_true)
        path = figures.reliability_figure(
            bins, ece, out / f"reliability-{results.file_slug(label)}.png", title=label
        )
        question = (
            "Is “95 % confident” right 95 % of the time? Bars show how often each confidence "
            "bin was right, black lines how confident it was: bars that reach their line mean yes."
        )
        entries.append(embedded_figure(path, "Calibration", f"{question} {pooled}"))
    return entries


def explain_entries(run_dir: Path) -> dict | None:
    """The attribution / calibration / fragility / confound section, when `cellclass explain`
    (or ``train --explain``) has run on this folder."""
    if not (run_dir / "explain" / "explain.json").is_file():
        return None
    section = explain_section(run_dir)
    figures = [
        {
            **embedded_figure(
                path, f["title"], f["caption"], str(path.relative_to(run_dir.resolve()))
            ),
            "dataset": f["dataset"],
        }
        for f in section["figures"]
        for path in [Path(f["path"])]
    ]
    return {"title": section["title"], "figures": figures, "notes": section["notes"]}


def place_beside_panels(sections: list[dict], explain: dict | None) -> None:
    """Move the explain figures of one test set (attribution maps, adversarial examples) into
    that test set's section, right after its prediction panels; the rest stay in ``explain``."""
    if not explain:
        return
    kept, moved = [], 0
    for entry in explain["figures"]:
        target = next((s for s in sections if s["dataset"] == entry["dataset"]), None)
        if entry["dataset"] is None or target is None:
            kept.append(entry)
            continue
        target["figures"].insert(target["n_panels"], entry)
        target["n_panels"] += 1
        moved += 1
    explain["figures"] = kept
    if moved:
        explain["notes"].insert(
            0,
            "Attribution maps and adversarial examples are shown in each test set's section, "
            "beside its prediction panels.",
        )
