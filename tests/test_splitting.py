"""`cellclass prepare split`: train/test folders with no object on both sides."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cellclass.cli import main
from cellclass.data.folders import FolderError, scan_folder
from cellclass.data.images import write_image
from cellclass.inspection import SplitSettings, find_leakage, inspect_dataset, split_folder
from cellclass.prepare import TileSettings, tile_folder


def _texture(rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A smooth random uint8 image: distinct per draw, with structure the check can align."""
    noise = ndimage.gaussian_filter(rng.random((size, size)), 2)
    return np.rint((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)


def _with_copies(root: Path, *, n: int = 10, copies: int = 4, seed: int = 0) -> dict[str, str]:
    """Two classes of `n` distinct images, the first `copies` of each also saved turned by 90
    degrees under another name; returns {copy path: original path}, relative to `root`."""
    rng = np.random.default_rng(seed)
    twins = {}
    for name in ("Control", "Treated"):
        (root / name).mkdir(parents=True)
        for k in range(n):
            image = _texture(rng)
            write_image(root / name / f"{name}{k}.png", image)
            if k < copies:
                write_image(root / name / f"{name}{k}_turned.png", np.rot90(image).copy())
                twins[f"{name}/{name}{k}_turned.png"] = f"{name}/{name}{k}.png"
    return twins


def _side_of(dst: Path) -> dict[str, str]:
    """{relative path: "train" or "test"} of the files `split_folder` wrote."""
    return {
        path.relative_to(dst / side).as_posix(): side
        for side in ("train", "test")
        for path in (dst / side).rglob("*.png")
    }


def _leaks(dst: Path) -> list:
    train = scan_folder(dst / "train")
    return find_leakage(train, [scan_folder(dst / "test", class_names=train.class_names)])


def test_turned_copies_stay_with_their_originals_and_the_leakage_check_passes(tmp_path):
    src = tmp_path / "all"
    twins = _with_copies(src)
    result = split_folder(src, tmp_path / "out")
    side = _side_of(tmp_path / "out")
    assert len(side) == 28 and all(side[copy] == side[original] for copy, original in twins.items())
    assert _leaks(tmp_path / "out") == []
    assert result.n_twin_pairs == 8 and result.n_joined == 16 and result.n_groups == 20
    assert all(n > 0 for n in result.counts["test"].values())  # both classes tested
    assert sum(result.counts["test"].values()) == sum(side == "test" for side in side.values())
    for relative, where in side.items():  # copied byte for byte, SRC untouched
        copied = (tmp_path / "out" / where / relative).read_bytes()
        assert copied == (src / relative).read_bytes()


def test_without_the_twin_check_some_seed_puts_a_copy_on_the_other_side(tmp_path):
    """The twin check is what keeps them together: grouping by file alone leaks."""
    src = tmp_path / "all"
    _with_copies(src)
    leaked = []
    for seed in range(4):
        split_folder(src, tmp_path / f"out{seed}", SplitSettings(seed=seed, twins=False))
        leaked.append(len(_leaks(tmp_path / f"out{seed}")))
    assert max(leaked) > 0


def test_an_interrupted_split_leaves_nothing_and_runs_again(tmp_path, monkeypatch):
    import cellclass.inspection.splitting as splitting

    src = tmp_path / "all"
    _with_copies(src, n=4, copies=1)
    copied = []
    real_copy = splitting.shutil.copyfile

    def interrupt_after_three(a, b):
        if len(copied) == 3:
            raise KeyboardInterrupt
        copied.append(b)
        return real_copy(a, b)

    monkeypatch.setattr(splitting.shutil, "copyfile", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        split_folder(src, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # no train/, test/ or hidden staging left
    monkeypatch.setattr(splitting.shutil, "copyfile", real_copy)
    result = split_folder(src, tmp_path / "out")
    assert sum(sum(side.values()) for side in result.counts.values()) == 10


def test_the_same_seed_gives_the_same_split_and_another_seed_another(tmp_path):
    src = tmp_path / "all"
    _with_copies(src)
    sides = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        split_folder(src, tmp_path / name, SplitSettings(seed=seed))
        sides.append(_side_of(tmp_path / name))
    assert sides[0] == sides[1] and sides[0] != sides[2]


def test_tiles_of_one_field_stay_together_and_keep_naming_their_field(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("Control", "Treated"):
        for k in range(4):
            field = rng.integers(0, 4096, size=(64, 64, 1), dtype=np.uint16)
            (tmp_path / "raw" / name).mkdir(parents=True, exist_ok=True)
            write_image(tmp_path / "raw" / name / f"field{k}.tif", field)
    tile_folder(tmp_path / "raw", tmp_path / "tiles", TileSettings(grid=2))
    split_folder(tmp_path / "tiles", tmp_path / "out", SplitSettings(twins=False))
    fields = {}
    for side in ("train", "test"):
        with open(tmp_path / "out" / side / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                source = (tmp_path / "out" / side / row["source"]).resolve()
                assert source.parent.parent == (tmp_path / "raw").resolve()  # the raw field
                assert row["step"] == "split" and row["tile_row"] != ""  # tile position kept
                fields.setdefault(source, set()).add(side)
    assert len(fields) == 8 and all(len(sides) == 1 for sides in fields.values())
    report = inspect_dataset(tmp_path / "out" / "train", against=[tmp_path / "out" / "test"])
    assert report.shared_sources == ((),)


def test_existing_output_bad_fraction_and_overlap_are_one_line_errors(tmp_path, capsys):
    src = tmp_path / "all"
    _with_copies(src, n=3, copies=0)
    assert main(["--quiet", "prepare", "split", str(src), str(tmp_path / "out")]) == 0
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*"))
    capsys.readouterr()
    assert main(["--quiet", "prepare", "split", str(src), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "out/train exists; nothing is overwritten" in error and "\n" not in error
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")) == before
    for argv, words in (
        (["--test-fraction", "1.5"], "--test-fraction 1.5: give a share"),
        ([], "overlap"),
    ):
        dst = str(tmp_path / "new") if argv else str(src / "inside")
        assert main(["--quiet", "prepare", "split", str(src), dst, *argv]) == 2
        error = capsys.readouterr().err.strip()
        assert words in error and "\n" not in error
    with pytest.raises(FolderError, match="only one class folder"):
        (tmp_path / "one" / "A").mkdir(parents=True)
        write_image(tmp_path / "one" / "A" / "x.png", _texture(np.random.default_rng(0)))
        split_folder(tmp_path / "one", tmp_path / "out-one")
