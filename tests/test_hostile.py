"""Hostile and careless input: files from other people must never run code or crash badly.

Results folders and scoring databases are shared between labs and published as
supplements, so each case here is one a stranger's file or a typo could trigger.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import struct
import tracemalloc
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.text import Text

from cellclass import cli, results
from cellclass.cli import main
from cellclass.data.folders import read_manifest_groups
from cellclass.data.images import (
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_VARIABLE,
    ImageReadError,
    image_meta,
    read_image,
)
from cellclass.figures.plots import confusion_figure, preview_grid
from cellclass.progress import Observer, WarningObserver
from cellclass.training import ExperimentError, ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE

from .conftest import make_class_tree, write_png
from .test_blind_store import write_blind_tree


class _CreatesFile:
    """Unpickling this object calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _predict(run_dir: Path, images: Path, tmp_path: Path) -> int:
    output = tmp_path / "predictions.csv"
    return main(["--quiet", "predict", str(run_dir), str(images), "-o", str(output)])


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cellclass: error: ") and "Traceback" not in lines[0]
    return lines[0]


# ---------------------------------------------------------------- checkpoints
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path, capsys):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "run" / "models" / "run-00.pt"
    checkpoint.parent.mkdir(parents=True)
    payload = {"state_dict": {}, "run": 0, "model": "badger", "hook": _CreatesFile(marker)}
    torch.save(payload, checkpoint)
    images = make_class_tree(tmp_path / "new", {"Control": 2})
    assert _predict(tmp_path / "run", images, tmp_path) == 2
    assert not marker.exists()  # nothing of the file ran
    line = _one_error_line(capsys)
    assert str(checkpoint) in line and "refused" in line and "io.open" in line


def _tiny_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": torch.nn.Linear(64, 8).state_dict(), "run": 0}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a readable cellclass checkpoint"),
        (b"this is not a checkpoint at all\n" * 4, "not a readable cellclass checkpoint"),
        ("truncated", "not a readable cellclass checkpoint"),
        ("a list", "not a cellclass checkpoint"),
    ],
)
def test_damaged_checkpoints_give_one_line_naming_the_file(tmp_path, capsys, content, expected):
    checkpoint = tmp_path / "run" / "models" / "run-00.pt"
    checkpoint.parent.mkdir(parents=True)
    if content == "truncated":
        content = _tiny_checkpoint()[:-400]
    elif content == "a list":
        buffer = io.BytesIO()
        torch.save([torch.zeros(2)], buffer)
        content = buffer.getvalue()
    checkpoint.write_bytes(content)
    images = make_class_tree(tmp_path / "new", {"Control": 2})
    assert _predict(tmp_path / "run", images, tmp_path) == 2
    line = _one_error_line(capsys)
    assert str(checkpoint) in line and expected in line


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path: Path):
    fitted = {"mean": np.arange(3.0), "weights": np.ones((3, 2)), "bias": np.zeros(2)}
    meta = {"run": np.int64(4), "seed": 7, "in_channels": np.int32(1), "recipe": {"lr": 1e-3}}
    path = tmp_path / "run-04-features.pt"
    results.save_checkpoint(path, fitted, meta)
    loaded = results.load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert {key: type(value) for key, value in loaded["state_dict"].items()} == dict.fromkeys(
        fitted, torch.Tensor
    )
    np.testing.assert_array_equal(loaded["state_dict"]["weights"].numpy(), fitted["weights"])
    assert (loaded["run"], loaded["in_channels"], loaded["recipe"]) == (4, 1, {"lr": 1e-3})
    assert type(loaded["run"]) is int


def test_an_experiment_with_a_baseline_saves_checkpoints_predict_can_open(tmp_path: Path):
    train = make_class_tree(tmp_path / "train", {"Control": 8, "Treated": 8})
    settings = ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "run"),
        runs=1,
        image_size=16,
        cache_dir=str(tmp_path / "cache"),
        baselines=("features",),
        recipes=(replace(REFERENCE, epochs=1, batch_size=8),),
    )
    out = Path(run_experiment(settings))
    saved = sorted((out / "models").glob("*.pt"))
    assert [p.name for p in saved] == ["run-00-features.pt", "run-00-reference.pt"]
    for path in saved:  # the strictest loader reads every file the experiment wrote
        torch.load(path, map_location="cpu", weights_only=True)
    assert _predict(out, train / "Control", tmp_path) == 0


