"""Rendering of ``report.html``: the Jinja template with its filter, and the plain tables of
the template context (data counts, flattened settings, ensembles, human comparisons)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jinja2

from cellclass import results
from cellclass.summary import summary_table


def percent(value) -> str:
    """Jinja filter: 0.9612 -> "96.1 %"; NaN or None -> "–"."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.1f} %"


def flatten_settings(data: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as (dotted key, text) rows, in file order."""
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += flatten_settings(value, f"{name}.")
        else:
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            rows.append((name, "–" if value is None else text))
    return rows


def data_table(config: dict) -> dict:
    """Images per class in the training folder and each test folder, with totals."""
    sets = {"train": config.get("train", {}), **config.get("tests", {})}
    rows = [
        [index, name, *(info.get("class_counts", {}).get(name, 0) for info in sets.values())]
        for index, name in enumerate(config["class_names"])
    ]
    totals = ["", "total", *(info.get("n_images", "–") for info in sets.values())]
    return {
        "columns": list(sets),
        "rows": rows,
        "totals": totals,
        "paths": {name: info.get("path", "–") for name, info in sets.items()},
    }


def render_report(context: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cellclass.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["percent"] = percent
    return environment.get_template("report.html.j2").render(context)


def ensemble_rows(run_dir: Path) -> dict:
    """(model, dataset) -> ensemble accuracy and the p-value against control runs."""
    return {
        (row["model"], row["dataset"]): row for row in summary_table(run_dir) if "ensemble" in row
    }


def human_comparisons(run_dir: Path) -> list[dict]:
    """Every ``compare-*.json`` written by `cellclass compare`, newest last."""
    found = sorted(run_dir.glob("compare-*.json"), key=lambda p: p.stat().st_mtime)
    return [results.read_json(path) for path in found]
