"""Paired statistics of a human scorer against network runs on the very same images.

Plain arrays in, a JSON-ready dict out: the human's accuracy against the spread over the runs
and against the runs' ensemble (mean probability), an exact McNemar test and Cohen's kappa
between human and ensemble, a paired bootstrap interval of the accuracy difference, and every
image where human and ensemble disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellclass.metrics import (
    bootstrap_difference,
    cohen_kappa,
    mcnemar_exact,
    summarize,
    wilson_interval,
)


@dataclass(frozen=True)
class PairedAnswers:
    images: tuple[str, ...]  # image paths inside the test folder, sorted (the pairing key)
    class_names: tuple[str, ...]  # the class map: label i is class_names[i]
    runs: tuple[int, ...]  # run numbers of the network runs
    truth: np.ndarray  # (N,) int64 true labels
    human: np.ndarray  # (N,) int64 the scorer's answers
    predicted: np.ndarray  # (R, N) int64 each run's predicted labels
    probs: np.ndarray  # (R, N, K) float64 each run's class probabilities


def paired_statistics(paired: PairedAnswers, *, rng: np.random.Generator) -> dict:
    """Every human-versus-network statistic on the paired images.

    The ensemble predicts the class of highest mean probability over runs; majority voting
    is reported alongside. Differences are human minus ensemble.

    Parameters
    ----------
    paired : PairedAnswers
    rng : numpy.random.Generator
        For the bootstrap interval.

    Returns
    -------
    dict
        ``n_images``, ``class_names``, ``human``, ``runs``, ``ensemble``, ``mcnemar``,
        ``kappa``, ``difference`` and ``disagreements``
        (printed by `cellclass.blind.compare.format_comparison`).
    """
    n, n_classes = len(paired.images), len(paired.class_names)
    human_correct = paired.human == paired.truth  # (N,)
    mean_probs = paired.probs.mean(axis=0)  # (N, K)
    ensemble = mean_probs.argmax(axis=1)  # (N,)
    ensemble_correct = ensemble == paired.truth
    votes = np.apply_along_axis(np.bincount, 0, paired.predicted, minlength=n_classes)  # (K, N)
    vote_accuracy = float(np.mean(votes.argmax(axis=0) == paired.truth))
    test = mcnemar_exact(human_correct, ensemble_correct)
    kappas = np.array([cohen_kappa(paired.human, run, n_classes) for run in paired.predicted])
    finite = kappas[np.isfinite(kappas)]
    return {
        "n_images": n,
        "class_names": list(paired.class_names),
        "human": _accuracy(human_correct),
        "runs": _run_ranking(paired, int(human_correct.sum())),
        "ensemble": {
            "method": "mean probability over runs",
            **_accuracy(ensemble_correct),
            "majority_vote_accuracy": vote_accuracy,
        },
        "mcnemar": {
            "human_right_ensemble_wrong": test["b10"],
            "human_wrong_ensemble_right": test["b01"],
            "p_value": test["p_value"],
        },
        "kappa": {
            "human_vs_ensemble": cohen_kappa(paired.human, ensemble, n_classes),
            "human_vs_runs_mean": float(finite.mean()) if finite.size else float("nan"),
        },
        "difference": bootstrap_difference(human_correct, ensemble_correct, rng=rng),
        "disagreements": _disagreements(paired, ensemble, mean_probs),
    }


def _accuracy(correct: np.ndarray) -> dict:
    k, n = int(correct.sum()), int(correct.size)
    low, high = wilson_interval(k, n)
    return {"n_correct": k, "accuracy": k / n, "ci_low": low, "ci_high": high}


def _run_ranking(paired: PairedAnswers, human_correct: int) -> dict:
    """Accuracy of each run and where the human falls among them (compared by counts)."""
    run_correct = (paired.predicted == paired.truth).sum(axis=1)  # (R,)
    below = int((run_correct < human_correct).sum())
    equal = int((run_correct == human_correct).sum())
    accuracies = run_correct / len(paired.images)
    return summarize(accuracies) | {
        "runs": list(paired.runs),
        "accuracies": accuracies.tolist(),
        "n_below_human": below,
        "n_equal_human": equal,
        "n_above_human": len(run_correct) - below - equal,
        "human_percentile": (below + 0.5 * equal) / len(run_correct),
    }


def _disagreements(paired: PairedAnswers, ensemble: np.ndarray, mean_probs: np.ndarray) -> list:
    """Images where the human and the ensemble chose different classes."""
    names = paired.class_names
    rows = []
    for i in np.flatnonzero(paired.human != ensemble):
        rows.append(
            {
                "image": paired.images[i],
                "true": names[paired.truth[i]],
                "human": names[paired.human[i]],
                "ensemble": names[ensemble[i]],
                "ensemble_probability": float(mean_probs[i, ensemble[i]]),
                "runs_agreeing": float(np.mean(paired.predicted[:, i] == ensemble[i])),
            }
        )
    return rows
