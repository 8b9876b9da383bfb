"""Tests of cellclass.report.build: warnings, summary table and the self-contained report.html."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cellclass import results
from cellclass.report import build as report

from .conftest import CHROMIUM, CHROMIUM_ARGS, import_or_require, make_class_tree, require


# ---------------------------------------------------------------- a fake results folder
def _accuracy(rng, dataset: str, *, memorise: bool, chance: float | None) -> float:
    """A plausible test accuracy: near chance for control runs; "*hard*" sets low if memorising."""
    centre = chance if chance else (0.55 if memorise and "hard" in dataset else 0.9)
    return float(np.clip(rng.normal(centre, 0.03), 0.0, 1.0))


def _write_images(root: Path, class_names, n_per_class: int, rng) -> list[tuple[str, str]]:
    """Tiny 32x32 RGB PNG files, one folder per class; returns (path, class) pairs."""
    files = []
    for index, name in enumerate(class_names):
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(n_per_class):
            pixels = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            pixels[8:24, 8:24, index % 3] = 200  # a class-coloured square
            path = folder / f"img_{k:02d}.png"
            Image.fromarray(pixels).save(path)
            files.append((str(path), name))
    return files


def _prediction_rows(key: dict, files, accuracy, class_names, rng) -> list[dict]:
    """predictions.csv rows of one run on one test set, with exactly `accuracy` right."""
    rows = []
    rights = rng.permutation(len(files)) < round(accuracy * len(files))
    for (path, true), right in zip(files, rights, strict=True):
        predicted = true if right else rng.choice([c for c in class_names if c != true])
        probs = rng.dirichlet(np.ones(len(class_names)))
        top = class_names.index(predicted)
        probs[top] = probs.max() + 1.0  # the predicted class is the most probable
        probs /= probs.sum()
        row = key | {"path": path, "true": true, "predicted": predicted}
        row |= {"confidence": float(probs[top])}
        rows.append(row | {f"p_{c}": float(p) for c, p in zip(class_names, probs, strict=True)})
    return rows


def _epoch_rows(key: dict, splits, *, ceiling: float, rng) -> list[dict]:
    """epochs.csv rows of one run: 4 epochs rising towards `ceiling` (train) or 0.9."""
    rows = []
    for epoch in range(1, 5):
        for split in splits:
            top = ceiling if split == "train" else min(ceiling, 0.9)
            accuracy = float(np.clip(top - 0.4 * 0.25**epoch + rng.normal(0, 0.005), 0, 1))
            loss = -math.log(max(accuracy, 0.05))
            rows.append(key | {"epoch": epoch, "split": split, "loss": loss, "accuracy": accuracy})
    return rows


def _run_tables(test_files, class_names, *, n_runs, n_control, models, memorise, rng):
    """runs, epochs and predictions rows; control runs reuse the real runs' numbers."""
    runs, epochs, predictions = [], [], []
    jobs = [(run, 0) for run in range(n_runs)] + [(run, 1) for run in range(n_control)]
    for model in models:
        for run, control in jobs:
            key = {"run": run, "model": model, "control": control}
            chance = 1 / len(class_names) if control else None
            for dataset, files in test_files.items():
                accuracy = _accuracy(rng, dataset, memorise=memorise, chance=chance)
                runs.append(
                    key
                    | {
                        "seed": run,
                        "dataset": dataset,
                        "accuracy": accuracy,
                        "loss": 0.3,
                        "ece": 0.05,
                        "n_images": len(files),
                    }
                )
                predictions += _prediction_rows(
                    key | {"dataset": dataset}, files, accuracy, class_names, rng
                )
            ceiling = 0.5 if control else (1.0 if memorise else 0.9)
            epochs += _epoch_rows(key, ["train", "val", *test_files], ceiling=ceiling, rng=rng)
    return runs, epochs, predictions


def _config(root: Path, class_names, test_files, counts) -> dict:
    counts = counts or {name: 20 for name in class_names}
    train = {
        "path": str(root / "data" / "train"),
        "n_images": sum(counts.values()),
        "class_counts": counts,
        "n_ignored": 1,
        "n_non_images": 0,
    }
    tests = {
        name: {
            "path": str(root / "data" / name),
            "n_images": len(files),
            "class_counts": {c: 4 for c in class_names},
        }
        for name, files in test_files.items()
    }
    prep = {"image_size": 32, "channels": None, "page": 0, "normalization": {"mode": "image"}}
    return {
        "cellclass_version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "settings": {"runs": 3, "train": {"model": "badger", "epochs": 4}},
        "class_names": list(class_names),
        "train": train,
        "tests": tests,
        "preprocessing": prep,
        "versions": {"numpy": np.__version__},
        "machine": {"platform": "test"},
    }


