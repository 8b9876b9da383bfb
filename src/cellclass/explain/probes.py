"""Probes of a trained network: is its confidence worth anything, is it fragile, is it cheating?

Four questions, each answered by plain functions on arrays, tensors and table rows:

- **Calibration** (`fit_calibration`): one temperature T per run, fitted on that run's
  validation images, makes ``softmax(logits / T)`` honest; `write_calibration` stores it as
  ``calibration.json`` in the results folder and `results.load_temperatures` reads
  it back.
- **Fragility** (`flip_sweep`): the share of predictions changed by FGSM perturbations of
  size epsilon, against random sign noise of the same size (the control). A network whose
  decision flips under an invisible, *aimed* nudge but not under a random one reduces the
  image to few directions: the study's "networks reduce dimension, hence adversarial examples".
- **Confound** (`intensity_features`, `confound_flagged`): a logistic
  regression on per-image intensity statistics. If it does as well as the CNN, the CNN may be
  classifying brightness rather than morphology.
- **Learning is not minimisation** (`loss_accuracy_rows`, `similar_loss_pairs`): final
  training loss against test accuracy per run; runs with the same loss can generalise
  differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from cellclass import results
from cellclass.metrics import expected_calibration_error, fit_temperature, softmax

__all__ = [
    "INTENSITY_PERCENTILES",
    "Calibration",
    "confound_flagged",
    "fgsm",
    "fit_calibration",
    "flip_sweep",
    "intensity_feature_names",
    "intensity_features",
    "loss_accuracy_rows",
    "recalibrate",
    "sign_noise",
    "similar_loss_pairs",
    "write_calibration",
]

INTENSITY_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)  # per channel, besides mean and sd


# ---------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    temperature: float  # logits are divided by it; > 1 softens over-confident probabilities
    ece_before: float  # expected calibration error at T = 1 on the fitting images
    ece_after: float  # the same at the fitted T (in-sample: optimistic)
    n_images: int  # validation images the temperature was fitted on


def fit_calibration(logits, labels) -> Calibration:
    """Temperature scaling fitted on held-out logits.

    Parameters
    ----------
    logits : (N, K) ndarray of float, a run's logits on its validation images
    labels : (N,) ndarray of int, their true classes
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("no validation images to fit a temperature on")
    temperature = fit_temperature(logits, labels)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, temperature=temperature), labels)
    return Calibration(temperature, before, after, len(labels))


def recalibrate(probs, temperature: float) -> np.ndarray:
    """Probabilities at temperature T from probabilities at T = 1: softmax(log(p) / T).

    Equal to ``softmax(logits / T)`` because log p differs from the logits by a constant per
    row, so saved probabilities (predictions.csv) can be recalibrated without the model.

    Parameters
    ----------
    probs : (N, K) ndarray of float, rows summing to 1
    temperature : float > 0

    Returns
    -------
    (N, K) ndarray of float64
    """
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))  # (N, K)
    return softmax(log_probs, temperature=temperature)


def write_calibration(
    run_dir: str | Path, calibrations: dict[tuple[int, str], Calibration]
) -> Path:
    """Write ``calibration.json`` (atomically) into the results folder; return its path.

    calibrations : (run, model) -> its fitted `Calibration`; model is the runs.csv label.
    """
    data = {
        "method": "temperature scaling: p = softmax(logits / temperature)",
        "fitted_on": "each run's validation split",
        "runs": [
            {"run": run, "model": model, **asdict(calibration)}
            for (run, model), calibration in sorted(calibrations.items())
        ],
    }
    path = Path(run_dir) / results.CALIBRATION_FILE
    results.write_json(path, data)
    return path


# ---------------------------------------------------------------- adversarial fragility
def fgsm(model: nn.Module, x: torch.Tensor, targets, epsilon: float) -> torch.Tensor:
    """Fast gradient sign method: one step of size epsilon up the cross-entropy of targets.

    Parameters
    ----------
    model : nn.Module in eval mode, (B, C, H, W) -> (B, K) logits
    x : (B, C, H, W) float32 tensor in [0, 1]
    targets : (B,) int classes to move away from (usually the model's own predictions)
    epsilon : step per pixel, in the normalised [0, 1] units the model sees

    Returns
    -------
    (B, C, H, W) float32 tensor, clipped to [0, 1]
    """
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64, device=x.device)
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)  # (B, C, H, W)
        loss = functional.cross_entropy(model(inputs), targets, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, inputs)  # (B, C, H, W)
    return (x + epsilon * gradient.sign()).clamp(0.0, 1.0)  # (B, C, H, W)


