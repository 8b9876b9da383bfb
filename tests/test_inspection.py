"""Dataset inspection: statistics, confounds, bad files, duplicates and leakage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cellclass.cli import main
from cellclass.data.folders import scan_folder
from cellclass.data.images import read_image, write_image
from cellclass.inspection.dataset import (
    InspectSettings,
    find_leakage,
    format_report,
    inspect_dataset,
    leakage_message,
)
from cellclass.synthetic.folders import PHENOTYPES, make_field


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, image)
    return path


def _texture(rng: np.random.Generator, *, size: int = 48, top: int = 4095) -> np.ndarray:
    """A distinct smooth random field -> (size, size, 1) uint16 with values up to `top`."""
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.5)
    field = (field - field.min()) / (field.max() - field.min())
    return (100 + field * (top - 100)).astype(np.uint16)[:, :, None]


def _dataset(root: Path, *, n: int, seed: int, classes=("Control", "Treated")) -> dict:
    rng = np.random.default_rng(seed)
    return {
        f"{name}/img{i}.tif": _write(root / name / f"img{i}.tif", _texture(rng))
        for name in classes
        for i in range(n)
    }


@pytest.fixture
def train(tmp_path) -> Path:
    _dataset(tmp_path / "train", n=8, seed=0)
    return tmp_path / "train"


def test_rotated_copy_planted_in_test_folder_is_leakage(tmp_path, train):
    test = tmp_path / "test"
    _dataset(test, n=3, seed=1)
    original = read_image(train / "Treated" / "img5.tif")
    copy = np.rot90(original, 1)[:, ::-1].astype(np.float64) / 16  # turned, mirrored, 8-bit
    copy += np.random.default_rng(2).normal(0, 2, copy.shape)  # and noisy
    _write(test / "Treated" / "planted.png", np.clip(copy, 0, 255).astype(np.uint8))
    exact = _write(test / "Control" / "same.tif", np.rot90(original, 2).copy())
    report = inspect_dataset(train, against=[test])
    pairs = {(p.first.name, p.second.name): p for p in report.leakage[0]}
    assert set(pairs) == {("img5.tif", "planted.png"), ("img5.tif", "same.tif")}
    planted = pairs["img5.tif", "planted.png"]
    assert planted.kind == "near" and planted.distance <= 16 and planted.transform == "rot90+flip"
    assert pairs["img5.tif", exact.name].transform == "rot180"
    assert "LEAKAGE: 2 duplicate pair(s)" in format_report(report)
    assert report.folder.duplicates == ()  # nothing flagged inside the training folder


def test_distinct_images_are_not_flagged(tmp_path):
    rng = np.random.default_rng(5)
    for i in range(20):  # synthetic fluorescence fields: similar look, different cells
        field = make_field(PHENOTYPES["Control" if i % 2 else "Snap29"], size=64, rng=rng)
        _write(tmp_path / "d" / ("Control" if i % 2 else "Snap29") / f"f{i}.tif", field)
    _dataset(tmp_path / "d", n=15, seed=6)
    report = inspect_dataset(tmp_path / "d")
    assert report.folder.duplicates == () and report.folder.n_same_source == 0


def test_duplicates_within_one_source_field_are_expected_not_reported(tmp_path, train):
    image = _texture(np.random.default_rng(9))
    _write(train / "Control" / "dup_a.tif", image)
    _write(train / "Control" / "dup_b.tif", image)  # an exact copy from another "field"
    _write(train / "Treated" / "rot.tif", np.rot90(image).copy())  # across classes, too
    report = inspect_dataset(train).folder
    assert {(p.first.name, p.second.name, p.kind) for p in report.duplicates} == {
        ("dup_a.tif", "dup_b.tif", "exact"),
        ("dup_a.tif", "rot.tif", "near"),
        ("dup_b.tif", "rot.tif", "near"),
    }
    manifest = ["path,class,source"] + [
        f"{name},x,field" for name in ("Control/dup_a.tif", "Control/dup_b.tif", "Treated/rot.tif")
    ]
    (train / "manifest.csv").write_text("\n".join(manifest) + "\n")
    report = inspect_dataset(train).folder
    assert report.duplicates == () and report.n_same_source == 3


def test_classes_of_different_size_or_dtype_are_flagged(tmp_path, train):
    for i in range(8):
        _write(train / "Treated" / f"img{i}.tif", _texture(np.random.default_rng(i), size=40))
    warnings = inspect_dataset(train).folder.warnings
    assert warnings == (
        "classes differ in image size (Control 48x48, Treated 40x40); a model can learn that "
        "instead of biology - make the classes alike",
    )


def test_report_counts_bit_depth_and_bad_files(tmp_path, train):
    _write(train / "Control" / "wide.tif", np.full((32, 64, 1), 70000 - 5000, np.uint16))
    (train / "Control" / "notes.txt").write_text("not an image")
    (train / "Treated" / ".DS_Store").write_bytes(b"\0")
    (train / "Treated" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-truncated")
    report = inspect_dataset(train).folder
    control, treated = report.classes
    assert (control.name, control.n_images, treated.n_images) == ("Control", 9, 8)
    assert control.sizes == {"48x48": 8, "32x64": 1} and control.dtypes == {"uint16": 9}
    assert control.bit_depths == {12: 8, 16: 1} and treated.bit_depths == {12: 8}
    assert control.channels == {1: 9}
    assert [p.name for p in report.non_images] == ["notes.txt"]
    assert [p.name for p in report.ignored] == [".DS_Store"]
    assert [(p.name, "\n" in why) for p, why in report.corrupt] == [("broken.png", False)]
    low, median, high = treated.percentiles
    assert 100 <= low < median < high <= 4095


def test_brightness_confound_flagged_only_when_classes_differ(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(6):
        _write(tmp_path / "same" / "A" / f"{i}.tif", _texture(rng))
        _write(tmp_path / "same" / "B" / f"{i}.tif", _texture(rng))
        _write(tmp_path / "confound" / "A" / f"{i}.tif", _texture(rng, top=1000))
        _write(tmp_path / "confound" / "B" / f"{i}.tif", _texture(rng, top=4000))
    assert not inspect_dataset(tmp_path / "same").folder.warnings
    warnings = inspect_dataset(tmp_path / "confound").folder.warnings
    assert len(warnings) == 1 and "brightness" in warnings[0]
    loose = InspectSettings(confound_effect=1e6)
    assert not inspect_dataset(tmp_path / "confound", settings=loose).folder.warnings


def test_a_trivial_brightness_gap_between_images_that_hardly_vary_is_not_a_confound():
    """1.1 SDs apart, but a 0.8 % difference (seen on make_class_tree's noise images)."""
    from cellclass.inspection import brightness_confounds

    assert brightness_confounds([("A", 66.77, 0.507), ("B", 67.3, 0.479)]) == []
    assert len(brightness_confounds([("A", 186.0, 40.0), ("B", 312.2, 75.0)])) == 1  # the demo's


def test_find_leakage_takes_scanned_indexes(tmp_path, train):
    test = tmp_path / "test"
    _dataset(test, n=2, seed=4)
    index = scan_folder(train)
    assert find_leakage(index, [scan_folder(test, class_names=index.class_names)]) == []
    _write(test / "Control" / "copy.tif", np.fliplr(_texture(np.random.default_rng(0))))
    pairs = find_leakage(index, [scan_folder(test, class_names=index.class_names)])
    assert [(p.first.name, p.second.name, p.transform) for p in pairs] == [
        ("img0.tif", "copy.tif", "flipped")
    ]
    assert leakage_message(pairs).startswith("test images leak training data (1 near-dup")
    assert pairs[0].same_class and "different classes" not in leakage_message(pairs)
    assert find_leakage(index, []) == []


def test_a_copy_filed_under_another_class_is_called_out(tmp_path, train):
    """One image with two labels: the warning says so, the pair says so in JSON too."""
    test = tmp_path / "test"
    _dataset(test, n=1, seed=4)
    _write(test / "Treated" / "relabelled.tif", np.rot90(_texture(np.random.default_rng(0))))
    index = scan_folder(train)
    pairs = find_leakage(index, [scan_folder(test, class_names=index.class_names)])
    assert [(p.first.parent.name, p.second.name, p.same_class) for p in pairs] == [
        ("Control", "relabelled.tif", False)
    ]
    assert "1 of them in folders of different classes" in leakage_message(pairs)
    assert ", different classes)" in leakage_message(pairs)


def test_source_fields_shared_by_two_manifests_are_leakage(tmp_path, train):
    test = tmp_path / "test"
    _dataset(test, n=1, seed=7)
    (train / "manifest.csv").write_text("path,source\nControl/img0.tif,../raw/f1.tif\n")
    (test / "manifest.csv").write_text("path,source\nControl/img0.tif,../raw/f2.tif\n")
    report = inspect_dataset(train, against=[test])
    assert report.shared_sources == ((),) and report.leakage == ((),)
    (test / "manifest.csv").write_text("path,source\nTreated/img0.tif,../raw/f1.tif\n")
    report = inspect_dataset(train, against=[test])
    assert report.shared_sources == ((str(tmp_path / "raw" / "f1.tif"),),)
    assert "LEAKAGE: 1 source field(s)" in format_report(report)
    index = scan_folder(train)
    pairs = find_leakage(index, [scan_folder(test, class_names=index.class_names)])
    assert [(p.first.name, p.second.parent.name, p.kind) for p in pairs] == [
        ("img0.tif", "Treated", "source")
    ]
    message = leakage_message(pairs)
    assert "1 shared source fields" in message and "\n" not in message
    assert "1 of them in folders of different classes" in message


def test_inspect_command_prints_and_writes_json(tmp_path, train, capsys):
    test = tmp_path / "test"
    _dataset(test, n=2, seed=8, classes=("Control",))
    _write(test / "Control" / "leak.tif", _texture(np.random.default_rng(0)))
    out = tmp_path / "report.json"
    assert main(["inspect", str(train), "--against", str(test), "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "LEAKAGE: 1 duplicate pair(s)" in printed and "Control" in printed
    report = json.loads(out.read_text())
    assert report["folder"]["classes"][0]["n_images"] == 8
    assert report["leakage"][0][0]["kind"] == "exact"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("case", ["empty_class", "missing", "max_distance", "unknown_class"])
def test_inspect_command_bad_input_exit_2_one_line(tmp_path, train, capsys, case):
    argv = ["inspect", str(train), "--quiet"]
    if case == "empty_class":
        (train / "Empty").mkdir()
    elif case == "missing":
        argv[1] = str(tmp_path / "nowhere")
    elif case == "max_distance":
        argv += ["--max-distance", "300"]
    else:
        _dataset(tmp_path / "test", n=1, seed=2, classes=("Zebra",))
        argv += ["--against", str(tmp_path / "test")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellclass: error: ") and err.count("\n") == 1