def make_run_folder(
    root: Path,
    *,
    n_runs=3,
    n_control=0,
    class_names=("A", "B"),
    tests=("test",),
    models=("badger",),
    memorise=False,
    counts=None,
) -> Path:
    """A results folder as cellclass.training.experiment writes it, with tiny images on disk."""
    rng = np.random.default_rng(0)
    class_names = list(class_names)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    _write_images(root / "data" / "train", class_names, 3, rng)
    test_files = {name: _write_images(root / "data" / name, class_names, 4, rng) for name in tests}
    runs, epochs, predictions = _run_tables(
        test_files,
        class_names,
        n_runs=n_runs,
        n_control=n_control,
        models=models,
        memorise=memorise,
        rng=rng,
    )
    results.write_table(run_dir / "runs.csv", results.RUNS_COLUMNS, runs)
    results.write_table(run_dir / "epochs.csv", results.EPOCHS_COLUMNS, epochs)
    columns = results.prediction_columns(tuple(class_names))
    results.write_table(run_dir / "predictions.csv", columns, predictions)
    results.write_json(run_dir / "config.json", _config(root, class_names, test_files, counts))
    return run_dir


def _read_images(paths, prep, cache_dir) -> np.ndarray:
    """Stand-in for the cache loader: read the PNG files, (N, 32, 32, 3) float32 in [0, 1]."""
    return np.stack([np.asarray(Image.open(path), dtype=np.float32) / 255 for path in paths])


@pytest.fixture
def fake_loader(monkeypatch):
    monkeypatch.setattr(report, "_load_images", _read_images)


@pytest.fixture(scope="module")
def rich_report(tmp_path_factory):
    """One report of 5 classes, 2 models, 2 test sets and 4 runs, built once for several tests."""
    root = tmp_path_factory.mktemp("rich")
    run_dir = make_run_folder(
        root,
        n_runs=4,
        class_names=("a", "b", "c", "d", "e"),
        tests=("plate-1", "plate 2"),
        models=("badger", "strong"),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_load_images", _read_images)
        return report.write_report(run_dir)


def _data_uris(html: str) -> list[str]:
    return re.findall(r'<img src="(data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=]+)"', html)


# ---------------------------------------------------------------- summary and warnings
def test_summary_rows_mean_sd_interval():
    runs = [{"model": "m", "dataset": "t", "accuracy": a} for a in (0.8, 0.85, 0.9)]
    (row,) = report.summary_rows(runs)
    assert (row["n"], row["control"]) == (3, 0)
    assert row["mean"] == pytest.approx(0.85)
    assert row["sd"] == pytest.approx(0.05)
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t(0.975, df=2) x standard error
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.85 - half, 0.85 + half))
    assert (row["min"], row["max"]) == pytest.approx((0.8, 0.9))


def test_summary_interval_stays_within_zero_and_one():
    runs = [{"model": "m", "dataset": "t", "accuracy": a} for a in (0.1, 0.2, 0.3)]
    (row,) = report.summary_rows(runs)
    assert row["ci_low"] == 0.0 and row["ci_high"] == pytest.approx(0.2 + 0.2484, abs=1e-3)
    (single,) = report.summary_rows(runs[:1])
    assert math.isnan(single["ci_low"]) and math.isnan(single["ci_high"])


def test_summary_rows_keeps_control_runs_apart_and_last():
    runs = [
        {"model": "m", "dataset": "t", "accuracy": 0.5, "control": 1},
        {"model": "m", "dataset": "t", "accuracy": 0.9},
    ]
    rows = report.summary_rows(runs)
    assert [(r["control"], r["mean"]) for r in rows] == [(0, 0.9), (1, 0.5)]


def test_memorisation_warning_fires(tmp_path):
    data = report.read_results(make_run_folder(tmp_path, tests=("easy", "hard"), memorise=True))
    warnings = report.find_warnings(data.runs, data.epochs, data.config)
    titles = [w.title for w in warnings]
    assert any(t.startswith("Memorisation") and t.endswith("on hard") for t in titles)
    assert not any(t.startswith("Memorisation") and "on easy" in t for t in titles)
    assert warnings[0].level == "danger"


