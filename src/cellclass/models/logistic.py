"""Multinomial logistic regression on standardised features: the feature baseline's classifier
and the explain step's brightness probe.

Fitted by scikit-learn's `LogisticRegression` (L-BFGS); kept here as plain arrays
(`LogisticModel`), so a checkpoint stores tensors, never a pickled estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellclass.metrics import softmax

__all__ = ["LogisticModel", "fit_logistic", "predict_logistic"]


@dataclass(frozen=True)
class LogisticModel:
    mean: np.ndarray  # (F,) feature means of the training images (standardisation)
    scale: np.ndarray  # (F,) feature sds of the training images, 1 where a feature is constant
    weights: np.ndarray  # (F, K) coefficients on standardised features
    bias: np.ndarray  # (K,) intercepts; a class absent from the training labels never wins


def fit_logistic(features, labels, n_classes: int, *, l2: float = 1e-2) -> LogisticModel:
    """Logistic regression with an L2 penalty on the weights (not the intercepts).

    Parameters
    ----------
    features : (N, F) ndarray of float
    labels : (N,) ndarray of int in 0..n_classes-1, two or more classes present
    n_classes : int >= 2
    l2 : penalty ``l2 * |w|^2`` added to the mean cross-entropy (scikit-learn's
        ``C = 1 / (2 * l2 * N)``)
    """
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need (N, F) features and (N,) labels, got {features.shape}, {labels.shape}"
        )
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"a logistic regression needs 2 or more classes, got {present}")
    mean, scale = features.mean(0), features.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (features - mean) / scale  # (N, F)
    fitted = LogisticRegression(C=1.0 / (2 * l2 * len(labels)), max_iter=1000).fit(z, labels)
    coef, intercept = fitted.coef_, fitted.intercept_  # (K', F), (K',); K' = 1 for two classes
    if len(present) == 2:  # one logit difference -> two symmetric logits, same probabilities
        coef, intercept = (
            np.vstack([-coef / 2, coef / 2]),
            np.concatenate([-intercept, intercept]) / 2,
        )
    weights = np.zeros((z.shape[1], n_classes))
    bias = np.full(n_classes, -1e9)  # classes never seen in training
    weights[:, present], bias[present] = coef.T, intercept
    return LogisticModel(mean, scale, weights, bias)


def predict_logistic(model: LogisticModel, features) -> np.ndarray:
    """(N, F) features -> (N, K) class probabilities of a fitted `LogisticModel`."""
    z = (np.asarray(features, dtype=np.float64) - model.mean) / model.scale  # (N, F)
    return softmax(z @ model.weights + model.bias)
