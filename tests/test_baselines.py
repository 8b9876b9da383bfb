"""Tests of the feature baseline on tiny images made here."""

from dataclasses import replace

import numpy as np
import pytest

from cellclass.models import baselines
from cellclass.models.baselines import (
    BaselineSettings,
    feature_names,
    fit_baseline,
    image_features,
    predict_proba,
)

SETTINGS = BaselineSettings()


def _spot_images(
    rng: np.random.Generator,
    n: int,
    n_spots: int,
    *,
    size: int = 32,
    channels: int = 1,
    gains: tuple[float, float] = (0.5, 1.5),
) -> np.ndarray:
    """(n, size, size, channels) float32 in [0, 1]: noisy background plus ``n_spots`` blobs.

    Each image is multiplied by a random gain from ``gains``, so that by default brightness
    says little about ``n_spots``.
    """
    yy, xx = np.mgrid[:size, :size]
    images = 0.1 + 0.01 * rng.standard_normal((n, size, size, channels))
    for image in images:
        for y, x in rng.uniform(2, size - 2, (n_spots, 2)):
            image += 0.3 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)[..., None]
        image *= rng.uniform(*gains)
    return np.clip(images, 0, 1).astype(np.float32)


def _held_out_accuracy(class0: np.ndarray, class1: np.ndarray) -> float:
    """Fit on the first half of each class's images, return the accuracy on the rest."""
    half = len(class0) // 2
    features = [image_features(images, SETTINGS) for images in (class0, class1)]
    train = np.concatenate([f[:half] for f in features])
    test = np.concatenate([f[half:] for f in features])
    model = fit_baseline(train, np.repeat([0, 1], half), 2, SETTINGS)
    predicted = predict_proba(model, test).argmax(1)
    return float((predicted == np.repeat([0, 1], len(class0) - half)).mean())


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [32, 48])
def test_features_have_documented_shape_names_and_are_finite_and_deterministic(channels, size):
    images = _spot_images(np.random.default_rng(0), 5, 4, size=size, channels=channels)
    features = image_features(images, SETTINGS)
    names = feature_names(SETTINGS, channels)
    assert features.shape == (5, len(names))
    assert features.dtype == np.float64
    assert len(set(names)) == len(names)
    assert len(names) == channels * len(feature_names(SETTINGS, 1))
    assert names[0] == "mean_c0" and names[-1] == f"glcm_correlation_d4_c{channels - 1}"
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features, image_features(images, SETTINGS))


def test_features_of_an_image_do_not_depend_on_its_batch(monkeypatch):
    images = _spot_images(np.random.default_rng(1), 7, 5, channels=2)
    whole = image_features(images, SETTINGS)
    monkeypatch.setattr(baselines, "_CHUNK_PIXELS", 3 * 32 * 32)  # chunks of 3 images
    np.testing.assert_allclose(image_features(images, SETTINGS), whole, rtol=1e-6)
    np.testing.assert_allclose(image_features(images[4:5], SETTINGS), whole[4:5], rtol=1e-6)


def test_intensity_features_are_the_pixel_statistics():
    images = np.random.default_rng(2).random((3, 32, 32, 1), dtype=np.float32)
    features = image_features(images, SETTINGS)
    names = feature_names(SETTINGS, 1)
    flat = images.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(features[:, names.index("mean_c0")], flat.mean(1), rtol=1e-6)
    np.testing.assert_allclose(features[:, names.index("sd_c0")], flat.std(1), rtol=1e-5)
    np.testing.assert_allclose(
        features[:, names.index("p95_c0")], np.percentile(flat, 95, axis=1), rtol=1e-6
    )


def test_spot_density_counts_spots():
    rng = np.random.default_rng(3)
    names = feature_names(SETTINGS, 1)
    few = image_features(_spot_images(rng, 10, 2), SETTINGS)
    many = image_features(_spot_images(rng, 10, 12), SETTINGS)
    column = names.index("spot_density_s1_c0")
    assert few[:, column].max() < many[:, column].min()


def test_classes_differing_only_in_spot_density_are_separated():
    rng = np.random.default_rng(4)
    accuracy = _held_out_accuracy(_spot_images(rng, 60, 4), _spot_images(rng, 60, 10))
    assert accuracy > 0.9


def test_classes_differing_only_in_brightness_are_separated():
    rng = np.random.default_rng(5)
    dim = _spot_images(rng, 60, 6, gains=(0.4, 0.6))
    bright = _spot_images(rng, 60, 6, gains=(0.8, 1.2))
    assert _held_out_accuracy(dim, bright) > 0.9


