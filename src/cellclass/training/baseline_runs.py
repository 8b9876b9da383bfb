"""Classical baselines inside an experiment: same seeds, same splits, same tables as the CNNs.

Features are computed once per experiment from the pixels exactly as the CNNs see them; each
run then fits the baseline on its own training rows (the CNN run with the same seed used the
same rows) and predicts every test set. Rows go to runs.csv and predictions.csv with the
baseline's name in the model column, so the summary, box plot and model comparisons treat it
like any other model.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from cellclass.models.baselines import fit_baseline, image_features, predict_proba
from cellclass.progress import Observer
from cellclass.training.jobs import job_name, run_splits
from cellclass.training.records import write_run
from cellclass.training.settings import normalization_mode
from cellclass.training.train import Evaluation, RunResult, Split, gather_batch


def store_features(split: Split, prep, settings, *, chunk: int = 256) -> np.ndarray:
    """(N, F) features of every image of ``split``, normalised as the CNN sees it."""
    parts = []
    for start in range(0, len(split.indices), chunk):
        rows = np.arange(start, min(start + chunk, len(split.indices)))
        x = gather_batch(split, rows, prep.normalization, torch.device("cpu"))  # (B, C, S, S)
        parts.append(image_features(x.permute(0, 2, 3, 1).numpy(), settings))
    return np.concatenate(parts)


def _evaluation(name: str, probs: np.ndarray, labels: np.ndarray) -> Evaluation:
    logits = np.log(np.clip(probs, 1e-12, None)).astype(np.float32)
    loss = float(-logits[np.arange(len(labels)), labels].mean())
    accuracy = float((probs.argmax(1) == labels).mean())
    return Evaluation(name, loss, accuracy, logits, labels)


def run_baseline_jobs(jobs: list, settings, data, out, observer: Observer) -> None:
    """Fit and evaluate every baseline job, writing each like a CNN run."""

    train, tests = data.train, data.tests
    n_classes = len(train.index.class_names)
    features: dict = {}
    for job in jobs:
        key = job.recipe
        if key not in features:  # one feature pass per baseline setting and folder
            prep = data.prep(normalization_mode(settings, key))
            every = Split("train", train.store, np.arange(len(train.labels)), train.labels)
            features[key] = {"train": store_features(every, prep, key)} | {
                t.name: store_features(
                    Split(t.name, t.store, np.arange(len(t.labels)), t.labels), prep, key
                )
                for t in tests
            }
        observer.run_started(job_name(job, settings) + f" {key.label}", 0)
        started = time.perf_counter()
        rows, _ = run_splits(train, settings, job.seed)
        fitted = fit_baseline(features[key]["train"][rows], train.labels[rows], n_classes, key)
        final = {
            t.name: _evaluation(t.name, predict_proba(fitted, features[key][t.name]), t.labels)
            for t in tests
        }
        state = {k: v for k, v in asdict(fitted).items() if k != "settings"}
        result = RunResult(state, [], final, 0, time.perf_counter() - started)
        observer.run_finished(job.run, write_run(out, job, settings, result, data))
