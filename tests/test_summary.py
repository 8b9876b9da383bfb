"""Tests of cellclass.summary on results tables written here, with known answers: the
per-model summary, its control-run p-value, the runs' ensemble and the model comparisons."""

import math

import pytest
from scipy import stats

from cellclass import results
from cellclass.summary import ensemble_correct, model_comparisons, summary_table

CLASSES = ("Control", "Treated")


def _run(model, dataset, run, accuracy, control=0):
    return {
        "run": run,
        "model": model,
        "dataset": dataset,
        "accuracy": accuracy,
        "control": control,
    }


def _prediction(model, dataset, run, path, true, p_control, control=0):
    probabilities = {"p_Control": p_control, "p_Treated": 1 - p_control}
    row = {"run": run, "model": model, "dataset": dataset, "path": path, "true": true}
    return row | probabilities | {"control": control}


def _write(run_dir, runs, predictions=(), class_counts=None):
    results.write_table(run_dir / results.RUNS_FILE, results.RUNS_COLUMNS, list(runs))
    if predictions:
        columns = results.PREDICTION_COLUMNS + [f"p_{c}" for c in CLASSES]
        results.write_table(run_dir / results.PREDICTIONS_FILE, columns, list(predictions))
    tests = {name: {"class_counts": counts} for name, counts in (class_counts or {}).items()}
    results.write_json(run_dir / results.CONFIG_FILE, {"class_names": CLASSES, "tests": tests})
    return run_dir


# Model "a" on t1: run 0 is sure of x1 (Control), run 1 leans the other way; the mean
# probability is right on both images where run 1 alone, or a vote, is not. Its shuffled-label
# runs answer Treated with certainty: counted in, they would turn x1 wrong.
A_T1 = [
    _prediction("a", "t1", 0, "x1", "Control", 0.9),
    _prediction("a", "t1", 1, "x1", "Control", 0.4),
    _prediction("a", "t1", 0, "x2", "Treated", 0.45),
    _prediction("a", "t1", 1, "x2", "Treated", 0.45),
    _prediction("a", "t1", 0, "x1", "Control", 0.0, control=1),
    _prediction("a", "t1", 1, "x1", "Control", 0.0, control=1),
]
# Model "b" on t1: x1 wrong in both runs, x2 right on average (0.7 vs 1.3): ensemble 1 of 2.
B_T1 = [
    _prediction("b", "t1", 0, "x1", "Control", 0.2),
    _prediction("b", "t1", 1, "x1", "Control", 0.3),
    _prediction("b", "t1", 0, "x2", "Treated", 0.6),
    _prediction("b", "t1", 1, "x2", "Treated", 0.1),
]
# t2: "a" gets its one image wrong in both runs; "b" was scored on one more image than "a".
T2 = [
    _prediction("a", "t2", 0, "y1", "Control", 0.2),
    _prediction("a", "t2", 1, "y1", "Control", 0.3),
    _prediction("b", "t2", 0, "y1", "Control", 0.7),
    _prediction("b", "t2", 1, "y1", "Control", 0.8),
    _prediction("b", "t2", 0, "y2", "Treated", 0.4),
    _prediction("b", "t2", 1, "y2", "Treated", 0.4),
]
RUNS = [
    _run("a", "t1", 0, 0.9),
    _run("a", "t1", 1, 0.8),
    _run("b", "t1", 0, 0.6),
    _run("b", "t1", 1, 0.7),
    _run("a", "t1", 0, 0.5, control=1),
    _run("a", "t1", 1, 0.86, control=1),
    _run("b", "t1", 0, 0.95, control=1),
    _run("b", "t1", 1, 0.96, control=1),
    _run("a", "t2", 0, 0.0),
    _run("a", "t2", 1, 0.0),
    _run("b", "t2", 0, 0.5),
    _run("b", "t2", 1, 1.0),
    _run("c", "t1", 0, 0.75),  # one run only: compared with nobody
]


@pytest.fixture
def run_dir(tmp_path):
    counts = {"t1": {"Control": 1, "Treated": 1}, "t2": {"Control": 3, "Treated": 1}}
    return _write(tmp_path, RUNS, [*A_T1, *B_T1, *T2], counts)


def _row(table, model, dataset):
    (row,) = [r for r in table if (r["model"], r["dataset"]) == (model, dataset)]
    return row


def test_summary_rows_real_and_shuffled_runs_apart_with_their_own_numbers(run_dir):
    table = summary_table(run_dir)
    assert sorted((r["model"], r["dataset"]) for r in table) == [
        ("a", "t1"),
        ("a", "t2"),
        ("a (shuffled labels)", "t1"),
        ("b", "t1"),
        ("b", "t2"),
        ("b (shuffled labels)", "t1"),
        ("c", "t1"),
    ]
    a = _row(table, "a", "t1")
    assert (a["n"], a["mean"], a["min"], a["max"]) == (2, pytest.approx(0.85), 0.8, 0.9)
    shuffled = _row(table, "a (shuffled labels)", "t1")
    assert (shuffled["n"], shuffled["mean"]) == (2, pytest.approx(0.68))
    assert "p_vs_control" not in shuffled and "ensemble" not in shuffled
    assert _row(table, "b (shuffled labels)", "t1")["max"] == 0.96
    assert "p_vs_control" not in _row(table, "c", "t1")  # no control runs of its own


