"""Moved to `cellclass.training`; this name stays so that existing scripts keep working."""

from cellclass.training import ExperimentError, ExperimentSettings, prepare_data, run_experiment

__all__ = ["ExperimentError", "ExperimentSettings", "prepare_data", "run_experiment"]
