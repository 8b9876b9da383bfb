"""Tests of cellclass.figures.plots: every figure function on tiny synthetic tables and images."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cellclass.figures import plots as figures
from cellclass.figures.drawing import (
    RIGHT_COLOUR,
    WRONG_COLOUR,
    group_values,
    moving_average,
    per_class_scores,
)

CLASSES = {2: ["Control", "Snap29"], 5: ["a", "b", "c", "d", "e"]}


def _png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, after checking that it decodes."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def _images(n: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, channels), dtype=np.float32)


def _run_rows(n_runs: int, datasets, models=("badger",), seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"run": run, "model": model, "dataset": dataset, "accuracy": rng.uniform(0.6, 0.95)}
        for model in models
        for run in range(n_runs)
        for dataset in datasets
    ]


def _epoch_rows(n_runs: int, splits, models=("badger",), n_epochs: int = 6) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for model in models:
        for run in range(n_runs):
            for epoch in range(1, n_epochs + 1):
                for split in splits:
                    accuracy = 1 - 0.5 * 0.7**epoch + rng.normal(0, 0.02)
                    rows.append(
                        {
                            "run": run,
                            "model": model,
                            "epoch": epoch,
                            "split": split,
                            "accuracy": accuracy,
                            "loss": -np.log(accuracy),
                        }
                    )
    return rows


def _bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability bins computed here, independently of cellclass.metrics."""
    edges = np.linspace(0, 1, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, confidence, n_bins) / count
        accuracy = np.bincount(index, correct.astype(float), n_bins) / count
    return {"confidence": mean_confidence, "accuracy": accuracy, "count": count, "edges": edges}