def test_p_vs_control_counts_only_the_models_own_shuffled_runs(run_dir):
    """(1 + #controls >= mean) / (1 + #controls), over this model's controls on this test set:
    a's mean 0.85 is beaten by one of its two controls (0.86); b's controls both beat it."""
    table = summary_table(run_dir)
    assert _row(table, "a", "t1")["p_vs_control"] == pytest.approx(2 / 3)
    assert _row(table, "b", "t1")["p_vs_control"] == pytest.approx(1.0)
    assert "p_vs_control" not in _row(table, "a", "t2")  # no controls were run on t2


def test_ensemble_is_the_mean_probability_of_the_real_runs(run_dir):
    table = summary_table(run_dir)
    assert _row(table, "a", "t1")["ensemble"] == 1.0  # not run 1's 0.5, nor the controls'
    assert _row(table, "b", "t1")["ensemble"] == 0.5
    assert _row(table, "a", "t2")["ensemble"] == 0.0
    assert _row(table, "b", "t2")["ensemble"] == 1.0
    predictions = results.read_table(run_dir / results.PREDICTIONS_FILE)
    assert ensemble_correct(predictions, "a", "t1").tolist() == [True, True]  # x1, x2
    assert ensemble_correct(predictions, "b", "t2").tolist() == [True, True]  # y1, y2
    assert ensemble_correct(predictions, "c", "t1").tolist() == []  # no predictions


def test_chance_is_each_test_sets_majority_share(run_dir):
    table = summary_table(run_dir)
    assert {r["dataset"]: r["chance"] for r in table} == {"t1": 0.5, "t2": 0.75}


def test_one_run_on_one_image_has_an_ensemble(tmp_path):
    run = [_run("a", "t1", 0, 1.0)]
    _write(tmp_path, run, [_prediction("a", "t1", 0, "x1", "Treated", 0.25)])
    (row,) = summary_table(tmp_path)
    assert (row["n"], row["mean"], row["ensemble"]) == (1, 1.0, 1.0)
    assert math.isnan(row["sd"]) and math.isnan(row["ci_low"])


def test_without_predictions_the_ensemble_is_unknown_not_wrong(tmp_path):
    """A results folder whose predictions.csv is gone: the runs' numbers stand, the ensemble
    is NaN (not 0 %) and the comparison has a t test but no McNemar test."""
    runs = [_run("a", "t1", 0, 0.9), _run("a", "t1", 1, 0.8), _run("b", "t1", 0, 0.6)]
    _write(tmp_path, [*runs, _run("b", "t1", 1, 0.7), _run("a", "t1", 2, "n/a")])
    (a, b) = summary_table(tmp_path)
    assert math.isnan(a["ensemble"]) and math.isnan(b["ensemble"])
    assert a["n"] == 2  # the hand-edited row without a number is left out
    (comparison,) = model_comparisons(tmp_path)
    assert comparison["runs_difference"] == pytest.approx(0.2)
    assert "mcnemar_p" not in comparison and "ensemble_difference" not in comparison


def test_model_comparisons_pair_every_model_with_two_runs_per_test_set(run_dir):
    comparisons = model_comparisons(run_dir)
    assert [(c["dataset"], c["first"], c["second"]) for c in comparisons] == [
        ("t1", "a", "b"),
        ("t2", "a", "b"),
    ]  # c has one run on t1: no t test with it


def test_model_comparisons_t_test_is_welchs_on_the_real_runs(run_dir):
    first = model_comparisons(run_dir)[0]
    expected = stats.ttest_ind([0.9, 0.8], [0.6, 0.7], equal_var=False)  # controls left out
    interval = expected.confidence_interval()
    assert first["runs_difference"] == pytest.approx(0.2)
    assert first["runs_t"] == pytest.approx(expected.statistic)
    assert first["runs_df"] == pytest.approx(expected.df)
    assert first["runs_p_value"] == pytest.approx(expected.pvalue)
    assert (first["runs_ci_low"], first["runs_ci_high"]) == pytest.approx(
        (interval.low, interval.high)
    )
    second = model_comparisons(run_dir)[1]
    assert second["runs_difference"] == pytest.approx(-0.75)  # t2: mean 0.0 - mean 0.75


def test_model_comparisons_mcnemar_on_the_two_ensembles(run_dir):
    """On t1 a's ensemble gets x1 and x2 right, b's only x2: difference 1.0 - 0.5, one
    discordant image, p = min(1, 2 P(Binom(1, 1/2) <= 0)) = 1. On t2 the ensembles answered
    different images (1 and 2): no paired test."""
    t1, t2 = model_comparisons(run_dir)
    assert t1["ensemble_difference"] == pytest.approx(0.5)
    assert t1["mcnemar_p"] == pytest.approx(1.0)
    assert "mcnemar_p" not in t2 and "ensemble_difference" not in t2


def test_mcnemar_p_is_small_when_one_ensemble_wins_on_many_images(tmp_path):
    """Ten images: a's ensemble right on all, b's wrong on all: p = 2 / 2**10."""
    predictions = []
    for i in range(10):
        for run in (0, 1):
            predictions.append(_prediction("a", "t1", run, f"x{i}", "Control", 0.8))
            predictions.append(_prediction("b", "t1", run, f"x{i}", "Control", 0.3))
    runs = [_run(m, "t1", run, acc) for m, acc in (("a", 1.0), ("b", 0.0)) for run in (0, 1)]
    _write(tmp_path, runs, predictions)
    (comparison,) = model_comparisons(tmp_path)
    assert comparison["ensemble_difference"] == 1.0
    assert comparison["mcnemar_p"] == pytest.approx(2 / 2**10)
    assert math.isnan(comparison["runs_t"])  # both models constant over runs: t undefined