# ---------------------------------------------------------------- resume
def _experiment(tmp_path: Path, train: Path, **changes) -> ExperimentSettings:
    """A tiny experiment (16 px, one epoch per run) on ``train``, tested on tmp_path/test,
    results in tmp_path/run."""
    test = tmp_path / "test"
    if not test.exists():
        make_class_tree(test, {"Control": 4, "Treated": 4}, seed=3)
    settings = ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "run"),
        tests=(("t", str(test)),),
        runs=2,
        image_size=16,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=1, batch_size=8),),
    )
    return replace(settings, **changes)


class _Messages(Observer):
    def __init__(self):
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_trains_again_a_run_whose_checkpoint_is_damaged(tmp_path: Path, damage: str):
    """Issue 17, point 13: a 0-byte checkpoint counted as a finished run."""
    train = make_class_tree(tmp_path / "train", {"Control": 8, "Treated": 8})
    settings = _experiment(tmp_path, train)
    out = Path(run_experiment(settings))
    runs_before = results.read_table(out / results.RUNS_FILE)
    damaged = out / "models" / "run-01.pt"
    damaged.write_bytes(b"" if damage == "empty" else damaged.read_bytes()[:-300])
    observer = _Messages()
    run_experiment(settings, resume=True, observer=observer)
    assert results.load_checkpoint(damaged)["run"] == 1  # trained again, loadable
    assert any(str(damaged) in m and "trained again" in m for m in observer.lines)
    runs = results.read_table(out / results.RUNS_FILE)
    assert [(r["run"], r["seed"]) for r in runs] == [(0, 0), (1, 1)]  # its old rows dropped
    assert runs[0] == runs_before[0]
    epochs = results.read_table(out / results.EPOCHS_FILE)
    assert sorted(r["run"] for r in epochs if r["split"] == "train") == [0, 1]


