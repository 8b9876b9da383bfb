"""The parts `cellclass.figures.plots` draws with: colours, image tiles, boxes, heatmaps, tables.

Besides `new_figure` (an Agg-drawn figure, no pyplot) and `save_png` (atomic write), helpers
here draw onto axes they are given and return nothing or plain data, so each public figure
function stays short and readable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.table import Cell
from matplotlib.text import Text
from matplotlib.ticker import PercentFormatter

from cellclass import metrics
from cellclass._files import atomic_path
from cellclass.data.images import to_display_uint8

RIGHT_COLOUR = "#1a7f37"  # tile title of a correct prediction (green)
WRONG_COLOUR = "#cf222e"  # tile title of a wrong prediction (red)
CHANCE_COLOUR = "#555555"  # dashed chance line and calibration diagonal
CONTROL_COLOUR = colormaps["tab10"].colors[7]  # grey: label-shuffled control runs
EXPERT_COLOUR = "black"  # the human expert's accuracy, drawn dash-dotted: no model colour
EXPERT_STYLE = {"color": EXPERT_COLOUR, "linestyle": "-.", "linewidth": 2.5}
# legend lines, in font sizes: at 8 pt, 32 pt hold one period of the expert's 2.5-pt dash-dot
# (26.5 pt); matplotlib's default 2 showed a plain dash, unlike the plotted line
LEGEND_HANDLE_LENGTH = 4.0
MAX_ANNOTATED_CLASSES = 20  # confusion cells get numbers up to this many classes
DPI = 110  # dots per inch of every PNG: sharp in a browser, small enough to embed
_PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}  # user text is never maths


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A figure (inches) drawn by the Agg canvas, by default with constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, out_path: str | os.PathLike) -> Path:
    """Write `figure` as PNG to `out_path` atomically; create parent folders; return the path.

    Every text is drawn as plain text (`plain_texts`): class, file and test-set names come
    from users' folders, and matplotlib would read ``$...$`` in them as mathematics (a name
    like ``$x^$`` would stop the figure, and the whole report, with a parse error).
    """
    out_path = Path(out_path)
    plain_texts(figure)
    with atomic_path(out_path, suffix=".png") as temporary, rc_context(_PLAIN_TEXT):
        # tick labels made while drawing are plain too
        figure.savefig(temporary, dpi=DPI, format="png", facecolor="white")
    return out_path


def plain_texts(figure: Figure) -> None:
    """Make every text of `figure` plain: no mathtext (``$...$``), no LaTeX, whatever the
    user's matplotlibrc says. Table cells hold their text outside the artist tree."""
    for artist in figure.findobj():
        texts = [artist] if isinstance(artist, Text) else []
        texts += [artist.get_text()] if isinstance(artist, Cell) else []
        for text in texts:
            text.set_parse_math(False)
            text.set_usetex(False)


def tile_figure(images: np.ndarray, labels: list[tuple[str, str]], n_cols: int) -> Figure:
    """A figure of 1.8-inch image tiles with room for each tile's title and a figure title.

    The margins are computed here rather than by constrained layout, which is slow with
    dozens of axes and gains nothing on a regular grid.
    """
    n_rows, n_cols = tile_shape(len(images), n_cols)
    tile, label = 1.8, 0.08 + 0.16 * max(text.count("\n") + 1 for text, _ in labels)
    width, height = 0.2 + (tile + 0.1) * n_cols, 0.45 + (tile + label) * n_rows
    figure = new_figure(width, height, constrained=False)
    figure.subplots_adjust(
        left=0.1 / width,
        right=1 - 0.1 / width,
        bottom=0.1 / height,
        top=1 - (0.35 + label) / height,
        wspace=0.1 / tile,
        hspace=label / tile,
    )
    draw_tiles(figure, images, labels, n_cols)
    return figure


def short_name(name, max_chars: int = 22) -> str:
    """`name` cut to `max_chars` characters (ending in "…") so a tile title fits its tile."""
    text = str(name)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def model_colours(models: Sequence[str]) -> dict[str, tuple]:
    """One tab10 colour per model, in the given order; "<model> (control)" entries are grey."""
    palette = [colour for colour in colormaps["tab10"].colors if colour != CONTROL_COLOUR]
    real = [model for model in models if not model.endswith(" (control)")]
    colours = {model: palette[index % len(palette)] for index, model in enumerate(real)}
    return {model: colours.get(model, CONTROL_COLOUR) for model in models}


