"""The self-contained HTML report of one results folder.

`write_report` reads ``config.json``, ``runs.csv``, ``epochs.csv`` and ``predictions.csv``,
draws every figure into ``figures/`` (see `cellclass.figures.plots`) and renders
``templates/report.html.j2`` into ``report.html`` with each figure embedded as a base64 data
URI and the CSS inline, so the file can be mailed, archived or printed on its own.

`cellclass.checks.find_warnings` turns the tables into plain-language warnings shown at the top
of the report (memorisation, chance-level accuracy, class imbalance, run-to-run spread,
leakage). This module reads the folder, draws the figures and assembles the template's context
(sections per test set, explain figures beside the prediction panels, settings and data
tables); `cellclass.report.html` renders it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass._files import atomic_write_text
from cellclass.checks import chance_levels, find_warnings, summary_rows
from cellclass.data.cache import load_normalized
from cellclass.data.folders import FolderError, FolderIndex, scan_folder
from cellclass.data.preprocessing import BadImagesError, Preprocessing, preprocessing_from_dict
from cellclass.explain.probes import recalibrate
from cellclass.explain.step import explain_section
from cellclass.figures import plots as figures
from cellclass.metrics import confusion_matrix, expected_calibration_error, reliability_bins
from cellclass.progress import Observer
from cellclass.report.findings import comparison_sentences, study_findings
from cellclass.report.html import embedded_figure, render_report
from cellclass.summary import model_comparisons, summary_table
from cellclass.training import prepare_data

__all__ = [
    "Results",
    "calibrated_rows",
    "preview_folder",
    "read_results",
    "write_preview",
    "write_report",
]

N_PANEL = 16  # images per prediction panel
BOXPLOT_TITLE = "Test accuracy over runs"


@dataclass(frozen=True)
class Results:
    config: dict  # config.json
    runs: list[dict] = field(default_factory=list)  # runs.csv rows, numbers converted
    epochs: list[dict] = field(default_factory=list)  # epochs.csv rows
    predictions: list[dict] = field(default_factory=list)  # predictions.csv rows


# ---------------------------------------------------------------- reading
def _read_rows(path: Path) -> list[dict]:
    """`results.read_table`, with ``control`` 0 for runs written before control runs existed."""
    rows = results.read_table(path)
    return [{"control": 0, **row} if "run" in row else row for row in rows]


def read_results(run_dir: str | os.PathLike) -> Results:
    """Read a results folder; missing CSV files give empty tables.

    Raises
    ------
    FileNotFoundError
        When ``run_dir/config.json`` does not exist (not a cellclass results folder).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / results.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: {run_dir} is not a cellclass results folder "
            "(run `cellclass train` first, or point at the folder it wrote)"
        )
    tables = {
        name: _read_rows(run_dir / f"{name}.csv") for name in ("runs", "epochs", "predictions")
    }
    return Results(config=results.read_json(config_path), **tables)


# ---------------------------------------------------------------- figures
def _load_images(paths: list, prep: Preprocessing, cache_dir: str | None) -> np.ndarray:
    """Images as the model saw them, (N, S, S, C) float32 in [0, 1] (tests replace this)."""
    folder = Path(cache_dir) if cache_dir else None
    return load_normalized([Path(path) for path in paths], prep, cache_dir=folder)


def _loading(config: dict) -> tuple[Preprocessing, str | None]:
    """The fitted preprocessing and the pixel cache folder an experiment used."""
    if "preprocessing" not in config:
        raise OSError("config.json records no preprocessing, so images cannot be shown")
    prep = preprocessing_from_dict(config["preprocessing"])
    return prep, config.get("settings", {}).get("cache_dir")


def _balanced_sample(names: list[str], class_names, n_images: int, rng) -> list[int]:
    """Indices of up to `n_images` items drawn at random, classes taking turns, sorted by class."""
    by_class: dict[str, list[int]] = {}
    for index in rng.permutation(len(names)):
        by_class.setdefault(names[index], []).append(int(index))
    mixed = [i for turn in zip_longest(*by_class.values()) for i in turn if i is not None]
    order = {name: position for position, name in enumerate(class_names)}
    return sorted(mixed[:n_images], key=lambda i: order.get(names[i], len(order)))


