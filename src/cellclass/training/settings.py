"""What an experiment is asked to do: its settings, and the checks they must pass.

`ExperimentSettings` holds every setting of a study (folders, runs, recipes, data options,
where runs are computed) and is written to config.json; `check_settings` refuses, before
anything is created, the first setting that cannot work; `normalization_mode` says which pixel
scaling each recipe trains with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

from cellclass import choices
from cellclass.choices import EXECUTORS, NORMALIZATION_MODES
from cellclass.data.images import MAX_PIXELS_VARIABLE, max_image_pixels
from cellclass.models.baselines import BaselineSettings
from cellclass.training.recipes import REFERENCE, Recipe, check_recipe
from cellclass.training.train import autocast_dtype, resolve_device

DEFAULT_NORMALIZATION = "dataset"  # baselines' scaling when the user chose none


CONTROL_SEED_OFFSET = 10_000  # control run j is seeded with seed + 10_000 + j


class ExperimentError(ValueError):
    """The experiment cannot start or resume; the message says what to change."""


@dataclass(frozen=True)
class ExperimentSettings:
    train_dir: str  # one subfolder per class
    out: str  # results folder; never overwritten (resume continues it)
    tests: tuple[tuple[str, str], ...] = ()  # (name, folder) test sets, evaluated every epoch
    test_every: int = choices.TEST_EVERY  # ... or every test_every-th epoch and the last
    runs: int = choices.RUNS  # trainings from scratch per recipe; run k is seeded with seed + k
    seed: int = choices.SEED  # seed of run 0
    recipes: tuple[Recipe, ...] = (REFERENCE,)  # what is trained; several: side by side
    val_split: float = choices.VAL_SPLIT  # share of training images (whole groups) held out
    train_sample: int | None = None  # study protocol: each run trains on a fresh draw of N images
    control_runs: int = choices.CONTROL_RUNS  # extra runs on shuffled labels: chance's spread
    baselines: tuple[str, ...] = ()  # classical baselines trained on the same splits ("features")
    group_by: str | None = None  # regex on file names giving the source field (without manifest)
    strict: bool = False  # refuse to train when test images duplicate training images (leakage)
    skip_bad_images: bool = False  # leave unreadable files out instead of stopping
    image_size: int = choices.IMAGE_SIZE  # images are resized to image_size x image_size
    channels: tuple[int, ...] | None = None  # channels to pick/map; None keeps all
    page: int = choices.PAGE  # page of multi-page TIFFs
    normalize: str | None = None  # None: each recipe's own; or "dataset", "image", "bitdepth"
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    executor: str = "local"  # where runs are computed: "local", "process" or "ray"
    jobs: int = choices.JOBS  # runs trained at once by the process executor
    ray_address: str | None = None  # Ray cluster to join ("auto", "ray://host:10001"); None: local
    cpus_per_run: float = choices.CPUS_PER_RUN  # CPUs reserved per run on Ray
    gpus_per_run: float = choices.GPUS_PER_RUN  # GPU share per run on Ray (0.25: four per GPU)
    precision: str = "auto"  # "auto" (bf16 where measured faster per model), "fp32", "bf16"
    cache_dir: str | None = None  # decoded-pixel cache; None: the user cache folder


RESERVED_TEST_NAMES = ("train", "val")  # epochs.csv's splits of the training folder
MIN_IMAGE_SIZE = 8  # smaller images leave nothing for the convolutions to see


def check_settings(settings: ExperimentSettings) -> None:
    """Raise ExperimentError naming the first setting that cannot work.

    Called before anything is created or decoded, so a typo never leaves a half-made results
    folder behind. Messages name the parameter (``seed -1: use 0 or more``): the field of
    `ExperimentSettings`, which the command line spells ``--seed``.
    """
    problems = [
        *_count_problems(settings),
        *_choice_problems(settings),
        *_folder_problems(settings),
    ]
    for failed, message in problems:
        if failed:
            raise ExperimentError(message)
    for recipe in settings.recipes:
        try:
            check_recipe(recipe)
        except ValueError as error:
            raise ExperimentError(str(error)) from None
    autocast_dtype(settings.precision, resolve_device(settings.device))


def _whole(value, minimum: int) -> bool:
    """``value`` is an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum


def _real(value, minimum: float, *, above: bool = False) -> bool:
    """``value`` is a number (not a bool) of at least ``minimum`` (above it: more than)."""
    if not isinstance(value, Real) or isinstance(value, bool) or value != value:  # NaN
        return False
    return value > minimum if above else value >= minimum