def _change_images(tmp_path: Path, change: str) -> None:
    if change == "added":
        make_class_tree(tmp_path / "train", {"Control": 3}, seed=8, offset=100)
    elif change == "edited":
        image = tmp_path / "train" / "Treated" / "Treated_002.png"
        write_png(image, np.full((32, 32), 7, dtype=np.uint8))
    elif change == "test":
        (tmp_path / "test" / "Control" / "Control_000.png").unlink()
    elif change == "normalisation":  # same files, but config.json says another scaling
        config = results.read_json(tmp_path / "run" / results.CONFIG_FILE)
        config["normalization"]["reference"]["high"] = [1.0]
        results.write_json(tmp_path / "run" / results.CONFIG_FILE, config)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("added", "training folder changed: 3 file(s) added to 'Control'"),
        ("edited", "training folder changed: files of 'Treated' edited, replaced or renamed"),
        ("test", "test set 't' changed: 1 file(s) removed from 'Control'"),
        ("normalisation", "normalisation of 'reference' changed"),
    ],
)
def test_resume_refuses_data_that_changed_and_names_the_change(tmp_path, capsys, change, named):
    """Issue 17, point 4: adding images and resuming trained the remaining runs on other
    data with a refitted normalisation, silently."""
    train = make_class_tree(tmp_path / "train", {"Control": 8, "Treated": 8})
    settings = _experiment(tmp_path, train, runs=1)
    out = Path(run_experiment(settings))  # as if interrupted after run 0 of 2
    config = results.read_json(out / results.CONFIG_FILE)
    assert config["in_channels"] == config["train"]["channels"] == 1
    assert config["train"]["fingerprint"]["classes"]["Control"]["n_files"] == 8
    _change_images(tmp_path, change)
    tables = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ExperimentError) as raised:
        run_experiment(replace(settings, runs=2), resume=True)
    assert str(raised.value).startswith(f"cannot resume {out}: {named}")
    argv = ["--quiet", "train", str(train), "--test", f"t={tmp_path / 'test'}", "--runs", "2"]
    argv += ["--image-size", "16", "--epochs", "1", "--batch-size", "8", "--resume"]
    assert main([*argv, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the folders' summaries
    assert last.startswith("cellclass: error: cannot resume") and named in last
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == tables


def test_resume_with_the_same_data_goes_on(tmp_path: Path):
    train = make_class_tree(tmp_path / "train", {"Control": 8, "Treated": 8})
    settings = _experiment(tmp_path, train, runs=1)
    out = Path(run_experiment(settings))
    run_experiment(replace(settings, runs=2), resume=True)
    assert [r["run"] for r in results.read_table(out / results.RUNS_FILE)] == [0, 1]


def test_config_records_the_command_line_and_the_chunk_budget(tmp_path, monkeypatch):
    """Issue 17, point 18: CELLCLASS_CHUNK_BYTES changes the weights; a resume under another
    budget says so."""
    train = make_class_tree(tmp_path / "train", {"Control": 8, "Treated": 8})
    settings = _experiment(tmp_path, train, runs=1)
    monkeypatch.setenv("CELLCLASS_CHUNK_BYTES", "123456")
    monkeypatch.setattr("sys.argv", ["/usr/bin/cellclass", "train", "my data", "--runs", "1"])
    out = Path(run_experiment(settings))
    config = results.read_json(out / results.CONFIG_FILE)
    assert config["command"] == "cellclass train 'my data' --runs 1"
    assert config["chunking"] == {
        "budget_bytes": 123456,
        "training_budget_bytes": 123456,
        "set_by": "CELLCLASS_CHUNK_BYTES=123456",
    }
    monkeypatch.setenv("CELLCLASS_CHUNK_BYTES", "0")
    observer = WarningObserver()
    with pytest.warns(UserWarning, match="trained with CPU chunks of 123456 bytes"):
        run_experiment(replace(settings, runs=2), resume=True, observer=observer)
    # a folder from before training had its own budget: its runs were trained in other chunks
    monkeypatch.setenv("CELLCLASS_CHUNK_BYTES", "123456")
    del config["chunking"]["training_budget_bytes"]
    results.write_json(out / results.CONFIG_FILE, config)
    with pytest.warns(UserWarning, match="this machine uses 123456 .training: 123456."):
        run_experiment(replace(settings, runs=3), resume=True, observer=observer)


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": -1}, "seed=-1: use 0 or more"),
        ({"runs": 0}, "runs=0: use 1 or more"),
        ({"control_runs": -1}, "control_runs=-1: use 0 or more"),
        ({"image_size": 4}, "image_size=4: use 8 or more"),
        ({"image_size": 20_000}, "image_size=20000: more pixels than the image limit"),
        ({"page": -1}, "page=-1: use 0 or more"),
        ({"train_sample": 0}, "train_sample=0: use 1 or more"),
        ({"channels": (0, -1)}, "channels=(0, -1): give 0-based channel indices"),
        ({"channels": ()}, "channels=(): give 0-based channel indices"),
        ({"cpus_per_run": 0}, "cpus_per_run=0: use more than 0"),
        ({"gpus_per_run": -0.5}, "gpus_per_run=-0.5: use 0 or more"),
        ({"val_split": float("nan")}, "val_split=nan: use 0 <= x < 1"),
        ({"group_by": "(field"}, "group_by='(field': not a regular expression"),
        ({"recipes": (replace(REFERENCE, epochs=0),)}, "recipe 'reference': epochs and batch_size"),
    ],
)
def test_every_setting_is_checked_before_anything_is_created(tmp_path, changes, message):
    """Issue 17, point 10: a negative seed failed after config.json was written, and the
    corrected rerun was then refused."""
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4})
    with pytest.raises(ExperimentError) as raised:
        run_experiment(_experiment(tmp_path, train, **changes))
    assert str(raised.value).startswith(message)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_the_command_line_prints_a_bad_setting_in_one_line(tmp_path: Path, capsys):
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4})
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--quiet", "train", str(train), "--out", str(out), "--cache-dir", str(cache)]
    assert main([*argv, "--seed", "-1"]) == 2
    assert _one_error_line(capsys) == "cellclass: error: --seed -1: use 0 or more"
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize("name", ["val", "train"])
def test_a_test_set_named_like_the_training_curves_is_refused(tmp_path, capsys, name: str):
    """Issue 17, point 11: ``--test val=...`` mixed test and validation curves."""
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4})
    test = make_class_tree(tmp_path / "other", {"Control": 2, "Treated": 2})
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--quiet", "train", str(train), "--test", f"{name}={test}", "--out", str(out)]
    assert main([*argv, "--cache-dir", str(cache)]) == 2
    line = _one_error_line(capsys)
    assert f"tests: '{name}'" in line and "another name" in line
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize(
    ("where", "parameter", "inside"),
    [
        ("train/run", "out", "the training folder"),
        ("train", "out", "the training folder"),
        ("train/Control/run", "out", "the training folder"),
        ("test/run", "out", "the folder of test set 't'"),
        ("train/cache", "cache_dir", "the training folder"),
    ],
)
def test_results_inside_an_image_folder_are_refused(tmp_path, capsys, where, parameter, inside):
    """Issue 17, point 16: ``--out`` inside the training folder was accepted; the next
    training read it as a class."""
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4})
    paths = {"out": tmp_path / "run", "cache_dir": tmp_path / "cache", parameter: tmp_path / where}
    settings = _experiment(tmp_path, train, **{key: str(path) for key, path in paths.items()})
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ExperimentError) as raised:
        run_experiment(settings)
    assert str(raised.value).startswith(f"{parameter} {tmp_path / where}: inside {inside}")
    assert sorted(tmp_path.rglob("*")) == before  # nothing created
    train_option = ["--quiet", "train", str(train), "--out", str(tmp_path / "train" / "run")]
    assert main(train_option) == 2
    assert "inside the training folder" in _one_error_line(capsys)
    assert sorted(tmp_path.rglob("*")) == before


