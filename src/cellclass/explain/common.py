"""Shared parts of the explain step: the results folder's runs and images, output entries,
image sampling, a saved run's logits.

Used by `cellclass.explain.step` (attribution maps) and `cellclass.explain.probe_step` (probes), so
neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cellclass import results
from cellclass.data.cache import load_store
from cellclass.data.datasets import load_dataset
from cellclass.data.normalization import Normalization
from cellclass.data.preprocessing import Preprocessing, preprocessing_from_dict
from cellclass.predict import SavedRun, collect_images, load_runs
from cellclass.training import ExperimentSettings, run_splits
from cellclass.training.augment import tta_probabilities
from cellclass.training.train import Split, gather_batch

__all__ = [
    "CPU",
    "ExplainFolder",
    "Outputs",
    "balanced_rows",
    "figure_entry",
    "open_folder",
    "load_path_split",
    "split_logits",
    "load_test_splits",
    "load_training_splits",
]

CPU = torch.device("cpu")  # the explain step runs on the CPU, where the loaded runs live


@dataclass(frozen=True)
class Outputs:
    figures: list[dict] = field(default_factory=list)  # {"file" (relative), "title", "caption"}
    notes: list[str] = field(default_factory=list)  # findings and things left out, one line each


def figure_entry(
    out: Path, path: Path, title: str, caption: str, *, dataset: str | None = None
) -> dict:
    """A figure of the explain folder ``out``: path relative to it, title, caption, and the
    test set it belongs to (None for figures about the whole experiment)."""
    relative = str(Path(path).relative_to(out))
    return {"file": relative, "title": title, "caption": caption, "dataset": dataset}


def balanced_rows(labels: np.ndarray, n_images: int, *, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n_images`` positions drawn at random, classes taking turns, sorted by class.

    labels : (N,) int; -1 (unknown) counts as a class of its own.
    Returns (M,) int64 positions, M = min(n_images, N).
    """
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(n_images, len(labels)):
        for pool in pools:
            if pool and len(chosen) < n_images:
                chosen.append(int(pool.pop()))
    return np.array(sorted(chosen, key=lambda i: (labels[i], i)), dtype=np.int64)


@torch.no_grad()
def split_logits(saved: SavedRun, split: Split, norm: Normalization, *, batch_size: int = 64):
    """(N, K) float32 logits of a saved run on every image of ``split``, on the CPU.

    As the run was evaluated: with test-time augmentation when its recipe uses it (then the
    log of the averaged probabilities). Unlike `cellclass.training.train.predict_logits` (inference
    mode), this leaves the model usable for the gradients of attribution maps and FGSM.
    """
    chunks = []
    for start in range(0, len(split.indices), batch_size):
        x = gather_batch(
            split, np.arange(start, min(start + batch_size, len(split.indices))), norm, CPU
        )  # (B, C, H, W)
        if saved.uses_tta:
            chunks.append(torch.log(tta_probabilities(saved.model, x).clamp_min(1e-12)))
        else:
            chunks.append(saved.model(x))  # (B, K)
    return torch.cat(chunks).float().numpy()


@dataclass(frozen=True)
class ExplainFolder:
    run_dir: Path  # the results folder
    out: Path  # where the explain outputs go
    config: dict  # config.json
    prep: Preprocessing  # fitted preprocessing of the experiment
    runs: list[SavedRun]  # every saved (non-control) run, sorted by run number
    cache_dir: Path | None  # decoded-pixel cache the experiment used


def open_folder(run_dir: Path, out_dir: str | Path | None) -> ExplainFolder:
    """Read config.json and load the saved runs; ``out_dir`` None means ``run_dir/explain``."""
    config_path = run_dir / results.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no config.json; is it a `cellclass train` results folder?"
        )
    config = results.read_json(config_path)
    cache = config.get("settings", {}).get("cache_dir")
    out = Path(out_dir) if out_dir is not None else run_dir / "explain"
    prep = preprocessing_from_dict(config["preprocessing"])
    return ExplainFolder(
        run_dir, out, config, prep, load_runs(run_dir), Path(cache) if cache else None
    )


def load_test_splits(
    folder: ExplainFolder, names: tuple[str, ...], notes: list[str]
) -> list[Split]:
    """The test sets of config.json (or those named) as splits; gone folders become notes."""
    tests = folder.config.get("tests", {})
    unknown = [name for name in names if name not in tests]
    if unknown:
        raise ValueError(
            f"test set {unknown[0]!r}: not in {folder.run_dir}; it has {', '.join(tests) or 'none'}"
        )
    splits = []
    for name in names or tuple(tests):
        try:
            data = _load_folder(folder, name, tests[name]["path"])
        except (OSError, ValueError) as error:  # folder moved, changed or unreadable
            notes.append(f"Test set {name} left out: {str(error).splitlines()[0]}")
            continue
        splits.append(Split(name, data.store, np.arange(len(data.labels)), data.labels))
    return splits


def _load_folder(folder: ExplainFolder, name: str, path: str, group_by: str | None = None):
    settings = folder.config.get("settings", {})
    return load_dataset(
        name,
        path,
        folder.prep,
        class_names=tuple(folder.config["class_names"]),
        group_by=group_by,
        skip_bad=bool(settings.get("skip_bad_images")),
        cache_dir=str(folder.cache_dir) if folder.cache_dir else None,
    )


def load_path_split(folder: ExplainFolder, paths) -> Split:
    """Images named on the command line; the class is the parent folder's name when known."""
    images, _ = collect_images(list(paths))
    store = load_store(images, folder.prep, cache_dir=folder.cache_dir)
    index = {name: i for i, name in enumerate(folder.config["class_names"])}
    labels = np.array([index.get(path.parent.name, -1) for path in store.paths], dtype=np.int64)
    return Split("images", store, np.arange(len(labels)), labels)


def load_training_splits(
    folder: ExplainFolder, notes: list[str]
) -> tuple[Split | None, dict[int, Split]]:
    """The first run's training split (confound probe) and every run's validation split."""
    saved = folder.config.get("settings", {})
    try:
        path = folder.config.get("train", {}).get("path") or saved["train_dir"]  # absolute
        train = _load_folder(folder, "train", path, saved.get("group_by"))
    except (OSError, ValueError, KeyError) as error:
        notes.append(f"Calibration and confound probe left out: training folder: {error}")
        return None, {}
    settings = ExperimentSettings(
        train_dir=saved["train_dir"],
        out=str(folder.run_dir),
        val_split=float(saved.get("val_split", 0.2)),
        train_sample=saved.get("train_sample"),
    )
    fit_rows, val_splits = None, {}
    for run in folder.runs:
        rows, val = run_splits(train, settings, run.meta["seed"])
        fit_rows = rows if fit_rows is None else fit_rows
        if len(val):
            val_splits[run.run] = Split("val", train.store, val, train.labels[val])
    return Split("train", train.store, fit_rows, train.labels[fit_rows]), val_splits