def test_clean_results_give_no_warnings(tmp_path):
    data = report.read_results(make_run_folder(tmp_path, n_runs=5))
    assert report.find_warnings(data.runs, data.epochs, data.config) == []


def test_chance_spread_imbalance_and_leakage_warnings():
    runs = [
        {"run": k, "model": "m", "dataset": "t", "accuracy": a, "n_images": 40}
        for k, a in enumerate((0.3, 0.55, 0.7, 0.45))
    ]
    config = {
        "class_names": ["A", "B"],
        "train": {"class_counts": {"A": 100, "B": 20}},
        "leakage": [["train/A/1.png", "test/A/7.png"]],
    }
    warnings = report.find_warnings(runs, [], config)
    titles = " | ".join(w.title for w in warnings)
    assert "indistinguishable from chance" in titles
    assert "run-to-run spread" in titles
    assert "class imbalance" in titles and "5.0 to 1" in titles
    assert "Leakage: 1 near-duplicate" in titles
    assert "test/A/7.png" in warnings[0].detail
    assert [w.level for w in warnings] == sorted((w.level for w in warnings), key="danger".__ne__)


def test_single_run_uses_wilson_interval_over_images():
    runs = [{"run": 0, "model": "m", "dataset": "t", "accuracy": 0.55, "n_images": 20}]
    (warning,) = report.find_warnings(runs, [], {"class_names": ["A", "B"]})
    assert "chance" in warning.title and "Wilson interval over 20 images" in warning.detail
    runs[0]["n_images"] = 2000  # the same accuracy on many images is clearly above chance
    assert report.find_warnings(runs, [], {"class_names": ["A", "B"]}) == []


def test_control_runs_above_chance_warn_and_at_chance_do_not():
    runs = [
        {"run": k, "model": "m", "dataset": "t", "accuracy": a, "control": 1}
        for k, a in enumerate((0.49, 0.52, 0.5))
    ]
    assert report.find_warnings(runs, [], {"class_names": ["A", "B"]}) == []
    for row, accuracy in zip(runs, (0.8, 0.82, 0.79), strict=True):
        row["accuracy"] = accuracy
    (warning,) = report.find_warnings(runs, [], {"class_names": ["A", "B"]})
    assert warning.title.startswith("Label-shuffled control runs beat chance")


def test_read_results_keeps_numeric_class_names_as_text(tmp_path):
    run_dir = make_run_folder(tmp_path, class_names=("1", "2"))
    data = report.read_results(run_dir)
    assert {row["true"] for row in data.predictions} == {"1", "2"}
    assert all(isinstance(row["run"], int) and row["control"] == 0 for row in data.runs)


def test_read_results_without_config_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a cellclass results folder"):
        report.read_results(tmp_path)


# ---------------------------------------------------------------- preview
def test_write_preview_loads_real_images_with_classes_taking_turns(tmp_path):
    from cellclass.data.folders import scan_folder
    from cellclass.data.preprocessing import preprocessing_from_dict

    _write_images(tmp_path / "train", ["a", "b", "c", "d", "e"], 6, np.random.default_rng(0))
    index = scan_folder(tmp_path / "train")
    prep = preprocessing_from_dict(
        {"image_size": 32, "channels": None, "normalization": {"mode": "image"}}
    )
    path = report.write_preview(
        index,
        prep,
        tmp_path / "figures" / "preview.png",
        rng=np.random.default_rng(0),
        cache_dir=str(tmp_path / "cache"),
    )
    with Image.open(path) as image:
        assert 5 * 150 < image.size[0] < 5 * 250 + 100 and 5 * 150 < image.size[1]
    names = [index.class_names[s.label] for s in index.samples]
    chosen = report._balanced_sample(names, index.class_names, 25, np.random.default_rng(0))
    assert [names[i] for i in chosen] == [c for c in "abcde" for _ in range(5)]


# ---------------------------------------------------------------- report.html
def test_report_embeds_every_figure_and_fetches_nothing(rich_report):
    html = rich_report.read_text()
    figure_files = sorted(path.name for path in (rich_report.parent / "figures").glob("*.png"))
    # preview, box plot, 2 curves + per (model, test set): panel, wrong, confusion, reliability
    assert len(figure_files) == 4 + 2 * 2 * 4
    assert len(_data_uris(html)) == len(figure_files)
    assert all(f"(figures/{name})" in html for name in figure_files)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "<script" not in html
    assert "strong on plate 2" in html and "95 % CI" in html


