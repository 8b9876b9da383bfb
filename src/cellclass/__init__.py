"""cellclass: can a neural network classify my microscopy images as well as I can, reproducibly?

In a notebook: ``study = cellclass.train(TRAIN_DIR, out=..., tests={...}, runs=12)`` or
``cellclass.load(RUN_DIR)`` give a `cellclass.study.Study` (tables as pandas DataFrames,
figures inline, ``predict``, ``report``).

Everything the ``cellclass`` command does is a plain call (modules are imported on use, so
``import cellclass`` stays light):

- ``cellclass.training.experiment``: `ExperimentSettings`, `run_experiment` -- train and
  evaluate many runs; ``cellclass.training.recipes``: `REFERENCE` (the 2019 study), `STRONG`
- ``cellclass.summary``: `summary_table`, `model_comparisons`
- ``cellclass.report.build``: `write_report`, `preview_folder`; ``cellclass.report.study``:
  `write_study_report` (several experiments, the answer first)
- ``cellclass.predict``: `predict_paths`, `evaluate_folder`, `load_runs`
- ``cellclass.prepare.steps``: `tile_folder`, `rotate_folder`;
  ``cellclass.inspection.dataset``: `inspect_dataset`
- ``cellclass.blind``: the blinded scoring page; ``cellclass.blind.compare``: `compare_human`
- ``cellclass.explain.step``: `explain_run`; ``cellclass.export.runs``: `export_run`
- ``cellclass.data.images``: `read_image`, `write_image`; ``cellclass.synthetic.folders``:
  `write_demo`

Packages by layer (each imports only from lower layers; `tests/test_layers.py` checks it):
progress, results, csv_cells (0) < metrics, data, synthetic, models (1) < prepare,
inspection (2) < training (3) < predict, summary, checks, figures (4) < explain, export,
blind (5) < report (6) < demo, cli.
"""

__version__ = "0.1.0"
__all__ = ["Study", "__version__", "load", "run_study", "train"]

_NOTEBOOK_API = ("Study", "load", "run_study", "train")  # from cellclass.study, on first use


def __getattr__(name: str):
    """``cellclass.train(...)``, ``cellclass.load(...)``: imported on first use, so that
    ``import cellclass`` (and the command line's start) stays light."""
    if name in _NOTEBOOK_API:
        import importlib

        return getattr(importlib.import_module("cellclass.study"), name)
    raise AttributeError(f"module 'cellclass' has no attribute {name!r}")