# ---------------------------------------------------------------- image grids
@pytest.mark.parametrize(("n_images", "channels"), [(1, 1), (7, 3), (25, 2), (30, 4)])
def test_preview_grid_writes_a_png_of_sensible_size(tmp_path, n_images, channels):
    labels = [CLASSES[5][i % 5] for i in range(n_images)]
    out = tmp_path / "new" / "folder" / "preview.png"
    path = figures.preview_grid(_images(n_images, channels), labels, out, title="Training")
    assert path == out
    width, height = _png_size(path)
    n_cols, n_rows = min(5, n_images), -(-n_images // 5)
    assert 150 * n_cols < width < 250 * n_cols + 100
    assert 150 * n_rows < height < 250 * n_rows + 150
    assert [p.name for p in out.parent.iterdir()] == ["preview.png"]  # no temporary file left


def test_preview_grid_rejects_mismatched_labels(tmp_path):
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        figures.preview_grid(_images(3), ["a", "b"], tmp_path / "p.png")


def test_prediction_labels_are_green_when_right_and_red_when_wrong():
    labels = figures.prediction_labels(["A", "B", "C"], ["A", "C", "C"], [0.97, 0.5, 0.123])
    assert [colour for _, colour in labels] == [RIGHT_COLOUR, WRONG_COLOUR, RIGHT_COLOUR]
    assert labels[0][0] == "pred A 97 %\ntrue A"
    assert labels[1][0] == "pred C 50 %\ntrue B"
    assert RIGHT_COLOUR != WRONG_COLOUR
    (long,) = figures.prediction_labels(["x" * 40], ["x" * 40], [1.0])
    assert long == (f"pred {'x' * 21}… 100 %\ntrue {'x' * 21}…", RIGHT_COLOUR)


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("n_images", [1, 16])
def test_prediction_panel_any_number_of_classes(tmp_path, n_classes, n_images):
    rng = np.random.default_rng(n_images)
    names = CLASSES[n_classes]
    true = list(rng.choice(names, n_images))
    pred = list(rng.choice(names, n_images))
    path = figures.prediction_panel(
        _images(n_images),
        true,
        pred,
        rng.random(n_images),
        tmp_path / "panel.png",
        title="Predictions",
    )
    width, height = _png_size(path)
    assert 150 < width < 1200 and 150 < height < 1300


def test_prediction_panel_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        figures.prediction_panel(_images(2), ["A", "B"], ["A"], [0.5, 0.6], tmp_path / "p.png")


# ---------------------------------------------------------------- runs and epochs
@pytest.mark.parametrize(
    ("n_runs", "datasets", "models"),
    [(1, ["test"], ["badger"]), (12, ["snap29", "snf7", "third"], ["badger", "strong"])],
)
def test_accuracy_boxplot_one_run_and_many(tmp_path, n_runs, datasets, models):
    rows = _run_rows(n_runs, datasets, models)
    path = figures.accuracy_boxplot(
        rows,
        tmp_path / "box.png",
        chance=0.5,
        expert={"snap29": 0.93, "absent": 0.5},
        rng=np.random.default_rng(0),
    )
    width, height = _png_size(path)
    assert 400 < width < 2000 and 350 < height < 600


def test_accuracy_boxplot_is_reproducible_with_the_same_rng(tmp_path):
    rows = _run_rows(8, ["a", "b"])
    paths = [
        figures.accuracy_boxplot(
            rows, tmp_path / f"{k}.png", chance=0.2, rng=np.random.default_rng(seed)
        )
        for k, seed in enumerate((7, 7, 8))
    ]
    first, same, other = (path.read_bytes() for path in paths)
    assert first == same and first != other


def test_accuracy_boxplot_needs_accuracies(tmp_path):
    with pytest.raises(ValueError, match="no test accuracies"):
        figures.accuracy_boxplot([], tmp_path / "b.png", chance=0.5, rng=np.random.default_rng())


def test_control_runs_stay_out_of_the_main_boxes_unless_asked():
    rows = _run_rows(3, ["t"]) + [
        {"model": "badger", "dataset": "t", "accuracy": 0.5, "control": 1}
    ]
    assert list(group_values(rows, "accuracy")) == [("badger", "t")]
    assert len(group_values(rows, "accuracy")[("badger", "t")]) == 3
    with_control = group_values(rows, "accuracy", include_control=True)
    assert with_control[("badger (control)", "t")] == [0.5]


@pytest.mark.parametrize(
    ("n_runs", "splits", "models", "metric"),
    [
        (1, ["train"], ["badger"], "accuracy"),
        (5, ["test", "val", "train"], ["badger"], "loss"),
        (4, ["train", "val", "a", "b", "c"], ["badger", "strong"], "accuracy"),
    ],
)
def test_training_curves_one_panel_per_split(tmp_path, n_runs, splits, models, metric):
    rows = _epoch_rows(n_runs, splits, models)
    path = figures.training_curves(
        rows, tmp_path / "curves.png", metric=metric, rng=np.random.default_rng(0)
    )
    width, height = _png_size(path)
    n_cols, n_rows = min(3, len(splits)), -(-len(splits) // 3)
    assert 300 * n_cols < width < 500 * n_cols + 100
    assert 250 * n_rows < height < 400 * n_rows + 100


def test_training_curves_skip_missing_values_and_need_some(tmp_path):
    rows = _epoch_rows(2, ["train", "val"])
    for row in rows[::3]:
        row["loss"] = float("nan")
    figures.training_curves(rows, tmp_path / "c.png", metric="loss", rng=np.random.default_rng())
    for row in rows:
        row["loss"] = float("nan")
    with pytest.raises(ValueError, match="no finite 'loss' values"):
        figures.training_curves(
            rows, tmp_path / "d.png", metric="loss", rng=np.random.default_rng()
        )


def _rings(axes) -> list[tuple[float, float]]:
    """(x, y) of the hollow markers (no face colour) on a panel of the training curves."""
    hollow = [c for c in axes.collections if c.get_offsets().size and not c.get_facecolors().size]
    return [tuple(xy) for c in hollow for xy in c.get_offsets()]


def test_training_curves_ring_the_epoch_each_run_kept():
    """Issue 20: the epoch whose weights a run kept (runs.csv ``epoch``: the last for the
    reference recipe, the best validation epoch for the strong one) was not on the curves."""
    from cellclass.figures.plots import draw_training_curves

    models = ("reference", "strong")
    rows = _epoch_rows(3, ["train", "val", "test"], models, n_epochs=6)
    kept = {("reference", 0): 6, ("reference", 1): 6, ("reference", 2): 6}
    kept |= {("strong", 0): 2, ("strong", 1): 4}  # strong run 2 recorded no epoch
    run_rows = [
        {"model": m, "run": r, "control": 0, "dataset": "test", "epoch": kept.get((m, r), np.nan)}
        for m in models
        for r in range(3)
    ]
    run_rows += [{"model": "strong", "run": 0, "control": 1, "dataset": "test", "epoch": 5}]
    figure = draw_training_curves(rows, rng=np.random.default_rng(0), run_rows=run_rows)
    for axes, split in zip(figure.axes, ["train", "val", "test"], strict=True):
        expected = sorted(
            (epoch, row["accuracy"])
            for (model, run), epoch in kept.items()
            for row in rows
            if (row["model"], row["run"], row["epoch"], row["split"]) == (model, run, epoch, split)
        )
        rings = sorted((round(x), y) for x, y in _rings(axes))  # x is jittered by < 0.15
        assert [epoch for epoch, _ in rings] == [epoch for epoch, _ in expected], split
        assert [y for _, y in rings] == pytest.approx([y for _, y in expected]), split
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any("kept" in text for text in legend)
    plain = draw_training_curves(rows, rng=np.random.default_rng(0))  # no runs.csv rows
    assert not any(_rings(axes) for axes in plain.axes)
    assert not any("kept" in t.get_text() for t in plain.axes[0].get_legend().get_texts())


def test_control_curves_and_thinned_test_panels_ring_the_kept_epoch_too():
    """Issue 20: label-shuffled control runs' curves had no ring (their runs share run
    numbers with the real ones), nor had test panels evaluated only every N-th epoch
    (``--test-every``) when a run kept an epoch between: there the ring marks the run's final
    test score (runs.csv) at the kept epoch."""
    from cellclass.figures.plots import draw_training_curves

    real = _epoch_rows(2, ["train", "val", "test"], ("reference",), n_epochs=6)
    control = [
        {**row, "control": 1, "accuracy": 0.5 + row["run"] / 10 + row["epoch"] / 100}
        for row in _epoch_rows(2, ["train", "val", "test"], ("reference",), n_epochs=6)
    ]
    rows = [
        row
        for row in [*real, *control]
        if row["split"] != "test" or row["epoch"] % 3 == 0  # --test-every 3: epochs 3, 6
    ]
    kept = {(0, 0): 6, (1, 0): 4, (0, 1): 2, (1, 1): 6}  # (run, control) -> kept epoch
    final = {(0, 0): 0.61, (1, 0): 0.62, (0, 1): 0.48, (1, 1): 0.52}  # runs.csv accuracy
    run_rows = [
        {"model": "reference", "run": r, "control": c, "dataset": "test", "epoch": e}
        | {"accuracy": final[(r, c)]}
        for (r, c), e in kept.items()
    ]
    figure = draw_training_curves(rows, rng=np.random.default_rng(0), run_rows=run_rows)
    for axes, split in zip(figure.axes, ["train", "val", "test"], strict=True):
        expected = []
        for (run, c), epoch in kept.items():
            point = [
                row["accuracy"]
                for row in rows
                if (row["run"], row.get("control", 0), row["epoch"], row["split"])
                == (run, c, epoch, split)
            ]
            expected.append((epoch, point[0] if point else final[(run, c)]))
        rings = sorted((round(x), y) for x, y in _rings(axes))  # x is jittered by < 0.15
        assert [epoch for epoch, _ in rings] == [epoch for epoch, _ in sorted(expected)], split
        assert [y for _, y in rings] == pytest.approx([y for _, y in sorted(expected)]), split
    test_panel = figure.axes[2]
    unmeasured = [(x, y) for x, y in _rings(test_panel) if x in (4, 2)]  # no point there
    assert sorted(unmeasured) == [(2, 0.48), (4, 0.62)]
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "reference (shuffled labels)" in legend and "reference" in legend


def test_moving_average_keeps_the_ends_and_smooths_the_middle():
    values = np.array([0.0, 3.0, 0.0, 3.0, 0.0, 9.0])
    assert moving_average(values, 3) == pytest.approx([0, 1, 2, 1, 4, 9])


# ---------------------------------------------------------------- confusion and calibration
@pytest.mark.parametrize("n_classes", [2, 5])
def test_confusion_figure_counts_and_normalised(tmp_path, n_classes):
    matrix = np.random.default_rng(0).integers(0, 30, (n_classes, n_classes))
    matrix[-1] = 0  # a class absent from the test set must not break the figure
    path = figures.confusion_figure(
        matrix, CLASSES[n_classes], tmp_path / "confusion.png", title="snap29"
    )
    width, height = _png_size(path)
    assert 500 < width < 1500 and 350 < height < 1200


def test_confusion_figure_rejects_a_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        figures.confusion_figure(np.eye(2), ["a", "b", "c"], tmp_path / "c.png")


def test_per_class_scores_from_a_matrix():
    matrix = np.array([[8, 2], [4, 6]])  # rows true, columns predicted
    scores = per_class_scores(matrix)
    assert scores["precision"] == pytest.approx([8 / 12, 6 / 8])
    assert scores["recall"] == pytest.approx([0.8, 0.6])
    assert scores["f1"][0] == pytest.approx(2 * (8 / 12) * 0.8 / (8 / 12 + 0.8))
    assert list(scores["support"]) == [10, 10]
    assert np.isnan(per_class_scores(np.zeros((3, 3), dtype=int))["f1"]).all()


def _table_rows(figure) -> dict[str, list[str]]:
    """{class: [precision, recall, F1, support]} as the confusion figure's table shows them."""
    (table,) = [t for axes in figure.axes for t in axes.tables]
    cells = {key: cell.get_text().get_text() for key, cell in table.get_celld().items()}
    n_rows = 1 + max(row for row, _ in cells)
    return {cells[row, 0]: [cells[row, col] for col in range(1, 5)] for row in range(1, n_rows)}


def test_a_class_without_images_has_no_recall_or_f1_not_zero():
    """Issue 20: a test folder holding only Control images (Snap29 absent, but predicted 10
    times) showed Snap29's recall and F1 as 0.00; they do not exist."""
    from cellclass.figures.plots import draw_confusion_figure

    figure = draw_confusion_figure(np.array([[40, 10], [0, 0]]), ["Control", "Snap29"])
    rows = _table_rows(figure)
    assert rows["Control"] == ["1.00", "0.80", "0.89", "50"]
    assert rows["Snap29"] == ["0.00", "—", "—", "0"]  # 10 predictions, all wrong: precision 0
    never_predicted = _table_rows(draw_confusion_figure(np.array([[8, 0], [4, 0]]), ["a", "b"]))
    assert never_predicted["b"] == ["—", "0.00", "0.00", "4"]  # missed: recall and F1 are 0
    scores = per_class_scores(np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]]))
    assert np.nanmean(scores["recall"]) == pytest.approx((1 + 0.75) / 2)  # absent class left out