def test_only_intensity_features_see_brightness():
    images = _spot_images(np.random.default_rng(6), 4, 6, gains=(0.5, 0.5))
    brighter = images * np.float32(1.7)
    names = feature_names(SETTINGS, 1)
    shapes = [i for i, name in enumerate(names) if name.startswith(("spot_", "glcm_"))]
    features = [image_features(x, SETTINGS) for x in (images, brighter)]
    np.testing.assert_allclose(features[1][:, shapes], features[0][:, shapes], rtol=1e-3, atol=1e-4)
    mean = names.index("mean_c0")
    np.testing.assert_allclose(features[1][:, mean], 1.7 * features[0][:, mean], rtol=1e-5)


def test_probabilities_have_one_column_per_class_and_sum_to_one():
    rng = np.random.default_rng(6)
    features = image_features(
        np.concatenate([_spot_images(rng, 8, 2), _spot_images(rng, 8, 9)]), SETTINGS
    )
    model = fit_baseline(features, np.repeat([0, 2], 8), 3, SETTINGS)  # class 1 absent
    probs = predict_proba(model, features)
    assert probs.shape == (16, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs[:, 1] < 0.5).all()
    assert model.weights.shape == (len(feature_names(SETTINGS, 1)), 3)


def test_stronger_penalty_gives_smaller_weights():
    rng = np.random.default_rng(7)
    features = image_features(np.concatenate([_spot_images(rng, 10, n) for n in (2, 9)]), SETTINGS)
    labels = np.repeat([0, 1], 10)
    loose = fit_baseline(features, labels, 2, replace(SETTINGS, l2=0.1))
    tight = fit_baseline(features, labels, 2, replace(SETTINGS, l2=100.0))
    assert np.abs(tight.weights).sum() < np.abs(loose.weights).sum()


def test_flat_and_empty_inputs():
    flat = np.full((2, 32, 32, 1), 0.25, dtype=np.float32)
    assert np.isfinite(image_features(flat, SETTINGS)).all()
    empty = image_features(np.zeros((0, 32, 32, 3), dtype=np.float32), SETTINGS)
    assert empty.shape == (0, len(feature_names(SETTINGS, 3)))


def _one_line_error(call) -> str:
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 32, 32), dtype=np.float32),  # no channel axis
        np.zeros((2, 4, 4, 1), dtype=np.float32),  # too small to filter
        np.full((2, 32, 32, 1), np.nan, dtype=np.float32),
    ],
)
def test_bad_images_are_refused(images):
    _one_line_error(lambda: image_features(images, SETTINGS))


@pytest.mark.parametrize(
    ("features", "labels", "n_classes"),
    [
        (np.zeros((4, 3)), np.array([0, 1, 0]), 2),  # mismatched lengths
        (np.zeros(4), np.array([0, 1, 0, 1]), 2),  # features not (N, F)
        (np.zeros((4, 3)), np.zeros(4, dtype=int), 2),  # one class
        (np.zeros((4, 3)), np.array([0, 1, 2, 1]), 2),  # label out of range
        (np.zeros((4, 3)), np.array([0.0, 1.0, 0.0, 1.0]), 2),  # labels not integers
        (np.full((4, 3), np.inf), np.array([0, 1, 0, 1]), 2),
    ],
)
def test_bad_training_data_is_refused(features, labels, n_classes):
    _one_line_error(lambda: fit_baseline(features, labels, n_classes, SETTINGS))


def test_features_of_another_width_are_refused():
    model = fit_baseline(np.eye(4)[:, :3], np.array([0, 1, 0, 1]), 2, SETTINGS)
    assert "(N, 3)" in _one_line_error(lambda: predict_proba(model, np.zeros((2, 5))))


@pytest.mark.parametrize(
    "change",
    [{"spot_sigmas": (0.0,)}, {"glcm_levels": 300}, {"l2": 0.0}, {"stretch": (50, 10)}],
)
def test_bad_settings_are_refused(change):
    images = np.zeros((1, 32, 32, 1), dtype=np.float32)
    _one_line_error(lambda: image_features(images, replace(SETTINGS, **change)))


@pytest.mark.parametrize(("phenotype", "least"), [("Snap29", 0.8), ("Snf7", 0.6)])
def test_demo_phenotypes_are_told_from_control(phenotype, least):
    from cellclass.synthetic import MAX_VALUE, PHENOTYPES, make_field

    def fields(name: str, key: int) -> np.ndarray:
        rngs = [np.random.default_rng([key, k]) for k in range(60)]
        stack = [make_field(PHENOTYPES[name], size=128, rng=rng) for rng in rngs]
        return (np.stack(stack)[..., None] / MAX_VALUE).astype(np.float32)

    assert _held_out_accuracy(fields("Control", 0), fields(phenotype, 1)) > least