def write_preview(
    index: FolderIndex,
    prep: Preprocessing,
    out_path: str | os.PathLike,
    *,
    n_images: int = 25,
    rng: np.random.Generator,
    cache_dir: str | None = None,
) -> Path:
    """Grid of images of a class-folder tree after the loading and normalisation the model sees.

    Parameters
    ----------
    index : FolderIndex
        The scanned folder (`cellclass.data.folders.scan_folder`).
    prep : Preprocessing
        Fitted preprocessing: "dataset" normalisation needs the training-set percentiles
        (as returned by `cellclass.training.experiment.prepare_data`).
    out_path : path
        PNG file to write.
    n_images : int, optional
        Images in the grid (25 gives the study's 5x5 grid); classes take turns.
    rng : numpy.random.Generator
        Chooses the images.
    cache_dir : str, optional
        Pixel cache folder (default: the cache module's default).

    Returns
    -------
    Path
        `out_path`.
    """
    names = [index.class_names[sample.label] for sample in index.samples]
    if not names:
        raise ValueError(f"{index.root} holds no images to preview")
    chosen = _balanced_sample(names, index.class_names, n_images, rng)
    images = _load_images([index.samples[i].path for i in chosen], prep, cache_dir)
    title = f"{Path(index.root).name}: {len(chosen)} of {len(names)} images"
    return figures.preview_grid(images, [names[i] for i in chosen], out_path, title=title)


def _overview_figures(data: Results, out: Path, rng: np.random.Generator) -> list[dict]:
    """Accuracy box plot (when there are test sets) and training curves (when there are epochs)."""
    entries = []
    chance = chance_levels(data.config)
    expert = data.config.get("expert") or {}
    if any(math.isfinite(row["accuracy"]) for row in data.runs if not row["control"]):
        path = figures.accuracy_boxplot(
            data.runs,
            out / "accuracy.png",
            chance={d: chance.get(d, chance[""]) for d in {r["dataset"] for r in data.runs}},
            expert=expert,
            rng=rng,
            include_control=True,
        )
        chance_text = "dashed line: chance (always answering the test set's most common class)"
        parts = ["one point per run", chance_text]
        parts += ["grey: label-shuffled control runs"] if _count_runs(data, control=1) else []
        parts += ["dash-dotted line: expert"] if expert else []
        parts += _collapse_notes(data.runs)
        caption = "; ".join(parts)
        caption = caption[0].upper() + caption[1:] + "."  # capitalize() would lower the names
        entries.append(embedded_figure(path, BOXPLOT_TITLE, caption))
    epochs = [row for row in data.epochs if not row["control"]]  # control runs: chance only
    for metric in ("accuracy", "loss"):
        if any(math.isfinite(row.get(metric, math.nan)) for row in epochs):
            name = f"curves-{metric}.png"
            path = figures.training_curves(
                epochs, out / name, metric=metric, rng=rng, run_rows=data.runs
            )
            caption = {
                "accuracy": "Train near 100 % while a test set stays low means memorisation.",
                "loss": "Training loss falling while a test set's loss rises means "
                "memorisation; the scale is cut at the runs' typical values, so a diverging "
                "run's outliers do not flatten the others.",
            }[metric]
            entries.append(embedded_figure(path, f"Training curves: {metric}", caption))
    if any(row["control"] for row in data.epochs):  # the figure labels and rings them
        path = figures.training_curves(
            data.epochs, out / "curves-control.png", metric="accuracy", rng=rng, run_rows=data.runs
        )
        caption = (
            "Runs trained on shuffled labels learn nothing real: how fast their training "
            "accuracy rises is how fast pure memorisation goes; their test accuracy is chance."
        )
        entries.append(embedded_figure(path, "Real vs shuffled-label runs", caption))
    return entries


def _normalization_rows(config: dict) -> list[dict]:
    """Each model's pixel scaling from config.json (older folders: the one preprocessing)."""
    found = config.get("normalization") or {}
    if not found and "preprocessing" in config:
        found = {
            ", ".join(config.get("models", [])) or "all": config["preprocessing"]["normalization"]
        }
    rows = []
    for model, norm in found.items():
        per_image = norm["mode"] == "image"
        low = "per image" if per_image else ", ".join(f"{v:g}" for v in norm.get("low", []))
        high = "per image" if per_image else ", ".join(f"{v:g}" for v in norm.get("high", []))
        rows.append({"model": model, "mode": norm["mode"], "low": low, "high": high})
    return rows


def _collapse_notes(runs: list[dict]) -> list[str]:
    """ "badger: 2 of 12 runs never left chance ..." per model with collapsed runs."""
    notes = {}
    for row in summary_rows(runs):
        if not row["control"] and row["collapsed"] and row["model"] not in notes:
            notes[row["model"]] = (
                f"{row['model']}: {row['collapsed']} of {row['n']} runs never left chance "
                "(constant output on their training images; the points at the bottom)"
            )
    return list(notes.values())