@pytest.mark.parametrize("n_images", [1, 500])
def test_reliability_figure(tmp_path, n_images):
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, n_images)
    correct = rng.random(n_images) < confidence
    bins = _bins(confidence, correct)
    path = figures.reliability_figure(bins, 0.034, tmp_path / "reliability.png", title="snf7")
    width, height = _png_size(path)
    assert 400 < width < 700 and 450 < height < 700


def test_reliability_draws_each_bins_confidence_at_its_own_height():
    """Issue 20: the dots labelled "mean confidence" sat at the accuracy's height."""
    from cellclass.figures.plots import draw_reliability_figure

    confidence = np.array([0.55, 0.58, 0.62, 0.91, 0.95, 0.97, 0.99])
    bins = _bins(confidence, np.array([0, 1, 0, 1, 0, 1, 1], dtype=bool), n_bins=5)
    used = bins["count"] > 0
    top = draw_reliability_figure(bins, 0.2).axes[0]
    handles, labels = top.get_legend_handles_labels()
    (artist,) = [h for h, label in zip(handles, labels, strict=True) if "confidence" in label]
    if hasattr(artist, "get_segments"):  # hlines: one segment per bin
        points = np.concatenate(artist.get_segments())  # (2 * n_used, 2)
    else:
        points = np.column_stack([artist.get_xdata(), artist.get_ydata()])
    heights = sorted(set(np.round(points[:, 1], 9)))
    assert heights == pytest.approx(sorted(bins["confidence"][used]))
    assert not np.allclose(heights, sorted(bins["accuracy"][used]))
    bar_tops = sorted(bar.get_height() for bar in top.patches)
    assert bar_tops == pytest.approx(sorted(bins["accuracy"][used]))


