"""The results folder's one owner: config.json updates and file names."""

import json

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
