"""Each training flag, passed through `cellclass train`, changes what it should (issue 21).

Every case trains a tiny experiment (16-px images, 1 run, 1-2 epochs) from the command line
and checks the results folder: the tables and config.json the user would read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellclass import results
from cellclass.cli import main

from .conftest import make_class_tree

COMMON = ["--image-size", "16", "--runs", "1", "--set", "epochs=1", "--set", "batch_size=8"]


def _train(tmp_path: Path, train: Path, *flags: str, test: Path | None = None) -> Path:
    out = tmp_path / "run"
    if test is None:
        test = make_class_tree(tmp_path / "test", {"Control": 3, "Treated": 3}, size=16, seed=5)
    argv = ["--quiet", "train", str(train), "--test", f"t={test}", "--out", str(out)]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache"), *COMMON, *flags]) == 0
    return out


def _config(out: Path) -> dict:
    return json.loads((out / results.CONFIG_FILE).read_text())


def _tree(tmp_path: Path, n: int = 8) -> Path:
    return make_class_tree(tmp_path / "train", {"Control": n, "Treated": n}, size=16)


def test_recipe_and_set_choose_what_is_trained(tmp_path):
    out = _train(tmp_path, _tree(tmp_path), "--recipe", "strong", "--set", "strong:epochs=2")
    runs = results.read_table(out / results.RUNS_FILE)
    epochs = results.read_table(out / results.EPOCHS_FILE)
    assert {r["model"] for r in runs} == {"strong"}
    assert max(r["epoch"] for r in epochs) == 2  # the recipe's own override wins
    assert _config(out)["settings"]["recipes"][0]["model"] == "compact-fine"


def test_control_runs_add_shuffled_label_runs(tmp_path):
    out = _train(tmp_path, _tree(tmp_path), "--control-runs", "1")
    runs = results.read_table(out / results.RUNS_FILE)
    assert sorted(r["control"] for r in runs) == [0, 1]
    assert len({r["seed"] for r in runs}) == 2  # the control run has its own seed


def test_normalize_overrides_every_recipe(tmp_path):
    out = _train(tmp_path, _tree(tmp_path), "--recipe", "reference", "--normalize", "image")
    assert {n["mode"] for n in _config(out)["normalization"].values()} == {"image"}


def _rgb_tree(root: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("Control", "Treated")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            rgb = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            rgb[:8, :8, 2] += 150 * label  # only the blue channel tells the classes apart
            Image.fromarray(rgb).save(root / name / f"{i}.png")
    return root


def test_channels_pick_the_channels_the_model_sees(tmp_path):
    root = _rgb_tree(tmp_path / "train", 0)
    out = _train(tmp_path, root, "--channels", "2", test=_rgb_tree(tmp_path / "test", 1))
    config = _config(out)
    assert config["in_channels"] == 1 and config["settings"]["channels"] == [2]


def _paged_tree(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name in ("Control", "Treated"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pages = rng.integers(0, 30, (12, 16, 16), dtype=np.uint8)  # 12 pages: pages
            pages[3] += 170 if name == "Treated" else 0  # page 3 alone tells them apart
            tifffile.imwrite(root / name / f"{i}.tif", pages)
    return root


@pytest.mark.parametrize(("page", "learnable"), [(3, True), (0, False)])
def test_page_reads_that_page_of_multi_page_tiffs(tmp_path, page, learnable):
    """Only page 3 tells the classes apart: the test accuracy shows which page was read."""
    root = _paged_tree(tmp_path / "train")
    flags = ("--page", str(page), "--baseline", "features")  # learns intensity at once
    out = _train(tmp_path, root, *flags, test=_paged_tree(tmp_path / "test", seed=1))
    assert _config(out)["settings"]["page"] == page
    runs = results.read_table(out / results.RUNS_FILE)
    (accuracy,) = [r["accuracy"] for r in runs if r["model"] == "features"]
    assert (accuracy >= 0.9) == learnable, accuracy


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_val_split_and_group_by_hold_out_whole_fields(tmp_path, monkeypatch, fraction):
    """The run trains and validates on the rows `--val-split` and `--group-by` give: whole
    fields (3 tiles each) on one side, about ``fraction`` of them held out."""
    from cellclass.training import jobs

    root = tmp_path / "train"
    for label, name in enumerate(("Control", "Treated")):
        (root / name).mkdir(parents=True)
        for field in range(4):
            for tile in range(3):
                pixels = np.full((16, 16), 40 + 150 * label + field + tile, np.uint8)
                path = root / name / f"{name}_field{field}_tile{tile}.png"
                Image.fromarray(pixels).save(path)
    used = []
    original = jobs.run_splits

    def recording(train, settings, seed):
        fit, val = original(train, settings, seed)
        used.append(([train.groups[i] for i in fit], [train.groups[i] for i in val]))
        return fit, val

    monkeypatch.setattr(jobs, "run_splits", recording)
    out = _train(tmp_path, root, "--val-split", str(fraction), "--group-by", r"^[A-Za-z]+_field\d+")
    assert _config(out)["settings"]["group_by"] == r"^[A-Za-z]+_field\d+"
    ((fit, val),) = used
    assert not set(fit) & set(val)  # no field on both sides
    assert len(set(val)) == round(8 * fraction)  # whole fields: 8 in all, 2 or 4 held out
    assert len(val) == 3 * len(set(val))
