"""Models (layer 1): the study's CNN, its deeper variant and the compact ones, their registry and
summary (`cnn`); the classical feature baseline (`baselines`) and the multinomial logistic
regression it and the explain probes fit (`logistic`). Each name is imported from its module
on first use (`cellclass._lazy`), so that using the CNN does not load scikit-learn.
"""

from cellclass._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "baselines": (
            "BaselineSettings",
            "FittedBaseline",
            "feature_names",
            "fit_baseline",
            "image_features",
            "predict_proba",
        ),
        "cnn": (
            "MODELS",
            "Badger",
            "Compact",
            "ModelSpec",
            "build_model",
            "count_parameters",
            "summary",
        ),
        "logistic": ("LogisticModel", "fit_logistic", "predict_logistic"),
    },
)
