"""The results folder: tidy CSV tables, config.json and model checkpoints.

::

    runs/<name>/
      config.json        every setting, class map, seeds, package versions, machine
      runs.csv           run, seed, model, dataset, accuracy, loss, ece, n_images, seconds, control
      epochs.csv         run, model, epoch, split, loss, accuracy, seconds, control
      predictions.csv    run, model, dataset, path, true, predicted, confidence, control, p_<cls>
      models/run-NN.pt   weights + class map + preprocessing (control-NN.pt: shuffled labels)

``control`` is 1 for runs trained on shuffled labels (``--control-runs``), else 0; they are
numbered after the real runs (runs 0-11 real, 12-13 control), so ``run`` and ``model`` name one
run. (Folders written before 2026-12 numbered control runs from 0: ``control`` tells them
apart there.) A run's
``seconds`` (wall time of training and every evaluation) is on its first runs.csv row only, the
others leave it empty, so a sum over the table counts each run once (`run_seconds`).

Every write is atomic (temporary file + rename). A run counts as finished when its checkpoint
loads (an empty or truncated file does not count); rows of unfinished runs are dropped when an
experiment resumes, so the tables never hold half a run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import pickle
import platform
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

import cellclass
from cellclass._files import atomic_write_bytes, atomic_write_text
from cellclass.csv_cells import escape_cell, unescape_cell

CONFIG_FILE = "config.json"  # every setting, class map, seeds, versions, machine
RUNS_FILE = "runs.csv"  # one row per run and test set
EPOCHS_FILE = "epochs.csv"  # one row per run, epoch and split
PREDICTIONS_FILE = "predictions.csv"  # one row per run and test image
REPORT_FILE = "report.html"  # the self-contained report
CALIBRATION_FILE = "calibration.json"  # temperatures `cellclass explain` fitted, per run

RUNS_COLUMNS = [
    "run",
    "seed",
    "model",
    "dataset",
    "accuracy",
    "loss",
    "ece",
    "n_images",
    "seconds",
    "control",
    "epoch",
    "collapsed",  # 1: the run's training accuracy never left chance (constant output)
]
EPOCHS_COLUMNS = ["run", "model", "epoch", "split", "loss", "accuracy", "seconds", "control"]
PREDICTION_COLUMNS = [
    "run",
    "model",
    "dataset",
    "path",
    "true",
    "predicted",
    "confidence",
    "control",
]


def file_slug(*names: str) -> str:
    """A file-name-safe join of names: ("badger", "test_A") -> "badger-test_A".

    Characters other than letters, digits, ``_`` and ``.`` become ``-``; when that changed a
    name, a short digest of the original names is appended ("test A" -> "test-A-1b0e7d"), so
    names that differ only there ("a b", "a-b") never share a file.
    """
    parts = [re.sub(r"[^A-Za-z0-9_.]+", "-", str(name)).strip("-.") or "x" for name in names]
    text = "-".join(parts)
    if parts != [str(name) for name in names]:
        digest = hashlib.sha1("\0".join(map(str, names)).encode()).hexdigest()[:6]
        text = f"{text}-{digest}"
    return text


def update_config(run_dir: str | os.PathLike, changes: dict) -> dict:
    """Merge ``changes`` into a results folder's config.json (top-level keys; dicts merged one
    level deep) and write it atomically; returns the new config. The one way config.json is
    changed after the experiment wrote it (`evaluate` adds test sets, `compare` the expert)."""
    path = Path(run_dir) / CONFIG_FILE
    config = read_json(path)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    write_json(path, config)
    return config


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def load_temperatures(run_dir: str | os.PathLike) -> dict[tuple[int, str], float]:
    """(run, model) -> fitted temperature, from ``calibration.json``; {} when there is none.

    Use as ``softmax(logits, temperature=temperatures.get((run, model), 1.0))``; the keys
    match the ``run`` and ``model`` columns of runs.csv. ``cellclass explain`` writes the file
    (`cellclass.explain.probes.write_calibration`).
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return {}
    try:
        entries = read_json(path)["runs"]
        temperatures = {(int(e["run"]), str(e["model"])): float(e["temperature"]) for e in entries}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not a calibration file ({error}); delete it and run `cellclass explain`"
        ) from None
    bad = [key for key, t in temperatures.items() if not (np.isfinite(t) and t > 0)]
    if bad:
        raise ValueError(f"{path}: run {bad[0][0]} ({bad[0][1]}) has a non-positive temperature")
    return temperatures