def test_image_grids_are_embedded_as_jpeg_and_plots_as_png(rich_report):
    """Issue 20: noisy microscopy grids barely compress as PNG (the demo's page was 2.2 MB)."""
    import base64
    import io

    html = rich_report.read_text()
    kinds = {}
    for kind, encoded, alt in re.findall(
        r'<img src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', html
    ):
        kinds.setdefault(alt.split(" (")[0], set()).add(kind)
        if kind == "jpeg":  # the same picture as the PNG file, at the same size
            with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
                assert image.format == "JPEG" and image.size[0] > 300
    assert kinds["Training images"] == kinds["Predictions"] == {"jpeg"}
    assert kinds["Most confidently wrong"] == {"jpeg"}
    assert kinds["Confusion matrix"] == kinds["Training curves: accuracy"] == {"png"}


def test_report_for_one_run_without_test_sets(tmp_path, fake_loader):
    run_dir = make_run_folder(tmp_path, n_runs=1, tests=())
    html = report.write_report(run_dir).read_text()
    assert len(_data_uris(html)) == 3  # preview, accuracy and loss curves
    assert "No test sets" in html


def test_report_shows_warnings_and_survives_missing_images(tmp_path, monkeypatch):
    # control runs reuse run numbers 0 and 1: they must not dilute the memorisation check
    run_dir = make_run_folder(
        tmp_path, n_runs=2, n_control=2, tests=("easy", "hard"), memorise=True
    )

    def gone(paths, prep, cache_dir):
        raise FileNotFoundError(f"{paths[0]} does not exist")

    monkeypatch.setattr(report, "_load_images", gone)
    html = report.write_report(run_dir).read_text()
    assert html.index("Memorisation") < html.index("Summary: test accuracy")
    assert "Prediction panels of hard left out" in html
    assert "Preview of the training images left out" in html
    assert "2 runs + 2 label-shuffled control runs" in html
    assert "beat chance" not in html and "(label-shuffled control)" in html
    # box plot + 2 curves + control-run curves; per test set confusion and calibration (no panels)
    assert len(_data_uris(html)) == 4 + 2 * 2
    assert "Real vs shuffled-label runs" in html


def test_panel_images_are_drawn_deterministically_with_classes_taking_turns():
    rows = [{"true": name, "path": f"{name}{k}"} for name in ("b", "a") for k in range(20)]
    rows += [{"true": "c", "path": "c0"}]
    picks = [report._panel_rows(rows, ["a", "b", "c"], np.random.default_rng(5)) for _ in "xy"]
    assert picks[0] == picks[1]
    assert len(picks[0]) == report.N_PANEL
    assert [row["true"] for row in picks[0]] == ["a"] * 8 + ["b"] * 7 + ["c"]
    assert picks[0] != report._panel_rows(rows, ["a", "b", "c"], np.random.default_rng(6))


def test_report_opens_in_chromium_with_every_image_loaded(rich_report):
    require(CHROMIUM.is_file(), f"{CHROMIUM} (apt-get install chromium)")
    sync_api = import_or_require("playwright.sync_api", "Playwright (pip install -e '.[test]')")
    errors, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(rich_report.as_uri(), wait_until="load")
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
        first = page.eval_on_selector("section", "s => s.id")  # the answer comes first ...
        answer = page.inner_text("#answer")
        boxplot_top = page.eval_on_selector("#answer img", "i => i.getBoundingClientRect().top")
        table = page.inner_text("#summary table")
        browser.close()
    assert first == "answer" and "chance" in answer and boxplot_top < 1500  # ... with the plot
    for chance in re.findall(r"chance (\d+)%", answer):  # the same chance as the summary table
        assert f"{chance}.0 %" in table
    assert len(widths) == 4 + 2 * 2 * 4 and min(widths) > 0
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_chance_is_the_majority_share_of_each_test_set():
    from cellclass.checks import chance_levels, find_warnings

    config = {
        "class_names": ["A", "B", "C"],
        "tests": {
            "two": {"class_counts": {"A": 40, "B": 0, "C": 40}},
            "skewed": {"class_counts": {"A": 90, "B": 5, "C": 5}},
        },
    }
    levels = chance_levels(config)
    assert levels["two"] == 0.5 and levels["skewed"] == 0.9
    runs = [
        {"run": k, "model": "m", "dataset": "two", "accuracy": 0.5, "control": 0} for k in range(3)
    ]
    titles = [w.title for w in find_warnings(runs, [], config)]
    assert any("indistinguishable from chance" in t for t in titles)


