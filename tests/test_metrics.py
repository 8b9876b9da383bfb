"""Tests for cellclass.metrics against values computed by hand or taken from textbooks."""

import re

import numpy as np
import pytest
from scipy import stats

from cellclass import metrics


def _paired(b01: int, b10: int, both_right: int = 5, both_wrong: int = 3):
    """Paired correctness flags with the given discordant counts (A wrong/B right = b01)."""
    a = [False] * b01 + [True] * b10 + [True] * both_right + [False] * both_wrong
    b = [True] * b01 + [False] * b10 + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(b)


def _rater_table(yes_yes: int, yes_no: int, no_yes: int, no_no: int):
    """Two raters' labels (1 = yes, 0 = no) reproducing a 2x2 agreement table."""
    a = [1] * (yes_yes + yes_no) + [0] * (no_yes + no_no)
    b = [1] * yes_yes + [0] * yes_no + [1] * no_yes + [0] * no_no
    return np.array(a), np.array(b)


# ---------------------------------------------------------------- classification scores
def test_accuracy_hand_case():
    assert metrics.accuracy([0, 1, 1, 2], [0, 1, 0, 0]) == 0.5


def test_confusion_and_per_class_with_a_never_predicted_class():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 0])  # class 2 is never predicted
    expected = np.array([[1, 1, 0], [0, 2, 0], [2, 0, 0]])
    matrix = metrics.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64
    scores = metrics.per_class_scores(y_true, y_pred, 3)
    np.testing.assert_allclose(scores["precision"], [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(scores["recall"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(scores["f1"], [0.4, 0.8, 0.0])
    np.testing.assert_array_equal(scores["support"], [2, 2, 2])


def test_per_class_class_absent_from_truth_and_predictions_scores_zero():
    scores = metrics.per_class_scores([0, 1], [0, 1], 3)
    np.testing.assert_array_equal(scores["precision"], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(scores["support"], [1, 1, 0])


# ---------------------------------------------------------------- calibration
def test_softmax_is_stable_and_applies_temperature():
    probs = metrics.softmax(np.array([[1000.0, 1000.0 + np.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.25, 0.75]])
    np.testing.assert_allclose(
        metrics.softmax([0.0, 2 * np.log(3.0)], temperature=2.0), [0.25, 0.75]
    )


def test_ece_is_zero_when_confidence_matches_accuracy():
    # 10 images at confidence 0.8 with 8 right, 5 images at confidence 0.6 with 3 right.
    probs = np.array([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 5)
    y_true = np.array([0] * 8 + [1] * 2 + [1] * 3 + [0] * 2)
    assert metrics.expected_calibration_error(probs, y_true) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_overconfident_toy_case_by_hand():
    # Half at confidence 0.95 with accuracy 0.6, half at 0.75 with accuracy 0.4:
    # ECE = 0.5 * |0.6 - 0.95| + 0.5 * |0.4 - 0.75| = 0.35.
    probs = np.array([[0.95, 0.05]] * 5 + [[0.75, 0.25]] * 5)
    y_true = np.array([0, 0, 0, 1, 1] + [0, 0, 1, 1, 1])
    assert metrics.expected_calibration_error(probs, y_true, n_bins=10) == pytest.approx(0.35)


def test_reliability_bins_hand_case():
    probs = np.array([[0.95, 0.05]] * 5 + [[0.75, 0.25]] * 5)
    y_true = np.array([0, 0, 0, 1, 1] + [0, 0, 1, 1, 1])
    bins = metrics.reliability_bins(probs, y_true, n_bins=4)  # edges 0, .25, .5, .75, 1
    np.testing.assert_allclose(bins["edges"], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(bins["count"], [0, 0, 5, 5])  # 0.75 is in (0.5, 0.75]
    np.testing.assert_allclose(bins["confidence"], [np.nan, np.nan, 0.75, 0.95])
    np.testing.assert_allclose(bins["accuracy"], [np.nan, np.nan, 0.4, 0.6])


def _calibrated_logits(rng: np.random.Generator, n_images: int, n_classes: int):
    """Logits and labels drawn from softmax(logits), so softmax(logits) is calibrated."""
    logits = 2.0 * rng.normal(size=(n_images, n_classes))
    cumulative = np.cumsum(metrics.softmax(logits), axis=1)  # (N, K)
    labels = (cumulative > rng.random((n_images, 1))).argmax(axis=1)
    return logits, labels


def test_temperature_scaling_recovers_three_and_lowers_ece():
    logits, labels = _calibrated_logits(np.random.default_rng(0), 20_000, 3)
    overconfident = 3.0 * logits
    temperature = metrics.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    before = metrics.expected_calibration_error(metrics.softmax(overconfident), labels)
    scaled = metrics.softmax(overconfident, temperature=temperature)
    after = metrics.expected_calibration_error(scaled, labels)
    assert after < 0.02 < before


# ---------------------------------------------------------------- intervals and summaries
@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # the commonly quoted Wilson 95 % interval for 8/10
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998) Stat Med 17:857, examples, method 3
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_reference_values(k, n, low, high):
    result = metrics.wilson_interval(k, n)
    np.testing.assert_allclose(result, (low, high), atol=6e-5)


@pytest.mark.parametrize(
    ("successes", "failures", "low", "high"),
    [  # codegolf.stackexchange.com/q/105389 "Compute the Wilson score interval", z = 1.96
        (0, 1, 0.0, 0.7934567085261071),
        (1, 10, 0.016231752262825982, 0.3773646254862038),
        (90, 10, 0.8256326956323345, 0.9447714583868639),
        (100, 0, 0.9630051925239981, 1.0),
    ],
)
def test_wilson_interval_full_precision(successes, failures, low, high):
    level = 2 * stats.norm.cdf(1.96) - 1  # the level whose z is exactly 1.96
    result = metrics.wilson_interval(successes, successes + failures, level=level)
    np.testing.assert_allclose(result, (low, high), rtol=1e-12, atol=1e-15)


def test_mean_interval_by_hand():
    # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> half-width 2.776445 * sqrt(0.5).
    mean, low, high = metrics.mean_interval([1, 2, 3, 4, 5])
    half = 2.776445 * np.sqrt(0.5)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), abs=1e-6)


def test_one_value_has_no_interval():
    mean, low, high = metrics.mean_interval([0.7])
    assert mean == 0.7 and np.isnan(low) and np.isnan(high)
    summary = metrics.summarize([0.7])
    assert summary["n"] == 1 and np.isnan(summary["sd"]) and summary["min"] == summary["max"]


def test_summarize_hand_case():
    summary = metrics.summarize([1, 2, 3, 4, 5])
    assert summary["n"] == 5
    assert summary["mean"] == 3.0 and summary["min"] == 1.0 and summary["max"] == 5.0
    assert summary["sd"] == pytest.approx(np.sqrt(2.5))
    assert summary["ci_low"] == pytest.approx(3.0 - 2.776445 * np.sqrt(0.5), abs=1e-6)


# ---------------------------------------------------------------- paired comparisons
@pytest.mark.parametrize(
    ("b01", "b10", "p_value"),
    [
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 2**10
        (9, 1, 0.021484375),  # symmetric
        (0, 5, 0.0625),  # 2 / 2**5
        (3, 3, 1.0),  # 2 * 42 / 64 > 1, capped
        (0, 0, 1.0),  # no discordant pairs
    ],
)
def test_mcnemar_exact_hand_tables(b01, b10, p_value):
    result = metrics.mcnemar_exact(*_paired(b01, b10))
    assert (result["b01"], result["b10"]) == (b01, b10)
    assert result["statistic"] == min(b01, b10)
    assert result["p_value"] == pytest.approx(p_value, rel=1e-12)


@pytest.mark.parametrize(
    ("table", "kappa"),
    [
        ((20, 5, 10, 15), 0.4),  # Wikipedia "Cohen's kappa", simple example
        ((45, 15, 25, 15), 0.06 / 0.46),  # Wikipedia, same-agreement examples (0.1304)
        ((25, 35, 5, 35), 0.14 / 0.54),  # (0.2593)
    ],
)
def test_cohen_kappa_textbook_tables(table, kappa):
    a, b = _rater_table(*table)
    assert metrics.cohen_kappa(a, b) == pytest.approx(kappa)
    assert metrics.cohen_kappa(b, a) == pytest.approx(kappa)


def test_mcnemar_accepts_zero_one_integers():
    result = metrics.mcnemar_exact([1, 1, 0, 1], [0, 0, 1, 1])
    assert (result["b01"], result["b10"], result["p_value"]) == (1, 2, 1.0)


def test_cohen_kappa_perfect_and_undefined():
    labels = np.array([0, 1, 2, 2, 1, 0])
    assert metrics.cohen_kappa(labels, labels) == 1.0
    assert metrics.cohen_kappa(labels, labels, n_classes=5) == 1.0
    assert np.isnan(metrics.cohen_kappa([1, 1, 1], [1, 1, 1]))


def test_bootstrap_contains_true_difference_and_is_deterministic():
    rng = np.random.default_rng(1)
    correct_a = rng.random(2000) < 0.9
    correct_b = rng.random(2000) < 0.8  # true difference 0.1
    first = metrics.bootstrap_difference(correct_a, correct_b, rng=np.random.default_rng(7))
    again = metrics.bootstrap_difference(correct_a, correct_b, rng=np.random.default_rng(7))
    assert first == again
    assert first["difference"] == pytest.approx(correct_a.mean() - correct_b.mean())
    assert first["ci_low"] < 0.1 < first["ci_high"]
    assert first["ci_low"] < first["difference"] < first["ci_high"]


def test_bootstrap_matches_resampling_images_directly():
    rng = np.random.default_rng(2)
    correct_a, correct_b = rng.random(300) < 0.7, rng.random(300) < 0.6
    index = rng.integers(0, 300, size=(20_000, 300))  # (n_boot, N) resampled images
    direct = np.quantile(correct_a[index].mean(1) - correct_b[index].mean(1), [0.025, 0.975])
    result = metrics.bootstrap_difference(correct_a, correct_b, rng=rng, n_boot=20_000)
    np.testing.assert_allclose([result["ci_low"], result["ci_high"]], direct, atol=0.01)


@pytest.mark.parametrize(
    ("observed", "p_value"),
    [(3.0, 4 / 6), (5.5, 1 / 6), (0.0, 1.0), (5.0, 2 / 6)],
)
def test_empirical_p_value_formula(observed, p_value):
    assert metrics.empirical_p_value(observed, [1, 2, 3, 4, 5]) == pytest.approx(p_value)


def test_welch_t_test_matches_scipy_and_has_the_right_sign():
    a = np.array([0.91, 0.94, 0.95, 0.93, 0.96, 0.92])
    b = np.array([0.62, 0.66, 0.58, 0.64, 0.61])
    result = metrics.welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert result["difference"] == pytest.approx(a.mean() - b.mean())
    assert result["t"] > 0 and metrics.welch_t_test(b, a)["t"] < 0
    assert result["t"] == pytest.approx(reference.statistic)
    assert result["p_value"] == pytest.approx(reference.pvalue)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((interval.low, interval.high))


def test_welch_t_test_constant_groups_are_undefined():
    result = metrics.welch_t_test([0.9, 0.9], [0.8, 0.8])
    assert result["difference"] == pytest.approx(0.1)
    assert np.isnan(result["t"]) and np.isnan(result["p_value"])


# ---------------------------------------------------------------- run-to-run stability
def test_agreement_hand_case():
    predictions = np.array([[0, 1, 2, 1], [0, 1, 1, 0], [0, 2, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_allclose(metrics.agreement(predictions), [0.75, 0.75, 0.75, 0.5])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: metrics.accuracy(np.zeros(10, int), np.zeros(9, int)),
            "y_true has 10 labels but y_pred has 9",
        ),
        (lambda: metrics.accuracy([], []), "y_true must be a non-empty"),
        (lambda: metrics.accuracy([0.0, 1.0], [0, 1]), "integer class labels"),
        (lambda: metrics.accuracy([0, -1], [0, 1]), "y_true has label -1"),
        (
            lambda: metrics.confusion_matrix([0, 3], [0, 1], 3),
            "y_true has label 3 but n_classes is 3",
        ),
        (lambda: metrics.per_class_scores([0, 1], [0, 2], 2), "y_pred has label 2"),
        (
            lambda: metrics.cohen_kappa([0, 1], [0, 1, 1]),
            "labels_a has 2 labels but labels_b has 3",
        ),
        (lambda: metrics.cohen_kappa([0, 1], [0, 2], n_classes=2), "labels_b has label 2"),
        (lambda: metrics.expected_calibration_error([[2.0, -1.0]], [0]), "summing to 1"),
        (lambda: metrics.expected_calibration_error([[0.5, 0.5]] * 3, [0, 1]), "probs has 3 rows"),
        (lambda: metrics.reliability_bins([[0.5, 0.5]], [2]), "y_true has label 2"),
        (lambda: metrics.reliability_bins([0.5, 0.5], [0]), "must be 2-D"),
        (lambda: metrics.reliability_bins([[0.5, 0.5]], [0], n_bins=0), "n_bins must be"),
        (lambda: metrics.fit_temperature([[np.nan, 0.0]], [0]), "NaN or infinite"),
        (lambda: metrics.softmax([1.0, 2.0], temperature=0.0), "temperature must be"),
        (lambda: metrics.wilson_interval(11, 10), "k=11, n=10"),
        (lambda: metrics.wilson_interval(0, 0), "n >= 1"),
        (lambda: metrics.wilson_interval(1, 2, level=95), "level must be"),
        (lambda: metrics.mean_interval([]), "non-empty"),
        (lambda: metrics.summarize([0.5, np.nan]), "NaN"),
        (
            lambda: metrics.mcnemar_exact([True, False], [True]),
            "correct_a has 2 images but correct_b has 1",
        ),
        (lambda: metrics.mcnemar_exact([0, 2], [0, 1]), "bools"),
        (lambda: metrics.bootstrap_difference([True], [False], rng=0), "numpy.random.Generator"),
        (
            lambda: metrics.bootstrap_difference(
                [True], [False], rng=np.random.default_rng(0), n_boot=0
            ),
            "n_boot must be a positive int",
        ),
        (lambda: metrics.empirical_p_value(1.0, []), "null_values must be a non-empty"),
        (lambda: metrics.welch_t_test([0.9], [0.8, 0.7]), ">= 2 values per group"),
        (lambda: metrics.agreement([0, 1, 1]), "predictions must be 2-D"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_collapsed_marks_a_constant_output_run_and_not_a_learning_one():
    from cellclass.metrics import collapsed

    balanced = np.array([0] * 10 + [1] * 10)
    skewed = np.array([0] * 15 + [1] * 5)  # a constant answer scores 75 % or 25 %
    assert collapsed([0.55, 0.5, 0.5], balanced)
    assert collapsed([0.9, 0.75, 0.75], skewed)  # stuck at the majority share at the end
    assert collapsed([0.25, 0.25], skewed)  # constant minority answer
    assert not collapsed([0.5, 0.5, 0.85], balanced)  # left chance in its last epoch
    assert not collapsed([0.5, 0.9, 0.95], skewed)
    assert not collapsed([], balanced)  # no epochs (classical baselines)
