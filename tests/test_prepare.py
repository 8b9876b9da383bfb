"""Tiling, rotation, the provenance manifest and the `cellclass prepare` command."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cellclass.cli import main
from cellclass.data.folders import FolderError, grouped_split, scan_folder
from cellclass.data.images import ImageReadError, read_image, write_image
from cellclass.prepare.rotation import RotateSettings, crop_shape, parse_angles, rotate_image
from cellclass.prepare.steps import MANIFEST_COLUMNS, PrepareError, rotate_folder, tile_folder
from cellclass.prepare.tiling import TileSettings


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, image)
    return path


def _fields(root: Path, *, n: int = 2, size: int = 64, suffix: str = ".tif", seed: int = 0):
    """Two classes of `n` uint16 fields with 12-bit values; returns {relative path: pixels}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in ("Control", "Treated"):
        for i in range(n):
            image = rng.integers(100, 4096, size=(size, size, 1), dtype=np.uint16)
            written[f"{name}/field{i}{suffix}"] = _write(root / name / f"field{i}{suffix}", image)
    return {key: read_image(path) for key, path in written.items()}


def _manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- angles


def test_parse_angles_list_range_and_step():
    assert parse_angles("0,90,180,270") == (0.0, 90.0, 180.0, 270.0)
    assert parse_angles("-5:5:1") == tuple(float(a) for a in range(-5, 6))  # end included
    assert parse_angles("-1:1:0.5") == (-1.0, -0.5, 0.0, 0.5, 1.0)
    step = parse_angles("step=18")
    assert len(step) == 20 and step[0] == 0.0 and step[-1] == 342.0


@pytest.mark.parametrize(
    "spec", ["abc", "step=0", "5:-5:1", "0:360:90", "1:2", "", "0,,90", "720", "nan", "0:1e9:1e-3"]
)
def test_bad_angle_spec_is_one_line_error_quoting_it(spec):
    with pytest.raises(ValueError) as info:
        parse_angles(spec)
    message = str(info.value)
    assert "\n" not in message and repr(spec) in message
    assert "same rotation" in message or "e.g. -5:5:1" in message or "(-5:5:1)" in message


