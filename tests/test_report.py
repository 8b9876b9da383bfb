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