# ---------------------------------------------------------------- huge images
def _tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A TIFF of ~150 bytes whose header claims width x height 8-bit pixels (deflate)."""
    data = zlib.compress(bytes(4096))
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1)]
    tags += [(273, 4, 8 + 2 + 12 * 9 + 4), (277, 3, 1), (278, 4, height), (279, 4, len(data))]
    entries = b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
    ifd = struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + data)
    return path


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG of ~70 bytes whose IHDR claims width x height 8-bit gray pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(bytes(100)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + idat + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    ("write", "width", "height"),
    [(_tiff_claiming, 20_000, 20_000), (_tiff_claiming, 100_000, 100_000)]
    + [(_png_claiming, 100_000, 100_000), (_png_claiming, 20_000, 20_000)],
)
@pytest.mark.parametrize("reader", [read_image, image_meta])
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(
    tmp_path: Path, write, width: int, height: int, reader
):
    """Issue 17, point 12: a 21 KB TIFF claiming 100000 x 100000 asked for 9.3 GiB."""
    path = write(tmp_path / "huge.img", width, height)
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as raised:
            reader(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # refused from the header: nothing of the claimed size allocated
    message = str(raised.value)
    assert message.startswith(f"{path}: {width} x {height} pixels is more than the limit")
    assert f"{MAX_IMAGE_PIXELS:,}" in message and MAX_PIXELS_VARIABLE in message


def test_the_pixel_limit_can_be_changed(tmp_path: Path, monkeypatch):
    path = make_class_tree(tmp_path, {"Control": 1}, size=32) / "Control" / "Control_000.png"
    tiff = _tiff_claiming(tmp_path / "image.tif", 32, 32)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, str(32 * 32 - 1))
    for image in (path, tiff):
        with pytest.raises(ImageReadError, match="32 x 32 pixels is more than the limit of 1,023"):
            read_image(image)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, str(32 * 32))
    assert read_image(path).shape == read_image(tiff).shape == (32, 32, 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_raising_the_pixel_limit_also_raises_pillows_own_guard(tmp_path: Path, monkeypatch, fmt):
    """Issue 17, point 12: PNG/JPEG/BMP above Pillow's guard (2 x its MAX_IMAGE_PIXELS, ~179 Mpx
    by default) could not be read even with the limit raised. Pillow's guard is shrunk here so
    that a 64 x 64 image stands for a huge one."""
    from PIL import Image

    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(path, format=fmt)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # refuses above 2,000 pixels
    with pytest.raises(ImageReadError, match="more than the limit|more pixels than Pillow"):
        monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1500")
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, str(64 * 64))  # the user raises the limit
    assert read_image(path).shape == (64, 64, 1)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own setting is left as it was


# ---------------------------------------------------------------- error messages
@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ValueError(""), "ValueError"),
        (ValueError("\n  \n"), "ValueError"),
        (FileNotFoundError("\nthe reason\n  ^ detail"), "the reason"),
    ],
)
def test_an_error_line_is_never_empty(monkeypatch, capsys, error: Exception, line: str):
    def fail(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "models", fail)
    assert main(["models"]) == 2
    assert _one_error_line(capsys) == f"cellclass: error: {line}"


# ---------------------------------------------------------------- CSV tables
FORMULA_TEXTS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]
ROUND_TRIP_TEXTS = ["'=quoted", "''", "'plain", "plain", "-1", "01", "-", "'"]


def test_csv_text_cells_never_become_spreadsheet_formulas(tmp_path: Path):
    texts = FORMULA_TEXTS + ROUND_TRIP_TEXTS
    rows = [
        {"run": k, "model": text, "true": "Control", "accuracy": -0.5, "p_=x": -1e-07}
        for k, text in enumerate(texts)
    ]
    path = tmp_path / "runs.csv"
    results.write_table(path, ["run", "model", "true", "accuracy", "p_=x"], rows[:5])
    results.append_rows(path, ["run", "model", "true", "accuracy", "p_=x"], rows[5:])
    with open(path, newline="") as handle:
        raw = list(csv.DictReader(handle))
    for row, text in zip(raw, texts, strict=True):
        assert row["model"] == ("'" + text if text in FORMULA_TEXTS else row["model"])
        assert (row["accuracy"], row["p_=x"], row["true"]) == ("-0.5", "-1e-07", "Control")
    assert [row["model"] for row in raw[len(FORMULA_TEXTS) :]] == [
        "''=quoted", "'''", "'plain", "plain", "-1", "01", "'-", "'"
    ]  # fmt: skip
    assert results.read_table(path) == rows  # text back exactly, numbers untouched


def test_manifest_paths_survive_the_formula_prefix(tmp_path: Path):
    manifest = tmp_path / "manifest.csv"
    row = {"path": "=Control/field-1.png", "source": "-field.tif"}
    results.write_table(manifest, ["path", "source"], [row])
    assert manifest.read_text().splitlines()[1] == "'=Control/field-1.png,'-field.tif"
    assert read_manifest_groups(manifest) == {"=Control/field-1.png": "-field.tif"}


# ---------------------------------------------------------------- figures
@pytest.mark.parametrize("class_names", [("$a$", "b"), ("$x^$", "cost $5 or $\\alpha$")])
def test_class_names_with_dollars_are_drawn_as_plain_text(tmp_path: Path, monkeypatch, class_names):
    drawn = []  # (text, is_math) of every text matplotlib lays out
    original = Text._preprocess_math

    def record(self, text):
        result = original(self, text)
        drawn.append(result)
        return result

    monkeypatch.setattr(Text, "_preprocess_math", record)
    path = confusion_figure(np.array([[3, 1], [0, 2]]), class_names, tmp_path / "confusion.png")
    images = np.zeros((2, 16, 16, 1), dtype=np.float32)
    preview_grid(images, list(class_names), tmp_path / "preview.png")
    assert path.is_file() and (tmp_path / "preview.png").is_file()
    assert {text for text, _ in drawn} >= set(class_names)  # verbatim, "$" included
    assert [text for text, is_math in drawn if is_math] == []


# ---------------------------------------------------------------- blinded scoring server
def test_blind_serve_on_a_busy_port_creates_nothing(tmp_path: Path, capsys):
    tree = write_blind_tree(tmp_path / "test")
    db, cache = tmp_path / "scores.sqlite", tmp_path / "cache"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        argv = ["blind", "serve", str(tree), "--db", str(db), "--port", str(port)]
        assert main([*argv, "--cache-dir", str(cache)]) == 2
    assert not db.exists() and not cache.exists()  # checked before anything was made
    line = _one_error_line(capsys)
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_file_names_of_different_test_sets_never_collide():
    """Issue 17, point 17: test sets "a b" and "a-b" used to write the same figure files."""
    from cellclass.results import file_slug

    names = ["a b", "a-b", "a/b", "a_b", "A B", "a  b"]
    slugs = [file_slug("badger", name) for name in names]
    assert len(set(slugs)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", s) for s in slugs)
    assert file_slug("heldout", "alice") == "heldout-alice"  # safe names stay readable


def test_a_foreign_checkpoint_is_named_not_averaged(tmp_path):
    """Issue 17, point 5: a checkpoint from an experiment with other classes used to be
    averaged in (or fail with "all input arrays must have the same shape")."""
    import shutil

    from cellclass.predict import predict_paths

    ours = make_class_tree(tmp_path / "ours", {"Control": 6, "Treated": 6})
    theirs = make_class_tree(tmp_path / "theirs", {"A": 6, "B": 6, "C": 6})
    base = dict(runs=1, image_size=32, val_split=0, cache_dir=str(tmp_path / "cache"))
    recipe = (replace(REFERENCE, epochs=1),)
    out = run_experiment(
        ExperimentSettings(train_dir=str(ours), out=str(tmp_path / "a"), recipes=recipe, **base)
    )
    other = run_experiment(
        ExperimentSettings(train_dir=str(theirs), out=str(tmp_path / "b"), recipes=recipe, **base)
    )
    shutil.copy(other / "models" / "run-00.pt", out / "models" / "run-07.pt")
    with pytest.raises(ValueError, match=r"run-07\.pt: class_names .* another experiment"):
        predict_paths(out, [ours])


@pytest.mark.parametrize(
    ("flag", "where", "expected"),
    [
        ("--out", "afile", "--out {tmp}/afile is a file; give a folder for the results"),
        ("--out", "afile/run", "--out {tmp}/afile/run: {tmp}/afile is not a folder"),
        (
            "--cache-dir",
            "afile/cache",
            "--cache-dir {tmp}/afile/cache: {tmp}/afile is not a folder",
        ),
    ],
)
def test_an_output_that_cannot_be_a_folder_is_one_line_before_any_decoding(
    tmp_path, capsys, monkeypatch, flag, where, expected
):
    """Issue 17, point 9: ``--out`` naming a file ended in a NotADirectoryError traceback."""
    train = make_class_tree(tmp_path / "train", {"Control": 4, "Treated": 4})
    (tmp_path / "afile").write_text("mine")
    paths = {"--out": str(tmp_path / "run"), "--cache-dir": str(tmp_path / "cache")}
    paths[flag] = str(tmp_path / where)
    monkeypatch.setattr("cellclass.training.experiment.prepare_data", _never_called)
    argv = ["--quiet", "train", str(train), "--out", paths["--out"]]
    assert main([*argv, "--cache-dir", paths["--cache-dir"]]) == 2
    assert _one_error_line(capsys) == f"cellclass: error: {expected.format(tmp=tmp_path)}"
    assert (tmp_path / "afile").read_text() == "mine"


def _never_called(*args, **kwargs):
    raise AssertionError("images were decoded before the output folder was checked")