def _panel_rows(rows: list[dict], class_names: list[str], rng: np.random.Generator) -> list[dict]:
    """Up to N_PANEL predictions drawn at random, classes taking turns, sorted by class."""
    chosen = _balanced_sample([row["true"] for row in rows], class_names, N_PANEL, rng)
    return [rows[i] for i in chosen]


def _preview_figure(data: Results, out: Path, rng, notes: list) -> list[dict]:
    """Preview grid of the training folder, or a note saying why there is none."""
    train_dir = data.config.get("train", {}).get("path")
    if not train_dir:
        return []
    prep, cache_dir = _loading(data.config)
    try:
        index = scan_folder(train_dir, class_names=tuple(data.config["class_names"]))
        path = write_preview(index, prep, out / "preview.png", rng=rng, cache_dir=cache_dir)
    except (OSError, FolderError, BadImagesError) as error:
        notes.append(f"Preview of the training images left out: {error}")
        return []
    return [
        embedded_figure(
            path,
            "Training images",
            "After the loading and normalisation the model sees.",
            photo=True,
        )
    ]


def _panel_figures(
    rows, label: str, data: Results, out: Path, rng, temperature: float | None = None
) -> list[dict]:
    """Random prediction panel and most-confidently-wrong panel of one run on one test set."""
    sample = _panel_rows(rows, data.config["class_names"], rng)
    wrong = sorted(
        (r for r in rows if r["true"] != r["predicted"]), key=lambda row: -row["confidence"]
    )[:N_PANEL]
    images = _load_images([row["path"] for row in sample + wrong], *_loading(data.config))
    entries = []
    for name, chosen, offset, title in (
        ("panel", sample, 0, "Predictions"),
        ("wrong", wrong, len(sample), "Most confidently wrong"),
    ):
        if chosen:
            path = figures.prediction_panel(
                images[offset : offset + len(chosen)],
                [r["true"] for r in chosen],
                [r["predicted"] for r in chosen],
                [r["confidence"] for r in chosen],
                out / f"{name}-{results.file_slug(label)}.png",
                title=f"{title}: {label}, run {rows[0]['run']} (median accuracy)",
            )
            entries.append(
                embedded_figure(
                    path,
                    f"{title} (run {rows[0]['run']}, the run of median test accuracy)",
                    "Green: right; red: wrong; % = "
                    + (
                        f"calibrated confidence (temperature {temperature:.2f} fitted on the "
                        "validation split by `cellclass explain`)."
                        if temperature is not None
                        else "softmax confidence (uncalibrated: run `cellclass explain` to fit "
                        "a temperature)."
                    ),
                    photo=True,
                )
            )
    return entries


def _answer(run_dir: Path, data: Results) -> dict:
    """The report's first section: each model's finding per test set, the comparisons of
    models, and the expert's score or the commands that add it."""
    findings = [f for f in study_findings({run_dir.name: run_dir}) if f.n]
    expert = data.config.get("expert") or {}
    tests = list((data.config.get("tests") or {}).keys())
    hint = ""
    if tests and not expert:
        name = tests[0]
        folder = data.config["tests"][name].get("path", "TEST_DIR")
        hint = (
            f"cellclass blind serve {folder} {run_dir} --db scores.sqlite --scorer YOU; "
            f"then cellclass compare {run_dir} --human scores.sqlite --test {name}"
        )
    return {
        "findings": findings,
        "comparisons": comparison_sentences(run_dir),
        "expert": [
            f"The expert scored {value:.1%} on {name} (blinded, same images)."
            for name, value in expert.items()
        ],
        "hint": hint,
    }


