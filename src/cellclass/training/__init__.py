"""Training (layer 3): many runs from scratch of one or more recipes, on one training folder,
evaluated on test folders.

Modules: `settings` (what an experiment is asked to do), `recipes` (the study's reference and
better ones), `augment`, `train` (one run), `chunks` (cache-sized chunks of a batch), `jobs`
(one run of an experiment), `records` (a finished run, written), `executors` (here, processes,
Ray), `baseline_runs` (classical baselines on the same splits), `experiment` (the whole study).
Each name is imported from its module on first use (`cellclass._lazy`): code that needs only
the settings or the recipes does not load the training machinery.
"""

from cellclass._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "experiment": ("prepare_data", "run_experiment"),
        "jobs": ("ExperimentData", "run_splits"),
        "recipes": ("REFERENCE", "STRONG", "Recipe", "resolve_recipes"),
        "settings": ("ExperimentError", "ExperimentSettings"),
    },
)
