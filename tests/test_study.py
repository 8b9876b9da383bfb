"""cellclass.study: the notebook API's warnings and errors."""

import pytest

import cellclass

from .conftest import make_class_tree


def test_warnings_reach_the_notebook_as_python_warnings(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 6, "Treated": 6})
    with pytest.warns(UserWarning, match="leak training data"):  # test folder = training one
        study = cellclass.train(
            train, out=tmp_path / "o", tests={"same": train}, runs=1, epochs=1, image_size=32
        )
    assert list(study.runs["dataset"]) == ["same"]
    with pytest.raises(FileNotFoundError, match="not a cellclass results folder"):
        cellclass.load(tmp_path / "train")