def test_study_report_states_each_datasets_finding_first(tmp_path):
    """One page over two experiments: an easy dataset the network learns, and one it cannot
    (identical images in both classes: every run collapses); each finding in words, with its
    own chance, the collapsed runs named, and a link to the dataset's full report."""
    from dataclasses import replace

    from cellclass.report.findings import study_findings
    from cellclass.report.study import write_study_report
    from cellclass.training import ExperimentSettings, run_experiment
    from cellclass.training.recipes import REFERENCE

    from .conftest import write_png

    flat = tmp_path / "flat"
    for name in ("Control", "Treated"):
        for i in range(8):
            write_png(flat / name / f"{name}_{i}.png", np.full((32, 32), 90, np.uint8))
    easy = make_class_tree(tmp_path / "easy", {"Control": 12, "Treated": 12})
    easy_test = make_class_tree(tmp_path / "easy-test", {"Control": 6, "Treated": 2}, seed=3)
    base = ExperimentSettings(
        train_dir="",
        out="",
        runs=2,
        val_split=0.0,
        image_size=32,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=5, batch_size=4),),
    )
    run_dirs = {
        "easy": run_experiment(
            replace(base, train_dir=str(easy), out=str(tmp_path / "r-easy"),
                    tests=(("easy", str(easy_test)),))
        ),
        "flat": run_experiment(
            replace(base, train_dir=str(flat), out=str(tmp_path / "r-flat"),
                    tests=(("flat", str(flat)),))
        ),
    }  # fmt: skip
    for run_dir in run_dirs.values():
        report.write_report(run_dir)
    config = results.read_json(run_dirs["flat"] / "config.json")  # as training records one
    config["confounds"] = ["possible brightness confound: Control 10 vs Treated 90"]
    results.write_json(run_dirs["flat"] / "config.json", config)
    findings = {f.dataset: f for f in study_findings(run_dirs)}
    assert findings["easy"].verdict == "learnt" and findings["easy"].chance == 0.75
    assert findings["flat"].verdict == "near chance" and findings["flat"].collapsed == 2
    assert "2 of 2 runs never left chance" in findings["flat"].sentence
    page = write_study_report(run_dirs, tmp_path / "study.html", title="two datasets")
    html = page.read_text()
    assert html.index("The answer") < html.index("<img")  # the answer comes first
    assert "2 of 2 runs never left chance" in html and "chance 75%" in html
    assert 'href="r-easy/report.html"' in html and 'href="r-flat/report.html"' in html
    # the danger warnings of a dataset stand beside its finding, not only in its full report
    assert html.count("Possible confound") == 1
    assert html.index("<h3>flat</h3>") < html.index("Control 10 vs Treated 90")
    assert re.findall(r'<img src="([^"]+)"', html) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', html)
    )


def test_prediction_panels_show_the_run_of_median_accuracy():
    """Not run 0: a model whose first run happens to be its only good one looks right."""
    from cellclass.report.build import median_run

    runs = [
        {"run": k, "model": "m", "dataset": "t", "accuracy": a, "control": 0}
        for k, a in enumerate((0.95, 0.5, 0.7, 0.55))
    ] + [{"run": 9, "model": "m", "dataset": "t", "accuracy": 0.6, "control": 1}]
    assert median_run(runs, "m", "t", [0, 1, 2, 3]) == 3  # 0.55: the lower middle of four
    assert median_run(runs, "m", "t", [0, 1, 2]) == 2  # 0.7
    assert median_run(runs, "m", "other", [4, 5]) == 4  # no scores: the first run


