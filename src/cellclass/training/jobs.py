"""One run of an experiment: what it trains (`Job`), on which rows (`run_splits`), and the
training itself on the loaded data (`train_job`).

A job depends only on its seed and the settings, so every executor (here, a process pool, Ray)
gives the same numbers for it; `train_job` writes nothing (the results folder is written by one
process, `cellclass.training.records`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellclass.data.datasets import Dataset
from cellclass.data.folders import grouped_split
from cellclass.data.preprocessing import Preprocessing
from cellclass.models.baselines import BaselineSettings
from cellclass.progress import Observer
from cellclass.training.recipes import Recipe
from cellclass.training.settings import (
    CONTROL_SEED_OFFSET,
    ExperimentSettings,
    normalization_mode,
)
from cellclass.training.train import RunResult, Split, train_run


@dataclass(frozen=True)
class ExperimentData:
    """The loaded folders of an experiment and the preprocessing fitted for each recipe."""

    train: Dataset  # the training folder, decoded
    tests: tuple[Dataset, ...]  # the test folders, classes mapped by the training names
    preps: dict[str, Preprocessing]  # by normalisation mode, fitted on the training pixels

    def prep(self, mode: str) -> Preprocessing:
        """The fitted preprocessing for normalisation ``mode`` ("dataset", "bitdepth"...)."""
        return self.preps[mode]


@dataclass(frozen=True)
class Job:
    run: int  # run number: real runs 0 .. runs - 1 per recipe, control runs after them
    seed: int  # seeds the split, the training-sample draw, the weights and the batch order
    recipe: Recipe | BaselineSettings  # what is trained: a CNN recipe or a feature baseline
    control: bool = False  # trained on shuffled labels: what chance looks like on this data


def experiment_jobs(settings: ExperimentSettings) -> list[Job]:
    """Real runs 0 .. runs - 1 (seed + k) for every recipe and baseline, then label-shuffled
    control runs of the first recipe, numbered on from there (``runs`` + j, seeded with seed +
    `CONTROL_SEED_OFFSET` + j), so that a run number names one run of a model."""
    trained = list(settings.recipes) + [BaselineSettings(name=b) for b in settings.baselines]
    jobs = [Job(k, settings.seed + k, r) for k in range(settings.runs) for r in trained]
    offset = settings.seed + CONTROL_SEED_OFFSET
    first = settings.recipes[0]
    controls = range(settings.control_runs)
    return jobs + [Job(settings.runs + j, offset + j, first, True) for j in controls]


def job_name(job: Job, settings: ExperimentSettings) -> str:
    """ "run 2/12", "control 1/4", or "run 2/12 strong" when several recipes are compared."""
    if job.control:
        return f"control {job.run - settings.runs + 1}/{settings.control_runs}"
    several = len(settings.recipes) > 1
    return f"run {job.run + 1}/{settings.runs}" + (f" {job.recipe.label}" if several else "")


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
