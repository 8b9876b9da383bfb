"""Calibration of predicted probabilities: softmax with a temperature, reliability bins,
expected calibration error and temperature fitting. `cellclass.metrics` re-exports them.
scipy is imported where it is used (see `cellclass.metrics._scores`: start-up time).
"""

import numpy as np
from numpy.typing import ArrayLike

from cellclass.metrics._inputs import checked_scores, positive_int

_TEMPERATURE_BOUNDS = (0.01, 100.0)  # search range of fit_temperature; wide enough for CNNs


def softmax(logits: ArrayLike, *, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` over the last axis.

    Parameters
    ----------
    logits : (..., K) ndarray of float
    temperature : float, optional
        Positive; > 1 softens the probabilities, < 1 sharpens them.

    Returns
    -------
    (..., K) ndarray of float64, rows summing to 1
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    # numpy, not scipy.special.softmax: the same formula, without 0.15 s of importing SciPy
    # in `cellclass predict`
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))  # the row max: no overflow
    return exp / exp.sum(axis=-1, keepdims=True)


# own code: sklearn's calibration_curve is binary-only and drops empty bins; the ECE needs all
def reliability_bins(probs: ArrayLike, y_true: ArrayLike, *, n_bins: int = 15) -> dict:
    """Group images into equal-width bins over [0, 1] of confidence (max probability).

    Bin i holds confidences in ``(edges[i], edges[i+1]]``; the first also holds 0. The
    predicted class is the argmax (ties go to the lowest class index).

    Parameters
    ----------
    probs : (N, K) ndarray of float, non-negative rows summing to 1
    y_true : (N,) ndarray of int
    n_bins : int, optional

    Returns
    -------
    dict
        ``"confidence"``, ``"accuracy"``: (n_bins,) float64 means per bin, NaN where the bin
        is empty; ``"count"``: (n_bins,) int64; ``"edges"``: (n_bins + 1,) float64.
    """
    probs, y_true = checked_scores("probs", probs, y_true)
    n_bins = positive_int("n_bins", n_bins)
    row_sums = probs.sum(axis=1)
    if (probs < 0).any() or not np.allclose(row_sums, 1.0, atol=1e-3):
        bad = int(np.argmax(np.abs(row_sums - 1.0)))
        raise ValueError(
            f"probs must be non-negative rows summing to 1 (row {bad} sums to "
            f"{row_sums[bad]:.4g}); pass softmax(logits), not logits"
        )
    confidence = probs.max(axis=1)  # (N,)
    correct = probs.argmax(axis=1) == y_true  # (N,)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # (N,) in 0..n_bins-1
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    bins = {"count": count, "edges": edges}
    with np.errstate(invalid="ignore"):  # empty bins: 0 / 0 = NaN on purpose
        bins["confidence"] = np.bincount(index, weights=confidence, minlength=n_bins) / count
        bins["accuracy"] = np.bincount(index, weights=correct, minlength=n_bins) / count
    return bins


def expected_calibration_error(probs: ArrayLike, y_true: ArrayLike, *, n_bins: int = 15) -> float:
    """Expected calibration error in [0, 1]: sum over confidence bins of share * |acc - conf|.

    0 when the mean confidence matches the accuracy in every bin.

    Parameters
    ----------
    probs : (N, K) ndarray of float, non-negative rows summing to 1
    y_true : (N,) ndarray of int
    n_bins : int, optional
        Number of equal-width confidence bins, as in `reliability_bins`.
    """
    bins = reliability_bins(probs, y_true, n_bins=n_bins)
    used = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(bins["count"][used] * gaps) / bins["count"].sum())


def fit_temperature(logits: ArrayLike, y_true: ArrayLike) -> float:
    """Temperature T > 0 (a float) minimising the mean NLL of softmax(logits / T).

    Fit on held-out images, then use ``softmax(logits, temperature=T)``. The bounded search
    runs over log T for T in [0.01, 100]. On perfectly separated data the NLL keeps falling
    as T -> 0, so the T returned there is merely "small" and not meaningful.

    Parameters
    ----------
    logits : (N, K) ndarray of float
    y_true : (N,) ndarray of int
    """
    from scipy import optimize, special

    logits, y_true = checked_scores("logits", logits, y_true)
    true_logit = logits[np.arange(y_true.size), y_true]  # (N,)

    def mean_nll(log_t: float) -> float:
        scale = np.exp(-log_t)
        return float(np.mean(special.logsumexp(logits * scale, axis=1) - true_logit * scale))

    bounds = np.log(_TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(
        mean_nll, bounds=bounds, method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))
