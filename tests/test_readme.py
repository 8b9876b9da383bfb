"""The README's notebook example runs as written (in a temporary folder)."""

import re
import warnings
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_notebook_example_runs(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    code = re.search(r"<!-- notebook example -->\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny demo may warn (near-duplicates); fine here
        exec(compile(code, "README.md", "exec"), namespace)
    study = namespace["study"]
    summary = study.summary()
    assert isinstance(summary, pd.DataFrame) and set(summary["dataset"]) == {"snap29"}
    assert {"mean", "chance", "collapsed"} <= set(summary.columns)
    assert isinstance(study.plot_accuracy(), Figure) and isinstance(study.runs, pd.DataFrame)
    assert len(study.predict(namespace["snap29"].test)) == 20
    assert (tmp_path / "nb" / "snap29" / "report.html").is_file()
    assert namespace["same"].runs.equals(study.runs)


def test_train_names_a_misspelled_parameter(tmp_path):
    import cellclass

    try:
        cellclass.train(tmp_path, out=tmp_path / "o", epoch=3)
    except ValueError as error:
        assert "'epoch'" in str(error) and "epochs" in str(error)
    else:
        raise AssertionError("no ValueError")
