import csv
from dataclasses import replace

import numpy as np
import pytest

from cellclass import results
from cellclass.checks import find_warnings
from cellclass.data.preprocessing import BadImagesError
from cellclass.progress import Observer
from cellclass.summary import summary_table
from cellclass.training import ExperimentError, ExperimentSettings, run_experiment, run_splits
from cellclass.training.recipes import REFERENCE

from .conftest import make_class_tree, write_png


def _settings(tmp_path, train_dir, **changes):
    tests = (("t1", str(make_class_tree(tmp_path / "t1", {"Control": 6, "Treated": 6}, seed=9))),)
    base = ExperimentSettings(
        train_dir=str(train_dir),
        out=str(tmp_path / "out"),
        tests=tests,
        runs=2,
        seed=5,
        image_size=32,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=2, batch_size=8),),
    )
    return replace(base, **changes)


def _table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_folder_has_every_table_and_checkpoint(tmp_path, class_tree):
    out = run_experiment(_settings(tmp_path, class_tree))
    config = results.read_json(out / "config.json")
    assert config["class_names"] == ["Control", "Treated"]
    assert config["seeds"] == [5, 6]
    assert config["settings"]["recipes"][0]["batch_size"] == 8
    assert config["models"] == ["reference"]
    assert {"torch", "numpy", "python"} <= set(config["versions"])
    runs = _table(out / "runs.csv")
    assert [(r["run"], r["seed"], r["dataset"]) for r in runs] == [
        ("0", "5", "t1"),
        ("1", "6", "t1"),
    ]
    epochs = _table(out / "epochs.csv")
    assert {(r["epoch"], r["split"]) for r in epochs} == {
        (e, s) for e in ("1", "2") for s in ("train", "val", "t1")
    }
    predictions = _table(out / "predictions.csv")
    assert len(predictions) == 2 * 12
    assert {"p_Control", "p_Treated", "confidence", "true", "predicted"} <= set(predictions[0])
    for row in predictions:
        assert abs(float(row["p_Control"]) + float(row["p_Treated"]) - 1) < 1e-4
    assert sorted(p.name for p in (out / "models").iterdir()) == ["run-00.pt", "run-01.pt"]


def test_same_seed_gives_the_same_numbers(tmp_path, class_tree):
    first = run_experiment(_settings(tmp_path, class_tree))
    second = run_experiment(_settings(tmp_path, class_tree, out=str(tmp_path / "again")))
    a, b = _table(first / "epochs.csv"), _table(second / "epochs.csv")
    assert [(r["loss"], r["accuracy"]) for r in a] == [(r["loss"], r["accuracy"]) for r in b]
    other = run_experiment(_settings(tmp_path, class_tree, out=str(tmp_path / "o"), seed=6))
    c = _table(other / "epochs.csv")
    # run 0 of seed 6 is run 1 of seed 5: identical numbers; the first run differs
    assert [r["loss"] for r in c if r["run"] == "0"] == [r["loss"] for r in a if r["run"] == "1"]
    assert [r["loss"] for r in c if r["run"] == "0"] != [r["loss"] for r in a if r["run"] == "0"]


def test_existing_folder_is_never_overwritten(tmp_path, class_tree):
    settings = _settings(tmp_path, class_tree)
    out = run_experiment(settings)
    before = (out / "runs.csv").read_bytes()
    with pytest.raises(ExperimentError, match="resume=True"):
        run_experiment(settings)
    assert (out / "runs.csv").read_bytes() == before


class _StopAfterFirstRun(Observer):
    def run_finished(self, run, rows):
        raise KeyboardInterrupt