def test_importing_figures_leaves_pyplot_and_the_backend_alone():
    code = (  # rcParams.copy() reads settings without resolving (and importing) a backend
        "import sys, matplotlib; before = matplotlib.rcParams.copy(); "
        "import cellclass.figures.plots; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert matplotlib.rcParams.copy() == before, 'rcParams changed'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_chance_lines_follow_each_test_set():
    """A 3-class model tested on a 2-class folder: chance there is 50 %, not 33 %."""
    from matplotlib.figure import Figure

    from cellclass.figures.drawing import draw_reference_lines

    axes = Figure().add_subplot()
    draw_reference_lines(axes, ["two", "skewed"], {"two": 0.5, "skewed": 0.9}, {})
    dashed = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_ydata()[0] for line in dashed) == [0.5, 0.9]
    spans = {line.get_ydata()[0]: tuple(line.get_xdata()) for line in dashed}
    assert spans[0.5] == (-0.45, 0.45) and spans[0.9] == (0.55, 1.45)  # over its own boxes
    same = Figure().add_subplot()
    draw_reference_lines(same, ["a", "b"], 0.5, {})
    assert [list(line.get_ydata()) for line in same.get_lines()] == [[0.5, 0.5]]  # one axhline


def test_the_expert_legend_entry_looks_like_the_expert_line():
    """Issue 20: the legend's expert line was too short for one dash-dot period, so it showed
    a plain dash while the plotted line was dash-dotted."""
    import matplotlib

    from cellclass.figures.plots import draw_accuracy_boxplot

    rows = _run_rows(4, ["snap29", "snf7"], ["reference", "strong"])
    figure = draw_accuracy_boxplot(
        rows, chance=0.5, expert={"snap29": 0.93, "snf7": 0.707}, rng=np.random.default_rng(0)
    )
    axes = figure.axes[0]
    (plotted, _) = [line for line in axes.get_lines() if line.get_linestyle() == "-."]
    legend = axes.get_legend()
    texts = [text.get_text() for text in legend.get_texts()]
    assert texts.count("expert") == 1  # one entry for both test sets
    handle = legend.legend_handles[texts.index("expert")]
    for get in ("get_color", "get_linestyle", "get_linewidth", "get_alpha"):
        assert getattr(handle, get)() == getattr(plotted, get)(), get
    period = sum(matplotlib.rcParams["lines.dashdot_pattern"]) * plotted.get_linewidth()
    shown = legend.handlelength * legend.prop.get_size_in_points()  # points
    assert shown >= period  # the dash, the dot and the gaps all appear


def test_one_diverging_loss_does_not_flatten_the_other_curves():
    from cellclass.figures.plots import draw_training_curves

    rows = [
        {"run": run, "model": "m", "epoch": epoch, "split": split, "loss": 0.7 - 0.05 * epoch}
        for run in range(3)
        for epoch in range(1, 10)
        for split in ("train", "val")
    ]
    rows[5]["loss"] = 11.0  # one run blew up once
    figure = draw_training_curves(rows, metric="loss", rng=np.random.default_rng(0))
    low, high = figure.axes[0].get_ylim()
    assert high < 1.0  # the typical losses fill the panel; the outlier is cut
    calm = draw_training_curves(
        [dict(r, loss=0.5) if r["loss"] > 5 else r for r in rows],
        metric="loss",
        rng=np.random.default_rng(0),
    )
    assert calm.axes[0].get_ylim()[1] < 1.0
