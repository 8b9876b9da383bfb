"""The experiment's plan and its checks before training: which runs, with which seeds and
names, on which rows; the brightness-confound warning's numbers; what is refused or written
before the first run (issue 21: mutants of training/jobs.py and training/experiment.py that
the end-to-end tests let through)."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cellclass.progress import Observer
from cellclass.training import ExperimentError, ExperimentSettings, run_experiment, run_splits
from cellclass.training.experiment import check_confounds
from cellclass.training.jobs import experiment_jobs, job_name
from cellclass.training.recipes import REFERENCE, STRONG
from cellclass.training.settings import CONTROL_SEED_OFFSET

from .conftest import make_class_tree

TINY = replace(REFERENCE, epochs=1, batch_size=8)


class Recorder(Observer):
    def __init__(self):
        self.lines: list[str] = []
        self.started: list[tuple[str, int]] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def run_started(self, name: str, n_images: int) -> None:
        self.started.append((name, n_images))


def _settings(tmp_path, train_dir, **changes) -> ExperimentSettings:
    base = ExperimentSettings(
        train_dir=str(train_dir),
        out=str(tmp_path / "out"),
        runs=1,
        seed=3,
        image_size=16,
        val_split=0.0,
        cache_dir=str(tmp_path / "cache"),
        recipes=(TINY,),
    )
    return replace(base, **changes)


def test_jobs_number_seed_and_name_every_run(tmp_path):
    settings = _settings(
        tmp_path, tmp_path, runs=2, control_runs=2, seed=7, recipes=(REFERENCE, STRONG)
    )
    settings = replace(settings, baselines=("features",))
    jobs = experiment_jobs(settings)
    plan = [(j.run, j.seed, j.recipe.label, j.control) for j in jobs]
    offset = 7 + CONTROL_SEED_OFFSET
    assert plan == [
        (0, 7, "reference", False),
        (0, 7, "strong", False),
        (0, 7, "features", False),
        (1, 8, "reference", False),
        (1, 8, "strong", False),
        (1, 8, "features", False),
        (2, offset, "reference", True),  # control runs: the first recipe, numbered on
        (3, offset + 1, "reference", True),
    ]
    names = [job_name(j, settings) for j in jobs]
    assert names[:2] == ["run 1/2 reference", "run 1/2 strong"]
    assert names[-2:] == ["control 1/2", "control 2/2"]
    one = replace(settings, recipes=(REFERENCE,), baselines=())
    assert [job_name(j, one) for j in experiment_jobs(one)] == [
        "run 1/2",
        "run 2/2",
        "control 1/2",
        "control 2/2",
    ]


def test_a_training_sample_is_distinct_sorted_rows_of_the_training_side():
    labels = np.arange(40) % 2
    train = SimpleNamespace(labels=labels, groups=[f"g{i}" for i in range(40)])
    settings = ExperimentSettings(train_dir="x", out="y", val_split=0.25, train_sample=12)
    rows, val = run_splits(train, settings, seed=4)
    assert len(rows) == 12 and len(np.unique(rows)) == 12  # drawn without replacement
    assert np.all(np.diff(rows) > 0) and not set(rows) & set(val)
    everything = replace(settings, train_sample=30)  # the 30 training rows: all of them
    rows, val = run_splits(train, everything, seed=4)
    assert sorted([*rows, *val]) == list(range(40))


def test_progress_is_told_each_runs_name_and_images_to_train(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 6, "Treated": 6}, size=16)
    recipe = replace(TINY, epochs=3)
    settings = _settings(tmp_path, train, runs=1, control_runs=1, recipes=(recipe,))
    observer = Recorder()
    run_experiment(settings, observer=observer)
    assert observer.started == [("run 1/1", 12 * 3), ("control 1/1", 12 * 3)]


def test_validation_rows_come_before_the_test_sets_in_each_epoch(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 8, "Treated": 8}, size=16)
    test = make_class_tree(tmp_path / "test", {"Control": 2, "Treated": 2}, size=16, seed=2)
    settings = _settings(tmp_path, train, val_split=0.25, tests=(("t", str(test)),))
    out = run_experiment(settings)
    lines = (out / "epochs.csv").read_text().splitlines()
    split = lines[0].split(",").index("split")
    assert [line.split(",")[split] for line in lines[1:]] == ["train", "val", "t"]


def _confound_data(bright: np.ndarray, dark: np.ndarray, names=("Bright", "Dark")):
    pixels = np.concatenate([bright, dark])[:, None, None, None] * np.ones((1, 4, 4, 1))
    labels = np.array([0] * len(bright) + [1] * len(dark))
    return SimpleNamespace(
        store=SimpleNamespace(pixels=pixels),
        labels=labels,
        index=SimpleNamespace(class_names=names),
    )


def test_the_confound_warning_quotes_each_class_mean_and_its_sample_sd_distance():
    bright, dark = np.array([100.0, 110.0, 120.0]), np.array([40.0, 50.0, 60.0])
    observer = Recorder()
    lines = check_confounds(_confound_data(bright, dark), observer)
    pooled = np.sqrt((bright.std(ddof=1) ** 2 + dark.std(ddof=1) ** 2) / 2)  # 10
    assert len(lines) == 1
    assert f"mean intensity Bright 110 vs Dark 50 ({60 / pooled:.1f} SDs apart)" in lines[0]
    assert observer.lines == [f"warning: training folder: {lines[0]}"]


def test_a_class_of_one_image_counts_with_no_spread():
    observer = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sample SD of one value (numpy: "Degrees of freedom")
        lines = check_confounds(_confound_data(np.array([200.0]), np.array([40.0, 40.0])), observer)
    assert len(lines) == 1 and "inf SDs apart" in lines[0]


def test_strict_runs_on_clean_data(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4}, size=16)
    test = make_class_tree(tmp_path / "test", {"Control": 2, "Treated": 2}, size=16, seed=5)
    settings = _settings(tmp_path, train, tests=(("t", str(test)),), strict=True)
    out = run_experiment(settings)  # no shared images: nothing to refuse
    assert (out / "runs.csv").is_file()


def test_an_output_below_a_file_is_refused_before_decoding(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4}, size=16)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ExperimentError, match="is not a folder"):
        run_experiment(_settings(tmp_path, train, out=str(blocker / "out")))
    assert not (tmp_path / "cache").exists()


def test_a_new_results_folder_may_be_nested_and_config_records_the_command(tmp_path, monkeypatch):
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4}, size=16)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/cellclass", "train", "my data", "-o", "x"])
    out = run_experiment(_settings(tmp_path, train, out=str(tmp_path / "a" / "b" / "out")))
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "cellclass train 'my data' -o x"


def test_resuming_on_the_same_machine_says_nothing_about_chunks(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4}, size=16)
    settings = _settings(tmp_path, train, runs=1)
    run_experiment(settings)
    observer = Recorder()
    run_experiment(replace(settings, runs=2), resume=True, observer=observer)
    assert not [line for line in observer.lines if "chunks" in line]
