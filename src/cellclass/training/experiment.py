"""Many training runs from scratch over one training folder, evaluated on several test folders.

`run_experiment` is the whole study in one call: scan and verify the folders, decode them once
into pixel stores, fit the normalisation on the training folder, then train ``runs`` models per
recipe (run k seeded with ``seed + k``; every recipe gets the same seeds and the same splits),
writing every finished run to the results folder at once. An interrupted experiment resumes
from the runs it finished (``resume=True``).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.data.cache import PixelStore, read_rows, sample_pixels
from cellclass.data.datasets import (
    Dataset,
    dataset_info,
    fingerprint_changes,
    load_dataset,
    pixel_size_mismatch,
)
from cellclass.data.normalization import Normalization, fit_normalization
from cellclass.data.preprocessing import Preprocessing, preprocessing_to_dict
from cellclass.inspection.dataset import brightness_confounds, find_leakage, leakage_message
from cellclass.models.baselines import BaselineSettings
from cellclass.progress import Observer
from cellclass.training.baseline_runs import run_baseline_jobs
from cellclass.training.chunks import chunk_setting
from cellclass.training.executors import run_jobs
from cellclass.training.jobs import ExperimentData, experiment_jobs
from cellclass.training.recipes import Recipe
from cellclass.training.records import finished_jobs, jsonable
from cellclass.training.settings import (
    ExperimentError,
    ExperimentSettings,
    check_settings,
    experiment_modes,
    normalization_mode,
)
from cellclass.training.train import autocast_dtype, resolve_device

RESUMABLE_CHANGES = (  # where and how fast runs are computed; anything else changes results
    "out",
    "runs",
    "control_runs",
    "strict",
    "executor",
    "jobs",
    "ray_address",
    "cpus_per_run",
    "gpus_per_run",
    "test_every",
    "cache_dir",
)


def prepare_data(settings: ExperimentSettings, observer: Observer) -> ExperimentData:
    """Load training and test folders and fit each recipe's normalisation on the training
    pixels."""
    modes = experiment_modes(settings)
    prep = Preprocessing(
        settings.image_size, settings.channels, settings.page, Normalization(modes[0])
    )
    options = {
        "group_by": settings.group_by,
        "skip_bad": settings.skip_bad_images,
        "cache_dir": settings.cache_dir,
        "observer": observer,
    }
    train = load_dataset("train", settings.train_dir, prep, **options)
    if len(np.unique(train.labels)) < 2:
        raise ExperimentError(f"{settings.train_dir}: fewer than two classes have readable images")
    sample = sample_pixels(train.store)
    preps = {
        mode: replace(
            prep,
            normalization=fit_normalization(
                mode,
                sample,
                bit_depth=train.store.bit_depth,
                percentiles=prep.normalization.percentiles,
            ),
        )
        for mode in modes
    }
    tests = []
    for name, folder in settings.tests:
        test = load_dataset(name, folder, prep, class_names=train.index.class_names, **options)
        if test.store.channels != train.store.channels:
            raise ExperimentError(
                f"{folder}: images have {test.store.channels} channel(s) but the training images "
                f"have {train.store.channels}; pick matching channels with channels="
            )
        for missing in test.index.missing_classes:
            observer.message(f"warning: test set {name!r} has no {missing!r} folder")
        if mismatch := pixel_size_mismatch(name, test.pixel_size_um, train.pixel_size_um):
            observer.message(mismatch)
        tests.append(test)
    return ExperimentData(train, tuple(tests), preps)


def check_leakage(
    train: Dataset, tests: list[Dataset], settings: ExperimentSettings, observer: Observer
) -> list[list[str]]:
    """Exact or near-duplicate images shared by training and test folders, as path pairs.

    Warns through ``observer``; with ``settings.strict`` any pair stops the experiment.
    """
    pairs = find_leakage(train.index, [t.index for t in tests], page=settings.page)
    if pairs and settings.strict:
        raise ExperimentError(f"{leakage_message(pairs)}; or run with strict=False")
    if pairs:
        observer.message(f"warning: {leakage_message(pairs)}")
    return [[str(pair.first), str(pair.second)] for pair in pairs]


def check_confounds(train: Dataset, observer: Observer) -> list[str]:
    """Training classes that a model can tell apart by mean brightness alone, one line each.

    Per image, the mean of its decoded pixels (model size, before any scaling); classes are
    compared as `cellclass.inspection.brightness_confounds` does. Warns through ``observer``.
    """
    means = _image_means(train.store)
    classes = []
    for label, name in enumerate(train.index.class_names):
        values = means[train.labels == label]
        if len(values):
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            classes.append((name, float(values.mean()), sd))
    lines = brightness_confounds(classes)
    for line in lines:
        observer.message(f"warning: training folder: {line}")
    return lines


def _image_means(
    store: PixelStore,
    chunk: int = 256,  # pragma: no mutate (tuning: memory only, any chunk gives the same)
) -> np.ndarray:
    """(N,) float64 mean of each stored image, read ``chunk`` images at a time by `read_rows`.

    Indexing the memory map image by image made the whole cache file resident: 2.7 GB peak for
    10,000 images of 256 px (benchmarks/bench_memory.py), against 1.5 GB allowed.
    """
    n, means = len(store.pixels), np.zeros(len(store.pixels))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        means[rows] = read_rows(store, rows).reshape(len(rows), -1).mean(axis=1, dtype=np.float64)
    return means


def _check_output(out: Path, settings: ExperimentSettings, resume: bool) -> None:
    config = out / results.CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"out={out} is a file; give a folder for the results")
    for name, folder in (("out", out), ("cache_dir", settings.cache_dir)):
        if folder:
            _check_writable(name, Path(folder))
    if resume:
        if not config.is_file():
            raise ExperimentError(f"resume=True: {out} holds no experiment (no config.json)")
        saved = _flatten(results.read_json(config)["settings"])
        now = _flatten(jsonable(asdict(settings)))
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise ExperimentError(
                f"resume=True: settings differ from the saved experiment in {', '.join(changed)}; "
                "resume with the original settings or choose a new out="
            )
    elif out.exists() and any(out.iterdir()):
        raise ExperimentError(
            f"{out} already exists; choose a new out=, or pass resume=True to continue it"
        )


def _check_writable(name: str, folder: Path) -> None:
    """Fail before decoding anything when ``folder`` (made or not yet) cannot be written."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ExperimentError(f"{name}={folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExperimentError(f"{name}={folder}: {existing} is not writable; choose another folder")


def check_same_data(out: Path, settings, data: ExperimentData, observer: Observer) -> None:
    """Refuse to resume ``out`` when its images or any recipe's fitted normalisation differ
    from those it was started with: the remaining runs would train on other data.

    Raises
    ------
    ExperimentError
        Naming what changed ("training folder changed: 3 file(s) added to 'Control'").
    """
    config = results.read_json(out / results.CONFIG_FILE)
    folders = [("training folder", config.get("train", {}), data.train)]
    folders += [
        (f"test set {t.name!r}", config.get("tests", {}).get(t.name, {}), t) for t in data.tests
    ]
    changes = []
    for what, saved, dataset in folders:
        if "fingerprint" not in saved:
            observer.message(
                f"warning: {out} records no fingerprint of its {what} (made by an older "
                "cellclass): the files cannot be checked against it"
            )
            continue
        found = fingerprint_changes(saved["fingerprint"], dataset.fingerprint)
        if found:
            changes.append(f"{what} changed: {', '.join(found)}")
    saved_norm = config.get("normalization", {})
    for label, norm in _normalizations(settings, data).items():
        if label in saved_norm and saved_norm[label] != norm:
            changes.append(f"normalisation of {label!r} changed (refitted on the training pixels)")
    chunking, here = config.get("chunking"), chunk_setting()
    budgets = ("budget_bytes", "training_budget_bytes")  # older folders lack the second
    if chunking and any(chunking.get(key) != here[key] for key in budgets):
        observer.message(
            f"warning: {out} was trained with CPU chunks of {chunking['budget_bytes']} bytes "
            f"({chunking['set_by']}), this machine uses {here['budget_bytes']} (training: "
            f"{here['training_budget_bytes']}): the remaining runs' weights will differ "
            f"slightly from what the same seeds gave there"
        )
    if changes:
        raise ExperimentError(
            f"cannot resume {out}: {'; '.join(changes)}; resume with the files it was started "
            "with, or start a new results folder"
        )


def _normalizations(settings: ExperimentSettings, data: ExperimentData) -> dict:
    """Each recipe's and baseline's fitted normalisation, as config.json records it."""
    trained = list(settings.recipes) + [BaselineSettings(name=b) for b in settings.baselines]
    return {
        t.label: jsonable(asdict(data.prep(normalization_mode(settings, t)).normalization))
        for t in trained
    }


def _flatten(settings: dict, prefix: str = "") -> dict:
    """{"recipes": [{"epochs": 9}]} -> {"recipes.0.epochs": 9}: every setting by its path."""
    flat = {}
    items = settings.items() if isinstance(settings, dict) else enumerate(settings)
    for key, value in items:
        if isinstance(value, dict | list) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_config(out: Path, settings, data: ExperimentData, *, leakage=(), confounds=()) -> None:
    train, tests = data.train, data.tests
    prep = data.prep(experiment_modes(settings)[0])
    config = {
        "cellclass_version": results.software_versions()["cellclass"],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": jsonable(asdict(settings)),
        "seeds": [settings.seed + k for k in range(settings.runs)],
        "models": [recipe.label for recipe in settings.recipes],
        "class_names": list(train.index.class_names),
        "train": dataset_info(train),  # counts, channels and the files' fingerprint
        "tests": {t.name: dataset_info(t) for t in tests},
        "in_channels": train.store.channels,  # the models' input channels
        "preprocessing": jsonable(preprocessing_to_dict(prep)),  # the first recipe's
        # per recipe: its own, or the one the user chose for all; a resume must refit the same
        "normalization": _normalizations(settings, data),
        "versions": results.software_versions(),
        "machine": results.machine_info(str(resolve_device(settings.device))),
        "precision": {  # training autocast per recipe, as "auto" chose it on this machine
            recipe.label: _precision_name(settings, recipe) for recipe in settings.recipes
        },
        "chunking": chunk_setting(),  # CPU forward-pass chunks: they change the sums
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),  # as it was run
        "leakage": list(leakage),
        "confounds": list(confounds),  # training classes told apart by brightness alone
    }
    results.write_json(out / results.CONFIG_FILE, config)