def test_interrupted_experiment_resumes_where_it_stopped(tmp_path, class_tree):
    settings = _settings(tmp_path, class_tree, runs=3)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(settings, observer=_StopAfterFirstRun())
    out = tmp_path / "out"
    assert [p.name for p in (out / "models").iterdir()] == ["run-00.pt"]
    # a half-written run's rows (as after a kill mid-write) are dropped on resume
    results.append_rows(
        out / "runs.csv",
        results.RUNS_COLUMNS,
        [{"run": 1, "model": "reference", "dataset": "t1", "accuracy": 0.1}],
    )
    run_experiment(settings, resume=True)
    runs = _table(out / "runs.csv")
    assert [r["run"] for r in runs] == ["0", "1", "2"]
    full = run_experiment(replace(settings, out=str(tmp_path / "full")))
    assert _table(full / "runs.csv") == [
        {**r, "seconds": f["seconds"]} for r, f in zip(runs, _table(full / "runs.csv"), strict=True)
    ]


def test_resume_with_changed_settings_is_refused(tmp_path, class_tree):
    settings = _settings(tmp_path, class_tree, runs=1)
    run_experiment(settings)
    with pytest.raises(ExperimentError, match="epochs"):
        run_experiment(replace(settings, recipes=(replace(REFERENCE, epochs=3),)), resume=True)


def test_corrupt_image_stops_before_training_and_names_it(tmp_path, class_tree):
    bad = class_tree / "Control" / "broken.png"
    bad.write_bytes((class_tree / "Control" / "Control_000.png").read_bytes()[:60])
    with pytest.raises(BadImagesError, match="broken.png"):
        run_experiment(_settings(tmp_path, class_tree))
    assert not (tmp_path / "out").exists()
    out = run_experiment(_settings(tmp_path, class_tree, skip_bad_images=True))
    assert results.read_json(out / "config.json")["train"]["n_bad"] == 1


def test_train_sample_draws_a_fresh_subset_per_run(tmp_path):
    root = make_class_tree(tmp_path / "big", {"Control": 30, "Treated": 30})
    from cellclass.training import prepare_data

    settings = _settings(tmp_path, root, train_sample=20, val_split=0.0)
    train = prepare_data(settings, Observer()).train
    a, _ = run_splits(train, settings, 0)
    b, _ = run_splits(train, settings, 1)
    assert len(a) == len(b) == 20
    assert not np.array_equal(a, b)
    assert np.array_equal(a, run_splits(train, settings, 0)[0])


def test_summary_table_over_runs(tmp_path, class_tree):
    out = run_experiment(_settings(tmp_path, class_tree))
    (row,) = summary_table(out)
    accuracies = [float(r["accuracy"]) for r in _table(out / "runs.csv")]
    assert row["n"] == 2 and row["dataset"] == "t1"
    assert row["mean"] == pytest.approx(np.mean(accuracies))
    assert row["min"] == min(accuracies) and row["max"] == max(accuracies)


def test_learns_an_easy_task(tmp_path):
    root = make_class_tree(tmp_path / "easy", {"Control": 30, "Treated": 30})
    settings = _settings(
        tmp_path, root, runs=1, recipes=(replace(REFERENCE, epochs=6, batch_size=10),)
    )
    out = run_experiment(settings)
    assert float(_table(out / "runs.csv")[0]["accuracy"]) >= 0.9


def test_control_runs_use_shuffled_labels_and_give_a_p_value(tmp_path):
    root = make_class_tree(tmp_path / "easy", {"Control": 20, "Treated": 20})
    settings = _settings(
        tmp_path,
        root,
        runs=1,
        control_runs=2,
        recipes=(replace(REFERENCE, epochs=4, batch_size=10),),
    )
    out = run_experiment(settings)
    runs = _table(out / "runs.csv")
    # control runs are numbered after the real ones: one run number, one run (issue 20)
    assert [(r["run"], r["control"]) for r in runs] == [("0", "0"), ("1", "1"), ("2", "1")]
    assert len({r["seed"] for r in runs}) == 3
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "control-01.pt",
        "control-02.pt",
        "run-00.pt",
    ]
    epochs = _table(out / "epochs.csv")
    assert {r["control"] for r in epochs} == {"0", "1"}
    table = summary_table(out)
    real = next(r for r in table if r["model"] == "reference")
    control = next(r for r in table if "shuffled" in r["model"])
    assert control["n"] == 2
    assert real["p_vs_control"] == pytest.approx(1 / 3)  # (1 + 0) / (1 + 2): real beats both
    assert real["mean"] > control["max"]


