"""Tests for cellclass.synthetic.folders: tiny fields (64 px or less), written to tmp_path."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellclass.synthetic import (
    DEMO_SESSIONS,
    MAX_VALUE,
    PHENOTYPES,
    DemoData,
    DemoDataset,
    Session,
    make_field,
    render_field,  # to check tiles against the wide field they come from
    write_class_folders,
    write_demo,
)

OFFSET = 100  # camera bias in ADU, subtracted before comparing brightness


def _field(name: str, *key: int, size: int = 64, strength: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(list(key))
    return make_field(PHENOTYPES[name], size=size, rng=rng, strength=strength)


def _read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))


def _box_max(image: np.ndarray, width: int = 5) -> float:
    """Brightest mean over a width x width box: big for aggregates, small for vesicles."""
    total = np.pad(image.astype(float), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    boxes = total[width:, width:] - total[:-width, width:] - total[width:, :-width]
    return float((boxes + total[:-width, :-width]).max()) / width**2


@pytest.mark.parametrize("name", list(PHENOTYPES))
def test_field_is_12_bit_uint16_of_the_asked_size(name):
    field = _field(name, 1, size=48)
    assert field.shape == (48, 48)
    assert field.dtype == np.uint16
    assert field.max() <= MAX_VALUE
    assert field.min() > 0  # the camera bias keeps dark pixels above zero
    assert np.unique(field).size > 100  # a real image, not a constant


@pytest.mark.parametrize("name", list(PHENOTYPES))
def test_same_seed_same_field_other_seed_other_field(name):
    np.testing.assert_array_equal(_field(name, 3), _field(name, 3))
    assert not np.array_equal(_field(name, 3), _field(name, 4))


@pytest.mark.parametrize("name", ["Snap29", "Snf7"])
def test_strength_zero_is_control_and_strength_one_is_not(name):
    # cells, exposure and noise come from streams the phenotype does not touch
    np.testing.assert_array_equal(_field(name, 5, strength=0.0), _field("Control", 5))
    assert not np.array_equal(_field(name, 5), _field("Control", 5))


@pytest.mark.parametrize(("size", "strength"), [(4, 1.0), (64, -0.1), (64, 1.5)])
def test_bad_size_or_strength_is_refused(size, strength):
    with pytest.raises(ValueError, match="size|strength"):
        _field("Snf7", 0, size=size, strength=strength)


def test_a_class_name_is_not_a_phenotype():
    with pytest.raises(TypeError, match="PHENOTYPES"):
        make_field("Snf7", size=16, rng=np.random.default_rng(0))


def test_snf7_is_not_brighter_or_darker_than_control():
    # The same key gives the same cells, exposure and noise, so the paired ratio isolates the
    # phenotype. Snf7 keeps each cell's vesicle cargo (more vesicles, each dimmer); what is
    # left is the Poisson draw of vesicle counts: about 1 % over 30 fields of 64 px. 4 % is
    # about 4 sd, while the per-field exposure alone varies by about 40 %.
    control = sum(_field("Control", 7, k).astype(float).sum() - OFFSET * 64**2 for k in range(30))
    snf7 = sum(_field("Snf7", 7, k).astype(float).sum() - OFFSET * 64**2 for k in range(30))
    assert snf7 / control == pytest.approx(1.0, abs=0.04)


def test_snap29_has_bright_aggregates_that_control_lacks():
    # Paired fields (same key: same cells and exposure). Cells are about 90 px wide, so 128 px
    # fields are the smallest that usually hold a whole perinuclear region.
    pairs = np.array(
        [
            [
                _box_max(_field(name, 8, k, size=128).astype(float) - OFFSET)
                for name in ("Control", "Snap29")
            ]
            for k in range(20)
        ]
    )
    control, snap29 = pairs.T
    assert snap29.mean() > 1.4 * control.mean()  # measured: 1.65 to 2.15 over five keys
    assert np.mean(snap29 > control) > 0.65  # a field may crop its aggregates away


def test_image_k_does_not_depend_on_how_many_are_written(tmp_path):
    few = write_class_folders(tmp_path / "few", {"Control": 3, "Snf7": 3}, size=32, seed=2)
    many = write_class_folders(tmp_path / "many", {"Snf7": 10, "Control": 10}, size=32, seed=2)
    assert [p.name for p in few] == [
        f"{c}_{k:04d}.tif" for c in ("Control", "Snf7") for k in range(3)
    ]
    by_name = {p.name: p for p in many}
    for path in few:
        np.testing.assert_array_equal(_read(path), _read(by_name[path.name]))


def test_classes_and_streams_give_different_images(tmp_path):
    write_class_folders(tmp_path / "a", {"Control": 1, "Snf7": 1}, size=32)
    write_class_folders(tmp_path / "b", {"Control": 1}, size=32, stream=1)
    control = _read(tmp_path / "a" / "Control" / "Control_0000.tif")
    assert not np.array_equal(control, _read(tmp_path / "a" / "Snf7" / "Snf7_0000.tif"))
    assert not np.array_equal(control, _read(tmp_path / "b" / "Control" / "Control_0000.tif"))


def test_image_k_comes_from_its_own_documented_generator(tmp_path):
    paths = write_class_folders(tmp_path, {"Snf7": 3}, size=32, seed=4, stream=2)
    class_id = list(PHENOTYPES).index("Snf7")
    for k, path in enumerate(paths):
        rng = np.random.default_rng([4, 2, class_id, k])
        np.testing.assert_array_equal(_read(path), make_field(PHENOTYPES["Snf7"], size=32, rng=rng))


def test_tiles_of_one_source_are_cut_from_one_wider_field(tmp_path):
    paths = write_class_folders(tmp_path, {"Control": 3}, size=32, seed=4, fields_per_source=2)
    tiles = [_read(p) for p in paths]
    rng = np.random.default_rng([4, 0, 0, 0])  # source 0 of Control (class id 0)
    np.testing.assert_array_equal(
        np.hstack(tiles[:2]), render_field((32, 64), PHENOTYPES["Control"], 1.0, rng)
    )
    rng = np.random.default_rng([4, 0, 0, 1])  # image 2 starts source 1
    np.testing.assert_array_equal(
        tiles[2], render_field((32, 64), PHENOTYPES["Control"], 1.0, rng)[:, :32]
    )


def test_png_is_8_bit_with_a_fixed_scale(tmp_path):
    tif = write_class_folders(tmp_path / "tif", {"Snap29": 3}, size=48, seed=6)
    png = write_class_folders(tmp_path / "png", {"Snap29": 3}, size=48, seed=6, fmt="png")
    for tif_path, png_path in zip(tif, png, strict=True):
        pixels = _read(png_path)
        assert pixels.dtype == np.uint8
        expected = np.clip(np.rint(_read(tif_path) * (255 / MAX_VALUE)), 0, 255)
        np.testing.assert_array_equal(pixels, expected)  # not stretched per image


def test_existing_files_are_never_overwritten(tmp_path):
    write_class_folders(tmp_path, {"Control": 2}, size=16)
    before = (tmp_path / "Control" / "Control_0001.tif").read_bytes()
    with pytest.raises(FileExistsError, match="already exist"):
        write_class_folders(tmp_path, {"Control": 3}, size=16, seed=9)
    assert (tmp_path / "Control" / "Control_0001.tif").read_bytes() == before
    assert not (tmp_path / "Control" / "Control_0002.tif").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("counts", "options"),
    [
        ({"Rab5": 1}, {}),
        ({"Control": 1}, {"fmt": "jpg"}),
        ({"Control": -1}, {}),
        ({"Control": 1}, {"seed": -1}),
        ({"Control": 1}, {"fields_per_source": 0}),
    ],
)
def test_bad_requests_are_refused_before_writing(tmp_path, counts, options):
    with pytest.raises(ValueError):
        write_class_folders(tmp_path / "out", counts, size=16, **options)
    assert not (tmp_path / "out").exists()


def test_write_demo_layout_counts_and_independent_tests(tmp_path):
    demo = write_demo(tmp_path / "demo", n_train=3, n_test=2, size=32, seed=1)
    root = tmp_path / "demo"
    assert demo == DemoData(
        root=root,
        datasets={
            name: DemoDataset(root / name / "train", root / name / "test")
            for name in ("snap29", "snf7")
        },
    )
    layout = {  # the study's design: one binary experiment per dataset
        "snap29/train": {"Control": 3, "Snap29": 3},
        "snap29/test": {"Control": 2, "Snap29": 2},
        "snf7/train": {"Control": 3, "Snf7": 3},
        "snf7/test": {"Control": 2, "Snf7": 2},
    }
    for folder, counts in layout.items():
        found = {p.name: len(list(p.iterdir())) for p in (demo.root / folder).iterdir()}
        assert found == counts
    assert "SYNTHETIC" in (demo.root / "README.txt").read_text()
    assert sorted(p.name for p in demo.root.iterdir()) == ["README.txt", "snap29", "snf7"]
    controls = [
        _read(folder / "Control" / "Control_0000.tif")
        for dataset in demo.datasets.values()
        for folder in (dataset.train, dataset.test)
    ]
    for i, first in enumerate(controls):  # every folder draws its own fields
        for second in controls[i + 1 :]:
            assert not np.array_equal(first, second)


def test_write_demo_accepts_an_empty_folder_and_refuses_a_full_one(tmp_path):
    write_demo(tmp_path, n_train=1, n_test=1, size=16)  # tmp_path exists and is empty
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_demo(tmp_path, n_train=1, n_test=1, size=16)


def test_a_session_scales_exposure_and_adds_background_to_the_same_field():
    control = PHENOTYPES["Control"]
    plain = render_field((48, 48), control, 1.0, np.random.default_rng(7))
    default = render_field((48, 48), control, 1.0, np.random.default_rng(7), session=Session())
    np.testing.assert_array_equal(plain, default)  # Session() is the default look
    dim, bright = (
        render_field((48, 48), control, 1.0, np.random.default_rng(7), session=Session(e, 0.0))
        for e in (0.5, 1.5)
    )
    ratio = (bright.astype(float) - OFFSET).mean() / (dim.astype(float) - OFFSET).mean()
    assert 2.7 < ratio < 3.3  # the same cells, three times the light
    hazy = render_field(
        (48, 48), control, 1.0, np.random.default_rng(7), session=Session(0.5, 0.0, 200.0)
    )
    assert (hazy.astype(float) - dim).mean() > 50  # extra background, all over the field


def test_a_tuple_of_sessions_picks_one_per_source_without_changing_the_cells(tmp_path):
    dim, bright = Session(0.5, 0.0), Session(2.0, 0.0)
    paths = write_class_folders(
        tmp_path, {"Control": 12}, size=32, seed=2, sessions={"Control": (dim, bright)}
    )
    alone = write_class_folders(
        tmp_path / "dim", {"Control": 12}, size=32, seed=2, sessions={"Control": dim}
    )
    levels = [(_read(p).astype(float) - OFFSET).mean() for p in paths]
    dims = [(_read(p).astype(float) - OFFSET).mean() for p in alone]
    ratios = np.array(levels) / np.array(dims)  # 1 where the field was imaged dim, 4 where bright
    assert np.all(np.isclose(ratios, 1.0, atol=0.1) | np.isclose(ratios, 4.0, rtol=0.1))
    assert 0 < np.isclose(ratios, 4.0, rtol=0.1).sum() < len(paths)  # both sessions used


def test_the_demos_hard_training_classes_differ_by_session_and_its_test_does_not(tmp_path):
    demo = write_demo(tmp_path / "demo", n_train=12, n_test=12, size=32, seed=3)
    assert set(DEMO_SESSIONS) == {"snf7"}  # the easy dataset has no confound

    def mean_level(folder: Path, name: str) -> float:
        return float(np.mean([_read(p).mean() - OFFSET for p in (folder / name).iterdir()]))

    hard = demo.datasets["snf7"]
    assert mean_level(hard.train, "Snf7") > 1.6 * mean_level(hard.train, "Control")
    test_ratio = mean_level(hard.test, "Snf7") / mean_level(hard.test, "Control")
    assert 0.6 < test_ratio < 1.6  # both classes come from both sessions
    easy = demo.datasets["snap29"]
    easy_ratio = mean_level(easy.train, "Snap29") / mean_level(easy.train, "Control")
    assert 0.6 < easy_ratio < 1.6
    assert "confound" in (demo.root / "README.txt").read_text()
