"""A classical baseline: hand-made per-image features and a logistic regression.

It answers "does the CNN add anything?" and says how hard the data is. Trained on the same
split as the networks, it reports in the results' ``model`` column as `BaselineSettings.name`.

Features per channel, in the order of `feature_names`:

- **intensity** of the pixels as the CNN sees them: mean, sd and `BaselineSettings.percentiles`.
  These see brightness (and exposure), nothing of shapes.
- **spots**, on the image stretched to its own robust range (so exposure cancels): for each
  difference-of-Gaussians scale, the density of local maxima brighter than
  ``spot_threshold`` robust sds of the filtered image, and their mean amplitude.
- **texture**: grey-level co-occurrence (scikit-image ``graycomatrix``) of the stretched image
  quantised to ``glcm_levels`` levels, averaged over four directions: contrast, homogeneity,
  energy and correlation at each of ``glcm_distances``.

The classifier is a multinomial logistic regression with an L2 penalty on standardised
features (`cellclass.models.logistic`: scikit-learn's LogisticRegression). SciPy, scikit-image
and scikit-learn are imported by the functions that use them: `BaselineSettings` is part of
every experiment's settings, and those imports cost 0.7 s at each start of the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellclass.metrics import softmax
from cellclass.models.logistic import fit_logistic

__all__ = [
    "BaselineSettings",
    "FittedBaseline",
    "feature_names",
    "fit_baseline",
    "image_features",
    "predict_proba",
]

_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")  # graycoprops names
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)  # averaged: direction-free texture
_DOG_RATIO = 1.6  # outer / inner Gaussian sigma of the difference of Gaussians (~ LoG)
_IQR_TO_SD = 1.349  # interquartile range -> sd for Gaussian noise
_CHUNK_PIXELS = 2**21  # pixels filtered at once (32 images of 256 x 256): bounds memory
_MIN_SIZE = 8  # smallest image side the filters make sense on, pixels


@dataclass(frozen=True)
class BaselineSettings:
    """How the feature baseline computes features and fits its classifier."""

    name: str = "features"  # label in the results' model column
    l2: float = 1.0  # L2 penalty: loss = sum of cross-entropies + l2/2 |w|^2 (scikit-learn 1/C)
    percentiles: tuple[float, ...] = (1, 5, 25, 50, 75, 95, 99)  # intensity percentiles
    stretch: tuple[float, float] = (0.5, 99.5)  # per-image percentiles mapped to 0, 1 (spots)
    spot_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)  # DoG inner sigmas, pixels (spot radii)
    spot_threshold: float = 3.0  # a spot is a maximum above this many robust sds of the DoG
    glcm_levels: int = 32  # grey levels of the quantised image; more is slower and sparser
    glcm_distances: tuple[int, ...] = (1, 2, 4)  # co-occurrence offsets, pixels

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class FittedBaseline:
    """A fitted feature baseline: standardisation and a multinomial logistic regression."""

    settings: BaselineSettings  # how its features were computed
    mean: np.ndarray  # (F,) float64 feature means of the training images
    scale: np.ndarray  # (F,) float64 feature sds of the training images, 1 where constant
    weights: np.ndarray  # (F, K) float64 coefficients on standardised features
    bias: np.ndarray  # (K,) float64 intercepts


def feature_names(settings: BaselineSettings, n_channels: int) -> list[str]:
    """Names of the `image_features` columns, e.g. ``mean_c0``, ``spot_density_s2_c0``.

    Parameters
    ----------
    settings : BaselineSettings
    n_channels : int >= 1

    Returns
    -------
    list of str, one per feature column, channel by channel.
    """
    names = ["mean", "sd", *(f"p{q:g}" for q in settings.percentiles)]
    for sigma in settings.spot_sigmas:
        names += [f"spot_density_s{sigma:g}", f"spot_amplitude_s{sigma:g}"]
    names += [f"glcm_{prop}_d{d}" for d in settings.glcm_distances for prop in _GLCM_PROPS]
    return [f"{name}_c{c}" for c in range(n_channels) for name in names]


def image_features(images: np.ndarray, settings: BaselineSettings) -> np.ndarray:
    """Per-image intensity, spot and texture features.

    Parameters
    ----------
    images : (N, H, W, C) ndarray of float32 in [0, 1]
        Normalised exactly as the CNN sees them; H, W >= 8; any number of channels.
    settings : BaselineSettings

    Returns
    -------
    (N, F) ndarray of float64
        Columns as ``feature_names(settings, C)``; deterministic and finite.
    """
    _check_settings(settings)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or min(images.shape[1:3]) < _MIN_SIZE or images.shape[3] < 1:
        raise ValueError(
            f"images must be (N, H, W, C) with H, W >= {_MIN_SIZE}, got shape {images.shape}"
        )
    if not np.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values; check the normalisation")
    blocks = [np.zeros((0, len(feature_names(settings, images.shape[3]))))]
    step = max(1, _CHUNK_PIXELS // (images.shape[1] * images.shape[2]))
    for start in range(0, len(images), step):
        chunk = images[start : start + step]  # (B, H, W, C)
        per_channel = [_channel_features(chunk[..., c], settings) for c in range(chunk.shape[3])]
        blocks.append(np.concatenate(per_channel, axis=1))  # (B, F)
    return np.concatenate(blocks, axis=0)  # (N, F)


def _channel_features(planes: np.ndarray, settings: BaselineSettings) -> np.ndarray:
    """(B, H, W) float32 planes of one channel -> (B, F_c) float64 features."""
    ordered = np.sort(planes.reshape(len(planes), -1), axis=1)  # (B, H*W): all percentiles
    low, high = _quantiles(ordered, settings.stretch).astype(np.float32).T  # (B,) each
    span = np.maximum(high - low, np.float32(1e-6))  # a flat image stays flat, not 0 / 0
    stretched = (planes - low[:, None, None]) / span[:, None, None]  # (B, H, W), not clipped
    parts = [
        planes.mean(axis=(1, 2), dtype=np.float64)[:, None],
        planes.std(axis=(1, 2), dtype=np.float64)[:, None],
        _quantiles(ordered, settings.percentiles),
        _spots(stretched, settings.spot_sigmas, settings.spot_threshold),
        _texture(stretched, settings.glcm_levels, settings.glcm_distances),
    ]
    return np.concatenate(parts, axis=1)


def _quantiles(ordered: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
    """Percentiles of sorted rows (B, n) -> (B, P) float64, as ``np.percentile`` ("linear")."""
    position = np.asarray(percentiles, dtype=np.float64) / 100 * (ordered.shape[1] - 1)  # (P,)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ordered.shape[1] - 1)
    fraction = position - below
    return ordered[:, below] * (1 - fraction) + ordered[:, above] * fraction


def _spots(stretched: np.ndarray, sigmas: tuple[float, ...], threshold: float) -> np.ndarray:
    """Spot density (per 1000 pixels) and mean amplitude per DoG scale -> (B, 2 * len(sigmas))."""
    blurred = _gaussian_stack(stretched, [r * s for s in sigmas for r in (1.0, _DOG_RATIO)])
    columns = []
    for sigma in sigmas:
        dog = blurred[sigma] - blurred[_DOG_RATIO * sigma]  # (B, H, W): blobs of radius ~1.4 sigma
        sample = np.sort(dog[:, ::2, ::2].reshape(len(dog), -1), axis=1)  # a quarter suffices
        low, center, high = _quantiles(sample, (25, 50, 75)).T  # (B,) each
        level = center + threshold * np.maximum((high - low) / _IQR_TO_SD, 1e-6)  # (B,)
        amplitudes = _peak_values(dog, level)  # (B,) list of (n_b,) arrays
        count = np.array([len(a) for a in amplitudes])
        mean = np.array([a.mean() if len(a) else 0.0 for a in amplitudes])
        columns += [1000.0 * count / dog[0].size, mean]
    return np.column_stack(columns)


def _gaussian_stack(planes: np.ndarray, sigmas: list[float]) -> dict[float, np.ndarray]:
    """Each (B, H, W) plane blurred at each sigma, by cascading small blurs (faster)."""
    from scipy import ndimage

    blurred, previous, done = {}, planes, 0.0
    for sigma in sorted(set(sigmas)):
        step = np.sqrt(sigma**2 - done**2)  # blurs add in quadrature
        previous = ndimage.gaussian_filter(previous, (0, step, step), mode="reflect", truncate=3.0)
        blurred[sigma], done = previous, sigma
    return blurred


def _peak_values(response: np.ndarray, level: np.ndarray) -> list[np.ndarray]:
    """Local maxima above ``level`` (B,) of each (H, W) plane of ``response`` (B, H, W).

    Returns B arrays of the maxima's values. A pixel is a maximum when no 8-neighbour is
    larger; only pixels above the level are tested, which is fast when spots are sparse.
    """
    b, y, x = np.nonzero(response > level[:, None, None])  # (M,) each
    padded = np.pad(response, ((0, 0), (1, 1), (1, 1)), mode="edge")  # (B, H + 2, W + 2)
    values = response[b, y, x]
    is_peak = np.ones(len(values), dtype=bool)
    for dy, dx in [(dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2) if (dy, dx) != (1, 1)]:
        is_peak &= values >= padded[b, y + dy, x + dx]
    return np.split(values[is_peak], np.searchsorted(b[is_peak], np.arange(1, len(response))))


def _texture(stretched: np.ndarray, levels: int, distances: tuple[int, ...]) -> np.ndarray:
    """GLCM properties per distance, averaged over directions -> (B, 4 * len(distances))."""
    from skimage.feature import graycomatrix, graycoprops

    quantised = np.clip(stretched * levels, 0, levels - 1).astype(np.uint8)  # (B, H, W)
    rows = []
    for plane in quantised:
        matrix = graycomatrix(
            plane, distances, _GLCM_ANGLES, levels=levels, symmetric=True, normed=True
        )  # (L, L, D, A)
        props = [graycoprops(matrix, prop).mean(axis=1) for prop in _GLCM_PROPS]  # (D,) each
        rows.append(np.stack(props, axis=1).ravel())  # distance-major, as feature_names
    return np.nan_to_num(np.array(rows), nan=0.0)  # correlation of a flat image is NaN


def _check_settings(settings: BaselineSettings) -> None:
    """Raise ValueError for settings the features cannot be computed with."""
    problems = [
        (not 0 <= settings.stretch[0] < settings.stretch[1] <= 100, "stretch percentiles"),
        (any(not 0 <= q <= 100 for q in settings.percentiles), "percentiles"),
        (any(s <= 0 for s in settings.spot_sigmas), "spot_sigmas"),
        (not 2 <= settings.glcm_levels <= 256, "glcm_levels (2..256)"),
        (any(d < 1 for d in settings.glcm_distances), "glcm_distances"),
        (not settings.l2 > 0, "l2"),
    ]
    bad = [name for wrong, name in problems if wrong]
    if bad:
        raise ValueError(f"BaselineSettings: {bad[0]} out of range in {settings}")


def fit_baseline(
    features: np.ndarray, labels: np.ndarray, n_classes: int, settings: BaselineSettings
) -> FittedBaseline:
    """Fit the logistic regression on standardised features of the training images.

    Parameters
    ----------
    features : (N, F) ndarray of float, from `image_features`
    labels : (N,) ndarray of int in 0..n_classes-1, at least two classes present
    n_classes : int >= 2, classes of the experiment (some may be absent from the labels)
    settings : BaselineSettings, whose ``l2`` sets the penalty

    Returns
    -------
    FittedBaseline
    """
    _check_settings(settings)
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(
            f"need (N, F) features and (N,) labels, got shapes {features.shape}, {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, range(n_classes)).all():
        raise ValueError(f"labels must be integers in 0..{n_classes - 1}, got {np.unique(labels)}")
    if len(np.unique(labels)) < 2 or n_classes < 2:
        raise ValueError(
            f"the baseline needs training images of 2 or more classes, got {np.unique(labels)}"
        )
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    # probes' penalty is per image: l2/2 |w|^2 on the summed loss = l2/(2N) on the mean
    probe = fit_logistic(features, labels, n_classes, l2=settings.l2 / (2 * len(labels)))
    return FittedBaseline(settings, probe.mean, probe.scale, probe.weights, probe.bias)


def predict_proba(model: FittedBaseline, features: np.ndarray) -> np.ndarray:
    """Class probabilities of a fitted baseline.

    Parameters
    ----------
    model : FittedBaseline
    features : (N, F) ndarray of float, from `image_features` with ``model.settings``

    Returns
    -------
    (N, K) ndarray of float64, rows summing to 1
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(model.mean):
        raise ValueError(
            f"need (N, {len(model.mean)}) features, as fitted, got shape {features.shape}"
        )
    z = (features - model.mean) / model.scale  # (N, F)
    return softmax(z @ model.weights + model.bias)  # (N, K)