def test_a_test_set_missing_a_model_class_is_named_with_its_own_chance():
    """Issue 20: a 3-class model answering a class its test folder lacks looked like a bad
    model, and chance appeared as both 1/3 and 50 %."""
    config = {
        "class_names": ["Control", "Snap29", "Snf7"],
        "train": {"class_counts": {"Control": 10, "Snap29": 10, "Snf7": 10}},
        "tests": {
            "snf7": {"class_counts": {"Control": 30, "Snf7": 10}},
            "all": {"class_counts": {"Control": 5, "Snap29": 5, "Snf7": 5}},
        },
    }
    predictions = [
        {"dataset": "snf7", "predicted": p, "control": 0} for p in ["Snap29"] * 3 + ["Control"] * 7
    ] + [{"dataset": "snf7", "predicted": "Snap29", "control": 1}]  # control runs not counted
    warnings = report.find_warnings([], [], config, predictions)
    absent = [w for w in warnings if "has no images of" in w.title]
    assert [w.title for w in absent] == ["snf7 has no images of Snap29"]
    assert "3 of 10 answers" in absent[0].detail and "75%" in absent[0].detail
    assert "1/3" in absent[0].detail


# ---------------------------------------------------------------- what the report draws and says
@pytest.fixture
def drawn(monkeypatch, fake_loader):
    """Every figure the report saves, by file name, to read what was drawn (axes, titles)."""
    from cellclass.figures import plots

    figures = {}

    def keep(figure, out_path):
        figures[Path(out_path).name] = figure
        return save(figure, out_path)

    save = plots.save_png
    monkeypatch.setattr(plots, "save_png", keep)
    return figures


def _tiles(figure) -> list[tuple[str, str]]:
    """(predicted, true) of each tile of a prediction panel: "pred B 97 %\\ntrue A"."""
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    return [tuple(re.fullmatch(r"pred (.+) \d+ %\ntrue (.+)", t).groups()) for t in titles]


def _caption(html: str, title: str) -> str:
    """The caption text of the figure titled `title`."""
    return re.search(rf"<figcaption><b>{re.escape(title)}\.</b> (.*?) <span", html).group(1)


def _edit(run_dir: Path, *, config=None, runs=None) -> None:
    """Change config.json keys and runs.csv rows of a folder made by `make_run_folder`."""
    if config:
        results.write_json(
            run_dir / "config.json", results.read_json(run_dir / "config.json") | config
        )
    if runs:
        rows = [runs(row) for row in results.read_table(run_dir / "runs.csv")]
        results.write_table(run_dir / "runs.csv", results.RUNS_COLUMNS, rows)


def test_panels_draw_the_median_runs_images_and_its_most_confident_mistakes(tmp_path, drawn):
    run_dir = make_run_folder(tmp_path, n_runs=3, tests=("t",))
    report.write_report(run_dir)
    data = report.read_results(run_dir)
    run = report.median_run(data.runs, "badger", "t", [0, 1, 2])
    rows = [r for r in data.predictions if r["run"] == run]
    shown = _tiles(drawn["panel-t.png"])
    assert len(shown) == len(rows) == 8  # all 8 images of the run, none of another run
    assert sorted(shown) == sorted((r["predicted"], r["true"]) for r in rows)
    wrong = sorted((r for r in rows if r["true"] != r["predicted"]), key=lambda r: -r["confidence"])
    assert wrong and _tiles(drawn["wrong-t.png"]) == [(r["predicted"], r["true"]) for r in wrong]
    titles = [axes.get_title() for axes in drawn["wrong-t.png"].axes if axes.get_title()]
    percents = [int(re.search(r"(\d+) %", title).group(1)) for title in titles]
    assert percents == [round(100 * r["confidence"]) for r in wrong]  # most confident first


def test_a_one_image_test_set_gets_its_panel_and_one_run_is_named_so(tmp_path, drawn):
    run_dir = make_run_folder(tmp_path, n_runs=1, tests=("t",))
    rows = results.read_table(run_dir / "predictions.csv")[:1]
    columns = results.prediction_columns(("A", "B"))
    results.write_table(run_dir / "predictions.csv", columns, rows)
    html = report.write_report(run_dir).read_text()
    assert len(_tiles(drawn["panel-t.png"])) == 1
    assert "run 0, the run of median test accuracy" in html
    assert _caption(html, "Confusion matrix") == "All images of 1 run pooled."


