"""Tests of cellclass.report.findings on results tables written here: each verdict's rule,
the training accuracy a finding quotes, and the sentences comparing models."""

import dataclasses

import pytest

from cellclass import results
from cellclass.report.findings import comparison_sentences, study_findings

CLASS_COUNTS = {"t1": {"Control": 10, "Treated": 10}, "t2": {"Control": 15, "Treated": 5}}


def _write(run_dir, test_accuracies: dict, train_accuracies: dict, class_counts=CLASS_COUNTS):
    """runs.csv from {(model, test set): [accuracy per run]}; epochs.csv with one final
    training accuracy per (model, run) from {model: [accuracy per run]}; config.json with the
    test sets' class counts, of two classes unless told otherwise."""
    runs = [
        {"run": run, "model": model, "dataset": test, "accuracy": accuracy, "control": 0}
        for (model, test), accuracies in test_accuracies.items()
        for run, accuracy in enumerate(accuracies)
    ]
    epochs = []
    for model, accuracies in train_accuracies.items():
        for run, accuracy in enumerate(accuracies):
            epochs.append(_epoch(model, run, 2, "train", accuracy))
    results.write_table(run_dir / results.RUNS_FILE, results.RUNS_COLUMNS, runs)
    results.write_table(run_dir / results.EPOCHS_FILE, results.EPOCHS_COLUMNS, epochs)
    tests = {name: {"class_counts": counts} for name, counts in class_counts.items()}
    names = sorted({name for counts in class_counts.values() for name in counts})
    config = {"class_names": names, "tests": tests}
    results.write_json(run_dir / results.CONFIG_FILE, config)
    return run_dir


def _epoch(model, run, epoch, split, accuracy):
    return {"run": run, "model": model, "epoch": epoch, "split": split, "accuracy": accuracy}


def _findings(run_dir):
    return {(f.model, f.test): f for f in study_findings({"demo": run_dir})}


def test_each_verdict_follows_its_rule(tmp_path):
    """Chance is 50 % on t1 and 75 % on t2. learnt: 10 points above chance with the whole
    interval above it (or one run: no interval); memorised: fits its training images
    (>= 95 %), 15 points lower on the test, and less than 15 above chance; near chance: less
    than 5 points above, or an interval reaching chance; above chance: the rest."""
    tests = {
        ("learnt", "t1"): [0.88, 0.9, 0.92],
        ("single", "t1"): [0.9],  # one run: no interval to hold it back
        ("memorised", "t1"): [0.6, 0.6],  # 10 points above chance, 35 below training
        ("close-to-train", "t2"): [0.85, 0.85],  # 10 above chance, 15 below its training
        ("barely", "t1"): [0.52, 0.52],  # interval above chance, but by 2 points
        ("wide", "t1"): [0.4, 1.0],  # mean 20 points above, interval down to chance
        ("modest", "t1"): [0.57, 0.57],
    }
    train = {model: [0.9, 0.9] for model, _ in tests}  # below 95 %: cannot have memorised
    train |= {"memorised": [0.95, 0.95], "close-to-train": [1.0, 1.0]}
    found = _findings(_write(tmp_path, tests, train))
    verdicts = {model: found[(model, test)].verdict for model, test in tests}
    assert verdicts == {
        "learnt": "learnt",
        "single": "learnt",
        "memorised": "memorised",
        "close-to-train": "above chance",  # 0.85 is not below 1.0 - 0.15
        "barely": "near chance",
        "wide": "near chance",
        "modest": "above chance",
    }
    memorised = found[("memorised", "t1")]
    assert memorised.train == pytest.approx(0.95) and memorised.chance == 0.5
    assert "it memorised its training images" in memorised.sentence
    assert "95.0% on its training images" in memorised.sentence
    with pytest.raises(dataclasses.FrozenInstanceError):
        memorised.verdict = "learnt"  # a finding is a record, not a draft


def test_each_margin_belongs_to_the_verdict_it_names(tmp_path):
    """At exactly 10 points above chance a mean has learnt, at exactly 15 above it is no
    longer memorisation, at exactly 5 above it is no longer near chance. Ten and twenty
    classes give chances (10 %, 5 %) at which these differences are exact in floating point."""
    classes = [f"c{i:02d}" for i in range(20)]
    counts = {
        "ten": {name: 2 if i < 10 else 0 for i, name in enumerate(classes)},  # chance 2 / 20
        "twenty": dict.fromkeys(classes, 1),  # chance 1 / 20
    }
    tests = {
        ("ten-points", "ten"): [0.2, 0.2],
        ("fifteen-points", "ten"): [0.25, 0.25],
        ("five-points", "twenty"): [0.1, 0.1],
    }
    train = {"ten-points": [0.9], "fifteen-points": [1.0, 1.0], "five-points": [0.9]}
    found = _findings(_write(tmp_path, tests, train, class_counts=counts))
    assert [found[key].chance for key in tests] == [0.1, 0.1, 0.05]
    assert [found[key].verdict for key in tests] == ["learnt", "learnt", "above chance"]


def test_training_accuracy_is_the_mean_of_each_real_runs_last_epoch(tmp_path):
    """Rows come in any order; validation rows, other models and shuffled-label runs don't
    count."""
    _write(tmp_path, {("m", "t1"): [0.9, 0.9], ("other", "t1"): [0.9, 0.9]}, {})
    epochs = [
        _epoch("m", 0, 3, "train", 0.8),  # run 0 ends at epoch 3
        _epoch("m", 0, 1, "train", 0.1),
        _epoch("m", 0, 2, "train", 0.2),
        _epoch("m", 1, 1, "train", 0.3),
        _epoch("m", 1, 2, "train", 1.0),  # run 1 ends at epoch 2
        _epoch("m", 0, 4, "val", 0.0),
        _epoch("m", 1, 4, "t1", 0.0),
        _epoch("other", 0, 9, "train", 0.0),
        _epoch("m", 2, 9, "train", 0.0) | {"control": 1},
    ]
    results.write_table(tmp_path / results.EPOCHS_FILE, results.EPOCHS_COLUMNS, epochs)
    found = _findings(tmp_path)
    assert found[("m", "t1")].train == pytest.approx(0.9)  # (0.8 + 1.0) / 2
    assert found[("other", "t1")].train == 0.0


def test_comparison_sentences_name_the_better_model_and_whether_it_is_real(tmp_path):
    tests = {
        ("a", "t1"): [0.6, 0.62, 0.64],
        ("b", "t1"): [0.9, 0.92, 0.94],  # 30 points better, runs tight: p << 0.05
        ("a", "t2"): [0.7, 0.8, 0.9],
        ("b", "t2"): [0.7, 0.8, 0.9],  # identical: no difference
    }
    sentences = comparison_sentences(_write(tmp_path, tests, {}))
    t1, t2 = sentences
    assert t1.startswith("On t1, b is 30.0% above a over runs") and "a real difference" in t1
    assert t2.startswith("On t2, a is 0.0% above b") and "not distinguishable" in t2