def _count_problems(settings: ExperimentSettings) -> list[tuple[bool, str]]:
    s = settings
    return [
        (not _whole(s.seed, 0), f"seed={s.seed!r}: use 0 or more"),
        (not _whole(s.runs, 1), f"runs={s.runs!r}: use 1 or more"),
        (not _whole(s.control_runs, 0), f"control_runs={s.control_runs!r}: use 0 or more"),
        (
            not _whole(s.image_size, MIN_IMAGE_SIZE),
            f"image_size={s.image_size!r}: use {MIN_IMAGE_SIZE} or more (pixels a side)",
        ),
        (
            _whole(s.image_size, MIN_IMAGE_SIZE) and s.image_size**2 > max_image_pixels(),
            f"image_size={s.image_size!r}: more pixels than the image limit "
            f"({max_image_pixels():,}, {MAX_PIXELS_VARIABLE})",
        ),
        (not _whole(s.page, 0), f"page={s.page!r}: use 0 or more (0 is the first page)"),
        (
            s.train_sample is not None and not _whole(s.train_sample, 1),
            f"train_sample={s.train_sample!r}: use 1 or more, or None for every image",
        ),
        (
            s.channels is not None
            and (not s.channels or not all(_whole(c, 0) for c in s.channels)),
            f"channels={s.channels!r}: give 0-based channel indices, e.g. (0,) or (2, 1, 0)",
        ),
        (not _whole(s.test_every, 1), f"test_every={s.test_every!r}: use 1 or more"),
        (not _whole(s.jobs, 1), f"jobs={s.jobs!r}: use 1 or more"),
        (
            not _real(s.cpus_per_run, 0, above=True),
            f"cpus_per_run={s.cpus_per_run!r}: use more than 0",
        ),
        (not _real(s.gpus_per_run, 0), f"gpus_per_run={s.gpus_per_run!r}: use 0 or more"),
        (
            not (_real(s.val_split, 0) and s.val_split < 1),
            f"val_split={s.val_split!r}: use 0 <= x < 1",
        ),
    ]


def _choice_problems(settings: ExperimentSettings) -> list[tuple[bool, str]]:
    s = settings
    labels = [recipe.label for recipe in s.recipes] + list(s.baselines)
    names = [name for name, _ in s.tests]
    group_by = _regex_problem(s.group_by)
    return [
        (
            any(b != "features" for b in s.baselines),
            f"baselines={s.baselines!r}: the available baseline is 'features'",
        ),
        (not s.recipes, "recipes: at least one recipe or model is needed"),
        (len(set(labels)) != len(labels), f"two recipes share a name: {', '.join(labels)}"),
        (
            s.normalize not in (None, *NORMALIZATION_MODES),
            f"normalize={s.normalize!r}: choose one of {', '.join(NORMALIZATION_MODES)}",
        ),
        (
            any(r.select == "best" for r in s.recipes) and s.val_split == 0,
            "a recipe keeps the best validation epoch but val_split is 0",
        ),
        (
            s.executor not in EXECUTORS,
            f"executor={s.executor!r}: choose one of {', '.join(EXECUTORS)}",
        ),
        (not all(names), "tests: every test set needs a name"),
        (
            bool(set(names) & set(RESERVED_TEST_NAMES)),
            f"tests: {', '.join(sorted(set(names) & set(RESERVED_TEST_NAMES)))!r} names the "
            f"training folder's own curves ({' and '.join(RESERVED_TEST_NAMES)}); "
            "give the test set another name",
        ),
        (len(set(names)) != len(names), "tests: two test sets share a name"),
        (bool(group_by), group_by),
    ]


def _regex_problem(pattern: str | None) -> str:
    """Why ``pattern`` is not a usable regular expression; "" when it is (or is None)."""
    if pattern is None:
        return ""
    try:
        re.compile(pattern)
    except (re.error, TypeError) as error:
        return f"group_by={pattern!r}: not a regular expression ({error})"
    return ""


def _folder_problems(settings: ExperimentSettings) -> list[tuple[bool, str]]:
    """The results folder and the cache must lie outside every image folder: the next scan
    would read them as a class."""
    folders = [("the training folder", settings.train_dir)]
    folders += [(f"the folder of test set {name!r}", folder) for name, folder in settings.tests]
    places = [("out", settings.out)]
    if settings.cache_dir:
        places.append(("cache_dir", settings.cache_dir))
    return [
        (
            _inside(place, folder),
            f"{parameter} {place}: inside {what} {folder}, where it would be read as a class; "
            "choose a folder outside it",
        )
        for parameter, place in places
        for what, folder in folders
    ]


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies under it (symbolic links resolved)."""
    path_resolved = Path(path).expanduser().resolve()
    folder_resolved = Path(folder).expanduser().resolve()
    return path_resolved == folder_resolved or folder_resolved in path_resolved.parents


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
