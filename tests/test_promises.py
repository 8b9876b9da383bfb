"""End-to-end checks of the README's promises, written against what a user sees (values in the
CSVs, the report's numbers, the figures' pixels), each one able to catch a planted bug that
the rest of the suite let through (issue 21)."""

import csv
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from cellclass import results
from cellclass.data.cache import load_store
from cellclass.data.preprocessing import Preprocessing
from cellclass.figures.plots import confusion_figure
from cellclass.predict import predict_paths
from cellclass.progress import Observer
from cellclass.report import write_report
from cellclass.summary import summary_table
from cellclass.training import (
    REFERENCE,
    ExperimentSettings,
    prepare_data,
    run_experiment,
    run_splits,
)

from .conftest import make_class_tree, write_png

EASY = replace(REFERENCE, epochs=5, batch_size=4)  # learns make_class_tree's corners


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _settings(tmp_path, train, **changes):
    test = make_class_tree(tmp_path / "test", {"Control": 4, "Treated": 4}, seed=5)
    base = ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "out"),
        tests=(("t", str(test)),),
        runs=2,
        image_size=32,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=2, batch_size=8),),
    )
    return replace(base, **changes)


def _tiled_tree(root, n_fields=6, tiles=3):
    """Class folders whose images are tiles of fields: ``C_f<field>_t<tile>.png``."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("Control", "Treated")):
        for field in range(n_fields):
            for tile in range(tiles):
                image = rng.integers(0, 60, (32, 32), dtype=np.uint8) + 120 * label
                write_png(root / name / f"{name}_f{field}_t{tile}.png", image.astype(np.uint8))
    return root


@pytest.mark.parametrize("how", ["manifest", "group_by"])
def test_tiles_of_one_field_never_straddle_train_and_validation(tmp_path, how):
    train = _tiled_tree(tmp_path / "tiles")
    if how == "manifest":  # as `cellclass prepare` writes it
        rows = [
            {"path": f"{p.parent.name}/{p.name}", "source": p.name.rsplit("_t", 1)[0]}
            for p in sorted(train.rglob("*.png"))
        ]
        results.write_table(train / "manifest.csv", ["path", "source"], rows)
    group_by = r"^(.*)_t\d+" if how == "group_by" else None
    settings = _settings(tmp_path, train, val_split=0.34, group_by=group_by)
    data = prepare_data(settings, Observer()).train
    fields = [path.name.rsplit("_t", 1)[0] for path in data.store.paths]
    for seed in range(4):
        fit, val = run_splits(data, settings, seed)
        assert len(val) > 0
        assert not {fields[i] for i in fit} & {fields[i] for i in val}


def test_resume_leaves_all_three_tables_equal_to_an_uninterrupted_run(tmp_path, class_tree):
    settings = _settings(tmp_path, class_tree, runs=2)
    out = run_experiment(replace(settings, runs=1))  # run 0 done ...
    half = {"run": 1, "model": "badger", "control": 0}  # ... run 1 killed mid-write
    results.append_rows(out / "runs.csv", results.RUNS_COLUMNS, [{**half, "dataset": "t"}])
    results.append_rows(out / "epochs.csv", results.EPOCHS_COLUMNS, [{**half, "epoch": 1}])
    results.append_rows(
        out / "predictions.csv",
        results.prediction_columns(("Control", "Treated")),
        [{**half, "dataset": "t", "path": "x.png"}],
    )
    config = results.read_json(out / "config.json")
    config["settings"]["runs"] = 2  # resuming with more runs is allowed
    results.write_json(out / "config.json", config)
    run_experiment(settings, resume=True)
    full = run_experiment(replace(settings, out=str(tmp_path / "full")))
    for name in ("runs.csv", "epochs.csv", "predictions.csv"):
        resumed, uninterrupted = _rows(out / name), _rows(full / name)
        for row in resumed + uninterrupted:
            row.pop("seconds", None)
        assert resumed == uninterrupted, name


def test_predict_names_the_right_class_with_consistent_probabilities(tmp_path, class_tree):
    out = run_experiment(_settings(tmp_path, class_tree, runs=1, val_split=0, recipes=(EASY,)))
    test = tmp_path / "test"
    rows = predict_paths(out, [test])
    truth = [row["path"].split("/")[-2] for row in rows]
    assert np.mean([r["predicted"] == t for r, t in zip(rows, truth, strict=True)]) >= 0.9
    for row in rows:
        probs = {name: row[f"p_{name}"] for name in ("Control", "Treated")}
        assert sum(probs.values()) == pytest.approx(1.0)
        assert row["predicted"] == max(probs, key=probs.get)
        assert row["confidence"] == pytest.approx(max(probs.values()))


def test_summary_ensemble_takes_the_most_probable_class(tmp_path):
    """Two runs' probabilities for four images; their mean is right on three."""
    p_treated = {  # image -> (run 0, run 1) probability of Treated; truth in the name
        "Control/a.png": (0.2, 0.4),  # mean 0.3: Control, right
        "Control/b.png": (0.7, 0.9),  # mean 0.8: Treated, wrong
        "Treated/c.png": (0.6, 0.8),  # right
        "Treated/d.png": (0.9, 0.3),  # mean 0.6: right, though run 1 is wrong
    }
    rows = []
    for path, pair in p_treated.items():
        for run, p in enumerate(pair):
            predicted = "Treated" if p > 0.5 else "Control"
            rows.append({"run": run, "model": "m", "dataset": "t", "path": path,
                         "true": path.split("/")[0], "predicted": predicted,
                         "confidence": max(p, 1 - p), "control": 0,
                         "p_Control": 1 - p, "p_Treated": p})  # fmt: skip
    results.write_table(tmp_path / "predictions.csv", list(rows[0]), rows)
    runs = [
        {"run": k, "model": "m", "dataset": "t", "accuracy": a} for k, a in ((0, 0.75), (1, 0.5))
    ]
    results.write_table(tmp_path / "runs.csv", list(runs[0]), runs)
    (row,) = summary_table(tmp_path)
    assert row["ensemble"] == 0.75 and row["mean"] == 0.625