def sign_noise(x: torch.Tensor, epsilon: float, *, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus +-epsilon per pixel with random signs (the FGSM control), clipped to [0, 1].

    x : (B, C, H, W) float32 tensor in [0, 1]; returns the same shape.
    """
    signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device) * 2 - 1
    return (x + epsilon * signs.to(x.dtype)).clamp(0.0, 1.0)  # (B, C, H, W)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)  # (B,)


def flip_sweep(
    model: nn.Module,
    x: torch.Tensor,
    epsilons,
    *,
    generator: torch.Generator,
    batch_size: int = 50,
) -> list[dict]:
    """Share of the model's predictions changed by FGSM and by random sign noise per epsilon.

    Parameters
    ----------
    model : nn.Module in eval mode
    x : (N, C, H, W) float32 tensor in [0, 1]
    epsilons : perturbation sizes in [0, 1] units (e.g. 0.5/255 ... 8/255)
    generator : seeds the random signs

    Returns
    -------
    list of dict
        One row per (epsilon, attack): ``epsilon``, ``attack`` ("FGSM" or "random sign"),
        ``flipped`` (fraction of images whose predicted class changed), ``n_images``.
    """
    flips = {(eps, attack): 0 for eps in epsilons for attack in ("FGSM", "random sign")}
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]  # (B, C, H, W)
        clean = _predict(model, chunk)  # (B,)
        for eps in epsilons:
            attacked = _predict(model, fgsm(model, chunk, clean, eps))
            noisy = _predict(model, sign_noise(chunk, eps, generator=generator))
            flips[eps, "FGSM"] += int((attacked != clean).sum())
            flips[eps, "random sign"] += int((noisy != clean).sum())
    return [
        {"epsilon": float(eps), "attack": attack, "flipped": count / len(x), "n_images": len(x)}
        for (eps, attack), count in flips.items()
    ]


# ---------------------------------------------------------------- confound probe
def intensity_feature_names(n_channels: int) -> list[str]:
    """Names of the `intensity_features` columns: ``mean_c0``, ``sd_c0``, ``p1_c0``..."""
    stats = ["mean", "sd", *(f"p{q}" for q in INTENSITY_PERCENTILES)]
    return [f"{stat}_c{c}" for c in range(n_channels) for stat in stats]


def intensity_features(x: torch.Tensor) -> np.ndarray:
    """Per-image, per-channel intensity statistics: mean, sd and `INTENSITY_PERCENTILES`.

    They see how bright and how contrasted an image is, but nothing of its shapes.

    Parameters
    ----------
    x : (B, C, H, W) float32 tensor in [0, 1]

    Returns
    -------
    (B, C * 9) ndarray of float64, columns as `intensity_feature_names`.
    """
    flat = x.detach().reshape(x.shape[0], x.shape[1], -1).double().cpu().numpy()  # (B, C, H*W)
    parts = [
        flat.mean(2, keepdims=True),  # (B, C, 1)
        flat.std(2, ddof=1, keepdims=True),  # (B, C, 1)
        np.moveaxis(np.percentile(flat, INTENSITY_PERCENTILES, axis=2), 0, 2),  # (B, C, 7)
    ]
    return np.concatenate(parts, axis=2).reshape(len(flat), -1)  # (B, C * 9)


def confound_flagged(
    probe_accuracy: float, cnn_accuracy: float, chance: float, *, margin: float = 0.05
) -> bool:
    """Whether the intensity probe explains the CNN's accuracy.

    True when the CNN is above chance (by more than ``margin``), the probe is too, and the
    probe comes within ``margin`` of the CNN or beats it. Chance: the share of the commonest
    class in the test set.
    """
    above_chance = min(probe_accuracy, cnn_accuracy) > chance + margin
    return bool(above_chance and probe_accuracy >= cnn_accuracy - margin)


# ---------------------------------------------------------------- loss vs accuracy
def loss_accuracy_rows(epoch_rows: list[dict], run_rows: list[dict]) -> list[dict]:
    """Training loss of the kept weights against test accuracy, per (run, model, test set).

    The kept weights are those of runs.csv's ``epoch`` when it names one (recipes keeping
    the best validation epoch), else of the last epoch.

    Parameters
    ----------
    epoch_rows, run_rows : rows of epochs.csv and runs.csv (`cellclass.results.read_table`);
        label-shuffled control runs are left out.

    Returns
    -------
    list of dict
        ``run``, ``model``, ``dataset``, ``train_loss``, ``accuracy``.
    """
    losses: dict[tuple, dict[int, float]] = {}
    for row in epoch_rows:
        if row.get("split") == "train" and not row.get("control"):
            losses.setdefault((row["run"], row["model"]), {})[row["epoch"]] = float(row["loss"])
    out = []
    for row in run_rows:
        per_epoch = losses.get((row["run"], row["model"]))
        if row.get("control") or not per_epoch:
            continue
        kept = row.get("epoch")  # the epoch whose weights were kept ("best" recipes)
        epoch = kept if isinstance(kept, int) and kept in per_epoch else max(per_epoch)
        out.append(
            {
                "run": row["run"],
                "model": row["model"],
                "dataset": row["dataset"],
                "train_loss": per_epoch[epoch],
                "accuracy": float(row["accuracy"]),
            }
        )
    return out


def similar_loss_pairs(rows: list[dict], *, tolerance: float = 0.1) -> list[dict]:
    """Per (model, test set), the two runs with near-equal training loss that differ most.

    Two losses are near-equal when they differ by at most ``tolerance`` times the larger.

    Returns
    -------
    list of dict
        ``model``, ``dataset``, ``runs`` (a, b), ``train_loss`` (a, b), ``accuracy`` (a, b);
        only groups with at least one such pair.
    """
    pairs = []
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in rows):
        group = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
        best = None
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                close = abs(a["train_loss"] - b["train_loss"]) <= tolerance * max(
                    a["train_loss"], b["train_loss"]
                )
                gap = abs(a["accuracy"] - b["accuracy"])
                if close and (best is None or gap > best[0]):
                    best = (gap, a, b)
        if best is not None:
            _, a, b = best
            pairs.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "runs": (a["run"], b["run"]),
                    "train_loss": (a["train_loss"], b["train_loss"]),
                    "accuracy": (a["accuracy"], b["accuracy"]),
                }
            )
    return pairs
