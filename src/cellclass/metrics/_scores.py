"""Accuracy, confusion, per-class scores, confidence intervals and paired tests.

Plain numpy in, plain numbers out. Conventions used by every function:

- labels: (N,) int ndarray with values 0..K-1;
- probs / logits: (N, K) float ndarray, one row per image;
- correct_a / correct_b: (N,) bool ndarray, whether a model (or a human) got each image
  right, paired image by image.

Bad input raises ValueError with a one-line message saying what was wrong. scipy and
scikit-learn are imported by the functions that use them: together they take 0.8 s to import,
which `cellclass predict` (softmax only) would otherwise wait for at every start.
Calibration lives in `cellclass.metrics._calibration` and the shared input checks in
`cellclass.metrics._inputs`.
"""

import numpy as np
from numpy.typing import ArrayLike

from cellclass.metrics._inputs import (
    checked_labels,
    checked_level,
    checked_values,
    flag_pair,
    label_pair,
    positive_int,
)

__all__ = [
    "accuracy",
    "agreement",
    "bootstrap_difference",
    "cohen_kappa",
    "collapsed",
    "confusion_matrix",
    "empirical_p_value",
    "mcnemar_exact",
    "mean_interval",
    "per_class_scores",
    "summarize",
    "welch_t_test",
    "wilson_interval",
]


# ---------------------------------------------------------------- classification scores
COLLAPSE_EPOCHS = 2  # a run is collapsed when its last this-many epochs stayed at chance
COLLAPSE_TOLERANCE = 0.02  # ... i.e. train accuracy within this of the majority share