def test_panels_show_calibrated_confidences_once_a_temperature_is_fitted(tmp_path, drawn):
    run_dir = make_run_folder(tmp_path, n_runs=1, tests=("t",))
    results.write_json(
        run_dir / results.CALIBRATION_FILE,
        {"runs": [{"run": 0, "model": "badger", "temperature": 4.0}]},
    )
    html = report.write_report(run_dir).read_text()
    rows = report.read_results(run_dir).predictions
    expected = report.calibrated_rows(rows, ["A", "B"], 4.0)
    tiles = [a.get_title() for a in drawn["panel-t.png"].axes if a.get_title()]
    percents = sorted(int(re.search(r"(\d+) %", t).group(1)) for t in tiles)
    assert percents == sorted(round(100 * r["confidence"]) for r in expected)
    assert max(percents) < max(round(100 * r["confidence"]) for r in rows)  # T > 1 softens
    assert "calibrated confidence (temperature 4.00" in html


def test_calibrated_rows_rescale_each_rows_probabilities():
    rows = [
        {"predicted": "B", "p_A": 0.2, "p_B": 0.8, "confidence": 0.8},
        {"predicted": "A", "p_A": 0.9, "p_B": 0.1, "confidence": 0.9},
        {"predicted": "A", "confidence": 0.7},  # no probabilities: left as it was
    ]
    out = report.calibrated_rows(rows, ["A", "B"], 2.0)
    # softmax(log p / 2) = sqrt(p) / sum(sqrt(p))
    assert out[0]["p_B"] == pytest.approx(math.sqrt(0.8) / (math.sqrt(0.8) + math.sqrt(0.2)))
    assert out[0]["confidence"] == out[0]["p_B"] and out[0]["p_A"] == pytest.approx(
        1 - out[0]["p_B"]
    )
    assert out[1]["confidence"] == pytest.approx(math.sqrt(0.9) / (math.sqrt(0.9) + math.sqrt(0.1)))
    assert out[2] == rows[2]
    assert rows[0]["p_B"] == 0.8  # the input rows are not changed


def test_report_tables_give_each_models_pixel_scaling(tmp_path, fake_loader):
    run_dir = make_run_folder(tmp_path, models=("badger", "strong"))
    norms = {"badger": {"mode": "bitdepth", "low": [0.0], "high": [4095.0]}}
    norms["strong"] = {"mode": "image"}
    _edit(run_dir, config={"normalization": norms})
    html = report.write_report(run_dir).read_text()
    assert "<tr><td>badger</td><td>bitdepth</td><td>0</td><td>4095</td></tr>" in html
    assert "<tr><td>strong</td><td>image</td><td>per image</td><td>per image</td></tr>" in html
    # a folder written before per-model scaling: the one preprocessing, for every model
    old = make_run_folder(tmp_path / "old")
    prep = results.read_json(old / "config.json")["preprocessing"]
    prep["normalization"] = {"mode": "dataset", "low": [1.5, 2.0], "high": [300.0, 410.0]}
    _edit(old, config={"preprocessing": prep, "models": ["badger", "strong"]})
    html = report.write_report(old).read_text()
    assert "<td>badger, strong</td><td>dataset</td><td>1.5, 2</td><td>300, 410</td>" in html
    _edit(old, config={"models": []})
    assert "<td>all</td><td>dataset</td>" in report.write_report(old).read_text()


def test_box_plot_caption_names_controls_expert_and_collapsed_runs(tmp_path, drawn):
    run_dir = make_run_folder(tmp_path, n_runs=3, n_control=1, models=("badger", "strong"))

    def collapse(row):  # run 0 of badger, and a control run, never left chance
        hit = (row["model"], row["run"]) == ("badger", 0) or row["control"]
        return row | {"collapsed": int(hit)}

    _edit(run_dir, config={"expert": {"test": 0.8}}, runs=collapse)
    html = report.write_report(run_dir).read_text()
    caption = _caption(html, report.BOXPLOT_TITLE)
    assert caption.startswith("One point per run; dashed line: chance")
    assert (
        "; grey: label-shuffled control runs; dash-dotted line: expert; "
        "badger: 1 of 3 runs never left chance" in caption
    )
    assert "strong:" not in caption and caption.endswith(".")
    legend = [t.get_text() for t in drawn["accuracy.png"].axes[0].get_legend().get_texts()]
    assert "label-shuffled control" in legend and "expert" in legend
    assert "The expert scored 80.0% on test" in html and '<th class="num">expert</th>' in html
    assert "cellclass blind serve" not in html  # the expert has scored already
    assert re.search(r"6 runs \+ 2 label-shuffled control runs\s", html)  # 2 models


