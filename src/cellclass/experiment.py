"""Many training runs from scratch over one training folder, evaluated on several test folders.

`run_experiment` is the whole study in one call: scan and verify the folders, decode them once
into pixel stores, fit the normalisation on the training folder, then train ``runs`` models
(run k seeded with ``seed + k``), writing every finished run to the results folder at once.
An interrupted experiment resumes from the runs it finished (``resume=True``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.cache import (
    PixelStore,
    Preprocessing,
    load_store,
    preprocessing_to_dict,
    sample_pixels,
)
from cellclass.folders import FolderIndex, grouped_split, scan_folder
from cellclass.images import fit_normalization
from cellclass.metrics import (
    empirical_p_value,
    expected_calibration_error,
    softmax,
    summarize,
)
from cellclass.train import EpochRecord, RunResult, Split, TrainSettings, resolve_device, train_run


class ExperimentError(ValueError):
    """The experiment cannot start or resume; the message says what to change."""


@dataclass(frozen=True)
class ExperimentSettings:
    train_dir: str  # one subfolder per class
    out: str  # results folder; never overwritten (resume continues it)
    tests: tuple[tuple[str, str], ...] = ()  # (name, folder) test sets, evaluated every epoch
    runs: int = 12  # trainings from scratch; run k is seeded with seed + k
    seed: int = 0  # seed of run 0
    val_split: float = 0.2  # fraction of training images (whole source groups) held out per run
    train_sample: int | None = None  # study protocol: each run trains on a fresh draw of N images
    group_by: str | None = None  # regex on file names giving the source field (without manifest)
    skip_bad_images: bool = False  # leave unreadable files out instead of stopping
    image_size: int = 256  # model input size; images are resized to image_size x image_size
    channels: tuple[int, ...] | None = None  # channels to pick/map; None keeps all
    page: int = 0  # page of multi-page TIFFs
    normalize: str = "dataset"  # "dataset" (training percentiles), "image" or "bitdepth"
    cache_dir: str | None = None  # decoded-pixel cache; None: the user cache folder
    control_runs: int = 0  # extra runs on shuffled training labels: the chance distribution
    strict: bool = False  # refuse to train when test images duplicate training images (leakage)
    train: TrainSettings = field(default_factory=TrainSettings)  # model and optimiser


@dataclass(frozen=True)
class Dataset:
    name: str  # "train" or the test-set name
    index: FolderIndex  # the scanned folder (class map, ignored and non-image files)
    store: PixelStore  # decoded pixels; bad files left out when skipping them
    labels: np.ndarray  # (N,) int64 labels aligned with store rows
    groups: list[str]  # provenance group of each store row


class Observer:
    """Receives progress from an experiment; the CLI subclasses it with progress bars."""

    def message(self, text: str) -> None:
        """A one-line note or warning for the user."""

    def decoding(self, name: str, total: int) -> Callable[[int], None] | None:
        """Decoding of a folder starts; return a callback taking counts of finished files."""
        return None

    def run_started(self, name: str, n_images: int) -> None:
        """A run starts (``name`` like "run 2/12"); it trains on ``n_images`` images per epoch."""

    def batch(self, n_images: int) -> None:
        """A training batch of ``n_images`` finished."""

    def epoch_finished(self, run: int, records: list[EpochRecord]) -> None:
        """An epoch finished; ``records`` are its rows of epochs.csv."""

    def run_finished(self, run: int, rows: list[dict]) -> None:
        """A run was written to the results folder; ``rows`` are its runs.csv rows."""


def preprocessing_for(settings: ExperimentSettings) -> Preprocessing:
    """The (not yet fitted) preprocessing the settings ask for."""
    from cellclass.images import NORMALIZATION_MODES, Normalization

    if settings.normalize not in NORMALIZATION_MODES:
        raise ExperimentError(
            f"--normalize {settings.normalize!r}: choose one of {', '.join(NORMALIZATION_MODES)}"
        )
    return Preprocessing(
        settings.image_size, settings.channels, settings.page, Normalization(settings.normalize)
    )


def load_dataset(
    name: str,
    folder: str | Path,
    prep: Preprocessing,
    *,
    class_names: tuple[str, ...] | None = None,
    group_by: str | None = None,
    skip_bad: bool = False,
    cache_dir: str | None = None,
    observer: Observer | None = None,
) -> Dataset:
    """Scan a class-folder tree and decode it into a pixel store (verifying every file)."""
    observer = observer or Observer()
    index = scan_folder(folder, class_names=class_names, group_by=group_by)
    progress = observer.decoding(name, len(index.samples))
    store = load_store(
        index.paths,
        prep,
        cache_dir=Path(cache_dir) if cache_dir else None,
        skip_bad=skip_bad,
        progress=progress,
    )
    position = {path: i for i, path in enumerate(index.paths)}
    rows = [position[path] for path in store.paths]
    labels = index.labels[rows]
    groups = [index.samples[i].group for i in rows]
    for path, reason in store.bad:
        observer.message(f"skipped unreadable image {path}: {reason}")
    return Dataset(name, index, store, labels, groups)


def _check_output(out: Path, settings: ExperimentSettings, resume: bool) -> None:
    config = out / "config.json"
    if resume:
        if not config.is_file():
            raise ExperimentError(f"--resume: {out} holds no experiment (no config.json)")
        saved = _flatten(results.read_json(config)["settings"])
        now = _flatten(_jsonable(asdict(settings)))
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise ExperimentError(
                f"--resume: settings differ from the saved experiment in {', '.join(changed)}; "
                "resume with the original settings or choose a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise ExperimentError(
            f"{out} already exists; choose a new --out, or pass --resume to continue it"
        )


RESUMABLE_CHANGES = (
    "out",
    "runs",
    "control_runs",
    "strict",
)  # resuming may add runs; anything else changes results


def _flatten(settings: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 9}} -> {"epochs": 9}: nested settings under their own names."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix))
        else:
            flat[prefix + key] = value
    return flat


def _jsonable(data):
    import json

    return json.loads(json.dumps(data, default=str))


def prepare_data(
    settings: ExperimentSettings, observer: Observer
) -> tuple[Dataset, list[Dataset], Preprocessing]:
    """Load training and test folders and fit the normalisation on the training pixels."""
    prep = preprocessing_for(settings)
    train = load_dataset(
        "train",
        settings.train_dir,
        prep,
        group_by=settings.group_by,
        skip_bad=settings.skip_bad_images,
        cache_dir=settings.cache_dir,
        observer=observer,
    )
    if len(np.unique(train.labels)) < 2:
        raise ExperimentError(f"{settings.train_dir}: fewer than two classes have readable images")
    norm = fit_normalization(
        settings.normalize,
        sample_pixels(train.store),
        bit_depth=train.store.bit_depth,
        percentiles=prep.normalization.percentiles,
    )
    prep = replace(prep, normalization=norm)
    tests = []
    for name, folder in settings.tests:
        test = load_dataset(
            name,
            folder,
            prep,
            class_names=train.index.class_names,
            group_by=settings.group_by,
            skip_bad=settings.skip_bad_images,
            cache_dir=settings.cache_dir,
            observer=observer,
        )
        if test.store.channels != train.store.channels:
            raise ExperimentError(
                f"{folder}: images have {test.store.channels} channel(s) but the training images "
                f"have {train.store.channels}; pick matching channels with --channels"
            )
        for missing in test.index.missing_classes:
            observer.message(f"warning: test set {name!r} has no {missing!r} folder")
        tests.append(test)
    return train, tests, prep


def dataset_info(data: Dataset) -> dict:
    return {
        "path": str(data.index.root),
        "n_images": int(len(data.labels)),
        "class_counts": {
            name: int((data.labels == i).sum()) for i, name in enumerate(data.index.class_names)
        },
        "n_ignored": len(data.index.ignored),
        "n_non_images": len(data.index.non_images),
        "n_bad": len(data.store.bad),
        "bit_depth": data.store.bit_depth,
        "dtype": str(data.store.pixels.dtype),
    }


def check_leakage(
    train: Dataset, tests: list[Dataset], settings: ExperimentSettings, observer: Observer
) -> list[list[str]]:
    """Exact or near-duplicate images shared by training and test folders, as path pairs.

    Warns through ``observer``; with ``settings.strict`` any pair stops the experiment.
    """
    from cellclass.inspection import find_leakage, leakage_message

    pairs = find_leakage(train.index, [t.index for t in tests], page=settings.page)
    if pairs and settings.strict:
        raise ExperimentError(f"{leakage_message(pairs)}; or run without --strict")
    if pairs:
        observer.message(f"warning: {leakage_message(pairs)}")
    return [[str(pair.first), str(pair.second)] for pair in pairs]


def write_config(
    out: Path, settings, train: Dataset, tests: list[Dataset], prep, *, leakage=()
) -> None:
    device = str(resolve_device(settings.train.device))
    config = {
        "cellclass_version": results.software_versions()["cellclass"],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": _jsonable(asdict(settings)),
        "seeds": [settings.seed + k for k in range(settings.runs)],
        "class_names": list(train.index.class_names),
        "train": dataset_info(train),
        "tests": {t.name: dataset_info(t) for t in tests},
        "preprocessing": _jsonable(preprocessing_to_dict(prep)),
        "versions": results.software_versions(),
        "machine": results.machine_info(device),
        "leakage": list(leakage),
    }
    results.write_json(out / "config.json", config)


def run_splits(
    train: Dataset, settings: ExperimentSettings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Store rows used for training and for validation in the run seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(train.labels))
    val = np.array([], dtype=np.int64)
    if settings.val_split > 0:
        rows, val = grouped_split(train.groups, train.labels, settings.val_split, rng=rng)
    if settings.train_sample is not None and settings.train_sample < len(rows):
        rows = np.sort(rng.choice(rows, size=settings.train_sample, replace=False))
    return rows, val


CONTROL_SEED_OFFSET = 10_000  # control run j is seeded with seed + 10_000 + j


@dataclass(frozen=True)
class Job:
    run: int  # run number within its kind (real runs and control runs count separately)
    seed: int  # seeds the split, the training-sample draw, the weights and the batch order
    control: bool = False  # trained on shuffled labels: what chance looks like on this data


def experiment_jobs(settings: ExperimentSettings) -> list[Job]:
    """Real runs (seed + k), then label-shuffled control runs."""
    real = [Job(k, settings.seed + k) for k in range(settings.runs)]
    offset = settings.seed + CONTROL_SEED_OFFSET
    return real + [Job(j, offset + j, True) for j in range(settings.control_runs)]


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
    out = Path(settings.out).expanduser().resolve()
    _check_output(out, settings, resume)
    train, tests, prep = prepare_data(settings, observer)
    leakage = check_leakage(train, tests, settings, observer)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, settings, train, tests, prep, leakage=leakage)
    jobs = experiment_jobs(settings)
    model = settings.train.model
    done = [job for job in jobs if _checkpoint(out, job, model).is_file()]
    results.drop_unfinished(out, {(job.run, model, int(job.control)) for job in done})
    if done:
        observer.message(f"resuming: {len(done)} of {len(jobs)} runs already finished")
    for job in jobs:
        if job not in done:
            _one_run(out, job, settings, train, tests, prep, observer)
    return out


def _checkpoint(out: Path, job: Job, model: str) -> Path:
    return results.checkpoint_path(out, job.run, model, models=(model,), control=job.control)


def _one_run(out, job: Job, settings, train: Dataset, tests: list[Dataset], prep, observer):
    train_rows, val_rows = run_splits(train, settings, job.seed)
    fit_labels = train.labels[train_rows]
    if job.control:  # same class balance, no relation between image and label
        fit_labels = np.random.default_rng(job.seed).permutation(fit_labels)
    splits = [Split(t.name, t.store, np.arange(len(t.labels)), t.labels) for t in tests]
    if len(val_rows):
        splits.insert(0, Split("val", train.store, val_rows, train.labels[val_rows]))
    fit = Split("train", train.store, train_rows, fit_labels)
    kind, total = ("control", settings.control_runs) if job.control else ("run", settings.runs)
    observer.run_started(f"{kind} {job.run + 1}/{total}", len(train_rows))
    result = train_run(
        fit,
        splits,
        settings.train,
        norm=prep.normalization,
        n_classes=len(train.index.class_names),
        seed=job.seed,
        on_batch=observer.batch,
        on_epoch=lambda records: observer.epoch_finished(job.run, records),
    )
    rows = _write_run(out, job, settings, result, train, tests, prep)
    observer.run_finished(job.run, rows)


def _write_run(out, job: Job, settings, result: RunResult, train, tests, prep) -> list[dict]:
    model = settings.train.model
    class_names = train.index.class_names
    key = {"run": job.run, "model": model}
    run_rows, pred_rows = [], []
    for test in tests:
        evaluation = result.final[test.name]
        probs = softmax(evaluation.logits)
        run_rows.append(
            {
                **key,
                "seed": job.seed,
                "dataset": test.name,
                "accuracy": evaluation.accuracy,
                "loss": evaluation.loss,
                "ece": expected_calibration_error(probs, evaluation.labels),
                "n_images": len(evaluation.labels),
                "seconds": result.seconds,
                "control": int(job.control),
            }
        )
        pred_rows += prediction_rows(job.run, model, test, probs, class_names, job.control)
    epoch_rows = [{**key, **asdict(r), "control": int(job.control)} for r in result.epochs]
    results.append_rows(out / "runs.csv", results.RUNS_COLUMNS, run_rows)
    results.append_rows(out / "epochs.csv", results.EPOCHS_COLUMNS, epoch_rows)
    results.append_rows(out / "predictions.csv", results.prediction_columns(class_names), pred_rows)
    meta = {
        **key,
        "seed": job.seed,
        "control": job.control,
        "class_names": list(class_names),
        "in_channels": train.store.channels,
        "image_size": settings.image_size,
        "preprocessing": _jsonable(preprocessing_to_dict(prep)),
    }
    results.save_checkpoint(_checkpoint(out, job, model), result.model, meta)  # marks it done
    return run_rows


def prediction_rows(
    k: int, model: str, test: Dataset, probs: np.ndarray, class_names, control: bool = False
) -> list[dict]:
    """predictions.csv rows of one run on one test set; probs (N, K) float."""
    predicted = probs.argmax(1)
    rows = []
    for i, path in enumerate(test.store.paths):
        row = {
            "run": k,
            "model": model,
            "dataset": test.name,
            "path": str(path),
            "true": class_names[test.labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": float(probs[i, predicted[i]]),
            "control": int(control),
        }
        row.update({f"p_{name}": float(probs[i, j]) for j, name in enumerate(class_names)})
        rows.append(row)
    return rows


def summary_table(run_dir: str | Path) -> list[dict]:
    """Per (model, test set): n runs, mean, sd, 95 % CI, min and max test accuracy.

    With control runs (shuffled labels), each real row gains ``p_vs_control``, the empirical
    p-value of its mean accuracy against the control runs' accuracies, and the control runs
    get rows of their own with model ``<model> (shuffled labels)``.
    """
    rows = results.read_table(Path(run_dir) / "runs.csv")
    table = []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        same = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
        real = [r["accuracy"] for r in same if not r.get("control")]
        control = [r["accuracy"] for r in same if r.get("control")]
        entry = {"model": model, "dataset": dataset, **summarize(real)} if real else None
        if entry and control:
            entry["p_vs_control"] = empirical_p_value(entry["mean"], control)
        if entry:
            table.append(entry)
        if control:
            table.append(
                {"model": f"{model} (shuffled labels)", "dataset": dataset, **summarize(control)}
            )
    return table