def test_report_shows_control_runs_curves(tmp_path):
    from cellclass.report.build import write_report

    root = make_class_tree(tmp_path / "easy", {"Control": 10, "Treated": 10})
    settings = _settings(tmp_path, root, runs=1, control_runs=1)
    out = run_experiment(settings)
    html = write_report(out).read_text()
    assert (
        "Real vs shuffled-label runs" in html and (out / "figures" / "curves-control.png").is_file()
    )


def test_test_every_is_recorded_and_thins_the_test_rows(tmp_path, class_tree):
    recipe = replace(REFERENCE, epochs=3, batch_size=8)
    out = run_experiment(_settings(tmp_path, class_tree, recipes=(recipe,), test_every=2))
    rows = _table(out / "epochs.csv")
    assert sorted({int(r["epoch"]) for r in rows if r["split"] == "t1"}) == [2, 3]
    assert sorted({int(r["epoch"]) for r in rows if r["split"] == "val"}) == [1, 2, 3]
    assert results.read_json(out / "config.json")["settings"]["test_every"] == 2
    with pytest.raises(ExperimentError, match="test_every=0: use 1 or more"):
        run_experiment(_settings(tmp_path, class_tree, out=str(tmp_path / "x"), test_every=0))


def test_a_constant_output_run_is_flagged_collapsed_and_counted(tmp_path, capsys):
    """Identical images in both classes leave the network one possible answer: a collapsed
    run, which runs.csv, the summary and the printed table must name; a run that learns is
    not flagged."""
    from cellclass.cli.display import print_summary

    flat = tmp_path / "flat"
    for name in ("Control", "Treated"):
        for i in range(8):
            write_png(flat / name / f"{name}_{i}.png", np.full((32, 32), 90, np.uint8))
    settings = _settings(tmp_path, flat, runs=1, val_split=0.0, out=str(tmp_path / "flat-out"))
    out = run_experiment(settings)
    assert [int(r["collapsed"]) for r in _table(out / "runs.csv")] == [1]
    table = summary_table(out)
    assert table[0]["collapsed"] == 1 and table[0]["chance"] == 0.5
    print_summary(table)
    assert "1 of 1 runs never left chance" in capsys.readouterr().out

    easy = make_class_tree(tmp_path / "easy", {"Control": 12, "Treated": 12})
    learned = replace(
        settings,
        train_dir=str(easy),
        out=str(tmp_path / "easy-out"),
        recipes=(replace(REFERENCE, epochs=5, batch_size=4),),
    )
    rows = _table(run_experiment(learned) / "runs.csv")
    assert float(rows[0]["accuracy"]) > 0.9 and int(rows[0]["collapsed"]) == 0


def test_the_cache_folder_is_recorded_absolute(tmp_path, class_tree, monkeypatch):
    """A relative cache path would make `cellclass report` run elsewhere build a stray cache."""
    monkeypatch.chdir(tmp_path)
    out = run_experiment(_settings(tmp_path, class_tree, runs=1, cache_dir="rel-cache"))
    saved = results.read_json(out / "config.json")["settings"]["cache_dir"]
    assert saved == str(tmp_path / "rel-cache") and (tmp_path / "rel-cache").is_dir()


