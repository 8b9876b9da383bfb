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
