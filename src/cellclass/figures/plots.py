"""Each figure one function: tidy data in, PNG file out.

Every public function takes plain Python/numpy data (rows as ``list[dict]`` with numbers
already converted, image arrays, count matrices), draws on its own
`matplotlib.figure.Figure` (never pyplot's global state) and writes a PNG atomically: to a
temporary file in the target folder, then `os.replace`. Each returns the path it wrote.

Images are ``(N, H, W, C)`` float arrays in [0, 1], exactly as the model sees them
(`cellclass.data.cache.load_normalized`); `cellclass.data.images.to_display_uint8` turns each
into RGB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from cellclass.figures.drawing import (
    CHANCE_COLOUR,
    LEGEND_HANDLE_LENGTH,
    RIGHT_COLOUR,
    WRONG_COLOUR,
    chance_by_dataset,
    curve_label,
    draw_box_group,
    draw_curve,
    draw_heatmap,
    draw_reference_lines,
    draw_score_table,
    group_values,
    kept_marks,
    label_curve_axes,
    model_colours,
    new_figure,
    ordered_splits,
    per_class_scores,
    run_label,
    save_png,
    short_name,
    tile_figure,
)

__all__ = [
    "accuracy_boxplot",
    "confusion_figure",
    "prediction_labels",
    "prediction_panel",
    "preview_grid",
    "reliability_figure",
    "training_curves",
]


def preview_grid(
    images: np.ndarray,
    labels: Sequence[str],
    out_path: str | os.PathLike,
    *,
    n_cols: int = 5,
    title: str | None = None,
) -> Path:
    """Grid of images, each titled with its class name (the ``cellclass preview`` figure).

    Parameters
    ----------
    images : (N, H, W, C) ndarray, float32 in [0, 1]
        Images after the same loading and normalisation the model sees; any C.
    labels : sequence of str, length N
        Class name of each image.
    out_path : path
        PNG file to write.
    n_cols : int, optional
        Tiles per row (5 gives the study's 5x5 grid for 25 images).
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        `out_path`.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    figure = tile_figure(images, [(short_name(name), "black") for name in labels], n_cols)
    if title:
        figure.suptitle(title)
    return save_png(figure, out_path)


def prediction_labels(
    true_names: Sequence[str], pred_names: Sequence[str], confidences: Sequence[float]
) -> list[tuple[str, str]]:
    """Tile title and colour for each prediction: green when right, red when wrong.

    Parameters
    ----------
    true_names, pred_names : sequence of str, length N
        True and predicted class names.
    confidences : sequence of float, length N
        Probability of the predicted class, in [0, 1].

    Returns
    -------
    list of (str, str)
        ``("pred B 97 %\\ntrue A", colour)`` per image.
    """
    if not len(true_names) == len(pred_names) == len(confidences):
        raise ValueError(
            f"true_names, pred_names and confidences differ in length: "
            f"{len(true_names)}, {len(pred_names)}, {len(confidences)}"
        )
    labels = []
    for true, pred, confidence in zip(true_names, pred_names, confidences, strict=True):
        text = f"pred {short_name(pred)} {100 * float(confidence):.0f} %\ntrue {short_name(true)}"
        labels.append((text, RIGHT_COLOUR if true == pred else WRONG_COLOUR))
    return labels


def prediction_panel(
    images: np.ndarray,
    true_names: Sequence[str],
    pred_names: Sequence[str],
    confidences: Sequence[float],
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Test images titled with predicted class, confidence and true class; red when wrong.

    Parameters
    ----------
    images : (N, H, W, C) ndarray, float32 in [0, 1]
        The test images, N >= 1.
    true_names, pred_names : sequence of str, length N
        True and predicted class names (any number of classes).
    confidences : sequence of float, length N
        Softmax probability of the predicted class.
    out_path : path
        PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        `out_path`.
    """
    if len(images) != len(true_names):
        raise ValueError(f"got {len(images)} images but {len(true_names)} true names")
    labels = prediction_labels(true_names, pred_names, confidences)
    n_cols = max(1, min(6, math.ceil(math.sqrt(len(images)))))
    figure = tile_figure(images, labels, n_cols)
    if title:
        figure.suptitle(title)
    return save_png(figure, out_path)


def accuracy_boxplot(
    run_rows: Sequence[dict],
    out_path: str | os.PathLike,
    *,
    chance: float | Mapping[str, float],
    expert: dict[str, float] | None = None,
    rng: np.random.Generator,
    include_control: bool = False,
) -> Path:
    """Box plot with jittered points of test accuracy per run: one box per test set and model.

    Parameters
    ----------
    run_rows : sequence of dict
        Rows of ``runs.csv``: ``model``, ``dataset``, ``accuracy`` (float) and optionally
        ``control`` (0/1, missing means 0).
    out_path : path
        PNG file to write.
    chance : float or dict of str to float
        Accuracy of always answering the most common class, per test set (one number: the
        same for all); drawn as a dashed line across each test set.
    expert : dict of str to float, optional
        A human expert's accuracy per test set, drawn as a line across that test set.
    rng : numpy.random.Generator
        Source of the horizontal jitter of the points.
    include_control : bool, optional
        Also draw label-shuffled control runs, as their own boxes ("model (control)").

    Returns
    -------
    Path
        `out_path`.
    """
    figure = draw_accuracy_boxplot(
        run_rows, chance=chance, expert=expert, rng=rng, include_control=include_control
    )
    return save_png(figure, out_path)


def draw_accuracy_boxplot(
    run_rows: Sequence[dict],
    *,
    chance: float | Mapping[str, float],
    expert: dict[str, float] | None = None,
    rng: np.random.Generator,
    include_control: bool = False,
) -> Figure:
    """The figure of `accuracy_boxplot`, not saved: for notebooks (``figure`` displays it)."""
    groups = group_values(run_rows, "accuracy", include_control=include_control)
    if not groups:
        raise ValueError("no test accuracies to plot: run_rows has no test-set rows")
    datasets = list(dict.fromkeys(dataset for _, dataset in groups))
    models = list(dict.fromkeys(model for model, _ in groups))
    colours = model_colours(models)
    figure = new_figure(max(5.5, 2.6 + 1.4 * len(datasets) * max(1, len(models) / 2)), 4.2)
    axes = figure.add_subplot()
    width = 0.8 / len(models)
    for (model, dataset), values in groups.items():
        x = datasets.index(dataset) - 0.4 + width * (models.index(model) + 0.5)
        draw_box_group(axes, x, width, values, colours[model], rng)
    draw_reference_lines(axes, datasets, chance, expert or {})
    levels = chance_by_dataset(chance, datasets)
    lowest = min(*levels.values(), *(min(values) for values in groups.values()))
    axes.set_ylim(max(0.0, lowest - 0.08), 1.02)
    axes.set_xlim(-0.6, len(datasets) - 0.4)
    counts = {d: max(len(v) for (_, ds), v in groups.items() if ds == d) for d in datasets}
    axes.set_xticks(range(len(datasets)), [f"{d}\n(n={counts[d]})" for d in datasets])
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axes.set_ylabel("test accuracy")
    axes.grid(axis="y", alpha=0.3)
    kinds = {
        "label-shuffled control" if m.endswith(" (control)") else m: colours[m] for m in models
    }
    handles, labels = axes.get_legend_handles_labels()  # the chance and expert lines themselves
    for label, colour in kinds.items() if len(kinds) > 1 else ():
        handles.append(Line2D([], [], linestyle="", marker="s", color=colour))
        labels.append(label)
    axes.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        handlelength=LEGEND_HANDLE_LENGTH,  # the expert's whole dash-dot pattern shows
    )
    axes.set_title(f"Test accuracy per run ({run_label(groups)})")
    return figure


def training_curves(
    epoch_rows: Sequence[dict],
    out_path: str | os.PathLike,
    *,
    metric: str = "accuracy",
    rng: np.random.Generator,
    smooth: int = 3,
    run_rows: Sequence[dict] = (),
) -> Path:
    """Per-epoch curves: one panel per split, every run's points jittered, mean ± sd band;
    each run's kept epoch (the weights it was tested and saved with) ringed. Label-shuffled
    control runs (``control`` = 1) are their own curves, "<model> (shuffled labels)".

    Parameters
    ----------
    epoch_rows : sequence of dict
        Rows of ``epochs.csv``: ``run``, ``model``, ``epoch`` (int, 1-based), ``split``
        ("train", "val" or a test-set name), ``control`` (0/1, missing means 0) and the
        `metric` (float, NaN when missing).
    out_path : path
        PNG file to write.
    metric : {"accuracy", "loss"}, optional
        Column to plot.
    rng : numpy.random.Generator
        Source of the horizontal jitter of the points.
    smooth : int, optional
        Window (epochs) of the centred moving average applied to the mean and band;
        curves shorter than ``2 * smooth`` epochs, and ``smooth <= 1``, are not smoothed.
    run_rows : sequence of dict, optional
        Rows of ``runs.csv``: ``model``, ``run``, ``control`` and ``epoch``, the epoch whose
        weights each run kept (the best validation epoch or the last, by recipe), ``dataset``
        and the `metric` on it. That epoch's point of the run is ringed in every panel,
        control runs' too; a test panel without that epoch (``test_every``) rings the run's
        final `metric` on that test set at that epoch. Without run_rows, nothing is ringed.

    Returns
    -------
    Path
        `out_path`.
    """
    figure = draw_training_curves(
        epoch_rows, metric=metric, rng=rng, smooth=smooth, run_rows=run_rows
    )
    return save_png(figure, out_path)


def draw_training_curves(
    epoch_rows: Sequence[dict],
    *,
    metric: str = "accuracy",
    rng: np.random.Generator,
    smooth: int = 3,
    run_rows: Sequence[dict] = (),
) -> Figure:
    """The figure of `training_curves`, not saved: for notebooks (``figure`` displays it)."""
    rows = [row for row in epoch_rows if np.isfinite(row.get(metric, np.nan))]
    if not rows:
        raise ValueError(f"no finite '{metric}' values to plot in epoch_rows")
    splits = ordered_splits(row["split"] for row in rows)
    models = list(dict.fromkeys(curve_label(row) for row in rows))
    colours = model_colours(models)
    n_cols = min(3, len(splits))
    n_rows = math.ceil(len(splits) / n_cols)
    figure = new_figure(0.6 + 3.6 * n_cols, 0.4 + 2.9 * n_rows)
    panels = figure.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True).ravel()
    ringed = False
    for axes, split in zip(panels, splits, strict=False):
        kept = kept_marks(run_rows, split, metric)
        for model in models:
            subset = [r for r in rows if r["split"] == split and curve_label(r) == model]
            ringed |= draw_curve(axes, subset, metric, colours[model], rng, smooth, kept)
        axes.set_title(split)
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in panels[len(splits) :]:
        axes.set_visible(False)
    label_curve_axes(panels, n_cols, len(splits), metric)
    if metric == "loss":  # one diverging run (loss ~10) would flatten every other curve
        values = np.array([row[metric] for row in rows])
        typical = float(np.percentile(values, 98))
        if values.max() > 2 * typical:
            panels[0].set_ylim(0, 1.15 * typical)  # shared y axis: every panel
    for model in models if len(models) > 1 else ():
        panels[0].plot([], [], color=colours[model], label=model)
    if ringed:
        ring = {"marker": "o", "markerfacecolor": "none", "markeredgecolor": "black"}
        panels[0].plot([], [], linestyle="", label="epoch kept by each run", **ring)
    if len(models) > 1 or ringed:
        panels[0].legend(fontsize=8)
    figure.suptitle(f"{metric.capitalize()} per epoch (points: runs; line: mean ± sd)")
    return figure


def confusion_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Confusion matrix as counts and row-normalised, with per-class precision/recall/F1 below.

    A score with no meaning reads "—": recall and F1 of a class with no images in this test
    set, precision of a class never predicted (`cellclass.figures.drawing.per_class_scores`).

    Parameters
    ----------
    matrix : (K, K) ndarray, int
        ``matrix[i, j]`` = images of true class i predicted as class j.
    class_names : sequence of str, length K
        Class names in matrix order.
    out_path : path
        PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        `out_path`.
    """
    figure = draw_confusion_figure(matrix, class_names, title=title)
    return save_png(figure, out_path)


def draw_confusion_figure(
    matrix: np.ndarray, class_names: Sequence[str], *, title: str | None = None
) -> Figure:
    """The figure of `confusion_figure`, not saved."""
    matrix = np.asarray(matrix)
    n_classes = len(class_names)
    if matrix.shape != (n_classes, n_classes):
        raise ValueError(f"matrix has shape {matrix.shape}; expected ({n_classes}, {n_classes})")
    side = max(2.6, 0.55 * n_classes + 1.6)
    table_height = 0.3 + 0.24 * (n_classes + 1)
    figure = new_figure(2 * side + 0.8, side + table_height)
    grid = figure.add_gridspec(2, 2, height_ratios=[side, table_height])
    row_sums = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(row_sums > 0, matrix / row_sums, np.nan)  # (K, K)
    draw_heatmap(figure.add_subplot(grid[0, 0]), matrix, class_names, "counts", "{:.0f}")
    draw_heatmap(
        figure.add_subplot(grid[0, 1]),
        normalised,
        class_names,
        "row-normalised",
        "{:.0%}",
        vmax=1.0,
    )
    draw_score_table(figure.add_subplot(grid[1, :]), per_class_scores(matrix), class_names)
    total = int(matrix.sum())
    accuracy = np.trace(matrix) / total if total else float("nan")
    figure.suptitle(f"{title + ' — ' if title else ''}accuracy {accuracy:.1%} of {total} images")
    return figure


def reliability_figure(
    bins: dict,
    ece: float,
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Reliability diagram: per confidence bin, its accuracy (bar) and its mean confidence.

    Each bin's mean confidence is drawn at its own height, as a black line across the bin:
    the gap between a bar's top and its line is that bin's calibration error (ECE is their
    mean weighted by the images per bin, drawn below). A calibrated model's bars reach their
    lines, which then cross the diagonal inside the bin.

    Parameters
    ----------
    bins : dict
        From `cellclass.metrics.reliability_bins`: ``"confidence"``, ``"accuracy"``
        (n_bins,) float (NaN where empty), ``"count"`` (n_bins,) int, ``"edges"``
        (n_bins + 1,) float.
    ece : float
        Expected calibration error, shown in the title.
    out_path : path
        PNG file to write.
    title : str, optional
        Prefix of the title (e.g. the test-set name).

    Returns
    -------
    Path
        `out_path`.
    """
    return save_png(draw_reliability_figure(bins, ece, title=title), out_path)


def draw_reliability_figure(bins: dict, ece: float, *, title: str | None = None) -> Figure:
    """The figure of `reliability_figure`, not saved."""
    edges = np.asarray(bins["edges"], dtype=float)
    count = np.asarray(bins["count"])
    used = count > 0
    lefts, widths = edges[:-1][used], np.diff(edges)[used]
    accuracy = np.asarray(bins["accuracy"], dtype=float)[used]
    confidence = np.asarray(bins["confidence"], dtype=float)[used]
    figure = new_figure(4.6, 5.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        lefts,
        accuracy,
        widths,
        align="edge",
        color="#4c72b0",
        alpha=0.75,
        edgecolor="white",
        label="accuracy in bin",
    )
    top.plot([0, 1], [0, 1], "--", color=CHANCE_COLOUR, label="perfect calibration")
    top.hlines(
        confidence,
        lefts + 0.1 * widths,
        lefts + 0.9 * widths,
        color="black",
        linewidth=2,
        label="mean confidence in bin",
        clip_on=False,
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy, confidence")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title + ' — ' if title else ''}ECE {100 * ece:.1f} %")
    bottom.bar(lefts, count[used], widths, align="edge", color="#999999", edgecolor="white")
    bottom.set_xlabel("confidence (max softmax probability)")
    bottom.set_ylabel("images")
    for axes in (top, bottom):
        axes.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    top.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    return figure
