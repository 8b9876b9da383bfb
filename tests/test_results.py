"""The results folder's one owner: config.json updates and file names."""

import hashlib
import json
import math
import platform

import pytest

from cellclass import results


def test_update_config_merges_one_level_and_keeps_everything_else(tmp_path):
    results.write_json(tmp_path / results.CONFIG_FILE, {"tests": {"a": 1}, "seed": 3, "x": [1]})
    new = results.update_config(tmp_path, {"tests": {"b": 2}, "expert": {"a": 0.9}, "x": "y"})
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk == new == {"tests": {"a": 1, "b": 2}, "seed": 3, "x": "y", "expert": {"a": 0.9}}
    results.update_config(tmp_path, {"expert": {"a": 0.7}})  # a later score replaces its test's
    assert json.loads((tmp_path / "config.json").read_text())["expert"] == {"a": 0.7}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_tables_are_typed_by_column_name_not_by_content(tmp_path):
    path = tmp_path / "runs.csv"
    columns = ["run", "model", "dataset", "accuracy", "collapsed", "true", "p_01"]
    results.write_table(path, columns, [{"run": 0, "model": "=cmd", "dataset": "01", "true": "7"}])
    results.append_rows(path, columns + ["control"], [{"run": 1, "accuracy": 0.5, "p_01": 1}])
    first, second = results.read_table(path)
    assert first["dataset"] == "01" and first["true"] == "7"  # class names stay text
    assert first["model"] == "=cmd"  # the spreadsheet-safety prefix is removed again
    assert first["accuracy"] != first["accuracy"]  # not measured: NaN, not "" or 0
    assert first["control"] == 0 and first["collapsed"] == 0  # flags added later read as 0
    assert second["accuracy"] == 0.5 and second["run"] == 1 and second["p_01"] == 1


def test_file_slugs_keep_safe_names_and_tell_changed_ones_apart():
    assert results.file_slug("badger", "test_A.1") == "badger-test_A.1"  # unchanged: no digest
    digest = hashlib.sha1(b"strong\0test A").hexdigest()[:6]
    assert results.file_slug("strong", "test A") == f"strong-test-A-{digest}"
    assert results.file_slug("a b") != results.file_slug("a-b")
    assert results.file_slug("???").startswith("x-")  # nothing safe left: a placeholder


def test_temperatures_are_read_by_run_and_model_and_must_be_positive(tmp_path):
    path = tmp_path / results.CALIBRATION_FILE
    assert results.load_temperatures(tmp_path) == {}
    entries = [{"run": 0, "model": "strong", "temperature": 1.5}]
    results.write_json(path, {"runs": entries})
    assert results.load_temperatures(tmp_path) == {(0, "strong"): 1.5}
    for bad in (0.0, -1.0, float("nan")):
        bad_entry = {"run": 3, "model": "ref", "temperature": bad}
        results.write_json(path, {"runs": [*entries, bad_entry]})
        with pytest.raises(ValueError, match=r"run 3 \(ref\) has a non-positive temperature"):
            results.load_temperatures(tmp_path)
    path.write_text('{"runs": [{"run": 0}]}')
    with pytest.raises(ValueError, match="not a calibration file"):
        results.load_temperatures(tmp_path)


def test_run_seconds_takes_each_runs_first_number_and_keeps_control_runs_apart():
    rows = [
        {"model": "reference", "run": 0, "control": 0, "seconds": 12.0},
        {"model": "reference", "run": 0, "control": 0, "seconds": 99.0},  # a later test set
        {"model": "reference", "run": 0, "control": 1, "seconds": 7.0},  # before 2026-12: run 0
        {"model": "reference", "run": 1, "control": "", "seconds": math.nan},  # evaluate's rows
        {"model": "reference", "run": 1, "seconds": 5.0},
    ]
    assert results.run_seconds(rows) == {
        ("reference", 0, 0): 12.0,
        ("reference", 0, 1): 7.0,
        ("reference", 1, 0): 5.0,
    }


def test_checkpoint_names_follow_kind_run_and_model(tmp_path):
    one, two = ("reference",), ("reference", "strong")
    assert results.checkpoint_path(tmp_path, 3, "reference", models=one).name == "run-03.pt"
    name = results.checkpoint_path(tmp_path, 12, "strong", models=two, control=True).name
    assert name == "control-12-strong.pt"


def test_dropping_unfinished_runs_keeps_a_control_run_with_a_real_runs_number(tmp_path):
    columns = ["run", "model", "control", "dataset", "accuracy"]
    rows = [
        {"run": 0, "model": "m", "control": 0, "dataset": "t", "accuracy": 0.9},
        {"run": 0, "model": "m", "control": 1, "dataset": "t", "accuracy": 0.5},
        {"run": 1, "model": "m", "control": 0, "dataset": "t", "accuracy": 0.8},
    ]
    for name in (results.RUNS_FILE, results.EPOCHS_FILE, results.PREDICTIONS_FILE):
        results.write_table(tmp_path / name, columns, rows)
    results.drop_unfinished(tmp_path, {(0, "m", 1), (1, "m", 0)})
    for name in (results.RUNS_FILE, results.EPOCHS_FILE, results.PREDICTIONS_FILE):
        kept = results.read_table(tmp_path / name)
        assert [(r["run"], r["control"]) for r in kept] == [(0, 1), (1, 0)]


def test_config_json_is_indented_text_with_a_final_newline(tmp_path):
    results.write_json(tmp_path / "c.json", {"a": {"b": 1}})
    assert (tmp_path / "c.json").read_text() == '{\n  "a": {\n    "b": 1\n  }\n}\n'


def test_the_machine_is_named_even_where_the_processor_is_not(monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert results.machine_info("cpu")["processor"] == "x86_64"
    monkeypatch.setattr(platform, "processor", lambda: "AMD EPYC")
    info = results.machine_info("cpu")
    assert info["processor"] == "AMD EPYC" and info["device"] == "cpu"


def test_a_temperature_below_one_is_a_temperature(tmp_path):
    entries = [{"run": 1, "model": "m", "temperature": 0.5}]  # sharpens: still valid
    results.write_json(tmp_path / results.CALIBRATION_FILE, {"runs": entries})
    assert results.load_temperatures(tmp_path) == {(1, "m"): 0.5}


def test_a_saved_dict_without_weights_is_not_a_checkpoint(tmp_path):
    import torch

    path = tmp_path / "run-00.pt"
    torch.save({"run": 0, "model": "reference"}, path)
    with pytest.raises(results.CheckpointError, match="no weights found"):
        results.load_checkpoint(path)