def median_run(runs: list[dict], model: str, dataset: str, candidates: list[int]) -> int:
    """The run whose test accuracy is the median of the model's runs on ``dataset`` (the lower
    middle one for an even count): the panels show a typical run, not the first or the best."""
    scored = sorted(
        (row["accuracy"], row["run"])
        for row in runs
        if (row["model"], row["dataset"]) == (model, dataset)
        and not row["control"]
        and row["run"] in candidates
        and math.isfinite(row["accuracy"])
    )
    return scored[(len(scored) - 1) // 2][1] if scored else min(candidates)


def _test_sections(
    data: Results, out: Path, rng: np.random.Generator, notes: list, temperatures: dict
) -> list[dict]:
    """One report section per (model, test set): panels, confusion, calibration.

    Panels that cannot be drawn because the test images are gone are left out with a note
    appended to `notes`; the pooled figures need only the CSV and are always drawn. Panels show
    calibrated confidences for runs that have a temperature in ``temperatures``.
    """
    rows = [row for row in data.predictions if not row["control"]]
    keys = list(dict.fromkeys((r["model"], r["dataset"]) for r in rows))
    several_models = len({model for model, _ in keys}) > 1
    sections = []
    for model, dataset in keys:
        label = f"{model} on {dataset}" if several_models else dataset
        group = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
        first = median_run(data.runs, model, dataset, [r["run"] for r in group])
        temperature = temperatures.get((first, model))
        shown = [r for r in group if r["run"] == first]
        if temperature is not None:
            shown = calibrated_rows(shown, data.config["class_names"], temperature)
        try:
            entries = _panel_figures(shown, label, data, out, rng, temperature)
        except (OSError, BadImagesError) as error:  # test images moved or changed since training
            entries = []
            notes.append(f"Prediction panels of {label} left out: {error}")
        n_panels = len(entries)
        entries += pooled_figures(group, label, data.config["class_names"], out)
        sections.append(
            {"title": label, "dataset": dataset, "figures": entries, "n_panels": n_panels}
        )
    return sections


# ---------------------------------------------------------------- sections


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
        scaled = recalibrate(probs, temperature)[0]  # (K,); softmax(log p / T) ignores p's sum
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


# ---------------------------------------------------------------- the template's context


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


def ensemble_rows(run_dir: Path) -> dict:
    """(model, dataset) -> ensemble accuracy and the p-value against control runs."""
    return {
        (row["model"], row["dataset"]): row for row in summary_table(run_dir) if "ensemble" in row
    }


def human_comparisons(run_dir: Path) -> list[dict]:
    """Every ``compare-*.json`` written by `cellclass compare`, newest last."""
    found = sorted(run_dir.glob("compare-*.json"), key=lambda p: p.stat().st_mtime)
    return [results.read_json(path) for path in found]


def _count_runs(data: Results, *, control: int) -> int:
    """Number of distinct (model, run) trainings of one kind in runs.csv and epochs.csv."""
    rows = data.runs + data.epochs
    return len({(r["model"], r["run"]) for r in rows if int(r["control"]) == control})


def write_report(run_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Draw every figure into ``run_dir/figures/`` and write ``run_dir/report.html``.

    Parameters
    ----------
    run_dir : path
        A results folder written by `cellclass.training.experiment` (``config.json`` and the CSVs).
    seed : int, optional
        Seeds the jitter of points and the choice of images in the prediction panels, so
        the same folder always gives the same report.

    Returns
    -------
    Path
        The written ``report.html``, self-contained (figures as data URIs, CSS inline).
    """
    run_dir = Path(run_dir)
    data = read_results(run_dir)
    temperatures = results.load_temperatures(run_dir)  # {} until `cellclass explain` fitted them
    rng = np.random.default_rng(seed)
    out = run_dir / "figures"
    notes: list[str] = []
    sections = _test_sections(data, out, rng, notes, temperatures)
    explain = explain_entries(run_dir)
    place_beside_panels(sections, explain)
    overview = _overview_figures(data, out, rng)
    context = {
        "name": run_dir.resolve().name,  # "cellclass report ." names the folder
        "config": data.config,
        "warnings": find_warnings(data.runs, data.epochs, data.config, data.predictions),
        "answer": _answer(run_dir, data),
        "summary": summary_rows(data.runs),
        "chance": chance_levels(data.config),
        "normalization": _normalization_rows(data.config),
        "expert": data.config.get("expert") or {},
        "preview": _preview_figure(data, out, rng, notes),
        "overview": overview,
        "has_boxplot": bool(overview) and overview[0]["title"] == BOXPLOT_TITLE,
        "sections": sections,
        "notes": notes,
        "data": data_table(data.config),
        "settings": flatten_settings(data.config.get("settings", {})),
        "versions": flatten_settings(data.config.get("versions", {})),
        "machine": flatten_settings(data.config.get("machine", {})),
        "n_runs": _count_runs(data, control=0),
        "n_control_runs": _count_runs(data, control=1),
        "ensembles": ensemble_rows(run_dir),
        "comparisons": model_comparisons(run_dir),
        "human": human_comparisons(run_dir),
        "explain": explain,
    }
    path = run_dir / "report.html"
    atomic_write_text(path, render_report(context))
    return path


def preview_folder(settings, out_path: str | os.PathLike, *, n_images: int = 25, seed: int = 0):
    """The 5x5 preview of a class-folder tree, loaded and normalised as training would.

    settings : `cellclass.training.ExperimentSettings` whose ``train_dir`` is the
        folder and whose data options (image size, channels, normalisation, cache) are used.
    """
    data = prepare_data(settings, Observer())
    return write_preview(
        data.train.index,
        next(iter(data.preps.values())),
        out_path,
        n_images=n_images,
        rng=np.random.default_rng(seed),
        cache_dir=settings.cache_dir,
    )
