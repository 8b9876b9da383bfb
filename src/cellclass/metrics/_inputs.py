"""Input checks shared by `cellclass.metrics` and `cellclass.metrics._calibration` (private).

Bad input raises ValueError with a one-line message saying what was wrong; on success most
return the checked values as plain ndarrays or numbers.
"""

import numpy as np
from numpy.typing import ArrayLike


def checked_labels(name: str, values: ArrayLike, n_classes: int | None = None) -> np.ndarray:
    """Return `values` as a non-empty (N,) int64 array of labels in 0..n_classes-1."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of labels, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{name} has label {array.min()}; labels must be >= 0")
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer):
            raise ValueError(f"n_classes must be an int, got {n_classes!r}")
        if array.max() >= n_classes:
            raise ValueError(
                f"{name} has label {array.max()} but n_classes is {n_classes}; "
                f"labels must be 0..{n_classes - 1}"
            )
    return array.astype(np.int64)


def _same_length(names: tuple[str, str], a: np.ndarray, b: np.ndarray, noun: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names[0]} has {len(a)} {noun} but {names[1]} has {len(b)}")


def label_pair(
    a: ArrayLike, b: ArrayLike, n_classes: int | None = None, names=("y_true", "y_pred")
) -> tuple[np.ndarray, np.ndarray]:
    """Check two equal-length label arrays; returns both as (N,) int64."""
    a, b = checked_labels(names[0], a, n_classes), checked_labels(names[1], b, n_classes)
    _same_length(names, a, b, "labels")
    return a, b


def flag_pair(correct_a: ArrayLike, correct_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check two equal-length (N,) arrays of bools (or 0/1); returns both as bool."""
    flags = []
    for name, values in (("correct_a", correct_a), ("correct_b", correct_b)):
        array = np.asarray(values)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array of bools, got {array.shape}")
        if array.dtype != bool and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold bools (or 0/1), got values like {array[:3]}")
        flags.append(array.astype(bool))
    _same_length(("correct_a", "correct_b"), *flags, "images")
    return flags[0], flags[1]


def checked_values(name: str, values: ArrayLike) -> np.ndarray:
    """Return `values` as a non-empty, finite (N,) float64 array."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def checked_scores(
    name: str, scores: ArrayLike, y_true: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Check finite (N, K) float scores against (N,) labels below K."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N images, K classes), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    y_true = checked_labels("y_true", y_true, scores.shape[1])
    if scores.shape[0] != y_true.size:
        raise ValueError(f"{name} has {scores.shape[0]} rows but y_true has {y_true.size} labels")
    return scores, y_true


def checked_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    return float(level)


def positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
