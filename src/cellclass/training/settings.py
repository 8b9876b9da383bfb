"""What an experiment is asked to do: its settings, and the checks they must pass.

`ExperimentSettings` holds every setting of a study (folders, runs, recipes, data options,
where runs are computed) and is written to config.json; `check_settings` refuses, before
anything is created, the first setting that cannot work; `normalization_mode` says which pixel
scaling each recipe trains with.
"""

from __future__ import annotations

from dataclasses import dataclass

from cellclass.data.images import NORMALIZATION_MODES
from cellclass.models.baselines import BaselineSettings
from cellclass.training.recipes import REFERENCE, Recipe
from cellclass.training.train import autocast_dtype, resolve_device

EXECUTORS = ("local", "process", "ray")  # where runs are computed (cellclass.training.executors)
DEFAULT_NORMALIZATION = "dataset"  # baselines' scaling when the user chose none


CONTROL_SEED_OFFSET = 10_000  # control run j is seeded with seed + 10_000 + j


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
