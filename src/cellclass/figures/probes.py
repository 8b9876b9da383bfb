"""Figures of the explain step's probes: calibration, fragility, intensity, loss vs accuracy.

Same contract as `cellclass.figures.plots`: each public function takes plain numpy data and table
rows, draws its own `matplotlib.figure.Figure` (never pyplot) and writes one PNG atomically,
returning its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import PercentFormatter

from cellclass.data.images import to_display_uint8
from cellclass.figures.drawing import (
    CHANCE_COLOUR,
    WRONG_COLOUR,
    chance_by_dataset,
    model_colours,
    new_figure,
    save_png,
)

__all__ = [
    "adversarial_examples_figure",
    "flip_sweep_figure",
    "intensity_histograms",
    "loss_accuracy_figure",
    "reliability_comparison",
]


def adversarial_examples_figure(
    original: np.ndarray,
    adversarial: np.ndarray,
    captions: Sequence[tuple[str, str]],
    out_path: str | os.PathLike,
    *,
    epsilon: float,
    title: str | None = None,
) -> Path:
    """Rows of original / perturbation (magnified) / adversarial image.

    Parameters
    ----------
    original, adversarial : (N, H, W, C) ndarray, float in [0, 1]
    captions : N pairs (caption of the original, caption of the adversarial image)
    epsilon : size of the perturbation, in [0, 1] units (shown as x/255)
    """
    if original.shape != adversarial.shape or len(captions) != len(original):
        raise ValueError("original, adversarial and captions must describe the same images")
    figure = new_figure(3 * 1.9, 0.5 + 2.05 * len(original))
    grid = figure.subplots(len(original), 3, squeeze=False)
    for row, (before, after, (text_before, text_after)) in enumerate(
        zip(original, adversarial, captions, strict=True)
    ):
        change = (after - before).mean(2)  # (H, W)
        bound = max(float(np.abs(change).max()), 1e-6)
        grid[row, 0].imshow(to_display_uint8(before), interpolation="auto")
        grid[row, 1].imshow(change, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="auto")
        grid[row, 2].imshow(to_display_uint8(after), interpolation="auto")
        grid[row, 0].set_title(text_before, fontsize=8)
        grid[row, 1].set_title(f"perturbation ±{255 * epsilon:g}/255\n(magnified)", fontsize=8)
        grid[row, 2].set_title(text_after, fontsize=8)
    for axes in grid.ravel():
        axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, out_path)


def flip_sweep_figure(rows: Sequence[dict], out_path: str | os.PathLike, *, title: str) -> Path:
    """Share of predictions flipped against epsilon: FGSM and random sign noise, per test set.

    Parameters
    ----------
    rows : dicts with ``dataset``, ``model``, ``run``, ``epsilon`` (float, [0, 1] units),
        ``attack`` ("FGSM" or "random sign") and ``flipped`` (fraction): the rows of
        `cellclass.explain.probes.flip_sweep` plus run, model and dataset. Thin lines: runs; thick:
        their mean, one line style per model.
    """
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    if not datasets:
        raise ValueError("no adversarial sweep rows to plot")
    models = list(dict.fromkeys(row["model"] for row in rows))
    styles = dict(zip(models, ("-", "--", ":", "-."), strict=False))
    figure = new_figure(0.6 + 3.4 * len(datasets), 3.4)
    panels = figure.subplots(1, len(datasets), squeeze=False, sharey=True)[0]
    for axes, dataset in zip(panels, datasets, strict=True):
        for (model, attack), colour in _sweep_colours(models).items():
            subset = [
                r
                for r in rows
                if (r["dataset"], r["model"], r["attack"]) == (dataset, model, attack)
            ]
            curves: dict[int, dict[float, float]] = {}
            for row in subset:
                curves.setdefault(row["run"], {})[row["epsilon"]] = row["flipped"]
            epsilons = sorted({r["epsilon"] for r in subset})
            if not epsilons:
                continue
            x = 255 * np.array(epsilons)
            for curve in curves.values():
                axes.plot(x, [curve[e] for e in epsilons], color=colour, alpha=0.3, linewidth=0.8)
            mean = [np.mean([curve[e] for curve in curves.values()]) for e in epsilons]
            label = attack if len(models) == 1 else f"{attack} · {model}"
            axes.plot(
                x,
                mean,
                "o",
                linestyle=styles.get(model, "-"),
                color=colour,
                linewidth=2,
                markersize=4,
                label=label,
            )
        axes.set_xscale("log", base=2)
        axes.set_xlabel("epsilon (grey levels of 255)")
        axes.set_title(dataset)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    panels[0].set_ylabel("predictions flipped")
    panels[0].legend(fontsize=7.5, loc="upper left")
    figure.suptitle(title, fontsize=10)
    return save_png(figure, out_path)


def _sweep_colours(models: Sequence[str]) -> dict[tuple[str, str], str]:
    """(model, attack) -> colour: FGSM red, random sign grey (line styles tell models apart)."""
    return {
        (m, a): WRONG_COLOUR if a == "FGSM" else CHANCE_COLOUR
        for m in models
        for a in ("FGSM", "random sign")
    }


def reliability_comparison(
    panels: dict[str, dict], out_path: str | os.PathLike, *, title: str
) -> Path:
    """Reliability curves before and after temperature scaling, one panel per test set.

    Parameters
    ----------
    panels : test-set name -> {"before": bins, "after": bins, "ece_before": float,
        "ece_after": float}, bins from `cellclass.metrics.reliability_bins`.
    """
    if not panels:
        raise ValueError("no test sets to draw reliability curves for")
    figure = new_figure(0.6 + 3.3 * len(panels), 3.6)
    grid = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for axes, (name, panel) in zip(grid, panels.items(), strict=True):
        axes.plot([0, 1], [0, 1], "--", color=CHANCE_COLOUR, linewidth=1)
        for key, colour, label in (
            ("before", "#4c72b0", "softmax"),
            ("after", "#dd8452", "T-scaled"),
        ):
            bins = panel[key]
            used = np.asarray(bins["count"]) > 0
            ece = panel[f"ece_{key}"]
            axes.plot(
                np.asarray(bins["confidence"])[used],
                np.asarray(bins["accuracy"])[used],
                "o-",
                color=colour,
                markersize=4,
                label=f"{label}: ECE {100 * ece:.1f} %",
            )
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_title(name)
        axes.set_xlabel("confidence")
        axes.legend(fontsize=7.5, loc="upper left")
        axes.grid(alpha=0.3)
        for axis in (axes.xaxis, axes.yaxis):
            axis.set_major_formatter(PercentFormatter(xmax=1.0))
    grid[0].set_ylabel("accuracy")
    figure.suptitle(title, fontsize=10)
    return save_png(figure, out_path)


def intensity_histograms(
    stats: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    out_path: str | os.PathLike,
    *,
    title: str,
) -> Path:
    """Per-class histograms of per-image statistics (e.g. mean and sd of intensity).

    Parameters
    ----------
    stats : statistic name -> (N,) ndarray of float, one value per image
    labels : (N,) ndarray of int, class of each image
    class_names : names of the classes, indexed by label
    """
    if not stats:
        raise ValueError("no statistics to draw histograms of")
    labels = np.asarray(labels)
    colours = model_colours(list(class_names))
    figure = new_figure(0.6 + 3.3 * len(stats), 3.2)
    grid = figure.subplots(1, len(stats), squeeze=False)[0]
    for axes, (name, values) in zip(grid, stats.items(), strict=True):
        values = np.asarray(values, dtype=float)
        edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=24)
        for label, class_name in enumerate(class_names):
            chosen = values[labels == label]
            if len(chosen):
                axes.hist(
                    chosen,
                    edges,
                    histtype="step",
                    linewidth=1.8,
                    color=colours[class_name],
                    label=f"{class_name} (n={len(chosen)})",
                )
        axes.set_xlabel(name)
        axes.grid(alpha=0.3)
    grid[0].set_ylabel("images")
    grid[0].legend(fontsize=7.5)
    figure.suptitle(title, fontsize=10)
    return save_png(figure, out_path)


def loss_accuracy_figure(
    rows: Sequence[dict], out_path: str | os.PathLike, *, chance: float | Mapping[str, float]
) -> Path:
    """Final training loss against test accuracy, one point per run and test set.

    Parameters
    ----------
    rows : dicts with ``run``, ``model``, ``dataset``, ``train_loss``, ``accuracy``
        (`cellclass.explain.probes.loss_accuracy_rows`); colour: test set, marker: model.
    chance : accuracy of always answering the most common class, per test set (one number:
        the same for all), drawn as dashed lines
    """
    if not rows:
        raise ValueError("no runs with both a final training loss and a test accuracy")
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    colours = model_colours(datasets)
    markers = dict(zip(models, "os^Dv<>", strict=False))
    figure = new_figure(5.0, 3.8)
    axes = figure.add_subplot()
    for dataset in datasets:
        for model in models:
            subset = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
            label = dataset if len(models) == 1 else f"{dataset} · {model}"
            axes.scatter(
                [r["train_loss"] for r in subset],
                [r["accuracy"] for r in subset],
                s=28,
                color=colours[dataset],
                marker=markers.get(model, "o"),
                label=label,
                zorder=3,
            )
            for row in subset:
                axes.annotate(
                    str(row["run"]),
                    (row["train_loss"], row["accuracy"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color="#555555",
                )
    levels = chance_by_dataset(chance, datasets)
    for dataset, level in levels.items():
        same = len(set(levels.values())) == 1
        if same and dataset != datasets[0]:
            continue
        axes.axhline(
            level,
            color=CHANCE_COLOUR if same else colours[dataset],
            linestyle="--",
            linewidth=1,
            label=f"chance {level:.0%}" if same else f"chance {dataset} {level:.0%}",
        )
    axes.set_xlabel("final training loss (cross-entropy)")
    axes.set_ylabel("test accuracy")
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title("Same loss, different accuracy? (numbers: runs)", fontsize=10)
    return save_png(figure, out_path)
