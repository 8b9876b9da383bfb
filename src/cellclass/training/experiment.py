"""Many training runs from scratch over one training folder, evaluated on several test folders.

`run_experiment` is the whole study in one call: scan and verify the folders, decode them once
into pixel stores, fit the normalisation on the training folder, then train ``runs`` models per
recipe (run k seeded with ``seed + k``; every recipe gets the same seeds and the same splits),
writing every finished run to the results folder at once. An interrupted experiment resumes
from the runs it finished (``resume=True``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.data.cache import Preprocessing, preprocessing_to_dict, sample_pixels
from cellclass.data.datasets import Dataset, dataset_info, load_dataset
from cellclass.data.folders import grouped_split
from cellclass.data.images import NORMALIZATION_MODES, Normalization, fit_normalization
from cellclass.metrics import collapsed, expected_calibration_error, softmax
from cellclass.models.baselines import BaselineSettings
from cellclass.progress import Observer
from cellclass.training.executors import EXECUTORS, run_jobs
from cellclass.training.recipes import REFERENCE, Recipe
from cellclass.training.train import RunResult, Split, autocast_dtype, resolve_device, train_run

DEFAULT_NORMALIZATION = "dataset"  # baselines' scaling when the user chose none
CONTROL_SEED_OFFSET = 10_000  # control run j is seeded with seed + 10_000 + j
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
)


class ExperimentError(ValueError):
    """The experiment cannot start or resume; the message says what to change."""


@dataclass(frozen=True)
class ExperimentSettings:
    train_dir: str  # one subfolder per class
    out: str  # results folder; never overwritten (resume continues it)
    tests: tuple[tuple[str, str], ...] = ()  # (name, folder) test sets, evaluated every epoch
    test_every: int = 1  # ... or after every test_every-th epoch and the last (faster studies)
    runs: int = 12  # trainings from scratch per recipe; run k is seeded with seed + k
    seed: int = 0  # seed of run 0
    recipes: tuple[Recipe, ...] = (REFERENCE,)  # what is trained; several: side by side
    val_split: float = 0.2  # fraction of training images (whole source groups) held out per run
    train_sample: int | None = None  # study protocol: each run trains on a fresh draw of N images
    control_runs: int = 0  # extra runs on shuffled training labels: the chance distribution
    baselines: tuple[str, ...] = ()  # classical baselines trained on the same splits ("features")
    group_by: str | None = None  # regex on file names giving the source field (without manifest)
    strict: bool = False  # refuse to train when test images duplicate training images (leakage)
    skip_bad_images: bool = False  # leave unreadable files out instead of stopping
    image_size: int = 256  # model input size; images are resized to image_size x image_size
    channels: tuple[int, ...] | None = None  # channels to pick/map; None keeps all
    page: int = 0  # page of multi-page TIFFs
    normalize: str | None = None  # None: each recipe's own; or "dataset", "image", "bitdepth"
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    executor: str = "local"  # where runs are computed: "local", "process" or "ray"
    jobs: int = 1  # runs trained at once by the process executor
    ray_address: str | None = None  # Ray cluster to join ("auto", "ray://host:10001"); None: local
    cpus_per_run: float = 1.0  # CPUs reserved per run on Ray
    gpus_per_run: float = 0.0  # GPU share per run on Ray (0.25 packs four runs on one GPU)
    precision: str = "auto"  # "auto" (measured best: fp32 so far), "fp32" or "bf16" autocast
    cache_dir: str | None = None  # decoded-pixel cache; None: the user cache folder


@dataclass(frozen=True)
class Job:
    run: int  # run number within its kind (real runs and control runs count separately)
    seed: int  # seeds the split, the training-sample draw, the weights and the batch order
    recipe: Recipe | BaselineSettings  # what is trained: a CNN recipe or a feature baseline
    control: bool = False  # trained on shuffled labels: what chance looks like on this data


def experiment_jobs(settings: ExperimentSettings) -> list[Job]:
    """Real runs (seed + k) for every recipe and baseline, then label-shuffled control runs
    (first recipe)."""
    trained = list(settings.recipes) + [BaselineSettings(name=b) for b in settings.baselines]
    jobs = [Job(k, settings.seed + k, r) for k in range(settings.runs) for r in trained]
    offset = settings.seed + CONTROL_SEED_OFFSET
    first = settings.recipes[0]
    return jobs + [Job(j, offset + j, first, True) for j in range(settings.control_runs)]


def check_settings(settings: ExperimentSettings) -> None:
    """Raise ExperimentError naming the first setting that cannot work."""
    labels = [recipe.label for recipe in settings.recipes] + list(settings.baselines)
    problems = [
        (
            any(b != "features" for b in settings.baselines),
            f"--baseline {', '.join(settings.baselines)}: the available baseline is 'features'",
        ),
        (not settings.recipes, "at least one recipe or model is needed"),
        (len(set(labels)) != len(labels), f"two recipes share a name: {', '.join(labels)}"),
        (
            settings.normalize not in (None, *NORMALIZATION_MODES),
            f"--normalize {settings.normalize!r}: choose one of {', '.join(NORMALIZATION_MODES)}",
        ),
        (not 0 <= settings.val_split < 1, f"--val-split {settings.val_split}: use 0 <= x < 1"),
        (
            any(r.select == "best" for r in settings.recipes) and settings.val_split == 0,
            "a recipe keeps the best validation epoch but --val-split is 0",
        ),
        (
            len({name for name, _ in settings.tests}) != len(settings.tests),
            "two --test sets share a name",
        ),
        (
            settings.executor not in EXECUTORS,
            f"--executor {settings.executor!r}: choose one of {', '.join(EXECUTORS)}",
        ),
        (settings.jobs < 1, f"--jobs {settings.jobs}: use 1 or more"),
        (settings.test_every < 1, f"--test-every {settings.test_every}: use 1 or more"),
    ]
    for failed, message in problems:
        if failed:
            raise ExperimentError(message)
    autocast_dtype(settings.precision, resolve_device(settings.device))


@dataclass(frozen=True)
class ExperimentData:
    """The loaded folders of an experiment and the preprocessing fitted for each recipe."""

    train: Dataset  # the training folder, decoded
    tests: tuple[Dataset, ...]  # the test folders, classes mapped by the training names
    preps: dict[str, Preprocessing]  # by normalisation mode, fitted on the training pixels

    def prep(self, mode: str) -> Preprocessing:
        """The fitted preprocessing for normalisation ``mode`` ("dataset", "bitdepth"...)."""
        return self.preps[mode]


def normalization_mode(settings: ExperimentSettings, trained) -> str:
    """The normalisation a recipe (or baseline) trains with: ``settings.normalize`` when the
    user chose one, else the recipe's own (the study's scaling for the reference)."""
    if settings.normalize is not None:
        return settings.normalize
    return getattr(trained, "normalize", DEFAULT_NORMALIZATION)


def experiment_modes(settings: ExperimentSettings) -> list[str]:
    """Normalisation modes the experiment's recipes and baselines need, first recipe's first."""
    trained = list(settings.recipes) + [BaselineSettings(name=b) for b in settings.baselines]
    return list(dict.fromkeys(normalization_mode(settings, t) for t in trained))


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
                f"have {train.store.channels}; pick matching channels with --channels"
            )
        for missing in test.index.missing_classes:
            observer.message(f"warning: test set {name!r} has no {missing!r} folder")
        tests.append(test)
    return ExperimentData(train, tuple(tests), preps)


def check_leakage(
    train: Dataset, tests: list[Dataset], settings: ExperimentSettings, observer: Observer
) -> list[list[str]]:
    """Exact or near-duplicate images shared by training and test folders, as path pairs.

    Warns through ``observer``; with ``settings.strict`` any pair stops the experiment.
    """
    from cellclass.inspection.dataset import find_leakage, leakage_message

    pairs = find_leakage(train.index, [t.index for t in tests], page=settings.page)
    if pairs and settings.strict:
        raise ExperimentError(f"{leakage_message(pairs)}; or run without --strict")
    if pairs:
        observer.message(f"warning: {leakage_message(pairs)}")
    return [[str(pair.first), str(pair.second)] for pair in pairs]


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


def _jsonable(data):
    return json.loads(json.dumps(data, default=str))


def write_config(out: Path, settings, data: ExperimentData, *, leakage=()) -> None:
    train, tests = data.train, data.tests
    trained = list(settings.recipes) + [BaselineSettings(name=b) for b in settings.baselines]
    modes = {t.label: normalization_mode(settings, t) for t in trained}
    prep = data.prep(experiment_modes(settings)[0])
    config = {
        "cellclass_version": results.software_versions()["cellclass"],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": _jsonable(asdict(settings)),
        "seeds": [settings.seed + k for k in range(settings.runs)],
        "models": [recipe.label for recipe in settings.recipes],
        "class_names": list(train.index.class_names),
        "train": dataset_info(train),
        "tests": {t.name: dataset_info(t) for t in tests},
        "preprocessing": _jsonable(preprocessing_to_dict(prep)),  # the first recipe's
        "normalization": {  # per recipe: its own, or the one the user chose for all
            label: _jsonable(asdict(data.prep(mode).normalization)) for label, mode in modes.items()
        },
        "versions": results.software_versions(),
        "machine": results.machine_info(str(resolve_device(settings.device))),
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
    out = Path(settings.out).expanduser().resolve()
    _check_output(out, settings, resume)
    data = prepare_data(settings, observer)
    leakage = check_leakage(data.train, list(data.tests), settings, observer)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, settings, data, leakage=leakage)
    jobs = experiment_jobs(settings)
    done = [job for job in jobs if _checkpoint(out, job, settings).is_file()]
    results.drop_unfinished(out, {(j.run, j.recipe.label, int(j.control)) for j in done})
    if done:
        observer.message(f"resuming: {len(done)} of {len(jobs)} runs already finished")
    todo = [job for job in jobs if job not in done]
    cnn = [job for job in todo if isinstance(job.recipe, Recipe)]
    run_jobs(cnn, settings, data, out, observer)
    classical = [job for job in todo if not isinstance(job.recipe, Recipe)]
    if classical:
        from cellclass.training.baseline_runs import run_baseline_jobs

        run_baseline_jobs(classical, settings, data, out, observer)
    return out


def _checkpoint(out: Path, job: Job, settings: ExperimentSettings) -> Path:
    labels = tuple(recipe.label for recipe in settings.recipes) + settings.baselines
    return results.checkpoint_path(
        out, job.run, job.recipe.label, models=labels, control=job.control
    )


def job_name(job: Job, settings: ExperimentSettings) -> str:
    """ "run 2/12", "control 1/4", or "run 2/12 strong" when several recipes are compared."""
    kind, total = ("control", settings.control_runs) if job.control else ("run", settings.runs)
    several = len(settings.recipes) > 1 and not job.control
    return f"{kind} {job.run + 1}/{total}" + (f" {job.recipe.label}" if several else "")


def train_job(
    job: Job, settings: ExperimentSettings, data: ExperimentData, observer: Observer
) -> RunResult:
    """Train and evaluate one run on the loaded data; writes nothing (executors call this
    wherever the run is computed, and the results folder is written by one process)."""
    train, tests = data.train, data.tests
    prep = data.prep(normalization_mode(settings, job.recipe))
    train_rows, val_rows = run_splits(train, settings, job.seed)
    fit_labels = train.labels[train_rows]
    if job.control:  # same class balance, no relation between image and label
        fit_labels = np.random.default_rng(job.seed).permutation(fit_labels)
    splits = [Split(t.name, t.store, np.arange(len(t.labels)), t.labels) for t in tests]
    if len(val_rows):
        splits.insert(0, Split("val", train.store, val_rows, train.labels[val_rows]))
    observer.run_started(job_name(job, settings), len(train_rows) * job.recipe.epochs)
    return train_run(
        Split("train", train.store, train_rows, fit_labels),
        splits,
        job.recipe,
        norm=prep.normalization,
        n_classes=len(train.index.class_names),
        seed=job.seed,
        device=settings.device,
        precision=settings.precision,
        test_every=settings.test_every,
        on_batch=observer.batch,
        on_epoch=lambda records: observer.epoch_finished(job.run, records),
    )


def write_run(out: Path, job: Job, settings, result: RunResult, data: ExperimentData) -> list[dict]:
    """Append one finished run to the tables, then save its checkpoint (marks it done)."""
    train, tests = data.train, data.tests
    prep = data.prep(normalization_mode(settings, job.recipe))
    class_names = train.index.class_names
    key = {"run": job.run, "model": job.recipe.label}
    fit_rows, _ = run_splits(train, settings, job.seed)
    train_accuracies = [r.accuracy for r in result.epochs if r.split == "train"]
    stuck = collapsed(train_accuracies, train.labels[fit_rows])  # shuffling keeps the shares
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
                "epoch": result.epoch,
                "collapsed": int(stuck),
            }
        )
        pred_rows += prediction_rows(job.run, key["model"], test, probs, class_names, job.control)
    epoch_rows = [{**key, **asdict(r), "control": int(job.control)} for r in result.epochs]
    results.append_rows(out / "runs.csv", results.RUNS_COLUMNS, run_rows)
    results.append_rows(out / "epochs.csv", results.EPOCHS_COLUMNS, epoch_rows)
    results.append_rows(out / "predictions.csv", results.prediction_columns(class_names), pred_rows)
    meta = {
        **key,
        "architecture": getattr(job.recipe, "model", "features"),
        "seed": job.seed,
        "control": job.control,
        "epoch": result.epoch,
        "recipe": _jsonable(asdict(job.recipe)),
        "class_names": list(class_names),
        "in_channels": train.store.channels,
        "image_size": settings.image_size,
        "preprocessing": _jsonable(preprocessing_to_dict(prep)),
    }
    results.save_checkpoint(_checkpoint(out, job, settings), result.model, meta)  # marks it done
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