def test_seconds_count_once_per_run_in_runs_csv(tmp_path, class_tree, monkeypatch):
    """Issue 20: runs.csv repeated a run's total seconds on every test-set row, so a sum over
    the table counted each run once per test set."""
    from cellclass.training import executors

    measured = {}  # (model, run, control) -> RunResult.seconds, as the run measured it

    def write_run(out, job, settings, result, data):
        measured[(job.recipe.label, job.run, int(job.control))] = result.seconds
        return real_write_run(out, job, settings, result, data)

    real_write_run = executors.write_run
    monkeypatch.setattr(executors, "write_run", write_run)
    t2 = make_class_tree(tmp_path / "t2", {"Control": 4, "Treated": 4}, seed=4)
    settings = _settings(tmp_path, class_tree, control_runs=1)
    out = run_experiment(replace(settings, tests=(*settings.tests, ("t2", str(t2)))))
    rows = results.read_table(out / "runs.csv")
    assert len(rows) == 2 * 3 and len(measured) == 3  # 2 real runs + 1 control, 2 test sets
    # the CSV keeps ~7 significant digits; a double count would be off by a factor of 2
    total = np.nansum([row["seconds"] for row in rows])
    assert total == pytest.approx(sum(measured.values()), rel=1e-4)
    assert [np.isfinite(row["seconds"]) for row in rows] == [True, False] * 3  # first row each
    assert results.run_seconds(rows) == pytest.approx(measured, rel=1e-4)
    old = [{**row, "seconds": measured[("reference", row["run"], row["control"])]} for row in rows]
    assert results.run_seconds(old) == pytest.approx(measured)  # tables that repeated it


def test_a_brightness_confound_in_the_training_folder_is_warned_and_reaches_the_report(
    tmp_path,
):
    """Control imaged dim, Treated bright (as when classes are imaged on different days)."""
    rng = np.random.default_rng(4)
    root = tmp_path / "confounded"
    for name, level in (("Control", 40), ("Treated", 120)):
        for i in range(8):
            image = np.clip(rng.normal(level, 8, (32, 32)), 0, 255).astype(np.uint8)
            write_png(root / name / f"{name}_{i}.png", image)
    messages = []

    class Recorder(Observer):
        def message(self, text):
            messages.append(text)

    out = run_experiment(_settings(tmp_path, root, runs=1), observer=Recorder())
    config = results.read_json(out / "config.json")
    assert len(config["confounds"]) == 1
    assert "Control" in config["confounds"][0] and "Treated" in config["confounds"][0]
    assert any("brightness confound" in m and "training folder" in m for m in messages)
    titles = [w.title for w in find_warnings([], [], config)]
    assert any(t.startswith("Possible confound") for t in titles)


def test_alike_training_classes_raise_no_confound(tmp_path, class_tree):
    out = run_experiment(_settings(tmp_path, class_tree, runs=1))
    assert results.read_json(out / "config.json")["confounds"] == []


def test_a_run_interrupted_while_writing_its_rows_never_shows_without_weights(
    tmp_path, class_tree, monkeypatch
):
    """Issue 17, point 9: weights first, rows after, runs.csv last; a run killed in between
    leaves a checkpoint without rows, which a resume trains again (no duplicate rows)."""
    settings = _settings(tmp_path, class_tree, runs=2)
    real_append = results.append_rows
    seen = []

    def append_rows(path, columns, rows):
        if path.name == results.RUNS_FILE and rows and rows[0]["run"] == 1:
            # what a kill at this moment leaves: every run in the tables has its weights
            for row in results.read_table(path.parent / results.EPOCHS_FILE):
                assert (path.parent / "models" / f"run-{row['run']:02d}.pt").is_file()
            seen.append(sorted(p.name for p in (path.parent / "models").iterdir()))
            raise KeyboardInterrupt
        return real_append(path, columns, rows)

    monkeypatch.setattr(results, "append_rows", append_rows)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(settings)
    assert seen == [["run-00.pt", "run-01.pt"]]  # run 1's weights were saved before its rows
    monkeypatch.setattr(results, "append_rows", real_append)
    out = tmp_path / "out"
    assert [r["run"] for r in _table(out / "runs.csv")] == ["0"]
    run_experiment(settings, resume=True)  # run 1 has weights but no rows: trained again
    assert [r["run"] for r in _table(out / "runs.csv")] == ["0", "1"]
    epochs = _table(out / "epochs.csv")
    assert len(epochs) == len({(r["run"], r["epoch"], r["split"]) for r in epochs})  # no repeats
    full = run_experiment(replace(settings, out=str(tmp_path / "full")))
    assert [r["accuracy"] for r in _table(full / "runs.csv")] == [
        r["accuracy"] for r in _table(out / "runs.csv")
    ]