# ----------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("angle", [90, 180, 270, -90])
def test_quarter_turns_equal_rot90(dtype, angle):
    image = np.random.default_rng(1).integers(0, 200, size=(32, 48, 3)).astype(dtype)
    for fill in ("reflect", "constant"):
        rotated = rotate_image(image, angle, fill=fill)
        assert rotated.dtype == dtype
        np.testing.assert_array_equal(rotated, np.rot90(image, angle // 90))
    flipped = rotate_image(image, angle, flip="h")
    np.testing.assert_array_equal(flipped, np.rot90(image[:, ::-1], angle // 90))


@pytest.mark.parametrize("angle", [30.0, -5.0, 135.0])
def test_rotation_moves_a_spot_by_the_angle_counter_clockwise(angle):
    y, x = np.mgrid[0:65, 0:65]
    spot_y, spot_x = 32, 52  # 20 pixels right of the centre (32, 32)
    image = (4000 * np.exp(-((y - spot_y) ** 2 + (x - spot_x) ** 2) / 4.0)).astype(np.uint16)
    rotated = rotate_image(image[:, :, None], angle, fill="constant")[:, :, 0]
    weights = rotated.astype(np.float64)
    found_y, found_x = (weights * y).sum() / weights.sum(), (weights * x).sum() / weights.sum()
    theta = np.radians(angle)  # counter-clockwise as displayed: up is -y
    expected_y, expected_x = 32 - 20 * np.sin(theta), 32 + 20 * np.cos(theta)
    assert abs(found_y - expected_y) < 0.5 and abs(found_x - expected_x) < 0.5
    assert np.abs(rotated.astype(int) - image).max() > 1000  # really rotated, not a copy


def test_crop_fill_removes_corners_and_keeps_one_size():
    image = np.random.default_rng(2).integers(500, 4000, size=(40, 60, 1), dtype=np.uint16)
    angles = (-5.0, 0.0, 30.0, 90.0)
    shape = crop_shape(40, 60, angles)
    outputs = [rotate_image(image, a, fill="crop", crop_to=shape) for a in angles]
    assert all(out.shape == (*shape, 1) for out in outputs)
    assert shape[0] < 40 and shape[1] < 60
    assert all(out.min() >= 500 for out in outputs)  # no 0 fill anywhere
    assert abs(shape[1] / shape[0] - 1.5) < 0.1  # the field's aspect is kept (1-pixel margins)
    assert crop_shape(40, 40, (0, 90, 180, 270)) == (40, 40)


def test_rotate_folder_names_manifest_and_chained_sources(tmp_path):
    fields = _fields(tmp_path / "raw", size=64)
    assert tile_folder(tmp_path / "raw", tmp_path / "tiles", TileSettings(grid=2)).written == {
        "Control": 8,
        "Treated": 8,
    }
    settings = RotateSettings(angles=parse_angles("-5,0,90"), fill="reflect", flips=("h",))
    result = rotate_folder(tmp_path / "tiles", tmp_path / "rot", settings)
    assert sum(result.written.values()) == 16 * 6
    rotated = read_image(tmp_path / "rot" / "Control" / "field1_r0c1_a90_fh.tif")
    tile = fields["Control/field1.tif"][:32, 32:]
    np.testing.assert_array_equal(rotated, np.rot90(tile[:, ::-1]))
    assert (tmp_path / "rot" / "Control" / "field1_r0c1_a-5.tif").is_file()
    rows = {row["path"]: row for row in _manifest(tmp_path / "rot")}
    row = rows["Control/field1_r0c1_a90_fh.tif"]
    assert list(row) == MANIFEST_COLUMNS
    assert row["source"] == "../raw/Control/field1.tif"  # the original field, not the tile
    assert (row["class"], row["tile_row"], row["tile_col"], row["angle"], row["flip"]) == (
        "Control", "0", "1", "90", "h",
    )  # fmt: skip
    assert (tmp_path / "rot" / row["parent"]).resolve() == (
        tmp_path / "tiles" / "Control" / "field1_r0c1.tif"
    ).resolve()


def test_both_flips_with_half_turns_refused(tmp_path):
    _fields(tmp_path / "raw")
    settings = RotateSettings(angles=(0.0, 180.0), flips=("h", "v"))
    with pytest.raises(PrepareError, match="identical copies"):
        rotate_folder(tmp_path / "raw", tmp_path / "rot", settings)


# ----------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(
    ("suffix", "dtype", "channels", "top"),
    [(".tif", np.uint16, 1, 65535), (".tif", np.uint16, 3, 4095), (".png", np.uint16, 1, 65535),
     (".png", np.uint8, 3, 255), (".tif", np.float32, 2, 1)],
)  # fmt: skip
def test_tiles_keep_values_dtype_channels_and_format(tmp_path, suffix, dtype, channels, top):
    rng = np.random.default_rng(3)
    for name in ("A", "B"):
        image = (rng.random((48, 64, channels)) * top).astype(dtype)
        image[0, 0] = top  # the extreme value must survive
        _write(tmp_path / "src" / name / f"f{suffix}", image)
    tile_folder(tmp_path / "src", tmp_path / "dst", TileSettings(grid=4))
    field = read_image(tmp_path / "src" / "A" / f"f{suffix}")
    for row in range(4):
        for col in range(4):
            tile = read_image(tmp_path / "dst" / "A" / f"f_r{row}c{col}{suffix}")
            assert tile.dtype == dtype and tile.shape == (12, 16, channels)
            np.testing.assert_array_equal(
                tile, field[row * 12 : (row + 1) * 12, col * 16 :][:, :16]
            )


def test_edge_policies_drop_or_mirror_the_remainder(tmp_path):
    field = np.arange(50 * 70, dtype=np.uint16).reshape(50, 70, 1)
    for name in ("A", "B"):
        _write(tmp_path / "src" / name / "f.tif", field)
    dropped = tile_folder(tmp_path / "src", tmp_path / "drop", TileSettings(tile_size=32))
    assert dropped.written == {"A": 2, "B": 2}  # 1 x 2 tiles, the remainder left out
    padded = tile_folder(tmp_path / "src", tmp_path / "pad", TileSettings(tile_size=32, edge="pad"))
    assert padded.written == {"A": 6, "B": 6}  # 2 x 3 tiles
    corner = read_image(tmp_path / "pad" / "A" / "f_r1c2.tif")
    mirrored = np.pad(field, ((0, 14), (0, 26), (0, 0)), mode="reflect")[32:, 64:]
    np.testing.assert_array_equal(corner, mirrored)
    too_small = tile_folder(tmp_path / "src", tmp_path / "big", TileSettings(tile_size=80))
    assert len(too_small.no_output) == 2 and not any(too_small.written.values())


def test_min_foreground_drops_background_tiles(tmp_path):
    rng = np.random.default_rng(4)
    for name in ("A", "B"):
        field = rng.normal(100, 3, size=(64, 64, 1))
        field[8:24, 40:56] += 2000  # one bright cell in the top-right tile
        _write(tmp_path / "src" / name / "f.tif", field.astype(np.uint16))
    result = tile_folder(
        tmp_path / "src", tmp_path / "dst", TileSettings(grid=2, min_foreground=0.1)
    )
    assert result.written == {"A": 1, "B": 1} and result.dropped == {"A": 3, "B": 3}
    assert sorted(p.name for p in (tmp_path / "dst" / "A").iterdir()) == ["f_r0c1.tif"]


def test_large_field_is_read_once_and_tiled(tmp_path, monkeypatch):
    import cellclass.prepare.steps as prepare

    _fields(tmp_path / "src", n=1, size=256)
    reads = []
    original = prepare.read_image
    monkeypatch.setattr(
        prepare, "read_image", lambda path, **kw: reads.append(path) or original(path, **kw)
    )
    result = tile_folder(tmp_path / "src", tmp_path / "dst", TileSettings(tile_size=64))
    assert result.written == {"Control": 16, "Treated": 16}
    assert len(reads) == len(set(reads)) == 2  # one read per field, one field at a time


# ----------------------------------------------------------------------------- splits and reruns


def test_grouped_split_never_splits_a_source_field(tmp_path):
    _fields(tmp_path / "raw", n=6, size=32)
    tile_folder(tmp_path / "raw", tmp_path / "tiles", TileSettings(grid=2))
    rotate_folder(tmp_path / "tiles", tmp_path / "rot", RotateSettings(angles=(0.0, 90.0, 180.0)))
    index = scan_folder(tmp_path / "rot")
    assert len(index.samples) == 12 * 4 * 3 and len(set(index.groups)) == 12  # 12 fields
    for seed in range(10):
        rng = np.random.default_rng(seed)
        train, held = grouped_split(index.groups, index.labels, 0.25, rng=rng)
        assert len(held) > 0
        assert not {index.groups[i] for i in train} & {index.groups[i] for i in held}


def test_second_run_refused_unless_overwrite_which_deletes_nothing_else(tmp_path):
    _fields(tmp_path / "raw")
    settings = TileSettings(grid=2)
    tile_folder(tmp_path / "raw", tmp_path / "dst", settings)
    keep = _write(tmp_path / "dst" / "Control" / "keep.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(PrepareError, match="overwrite=True") as info:
        tile_folder(tmp_path / "raw", tmp_path / "dst", settings)
    assert "\n" not in str(info.value)
    before = len(_manifest(tmp_path / "dst"))
    tile_folder(tmp_path / "raw", tmp_path / "dst", TileSettings(grid=2, overwrite=True))
    assert keep.is_file() and len(_manifest(tmp_path / "dst")) == before == 16
    rotate_folder(tmp_path / "raw", tmp_path / "dst", RotateSettings(angles=(90.0,)))
    assert len(_manifest(tmp_path / "dst")) == 16 + 4  # another step extends the manifest


@pytest.mark.parametrize("dst", ["raw", "raw/inner", "."])
def test_dst_equal_to_or_inside_src_refused(tmp_path, dst):
    _fields(tmp_path / "raw")
    with pytest.raises(PrepareError, match="SRC"):
        tile_folder(tmp_path / "raw", tmp_path / dst, TileSettings(grid=2))


def test_empty_class_folder_and_unreadable_file_are_one_line_errors(tmp_path):
    _fields(tmp_path / "raw")
    (tmp_path / "raw" / "Empty").mkdir()
    with pytest.raises(FolderError) as info:
        tile_folder(tmp_path / "raw", tmp_path / "dst", TileSettings(grid=2))
    assert "Empty" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "raw" / "Empty").rmdir()
    (tmp_path / "raw" / "Treated" / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="broken.tif") as info:
        tile_folder(tmp_path / "raw", tmp_path / "dst", TileSettings(grid=2))
    assert "\n" not in str(info.value)
    result = tile_folder(tmp_path / "raw", tmp_path / "ok", TileSettings(grid=2, skip_bad=True))
    assert [path.name for path, _ in result.skipped] == ["broken.tif"]
    assert result.written == {"Control": 8, "Treated": 8}


# ----------------------------------------------------------------------------- command line


def test_prepare_command_tiles_rotates_and_refuses_reruns(tmp_path, capsys):
    _fields(tmp_path / "raw", size=64)
    raw, tiles, rot = (str(tmp_path / name) for name in ("raw", "tiles", "rot"))
    assert main(["--quiet", "prepare", "tile", raw, tiles, "--tile-size", "32"]) == 0
    assert "16 files written" in capsys.readouterr().out
    assert (
        main(["prepare", "rotate", tiles, rot, "--angles", "step=90", "--flip", "h", "--quiet"])
        == 0
    )
    assert "128 files written" in capsys.readouterr().out
    assert main(["prepare", "tile", raw, tiles, "--grid", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["rotate", "{raw}", "{out}", "--angles", "-5:5"],
        ["rotate", "{raw}", "{raw}/x", "--angles", "0"],
        ["tile", "{raw}", "{out}", "--grid", "2", "--min-foreground", "2"],
        ["tile", "{tmp}/missing", "{out}", "--grid", "2"],
    ],
)
def test_prepare_command_bad_input_exit_2_one_line(tmp_path, capsys, argv):
    _fields(tmp_path / "raw")
    paths = {"raw": tmp_path / "raw", "out": tmp_path / "out", "tmp": tmp_path}
    assert main(["prepare", *(arg.format(**paths) for arg in argv), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellclass: error: ") and err.count("\n") == 1
