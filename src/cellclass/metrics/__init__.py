"""Numbers about predictions, numpy only: accuracy, confusion, intervals, paired tests,
calibration. Layer 1: imports nothing else of cellclass.

Implementation: `_scores` (classification scores, intervals, paired tests), `_calibration`
(reliability, ECE, temperature), `_inputs` (argument checks).
"""

from cellclass.metrics._calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)
from cellclass.metrics._scores import (
    accuracy,
    agreement,
    bootstrap_difference,
    cohen_kappa,
    collapsed,
    confusion_matrix,
    empirical_p_value,
    mcnemar_exact,
    mean_interval,
    per_class_scores,
    summarize,
    welch_t_test,
    wilson_interval,
)

__all__ = [
    "accuracy",
    "agreement",
    "bootstrap_difference",
    "cohen_kappa",
    "collapsed",
    "confusion_matrix",
    "empirical_p_value",
    "expected_calibration_error",
    "fit_temperature",
    "mcnemar_exact",
    "mean_interval",
    "per_class_scores",
    "reliability_bins",
    "softmax",
    "summarize",
    "welch_t_test",
    "wilson_interval",
]