def _precision_name(settings: ExperimentSettings, recipe: Recipe) -> str:
    dtype = autocast_dtype(settings.precision, resolve_device(settings.device), recipe.model)
    return "bf16 autocast (training)" if dtype is not None else "fp32"


def run_experiment(
    settings: ExperimentSettings, *, resume: bool = False, observer: Observer | None = None
) -> Path:
    """Train and evaluate every run of the experiment; returns the results folder.

    Raises
    ------
    ExperimentError, FolderError, BadImagesError
        Bad settings or data, found before any training starts.
    """
    observer = observer or Observer()
    check_settings(settings)
    if settings.cache_dir:  # stored absolute: `report` run from elsewhere finds the same cache
        settings = replace(settings, cache_dir=str(Path(settings.cache_dir).expanduser().resolve()))
    out = Path(settings.out).expanduser().resolve()
    _check_output(out, settings, resume)
    data = prepare_data(settings, observer)
    if resume:
        check_same_data(out, settings, data, observer)
    leakage = check_leakage(data.train, list(data.tests), settings, observer)
    confounds = check_confounds(data.train, observer)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, settings, data, leakage=leakage, confounds=confounds)
    jobs = experiment_jobs(settings)
    done, unusable = finished_jobs(out, jobs, settings)
    for line in unusable:
        observer.message(f"warning: {line}; that run is trained again")
    results.drop_unfinished(out, {(j.run, j.recipe.label, int(j.control)) for j in done})
    if done:
        observer.message(f"resuming: {len(done)} of {len(jobs)} runs already finished")
    todo = [job for job in jobs if job not in done]
    cnn = [job for job in todo if isinstance(job.recipe, Recipe)]
    run_jobs(cnn, settings, data, out, observer, load=prepare_data)
    classical = [job for job in todo if not isinstance(job.recipe, Recipe)]
    if classical:
        run_baseline_jobs(classical, settings, data, out, observer)
    return out