def test_report_without_an_expert_says_how_to_add_one_and_draws_no_expert(tmp_path, drawn):
    run_dir = make_run_folder(tmp_path, n_runs=2, tests=("plate",))
    html = report.write_report(run_dir).read_text()
    folder = results.read_json(run_dir / "config.json")["tests"]["plate"]["path"]
    assert f"cellclass blind serve {folder} {run_dir} --db scores.sqlite" in html
    assert "--test plate" in html
    assert "dash-dotted" not in _caption(html, report.BOXPLOT_TITLE)
    assert '<th class="num">expert</th>' not in html
    assert "2 runs" in html and "control run" not in html


def test_report_of_a_folder_whose_first_run_has_not_finished(tmp_path, fake_loader):
    run_dir = make_run_folder(tmp_path, n_runs=1)
    for name in ("runs", "epochs", "predictions"):
        (run_dir / f"{name}.csv").unlink()
    html = report.write_report(run_dir).read_text()
    assert report.BOXPLOT_TITLE not in html and "0 runs" in html


def test_read_results_counts_rows_without_a_control_column_as_real_runs(tmp_path):
    run_dir = make_run_folder(tmp_path, n_runs=2)
    rows = results.read_table(run_dir / "runs.csv")
    columns = [c for c in results.RUNS_COLUMNS if c != "control"]
    results.write_table(run_dir / "runs.csv", columns, [{k: r[k] for k in columns} for r in rows])
    assert {row["control"] for row in report.read_results(run_dir).runs} == {0}


def test_explain_figures_move_beside_their_test_sets_panels():
    sections = [
        {"dataset": "a", "figures": ["panel-a", "wrong-a", "confusion-a"], "n_panels": 2},
        {"dataset": "b", "figures": ["confusion-b"], "n_panels": 0},
    ]
    explain = {
        "figures": [
            {"dataset": "a", "name": "saliency-a"},
            {"dataset": None, "name": "calibration"},
            {"dataset": "a", "name": "adversarial-a"},
            {"dataset": "gone", "name": "saliency-gone"},
        ],
        "notes": ["earlier note"],
    }
    report.place_beside_panels(sections, explain)
    names = [f if isinstance(f, str) else f["name"] for f in sections[0]["figures"]]
    assert names == ["panel-a", "wrong-a", "saliency-a", "adversarial-a", "confusion-a"]
    assert sections[0]["n_panels"] == 4 and sections[1] == {
        "dataset": "b",
        "figures": ["confusion-b"],
        "n_panels": 0,
    }
    assert [f["name"] for f in explain["figures"]] == ["calibration", "saliency-gone"]
    assert (
        explain["notes"][0].startswith("Attribution maps") and explain["notes"][1] == "earlier note"
    )
    nothing = {"figures": [{"dataset": None, "name": "calibration"}], "notes": ["earlier note"]}
    report.place_beside_panels(sections, nothing)
    assert nothing["notes"] == ["earlier note"]


def test_data_table_counts_each_class_per_folder_with_zero_for_absent_ones():
    config = {
        "class_names": ["A", "B"],
        "train": {"path": "/tr", "n_images": 5, "class_counts": {"A": 3, "B": 2}},
        "tests": {"t": {"path": "/t", "class_counts": {"A": 4}}},
    }
    table = report.data_table(config)
    assert table["columns"] == ["train", "t"]
    assert table["rows"] == [[0, "A", 3, 4], [1, "B", 2, 0]]
    assert table["totals"] == ["", "total", 5, "–"]
    assert table["paths"] == {"train": "/tr", "t": "/t"}


def test_preview_shows_25_images_by_default(tmp_path, drawn):
    from cellclass.data.folders import scan_folder
    from cellclass.data.preprocessing import Preprocessing
    from cellclass.training import ExperimentSettings

    root = make_class_tree(tmp_path / "data", {"a": 15, "b": 15})
    index = scan_folder(root)
    report.write_preview(
        index, Preprocessing(image_size=32), tmp_path / "p.png", rng=np.random.default_rng(0)
    )
    assert len(drawn["p.png"].axes) == 25
    settings = ExperimentSettings(
        train_dir=str(root), out="", image_size=32, cache_dir=str(tmp_path / "c")
    )
    report.preview_folder(settings, tmp_path / "q.png")
    assert len(drawn["q.png"].axes) == 25