def test_report_summary_numbers_are_the_runs(tmp_path):
    results.write_json(
        tmp_path / "config.json",
        {"class_names": ["A", "B"], "tests": {"t": {"class_counts": {"A": 5, "B": 5}}}},
    )
    runs = [
        {"run": k, "seed": k, "model": "m", "dataset": "t", "accuracy": a, "n_images": 10}
        for k, a in enumerate((0.6, 0.8, 1.0))
    ]
    results.write_table(tmp_path / "runs.csv", list(runs[0]), runs)
    html = write_report(tmp_path).read_text()
    row = re.search(r"<td>m</td><td>t</td>(.*?)</tr>", html, re.S).group(1)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    n, mean, sd, _, low, high = cells[:6]
    assert (n, mean, sd, low, high) == ("3", "80.0 %", "20.0 %", "60.0 %", "100.0 %")


def test_confusion_figure_draws_the_counts_it_is_given(tmp_path):
    paths = {
        name: confusion_figure(np.array(matrix), ["A", "B"], tmp_path / f"{name}.png")
        for name, matrix in {
            "diagonal": [[9, 0], [0, 9]],
            "swapped": [[0, 9], [9, 0]],
            "empty": [[0, 0], [0, 0]],
        }.items()
    }
    pixels = {name: np.asarray(Image.open(path).convert("L")) for name, path in paths.items()}
    assert not np.array_equal(pixels["diagonal"], pixels["swapped"])
    assert not np.array_equal(pixels["diagonal"], pixels["empty"])


def test_the_pixel_cache_notices_an_edited_image(tmp_path):
    path = write_png(tmp_path / "img.png", np.full((16, 16), 10, np.uint8))
    prep = Preprocessing(image_size=16)
    first = np.array(load_store([path], prep, cache_dir=tmp_path / "cache").pixels)
    write_png(path, np.full((16, 16), 200, np.uint8))  # same path, new content
    second = np.array(load_store([path], prep, cache_dir=tmp_path / "cache").pixels)
    assert first.max() == 10 and second.min() == 200


def test_test_classes_map_by_name_when_reordered_or_missing(tmp_path, capsys):
    """README: classes map by name across train and test folders. The test folder holds two
    of the three training classes (Gamma at position 0 of its own listing if read by
    position): every prediction row names the folder its image came from, scores run over all
    three training classes, the learnt classes are predicted, and the missing one is named."""
    from cellclass.cli import main

    train = make_class_tree(tmp_path / "train", {"Alpha": 20, "Beta": 20, "Gamma": 20})
    # new images drawn as training's (class i's square in corner i), then only two classes
    # moved into the test folder, Gamma first
    make_class_tree(tmp_path / "pool", {"Alpha": 5, "Beta": 5, "Gamma": 5}, seed=8)
    test = tmp_path / "test"
    for name in ("Gamma", "Alpha"):  # Beta missing; written Gamma first
        (test / name).mkdir(parents=True)
        for source in sorted((tmp_path / "pool" / name).iterdir()):
            source.rename(test / name / source.name)
    argv = ["train", str(train), "--test", f"subset={test}", "-o", str(tmp_path / "run")]
    argv += ["--runs", "1", "--epochs", "10", "--batch-size", "10", "--image-size", "32"]
    assert main([*argv, "--val-split", "0", "--quiet"]) == 0
    assert "no 'Beta' folder" in capsys.readouterr().err
    rows = results.read_table(tmp_path / "run" / "predictions.csv")
    assert sorted({(r["true"], str(r["path"]).split("/")[-2]) for r in rows}) == [
        ("Alpha", "Alpha"),
        ("Gamma", "Gamma"),
    ]
    assert {"p_Alpha", "p_Beta", "p_Gamma"} <= set(rows[0])
    right = [r["predicted"] == r["true"] for r in rows]
    assert np.mean(right) >= 0.8  # the learnt corners, read by name, not by position
    for row in rows:
        probabilities = [row[f"p_{c}"] for c in ("Alpha", "Beta", "Gamma")]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] == ("Alpha", "Beta", "Gamma")[int(np.argmax(probabilities))]
