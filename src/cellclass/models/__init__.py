"""Models (layer 1): the study's CNN, its deeper variant and the compact ones, their registry and
summary (`cnn`); the classical feature baseline (`baselines`) and the multinomial logistic
regression it and the explain probes fit (`logistic`).
"""

from cellclass.models.baselines import (
    BaselineSettings,
    FittedBaseline,
    feature_names,
    fit_baseline,
    image_features,
    predict_proba,
)
from cellclass.models.cnn import (
    MODELS,
    Badger,
    Compact,
    ModelSpec,
    build_model,
    count_parameters,
    summary,
)
from cellclass.models.logistic import LogisticModel, fit_logistic, predict_logistic

__all__ = [
    "Badger",
    "BaselineSettings",
    "Compact",
    "FittedBaseline",
    "LogisticModel",
    "MODELS",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "feature_names",
    "fit_baseline",
    "fit_logistic",
    "image_features",
    "predict_logistic",
    "predict_proba",
    "summary",
]