def _format(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return escape_cell(str(value))


def write_table(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write ``rows`` (dicts) as a CSV with ``columns``, atomically.

    Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return: class names and file names come from other people's
    folders) get a leading ``'`` (`cellclass.csv_cells`); numbers such as -0.5 never do.
    `read_table` removes the prefix again.
    """
    buffer = io.StringIO()
    plain = csv.writer(buffer, lineterminator="\n")
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    lines = [columns] + [[_format(row.get(key, "")) for key in columns] for row in rows]
    for cells in lines:  # the header too: a class folder's name may hold a "\r" (p_<class>)
        # Python < 3.13 leaves a "\r" unquoted when lines end in "\n": quote such rows fully
        (quoted if any("\r" in cell for cell in cells) else plain).writerow(cells)
    atomic_write_text(path, buffer.getvalue())


FLAG_COLUMNS = frozenset({"control", "collapsed"})  # 0/1 columns: empty reads as 0
NUMERIC_COLUMNS = frozenset(
    {
        "run",
        "seed",
        "epoch",
        "accuracy",
        "loss",
        "ece",
        "n_images",
        "seconds",
        "control",
        "collapsed",
        "confidence",
        "agreement",
        "n_runs",
        "correct",
        "response_ms",
        "is_repeat",
        "position",  # blinded-scoring answers
    }
)  # other columns (class names, paths, model labels) stay text, so a class "01" stays "01"


def read_table(path: Path) -> list[dict]:
    """Rows of a CSV as dicts; numeric columns (and ``p_<class>``) converted to int/float.

    Columns are typed by name, not by content, so a class called "01" stays "01". An empty
    numeric cell reads as NaN, or 0 for the 0/1 flags (`FLAG_COLUMNS`: a run written before
    a flag existed is not a control run). Text cells are returned as they were given to
    `write_table` (its spreadsheet-safety ``'`` prefix removed). A missing file is an empty
    table.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [
            {key: _cell(key, value) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


def _cell(column: str, text):
    if not isinstance(text, str):  # None for a short row, a list for a long one
        return text
    text = unescape_cell(text)
    if not _is_numeric(column):
        return text
    if not text:  # a column added after this row was written, or a value not measured
        return 0 if column in FLAG_COLUMNS else math.nan
    return _parse(text)


def _is_numeric(column: str) -> bool:
    return column in NUMERIC_COLUMNS or column.startswith("p_")


def _parse(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            continue
    return text


def run_seconds(run_rows: list[dict]) -> dict[tuple[str, int, int], float]:
    """{(model, run, control): wall seconds of the whole run} from runs.csv rows.

    Each run's first row with a number counts: runs.csv holds it on the run's first row only
    (tables written before that repeated it on every test-set row; rows added by `evaluate`
    have none). Runs without a number are left out.
    """
    seconds: dict[tuple[str, int, int], float] = {}
    for row in run_rows:
        key = (str(row["model"]), int(row["run"]), int(bool(row.get("control") or 0)))
        value = row.get("seconds", math.nan)
        if key not in seconds and isinstance(value, int | float) and math.isfinite(value):
            seconds[key] = float(value)
    return seconds


def append_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Add rows to a table (rewritten atomically; tables stay small enough for this)."""
    existing = read_table(path)
    write_table(path, _union_columns(columns, existing), existing + rows)


def _union_columns(columns: list[str], rows: list[dict]) -> list[str]:
    out = list(columns)
    for row in rows[:1]:
        out += [key for key in row if key not in out]
    return out


def prediction_columns(class_names: tuple[str, ...]) -> list[str]:
    return PREDICTION_COLUMNS + [f"p_{name}" for name in class_names]


def checkpoint_path(
    run_dir: Path, run: int, model: str, *, models: tuple[str, ...], control: bool = False
) -> Path:
    """``models/run-NN.pt`` (``control-NN.pt`` for control runs); with several models in one
    experiment the model name is appended: ``models/run-NN-<model>.pt``."""
    suffix = f"-{model}" if len(models) > 1 else ""
    kind = "control" if control else "run"
    return Path(run_dir) / "models" / f"{kind}-{run:02d}{suffix}.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated, foreign or unsafe."""


def save_checkpoint(path: Path, model: torch.nn.Module | dict, meta: dict) -> None:
    """Weights + everything needed to use them again (class map, preprocessing, model name).

    model : a network, or the arrays of a fitted classical baseline (a dict).

    Only tensors and plain Python values are written (numpy arrays become tensors, numpy
    scalars Python numbers), so `load_checkpoint` can read the file without unpickling objects.
    """
    state = _plain(model) if isinstance(model, dict) else model.state_dict()
    buffer = io.BytesIO()
    torch.save({"state_dict": state, **_plain(meta)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _plain(value):
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


_UNREADABLE = (
    RuntimeError,  # not a zip archive, truncated archive
    EOFError,  # empty or cut-off pickle
    OSError,  # unreadable file, a folder
    ValueError,
    KeyError,  # an archive without the expected members
    IndexError,
    TypeError,
    AttributeError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `save_checkpoint`, loaded without running any code from it.

    Results folders are shared between labs, and unpickling an arbitrary object can run any
    command, so only tensors and plain Python values are accepted
    (``torch.load(weights_only=True)``).

    Raises
    ------
    CheckpointError
        One line naming the file: it holds other Python objects (refused, nothing of it ran),
        or it is truncated, empty, not a checkpoint, or unreadable.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"{path}: refused: it holds a Python object ({unsafe.group(1)}) besides tensors "
                "and plain values, which could run code when opened; nothing of it was run"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable cellclass checkpoint ({_first_line(error)}); "
            "it may be truncated or damaged: copy it again or retrain that run"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a cellclass checkpoint (no weights found in it)")
    return checkpoint


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def software_versions() -> dict:
    import matplotlib
    import PIL
    import tifffile

    return {
        "cellclass": cellclass.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "tifffile": tifffile.__version__,
        "matplotlib": matplotlib.__version__,
    }


def machine_info(device: str) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def drop_unfinished(run_dir: Path, finished: set[tuple[int, str, int]]) -> None:
    """Remove rows of runs whose checkpoint is missing or unusable (such a run is redone).

    finished : (run, model, control) of every run whose checkpoint loads.
    """
    for name, columns in (
        (RUNS_FILE, RUNS_COLUMNS),
        (EPOCHS_FILE, EPOCHS_COLUMNS),
        (PREDICTIONS_FILE, PREDICTION_COLUMNS),
    ):
        path = Path(run_dir) / name
        rows = read_table(path)
        kept = [r for r in rows if _run_key(r) in finished]
        if len(kept) != len(rows):
            write_table(path, _union_columns(columns, rows), kept)


def _run_key(row: dict) -> tuple[int, str, int]:
    return int(row["run"]), str(row["model"]), int(row.get("control") or 0)