def tile_shape(n_images: int, n_cols: int) -> tuple[int, int]:
    """(rows, columns) of a grid holding `n_images` tiles with at most `n_cols` per row."""
    if n_images < 1:
        raise ValueError("need at least one image to draw a grid of tiles")
    if n_cols < 1:
        raise ValueError(f"n_cols must be >= 1, got {n_cols}")
    n_cols = min(n_cols, n_images)
    return -(-n_images // n_cols), n_cols


def draw_tiles(figure, images: np.ndarray, labels: Sequence[tuple[str, str]], n_cols: int) -> None:
    """Fill `figure` with one axis per image, titled ``labels[i] = (text, colour)``."""
    n_rows, n_cols = tile_shape(len(images), n_cols)
    panels = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for axes, image, (text, colour) in zip(panels, images, labels, strict=False):
        axes.imshow(to_display_uint8(image), interpolation="nearest")
        axes.set_title(text, color=colour, fontsize=8, fontweight="bold")
    for axes in panels:
        axes.set_axis_off()


def group_values(
    rows: Iterable[dict], key: str, *, include_control: bool = False
) -> dict[tuple[str, str], list[float]]:
    """Finite ``row[key]`` values grouped by (model, dataset), in order of first appearance.

    Label-shuffled control runs (``control`` = 1) are left out, or kept as the model
    ``"<model> (control)"`` when `include_control` is true.
    """
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        is_control = bool(row.get("control") or 0)
        if is_control and not include_control:
            continue
        value = float(row[key])
        if not np.isfinite(value):
            continue
        model = f"{row['model']} (control)" if is_control else str(row["model"])
        groups.setdefault((model, str(row["dataset"])), []).append(value)
    return groups


def run_label(groups: dict[tuple[str, str], list[float]]) -> str:
    """ "12 runs", or "3-12 runs" when the groups differ in size."""
    sizes = sorted({len(values) for values in groups.values()})
    count = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    return f"{count} run{'' if count == '1' else 's'}"


def draw_box_group(axes, x: float, width: float, values, colour, rng) -> None:
    """One box at `x` plus its values as points jittered horizontally within the box."""
    style = {"color": colour, "linewidth": 1.3}
    axes.boxplot(
        [values],
        positions=[x],
        widths=width * 0.7,
        showfliers=False,
        patch_artist=True,
        manage_ticks=False,
        boxprops={"facecolor": (*colour[:3], 0.25), "edgecolor": colour},
        medianprops={"color": "black", "linewidth": 1.6},
        whiskerprops=style,
        capprops=style,
    )
    jitter = rng.uniform(-width * 0.25, width * 0.25, size=len(values))
    points = {"s": 16, "color": colour, "alpha": 0.8, "zorder": 3, "linewidths": 0}
    axes.scatter(x + jitter, values, clip_on=False, **points)  # runs at 0 % stay visible


def chance_by_dataset(chance: float | Mapping[str, float], datasets: list[str]) -> dict:
    """{test set: chance accuracy}: one number for all, or each test set's own."""
    if isinstance(chance, Mapping):
        return {dataset: float(chance[dataset]) for dataset in datasets}
    return dict.fromkeys(datasets, float(chance))


def draw_reference_lines(
    axes, datasets: list[str], chance: float | Mapping[str, float], expert: dict
) -> None:
    """Dashed chance line across each test set's boxes (its majority-class share; one line
    across the plot when all test sets share it); the expert's accuracy likewise."""
    levels = chance_by_dataset(chance, datasets)
    if len(set(levels.values())) <= 1:
        level = next(iter(levels.values()), 0.5)
        axes.axhline(level, color=CHANCE_COLOUR, linestyle="--", label=f"chance {level:.0%}")
    else:
        label = "chance (majority class of each test set)"
        for centre, dataset in enumerate(datasets):
            span = [centre - 0.45, centre + 0.45]
            axes.plot(span, [levels[dataset]] * 2, color=CHANCE_COLOUR, linestyle="--", label=label)
            label = None
    label = "expert"
    for dataset, value in expert.items():
        if dataset in datasets:
            centre = datasets.index(dataset)
            span = [centre - 0.45, centre + 0.45]
            axes.plot(span, [value, value], label=label, **EXPERT_STYLE)
            label = None  # one legend entry for all test sets


def ordered_splits(splits: Iterable[str]) -> list[str]:
    """Distinct split names: "train", then "val", then test sets in order of appearance."""
    names = list(dict.fromkeys(str(split) for split in splits))
    first = [name for name in ("train", "val") if name in names]
    return first + [name for name in names if name not in first]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average whose window shrinks symmetrically at the ends.

    The first and last values are kept as they are, so a curve is neither shifted nor pulled
    towards its neighbours where it starts and stops.
    """
    n_values, half = len(values), window // 2
    reach = [min(half, i, n_values - 1 - i) for i in range(n_values)]
    return np.array([values[i - r : i + r + 1].mean() for i, r in enumerate(reach)])


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class of a (K, K) matrix; NaN where undefined.

    Expands the counts into label arrays and defers to `cellclass.metrics.per_class_scores`,
    so the report and the metrics module can never disagree, except where a score has no
    meaning: recall and F1 of a class with no images (support 0), precision of a class never
    predicted. Those are NaN here, not the metrics module's 0, so a table shows "—" and a mean
    over classes (``np.nanmean``) leaves them out. A class with images that is never predicted
    keeps F1 0: its recall is 0, whatever its precision.

    Returns
    -------
    dict
        ``"precision"``, ``"recall"``, ``"f1"``: (K,) float64, NaN where undefined;
        ``"support"``: (K,) int64.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    n_classes = matrix.shape[0]
    if matrix.sum() == 0:  # no images at all: nothing is defined
        undefined = np.full(n_classes, np.nan)
        support = np.zeros(n_classes, dtype=np.int64)
        return {"precision": undefined, "recall": undefined, "f1": undefined, "support": support}
    classes = np.arange(n_classes)
    y_true = np.repeat(classes, matrix.sum(axis=1))  # (N,) row-major order of the cells
    y_pred = np.concatenate([np.repeat(classes, row) for row in matrix])  # (N,)
    scores = metrics.per_class_scores(y_true, y_pred, n_classes)
    absent, never_predicted = matrix.sum(axis=1) == 0, matrix.sum(axis=0) == 0  # (K,), (K,)
    return {
        "precision": np.where(never_predicted, np.nan, scores["precision"]),
        "recall": np.where(absent, np.nan, scores["recall"]),
        "f1": np.where(absent, np.nan, scores["f1"]),
        "support": scores["support"],
    }


def draw_heatmap(axes, values, class_names, title: str, fmt: str, *, vmax=None) -> None:
    """(K, K) matrix as an image with true classes on rows, predicted on columns."""
    cmap = colormaps["Blues"].with_extremes(bad="#eeeeee")
    finite = np.asarray(values, dtype=float)
    top = vmax if vmax is not None else max(1.0, float(np.nanmax(finite, initial=0.0)))
    axes.imshow(np.ma.masked_invalid(finite), cmap=cmap, vmin=0, vmax=top)
    n_classes = len(class_names)
    if n_classes <= MAX_ANNOTATED_CLASSES:
        size = 9 if n_classes <= 6 else 7
        for (row, col), value in np.ndenumerate(finite):
            if np.isfinite(value):
                colour = "white" if value > 0.6 * top else "black"
                axes.text(
                    col,
                    row,
                    fmt.format(value),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=size,
                )
    ticks = range(n_classes)
    rotation = 45 if max(len(str(name)) for name in class_names) > 6 else 0
    axes.set_xticks(ticks, class_names, rotation=rotation, ha="right" if rotation else "center")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)


def score_text(value: float) -> str:
    """A score with two decimals, or "—" where it is undefined (NaN)."""
    return f"{value:.2f}" if np.isfinite(value) else "—"


def draw_score_table(axes, scores: dict[str, np.ndarray], class_names) -> None:
    """Table of per-class precision, recall, F1 and support on an otherwise empty axis;
    undefined scores (NaN, e.g. recall of a class with no images) read "—"."""
    axes.set_axis_off()
    cells = [
        [str(name), score_text(p), score_text(r), score_text(f), str(int(s))]
        for name, p, r, f, s in zip(
            class_names,
            scores["precision"],
            scores["recall"],
            scores["f1"],
            scores["support"],
            strict=True,
        )
    ]
    table = axes.table(
        cells,
        colLabels=["class", "precision", "recall", "F1", "support"],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        if row == 0:
            cell.set_facecolor("#f0f0f0")


def run_key(row: Mapping) -> tuple[str, int, int]:
    """(model, run, control) of a runs.csv or epochs.csv row: run numbers restart per model
    and for control runs."""
    return str(row["model"]), int(row["run"]), int(bool(row.get("control") or 0))


def kept_epochs(run_rows: Iterable[Mapping]) -> dict[tuple[str, int, int], int]:
    """{`run_key`: epoch whose weights were kept} from runs.csv rows (one per run and test
    set, all with the same ``epoch``); runs without a recorded epoch are left out."""
    kept = {}
    for row in run_rows:
        epoch = float(row.get("epoch", np.nan))
        if np.isfinite(epoch):
            kept[run_key(row)] = int(epoch)
    return kept


def kept_marks(
    run_rows: Sequence[Mapping], split: str, metric: str
) -> dict[tuple[str, int, int], tuple[int, float]]:
    """{`run_key`: (kept epoch, the run's final ``metric`` on test set ``split``)} for the
    rings of one panel; the value is NaN for ``train`` and ``val`` (not in runs.csv).

    The final value is the kept weights' score, so a test panel thinned by ``test_every``
    (no point at the kept epoch) still gets its ring, at that value.
    """
    finals = {
        run_key(row): float(row.get(metric, np.nan))
        for row in run_rows
        if row.get("dataset") == split
    }
    return {key: (epoch, finals.get(key, np.nan)) for key, epoch in kept_epochs(run_rows).items()}


CONTROL_CURVE = " (shuffled labels)"  # appended to the model of label-shuffled control runs


def curve_label(row: Mapping) -> str:
    """The curve an epochs.csv row belongs to: its model, or "<model> (shuffled labels)" for
    a control run, so control runs get their own curve."""
    model = str(row["model"])
    control = bool(row.get("control") or 0)
    return f"{model}{CONTROL_CURVE}" if control and not model.endswith(CONTROL_CURVE) else model


def draw_curve(axes, rows, metric, colour, rng, smooth, kept=None) -> bool:
    """Jittered points of every run plus the (smoothed) mean line and ± sd band of one model.

    kept : {`run_key`: (epoch, value)}, optional (see `kept_marks`)
        Each run's point at its kept epoch is ringed; a run with no point there (a test set
        thinned by ``test_every``) gets a ring at (epoch, value) when value is finite.
        Returns whether any ring was drawn.
    """
    if not rows:
        return False
    epochs = np.array([row["epoch"] for row in rows], dtype=float)  # (M,)
    values = np.array([row[metric] for row in rows], dtype=float)  # (M,)
    jitter = rng.uniform(-0.15, 0.15, size=epochs.size)
    axes.scatter(epochs + jitter, values, s=9, color=colour, alpha=0.35, linewidths=0)
    kept = kept or {}
    is_kept = np.array([kept.get(run_key(row), (None,))[0] == row["epoch"] for row in rows])
    ringed = {run_key(row) for row, hit in zip(rows, is_kept, strict=True) if hit}
    unmeasured = [  # (epoch, value) of runs whose kept epoch has no point in this panel
        kept[key]
        for key in dict.fromkeys(run_key(row) for row in rows)
        if key in kept and key not in ringed and np.isfinite(kept[key][1])
    ]
    ring_x = np.concatenate([(epochs + jitter)[is_kept], [x for x, _ in unmeasured]])
    ring_y = np.concatenate([values[is_kept], [y for _, y in unmeasured]])
    ring = {"s": 40, "facecolors": "none", "edgecolors": colour, "linewidths": 1.3}
    axes.scatter(ring_x, ring_y, zorder=3, clip_on=False, **ring)
    unique = np.unique(epochs)
    means = np.array([values[epochs == e].mean() for e in unique])
    sds = np.array(
        [values[epochs == e].std(ddof=1) if (epochs == e).sum() > 1 else 0.0 for e in unique]
    )
    if smooth > 1 and unique.size >= 2 * smooth:
        means, sds = moving_average(means, smooth), moving_average(sds, smooth)
    axes.plot(unique, means, color=colour, linewidth=2)
    axes.fill_between(unique, means - sds, means + sds, color=colour, alpha=0.18, linewidth=0)
    return bool(ring_x.size)


def label_curve_axes(panels, n_cols: int, n_used: int, metric: str) -> None:
    """Axis labels on the outer panels; percent ticks for accuracy."""
    for index, axes in enumerate(panels[:n_used]):
        if index % n_cols == 0:
            axes.set_ylabel(metric)
        if index >= n_used - n_cols:
            axes.set_xlabel("epoch")
            axes.tick_params(labelbottom=True)
    if metric == "accuracy":
        panels[0].yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        panels[0].set_ylim(-0.02, 1.02)
    else:
        panels[0].set_ylim(bottom=0)
