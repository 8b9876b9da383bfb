"""Tests for cellclass.synthetic.phenotypes: small fields (96 px or less), written to tmp_path."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from cellclass.synthetic.phenotypes import (
    FAMILIES,
    PhenotypeData,
    draw_field,
    write_aggregates,
    write_density,
    write_family,
    write_shape,
)

OFFSET = 100  # camera bias, ADU


def _fields(family: str, phenotype: bool, n: int, size: int = 96) -> np.ndarray:
    """(n, size, size) float64 fields of one class, bias removed."""
    fields = [
        draw_field(family, phenotype, size=size, rng=np.random.default_rng([7, phenotype, k]))
        for k in range(n)
    ]
    return np.stack(fields).astype(float) - OFFSET


def _best_threshold_accuracy(control: np.ndarray, phenotype: np.ndarray) -> float:
    """Best accuracy of one threshold on a per-image number, either direction (optimistic)."""
    values = np.concatenate([control, phenotype])
    truth = np.r_[np.zeros(len(control)), np.ones(len(phenotype))]
    return max(max(((values > t) == truth).mean(), ((values <= t) == truth).mean()) for t in values)


def _spot_count(field: np.ndarray) -> int:
    """Local maxima of a difference of Gaussians above 0.3 times the local brightness (so
    exposure cancels): puncta."""
    dog = ndimage.gaussian_filter(field, 1.5) - ndimage.gaussian_filter(field, 3.0)
    peaks = (dog == ndimage.maximum_filter(dog, 5)) & (
        dog > 0.3 * ndimage.gaussian_filter(field, 6)
    )
    return int(peaks.sum())


def _clumpiness(field: np.ndarray) -> float:
    """Share of the light above the background that lies in the brightest 0.5 % of pixels."""
    light = np.clip(field - np.percentile(field, 5), 0, None)
    return float(np.sort(light.ravel())[-light.size // 200 :].sum() / light.sum())


def _solidities(field: np.ndarray) -> list[float]:
    """Solidity (area / convex area) of each nucleus not cut by the field's edges."""
    regions = regionprops(label(field > threshold_otsu(field)))
    return [
        r.solidity
        for r in regions
        if r.area > 100 and min(r.bbox[:2]) > 0 and max(r.bbox[2:]) < field.shape[0]
    ]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_writes_train_and_test_class_folders_of_16_bit_tiffs(tmp_path, family):
    data = write_family(family, tmp_path / "data", n_train=3, n_test=2, size=32, seed=1)
    assert isinstance(data, PhenotypeData)
    assert data.train == tmp_path / "data" / "train" and data.test == tmp_path / "data" / "test"
    assert data.classes == FAMILIES[family].classes and data.classes[0] == "Control"
    for folder, n in ((data.train, 3), (data.test, 2)):
        assert sorted(p.name for p in folder.iterdir()) == sorted(data.classes)
        for name in data.classes:
            files = sorted((folder / name).iterdir())
            assert [p.name for p in files] == [f"{name}_{k:04d}.tif" for k in range(n)]
            image = tifffile.imread(files[0])
            assert image.shape == (32, 32) and image.dtype == np.uint16
            assert image.max() <= 4095 and np.unique(image).size > 20
    assert (tmp_path / "data" / "README.txt").is_file()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_seed_same_files_other_seed_other_files_whatever_the_counts(tmp_path, family):
    first = write_family(family, tmp_path / "a", n_train=2, n_test=1, size=32, seed=3)
    write_family(family, tmp_path / "b", n_train=3, n_test=2, size=32, seed=3)
    other = write_family(family, tmp_path / "c", n_train=2, n_test=1, size=32, seed=4)
    for split in ("train", "test"):
        for name in first.classes:
            for path in sorted((tmp_path / "a" / split / name).iterdir()):
                image = tifffile.imread(path)
                same = tifffile.imread(tmp_path / "b" / split / name / path.name)
                np.testing.assert_array_equal(image, same)
                assert not np.array_equal(
                    image, tifffile.imread(tmp_path / "c" / split / name / path.name)
                )
    train = tifffile.imread(sorted((tmp_path / "a" / "train" / "Control").iterdir())[0])
    test = tifffile.imread(sorted((tmp_path / "a" / "test" / "Control").iterdir())[0])
    assert not np.array_equal(train, test)  # the test folder has fields of its own
    assert other.family == family


@pytest.mark.parametrize("family", list(FAMILIES))
def test_effect_zero_draws_control(family):
    def field(phenotype, effect):
        rng = np.random.default_rng(11)
        return draw_field(family, phenotype, size=48, rng=rng, effect=effect)

    np.testing.assert_array_equal(field(True, 0.0), field(False, 0.5))
    assert not np.array_equal(field(True, 0.9), field(False, 0.0))  # 0.9: every nucleus lobed


def test_density_class_has_more_puncta_per_image():
    control = [_spot_count(f) for f in _fields("density", False, 40)]
    dense = [_spot_count(f) for f in _fields("density", True, 40)]
    assert np.mean(dense) > 1.2 * np.mean(control)  # +50 % puncta, a few unseen


def test_aggregates_class_is_clumpier():
    control = [_clumpiness(f) for f in _fields("aggregates", False, 40)]
    clumped = [_clumpiness(f) for f in _fields("aggregates", True, 40)]
    assert np.mean(clumped) > 1.2 * np.mean(control)


def test_shape_class_has_more_lobed_nuclei():
    def lobed_share(phenotype):
        solidities = [s for f in _fields("shape", phenotype, 40, 128) for s in _solidities(f)]
        assert len(solidities) > 20  # nuclei whole in the field
        return np.mean(np.array(solidities) < 0.9)

    assert lobed_share(True) > lobed_share(False) + 0.2  # 10 % vs 60 % lobed


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mean_intensity_does_not_separate_the_classes(family):
    control = _fields(family, False, 40, size=64).mean(axis=(1, 2))
    phenotype = _fields(family, True, 40, size=64).mean(axis=(1, 2))
    assert _best_threshold_accuracy(control, phenotype) < 0.7
    assert control.std() > 0.2 * control.mean()  # brightness varies a lot within a class


@pytest.mark.parametrize("write", [write_aggregates, write_density, write_shape])
def test_family_writers_name_their_family(tmp_path, write):
    data = write(tmp_path / "data", n_train=1, n_test=1, size=16)
    assert data.family == write.__name__.removeprefix("write_")


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown family"):
        write_family("blobs", tmp_path / "x")
    with pytest.raises(ValueError, match="effect"):
        write_family("density", tmp_path / "x", effect=-0.1)
    with pytest.raises(ValueError, match="size"):
        draw_field("shape", True, size=8, rng=np.random.default_rng(0))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_family("shape", tmp_path / "full", n_train=1, n_test=1, size=16)