def collapsed(
    train_accuracies: ArrayLike, labels: ArrayLike, *, last: int = COLLAPSE_EPOCHS
) -> bool:
    """Whether a run never left chance: its training accuracy stayed at the majority share.

    A network that outputs one constant class scores exactly the share of that class on its
    training images, whatever the images show. The study's network is prone to this (dead
    ReLUs after the first steps): such runs sit at chance on every test set and drag a mean
    down without saying why.

    Parameters
    ----------
    train_accuracies : (E,) float
        Training accuracy per epoch, in order.
    labels : (N,) int
        The labels the run was trained on (its majority share is the constant output's score).
    last : int
        Number of final epochs that must all sit at chance.

    Returns
    -------
    bool
        True when each of the last ``last`` epochs is at most the majority share plus
        ``max(COLLAPSE_TOLERANCE, 1 / N)``; False with no epochs (e.g. classical baselines).
    """
    values = np.asarray(train_accuracies, dtype=np.float64)
    labels = np.asarray(labels)
    if values.size == 0 or labels.size == 0:
        return False
    majority = np.bincount(labels).max() / labels.size
    tolerance = max(COLLAPSE_TOLERANCE, 1.0 / labels.size)
    return bool(np.all(values[-last:] <= majority + tolerance))


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of images, in [0, 1], whose predicted label is the true label.

    Parameters
    ----------
    y_true, y_pred : (N,) ndarray of int
    """
    y_true, y_pred = label_pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def _confusion(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    from sklearn import metrics as sklearn_metrics

    labels = np.arange(n_classes)
    return sklearn_metrics.confusion_matrix(a, b, labels=labels).astype(np.int64)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """Count images by (true class, predicted class).

    Parameters
    ----------
    y_true, y_pred : (N,) ndarray of int, values 0..n_classes-1
    n_classes : int
        K; classes absent from both arrays still get a row and a column.

    Returns
    -------
    (K, K) ndarray of int64
        ``matrix[i, j]`` = number of images of true class i predicted as class j.
    """
    y_true, y_pred = label_pair(y_true, y_pred, n_classes)
    return _confusion(y_true, y_pred, n_classes)


def per_class_scores(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class.

    A score whose denominator is zero (a class never predicted, or absent from `y_true`)
    is reported as 0, like scikit-learn's ``zero_division=0``.

    Parameters
    ----------
    y_true, y_pred : (N,) ndarray of int, values 0..n_classes-1
    n_classes : int

    Returns
    -------
    dict
        ``"precision"``, ``"recall"``, ``"f1"``: (K,) float64; ``"support"``: (K,) int64,
        the number of images of each true class.
    """
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    hits = np.diag(matrix).astype(np.float64)  # (K,)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)  # (K,), (K,)
    zeros = np.zeros(n_classes)
    precision = np.divide(hits, predicted, out=zeros.copy(), where=predicted > 0)
    recall = np.divide(hits, support, out=zeros.copy(), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=zeros.copy(), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


# ---------------------------------------------------------------- intervals and summaries
def wilson_interval(k: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` (no continuity correction) of the proportion k / n.

    Parameters
    ----------
    k, n : int
        Successes and trials, 0 <= k <= n, n >= 1.
    level : float, optional
    """
    from scipy import stats

    if int(k) != k or int(n) != n or n < 1 or not 0 <= k <= n:
        raise ValueError(f"need integers 0 <= k <= n and n >= 1, got k={k}, n={n}")
    interval = stats.binomtest(int(k), int(n)).proportion_ci(
        confidence_level=checked_level(level), method="wilson"
    )
    return float(interval.low), float(interval.high)


def mean_interval(values: ArrayLike, *, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean.

    Parameters
    ----------
    values : (N,) ndarray of float
        E.g. test accuracies of N training runs.
    level : float, optional

    Returns
    -------
    (mean, low, high) : tuple of float
        With a single value the interval is undefined: ``(v, nan, nan)``.
    """
    from scipy import stats

    values, level = checked_values("values", values), checked_level(level)
    mean = float(values.mean())
    if values.size == 1:
        return mean, float("nan"), float("nan")
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * standard_error
    return mean, float(mean - half), float(mean + half)


def summarize(values: ArrayLike) -> dict[str, float]:
    """Summary of repeated measurements, e.g. test accuracies over runs.

    Parameters
    ----------
    values : (N,) ndarray of float

    Returns
    -------
    dict
        ``"n"`` (int), ``"mean"``, ``"sd"`` (ddof=1), ``"ci_low"``, ``"ci_high"`` (95 % t
        interval), ``"min"``, ``"max"``; sd and the interval are NaN when n = 1.
    """
    values = checked_values("values", values)
    mean, low, high = mean_interval(values)
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    summary = {"n": int(values.size), "mean": mean, "sd": sd, "ci_low": low, "ci_high": high}
    return summary | {"min": float(values.min()), "max": float(values.max())}


# ---------------------------------------------------------------- paired comparisons
def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> dict:
    """Exact McNemar test: do A and B (models, or a model and a human) differ on the same images?

    Parameters
    ----------
    correct_a, correct_b : (N,) ndarray of bool

    Returns
    -------
    dict
        ``"b01"`` (A wrong, B right) and ``"b10"`` (A right, B wrong): int counts;
        ``"statistic"``: min(b01, b10); ``"p_value"``: the two-sided exact binomial
        ``min(1, 2 P(Binom(b01 + b10, 1/2) <= statistic))``, 1.0 with no discordant pairs.
    """
    from scipy import stats

    a, b = flag_pair(correct_a, correct_b)
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    statistic, p_value = min(b01, b10), 1.0
    if b01 + b10 > 0:
        p_value = min(1.0, 2.0 * float(stats.binom.cdf(statistic, b01 + b10, 0.5)))
    return {"b01": b01, "b10": b10, "statistic": statistic, "p_value": p_value}


def cohen_kappa(labels_a: ArrayLike, labels_b: ArrayLike, n_classes: int | None = None) -> float:
    """Cohen's kappa in [-1, 1]: agreement of two raters on the same images beyond chance.

    1 is perfect agreement. NaN when both raters put every image in the same single class
    (chance agreement is then 1 and kappa is undefined).

    Parameters
    ----------
    labels_a, labels_b : (N,) ndarray of int
    n_classes : int, optional
        Defaults to the largest label + 1.
    """
    from sklearn import metrics as sklearn_metrics

    names = ("labels_a", "labels_b")
    a, b = label_pair(labels_a, labels_b, names=names)
    n_classes = int(max(a.max(), b.max())) + 1 if n_classes is None else n_classes
    a, b = label_pair(a, b, n_classes, names=names)
    table = _confusion(a, b, n_classes) / a.size  # (K, K) joint proportions
    if table.sum(axis=1) @ table.sum(axis=0) == 1.0:  # one class only: chance agreement is 1
        return float("nan")
    return float(sklearn_metrics.cohen_kappa_score(a, b, labels=np.arange(n_classes)))


def bootstrap_difference(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    *,
    rng: np.random.Generator,
    n_boot: int = 2000,
    level: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap over images: percentile interval of accuracy(A) - accuracy(B).

    Resampling N images with replacement only changes how many land in each cell (A right
    B wrong, A wrong B right, concordant), so the cell counts are drawn from the equivalent
    multinomial: the same bootstrap distribution at O(n_boot) cost.

    Parameters
    ----------
    correct_a, correct_b : (N,) ndarray of bool
    rng : numpy.random.Generator
        The same seed gives the same interval.
    n_boot : int, optional
    level : float, optional

    Returns
    -------
    dict
        ``"difference"`` (observed), ``"ci_low"``, ``"ci_high"``.
    """
    a, b = flag_pair(correct_a, correct_b)
    n_boot, level = positive_int("n_boot", n_boot), checked_level(level)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}"
        )
    n, only_a, only_b = a.size, int(np.sum(a & ~b)), int(np.sum(~a & b))
    cells = np.array([only_a, only_b, n - only_a - only_b]) / n
    draws = rng.multinomial(n, cells, size=n_boot)  # (n_boot, 3)
    differences = (draws[:, 0] - draws[:, 1]) / n  # (n_boot,)
    low, high = np.quantile(differences, [0.5 - level / 2, 0.5 + level / 2])
    return {"difference": (only_a - only_b) / n, "ci_low": float(low), "ci_high": float(high)}


def empirical_p_value(observed: float, null_values: ArrayLike) -> float:
    """One-sided p-value ``(1 + #(null >= observed)) / (1 + n_null)``, in (0, 1].

    Parameters
    ----------
    observed : float
        The observed statistic; larger means more extreme.
    null_values : (M,) ndarray of float
        The statistic under the null hypothesis, e.g. from label-shuffled runs.
    """
    null_values = checked_values("null_values", null_values)
    if not np.isfinite(observed):
        raise ValueError(f"observed must be a finite number, got {observed}")
    return float((1 + np.sum(null_values >= observed)) / (1 + null_values.size))


def welch_t_test(a: ArrayLike, b: ArrayLike, *, level: float = 0.95) -> dict[str, float]:
    """Welch's unequal-variance t test of mean(a) - mean(b), e.g. accuracies over runs.

    Parameters
    ----------
    a, b : (N_a,), (N_b,) ndarray of float
        Per-run values of two models, at least 2 each.
    level : float, optional
        Confidence level of the interval.

    Returns
    -------
    dict
        ``"difference"``, ``"t"``, ``"df"`` (Welch-Satterthwaite), ``"p_value"``
        (two-sided), ``"ci_low"``, ``"ci_high"``. When both groups have zero variance the
        test is undefined and all but the difference are NaN.
    """
    from scipy import stats

    a, b, level = checked_values("a", a), checked_values("b", b), checked_level(level)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_t_test needs >= 2 values per group, got {a.size} and {b.size}")
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size  # squared standard errors
    difference = float(a.mean() - b.mean())
    t = df = p_value = half = float("nan")
    if var_a + var_b > 0:  # both groups constant: the test is undefined, leave NaN
        standard_error = np.sqrt(var_a + var_b)
        df = (var_a + var_b) ** 2 / (var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1))
        t = difference / standard_error
        half = float(stats.t.ppf(0.5 + level / 2, df) * standard_error)
        p_value = float(2 * stats.t.sf(abs(t), df))
    ci = {"ci_low": difference - half, "ci_high": difference + half}
    return {"difference": difference, "t": float(t), "df": float(df), "p_value": p_value} | ci


# ---------------------------------------------------------------- run-to-run stability
def agreement(predictions: ArrayLike) -> np.ndarray:
    """Per image, the fraction of runs that predicted its majority (most common) label.

    Parameters
    ----------
    predictions : (R, N) ndarray of int
        Predicted labels of R runs on the same N images.

    Returns
    -------
    (N,) ndarray of float64 in [1/R, 1]
        1 means every run agreed; ties give the same fraction whichever label wins.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be 2-D (runs, images), got shape {predictions.shape}")
    n_runs, n_images = predictions.shape
    predictions = checked_labels("predictions", predictions.ravel()).reshape(n_runs, n_images)
    n_labels = int(predictions.max()) + 1
    codes = predictions + n_labels * np.arange(n_images)  # (R, N) unique per (image, label)
    counts = np.bincount(codes.ravel(), minlength=n_labels * n_images)
    return counts.reshape(n_images, n_labels).max(axis=1) / n_runs
