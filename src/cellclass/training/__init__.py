"""Training (layer 3): many runs from scratch of one or more recipes, on one training folder,
evaluated on test folders.

Modules: `settings` (what an experiment is asked to do), `recipes` (the study's reference and
better ones), `augment`, `train` (one run), `chunks` (cache-sized chunks of a batch), `jobs`
(one run of an experiment), `records` (a finished run, written), `executors` (here, processes,
Ray), `baseline_runs` (classical baselines on the same splits), `experiment` (the whole study).
"""

from cellclass.training.experiment import prepare_data, run_experiment
from cellclass.training.jobs import ExperimentData, run_splits
from cellclass.training.recipes import REFERENCE, STRONG, Recipe, resolve_recipes
from cellclass.training.settings import ExperimentError, ExperimentSettings

__all__ = [
    "REFERENCE",
    "STRONG",
    "ExperimentData",
    "ExperimentError",
    "ExperimentSettings",
    "Recipe",
    "prepare_data",
    "resolve_recipes",
    "run_experiment",
    "run_splits",
]
