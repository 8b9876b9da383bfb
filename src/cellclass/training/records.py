"""A finished run, written: its rows of runs.csv, epochs.csv and predictions.csv, then its
checkpoint (which marks it done). One place builds these rows for training and for `evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.data.datasets import Dataset
from cellclass.data.preprocessing import preprocessing_to_dict
from cellclass.metrics import collapsed, expected_calibration_error, softmax
from cellclass.training.jobs import ExperimentData, Job, run_splits
from cellclass.training.settings import ExperimentSettings, normalization_mode
from cellclass.training.train import Evaluation, RunResult


def jsonable(data):
    return json.loads(json.dumps(data, default=str))


def checkpoint_for(out: Path, job: Job, settings: ExperimentSettings) -> Path:
    labels = tuple(recipe.label for recipe in settings.recipes) + settings.baselines
    return results.checkpoint_path(
        out, job.run, job.recipe.label, models=labels, control=job.control
    )


def finished_jobs(out: Path, jobs: list[Job], settings) -> tuple[list[Job], list[str]]:
    """The jobs whose run is finished: its rows are in runs.csv (written last) and its
    checkpoint loads and holds that run (an empty, truncated or foreign file does not count);
    and one line per checkpoint found unusable, whose run is trained again. A checkpoint
    without rows (interrupted while writing them) is not finished, silently."""
    done, unusable = [], []
    recorded = {
        (int(row["run"]), str(row["model"]), int(row.get("control") or 0))
        for row in results.read_table(out / results.RUNS_FILE)
    }
    for job in jobs:
        path = checkpoint_for(out, job, settings)
        if not path.is_file() or (job.run, job.recipe.label, int(job.control)) not in recorded:
            continue
        try:
            saved = results.load_checkpoint(path)
        except results.CheckpointError as error:
            unusable.append(str(error))
            continue
        held = (saved.get("run"), saved.get("model"), bool(saved.get("control")))
        if held != (job.run, job.recipe.label, job.control):
            unusable.append(f"{path}: holds run {held[0]} of model {held[1]!r}, not this run")
            continue
        done.append(job)
    return done, unusable


def write_run(out: Path, job: Job, settings, result: RunResult, data: ExperimentData) -> list[dict]:
    """Save one finished run's checkpoint, then append its rows (runs.csv last: marks it done)."""
    train, tests = data.train, data.tests
    prep = data.prep(normalization_mode(settings, job.recipe))
    class_names = train.index.class_names
    key = {"run": job.run, "model": job.recipe.label}
    fit_rows, _ = run_splits(train, settings, job.seed)
    train_accuracies = [r.accuracy for r in result.epochs if r.split == "train"]
    stuck = collapsed(train_accuracies, train.labels[fit_rows])  # shuffling keeps the shares
    about = {"seed": job.seed, "control": int(job.control)}
    about |= {"epoch": result.epoch, "collapsed": int(stuck)}
    run_rows, pred_rows = [], []
    for test in tests:
        evaluation = result.final[test.name]
        probs = softmax(evaluation.logits)
        seconds = "" if run_rows else result.seconds  # once per run: sums count runs once
        run_rows.append(run_row({**key, **about, "seconds": seconds}, test.name, evaluation, probs))
        pred_rows += prediction_rows(job.run, key["model"], test, probs, class_names, job.control)
    epoch_rows = [{**key, **asdict(r), "control": int(job.control)} for r in result.epochs]
    meta = {
        **key,
        "architecture": getattr(job.recipe, "model", "features"),
        "seed": job.seed,
        "control": job.control,
        "epoch": result.epoch,
        "recipe": jsonable(asdict(job.recipe)),
        "class_names": list(class_names),
        "in_channels": train.store.channels,
        "image_size": settings.image_size,
        "preprocessing": jsonable(preprocessing_to_dict(prep)),
    }
    # Weights first, rows after, runs.csv last: the tables never hold a run without weights,
    # and a run is done once its runs.csv rows exist (`finished_jobs`); an interruption in
    # between leaves a checkpoint without rows, and that run is trained again.
    results.save_checkpoint(checkpoint_for(out, job, settings), result.model, meta)
    results.append_rows(out / results.EPOCHS_FILE, results.EPOCHS_COLUMNS, epoch_rows)
    results.append_rows(
        out / results.PREDICTIONS_FILE, results.prediction_columns(class_names), pred_rows
    )
    results.append_rows(out / results.RUNS_FILE, results.RUNS_COLUMNS, run_rows)  # marks it done
    return run_rows


def run_row(about: dict, dataset: str, evaluation: Evaluation, probs: np.ndarray) -> dict:
    """One runs.csv row: ``about`` (run, model, seed, seconds, control, epoch, collapsed)
    and the scores of one evaluation on test set ``dataset``; probs (N, K) float.
    ``seconds`` is the run's wall time on its first row and empty on the others."""
    return {
        **about,
        "dataset": dataset,
        "accuracy": evaluation.accuracy,
        "loss": evaluation.loss,
        "ece": expected_calibration_error(probs, evaluation.labels),
        "n_images": len(evaluation.labels),
    }


def prediction_rows(
    k: int, model: str, test: Dataset, probs: np.ndarray, class_names, control: bool = False
) -> list[dict]:
    """predictions.csv rows of one run on one test set; probs (N, K) float."""
    predicted = probs.argmax(1)
    rows = []
    for i, path in enumerate(test.store.paths):
        row = {
            "run": k,
            "model": model,
            "dataset": test.name,
            "path": str(path),
            "true": class_names[test.labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": float(probs[i, predicted[i]]),
            "control": int(control),
        }
        row.update({f"p_{name}": float(probs[i, j]) for j, name in enumerate(class_names)})
        rows.append(row)
    return rows
