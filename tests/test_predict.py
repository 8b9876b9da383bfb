"""Predicting and evaluating with saved runs, through the library (issue 21: mutants of
predict.py that the end-to-end tests let through). One tiny experiment serves every test."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from cellclass import results
from cellclass.data.preprocessing import BadImagesError
from cellclass.predict import (
    SavedRun,
    collect_images,
    evaluate_folder,
    load_runs,
    one_model,
    predict_paths,
    prediction_table_columns,
)
from cellclass.training import ExperimentError, ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE

from .conftest import make_class_tree, write_png


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A results folder of three reference runs (16 px, 2 epochs, validation split): with an
    odd number of runs, agreement is never one half."""
    root = tmp_path_factory.mktemp("predict")
    train = make_class_tree(root / "train", {"Control": 8, "Treated": 8}, size=16)
    settings = ExperimentSettings(
        train_dir=str(train),
        out=str(root / "run"),
        runs=3,
        image_size=16,
        val_split=0.25,
        cache_dir=str(root / "cache"),
        recipes=(replace(REFERENCE, epochs=2, batch_size=4),),
    )
    return run_experiment(settings)


def _new_images(folder, seed=3):
    return make_class_tree(folder, {"Control": 3, "Treated": 3}, size=16, seed=seed)


def test_agreement_is_the_share_of_runs_that_chose_the_ensembles_class(trained, tmp_path):
    images = _new_images(tmp_path / "new")
    both = predict_paths(trained, [images], cache_dir=str(tmp_path / "c"))
    alone = [
        {row["path"]: row["predicted"] for row in predict_paths(trained, [images], run=run)}
        for run in (0, 1, 2)
    ]
    for row in both:
        own = [choice[row["path"]] for choice in alone]
        assert row["agreement"] == pytest.approx(np.mean([c == row["predicted"] for c in own]))
        assert row["n_runs"] == 3
        assert row["p_Control"] + row["p_Treated"] == pytest.approx(1, abs=1e-6)
        assert row["confidence"] == max(row["p_Control"], row["p_Treated"])
    assert list(both[0]) == prediction_table_columns(["Control", "Treated"])
    assert prediction_table_columns(["A"]) == [
        "path", "predicted", "confidence", "agreement", "n_runs", "p_A",
    ]  # fmt: skip


def test_images_are_collected_from_files_and_folders_without_following_loops(tmp_path):
    folder = tmp_path / "imgs"
    write_png(folder / "b.png", np.zeros((8, 8), np.uint8))
    write_png(folder / "sub" / "a.png", np.zeros((8, 8), np.uint8))
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.png").write_bytes(b"")
    os.symlink(folder, folder / "sub" / "loop")  # a link back up: never walked
    single = tmp_path / "one.png"
    write_png(single, np.zeros((8, 8), np.uint8))
    images, skipped = collect_images([folder, single])
    assert images == [(folder / "b.png").resolve(), (folder / "sub" / "a.png").resolve()] + [
        single.resolve()
    ]
    assert skipped == [folder / "notes.txt"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.png", "missing.png: no such file or folder"),
        (lambda p: (p / "a.txt").write_text("x") and p / "a.txt", "a.txt: not a supported image"),
    ],
)
def test_a_path_that_is_no_image_is_named(tmp_path, make, message):
    with pytest.raises(ExperimentError, match=message):
        collect_images([make(tmp_path)])


def test_folders_without_images_are_named_together(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ExperimentError) as raised:
        collect_images([tmp_path / "a", tmp_path / "b"])
    assert str(raised.value) == f"no images found in {tmp_path / 'a'}, {tmp_path / 'b'}"


def test_an_unreadable_image_stops_prediction_unless_skipped(trained, tmp_path):
    images = _new_images(tmp_path / "new")
    (images / "Control" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BadImagesError, match="broken.png"):
        predict_paths(trained, [images], cache_dir=str(tmp_path / "c"))
    rows = predict_paths(trained, [images], cache_dir=str(tmp_path / "c"), skip_bad=True)
    assert len(rows) == 6 and not any("broken" in row["path"] for row in rows)


def test_images_with_other_channels_are_refused_naming_the_first(trained, tmp_path):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "rgb" / name, np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ExperimentError, match=r"a\.png: images have 3 channel\(s\)"):
        predict_paths(trained, [tmp_path / "rgb"], cache_dir=str(tmp_path / "c"))


def test_evaluate_adds_real_runs_at_their_kept_epoch_and_refuses_taken_names(trained, tmp_path):
    folder = _new_images(tmp_path / "extra", seed=8)
    for taken in ("train", "val"):
        with pytest.raises(ExperimentError, match=f"test set '{taken}'"):
            evaluate_folder(trained, taken, folder, cache_dir=str(tmp_path / "c"))
    rows = evaluate_folder(trained, "extra", folder, cache_dir=str(tmp_path / "c"))
    kept = {row["run"]: row["epoch"] for row in results.read_table(trained / "runs.csv")}
    assert [(row["run"], row["control"]) for row in rows] == [(0, 0), (1, 0), (2, 0)]
    assert all(row["epoch"] == kept[row["run"]] for row in rows)
    with pytest.raises(ExperimentError, match="test set 'extra'"):
        evaluate_folder(trained, "extra", folder, cache_dir=str(tmp_path / "c"))


def test_runs_load_from_a_config_without_settings(trained, tmp_path):
    """Folders written before config.json held ``settings`` still load."""
    copy = tmp_path / "old"
    (copy / "models").mkdir(parents=True)
    for path in (trained / "models").iterdir():
        (copy / "models" / path.name).write_bytes(path.read_bytes())
    config = json.loads((trained / "config.json").read_text())
    config.pop("settings")
    (copy / "config.json").write_text(json.dumps(config))
    assert [saved.run for saved in load_runs(copy)] == [0, 1, 2]


def test_one_model_passes_runs_of_one_model_and_names_several(trained):
    runs = load_runs(trained)
    assert one_model(runs, trained) == runs
    other = SavedRun(9, "strong", runs[0].model, runs[0].meta)
    with pytest.raises(ExperimentError, match="reference, strong"):
        one_model([*runs, other], trained)


def test_a_run_saved_without_a_tta_field_does_not_use_it(trained):
    saved = load_runs(trained)[0]
    assert saved.uses_tta is False
    legacy = SavedRun(0, "reference", saved.model, {**saved.meta, "recipe": {}})
    assert legacy.uses_tta is False
    flipped = SavedRun(0, "reference", saved.model, {**saved.meta, "recipe": {"tta": True}})
    assert flipped.uses_tta is True
