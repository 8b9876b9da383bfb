"""Choices and defaults that the command line shares with the library (layer 0).

The library's settings (`cellclass.training.ExperimentSettings`, the normalisation modes,
precisions, executors) take their choices and defaults from here, and so does the command
line, which imports nothing heavier: ``cellclass --help`` loads no torch, and a default
changed here changes in both places at once.
"""

from __future__ import annotations

__all__ = [
    "BASELINES",
    "CONFOUND_EFFECT",
    "CONTROL_RUNS",
    "CPUS_PER_RUN",
    "DEVICES",
    "EXECUTORS",
    "GPUS_PER_RUN",
    "IMAGE_SIZE",
    "JOBS",
    "MAX_DISTANCE",
    "MIN_SIMILARITY",
    "NORMALIZATION_MODES",
    "PAGE",
    "PRECISIONS",
    "RUNS",
    "SEED",
    "TEST_EVERY",
    "VAL_SPLIT",
]

# pixel scaling: training-set percentiles, each image's own percentiles, or 0 .. 2**bits - 1
NORMALIZATION_MODES = ("dataset", "image", "bitdepth")
DEVICES = ("auto", "cpu", "cuda")  # "auto": CUDA when present
PRECISIONS = ("auto", "fp32", "bf16")  # training autocast; "auto" chooses per machine and model
EXECUTORS = ("local", "process", "ray")  # where runs are computed (cellclass.training.executors)
BASELINES = ("features",)  # classical baselines trained on the same splits as the networks

RUNS = 12  # trainings from scratch per recipe, as in the study
SEED = 0  # seed of run 0; run k is seeded with SEED + k
VAL_SPLIT = 0.2  # fraction of training images (whole source groups) held out per run
TEST_EVERY = 1  # test folders evaluated after every epoch
CONTROL_RUNS = 0  # label-shuffled runs (the chance distribution)
IMAGE_SIZE = 256  # model input, pixels (the study's size)
PAGE = 0  # page of multi-page TIFFs
JOBS = 1  # runs trained at once by the process executor
CPUS_PER_RUN = 1.0  # CPUs reserved per run on Ray
GPUS_PER_RUN = 0.0  # GPU share per run on Ray

# duplicates and confounds (`cellclass.inspection`; measured in `inspection/scan.py`'s notes)
MAX_DISTANCE = 64  # near-duplicate candidate: at most this many of 255 hash bits differ
MIN_SIMILARITY = 0.99  # near-duplicate: aligned thumbnails correlate at least this much
CONFOUND_EFFECT = 1.0  # classes whose mean brightness differs by more pooled SDs are flagged
