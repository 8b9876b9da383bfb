"""cellclass: can a neural network classify my microscopy images as well as I can, reproducibly?

Everything the ``cellclass`` command does is a plain call (modules are imported on use, so
``import cellclass`` stays light):

- ``cellclass.experiment``: `ExperimentSettings`, `run_experiment` -- train and evaluate many runs
- ``cellclass.recipes``: `REFERENCE` (the 2019 study), `STRONG`, `resolve_recipes`
- ``cellclass.summary``: `summary_table`, `model_comparisons`
- ``cellclass.report``: `write_report`, `preview_folder`
- ``cellclass.predict``: `predict_paths`, `evaluate_folder`, `load_runs`
- ``cellclass.prepare``: `tile_folder`, `rotate_folder`; ``cellclass.inspection``: `inspect_dataset`
- ``cellclass.blind``: the blinded scoring page; ``cellclass.blind.compare``: `compare_human`
- ``cellclass.explain_step``: `explain_run`; ``cellclass.export``: `export_run`
- ``cellclass.images``: `read_image`, `write_image`; ``cellclass.synthetic``: `write_demo`
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
