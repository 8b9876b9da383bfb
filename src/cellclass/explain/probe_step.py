"""The probes of the explain step: calibration, fragility, confound, loss against accuracy.

Each ``*_outputs`` function runs one probe of `cellclass.explain.probes` over the saved runs
and test splits of a results folder, writes its tidy table (CSV) and figure into the explain folder,
and returns an `Outputs`: the figure entries for the report and one-sentence notes saying
what was found. `cellclass.explain.step.explain_run` calls them in turn.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cellclass import results
from cellclass.data.normalization import Normalization
from cellclass.explain import probes
from cellclass.explain.common import CPU, Outputs, balanced_rows, figure_entry, split_logits
from cellclass.figures import probes as probe_figures
from cellclass.metrics import expected_calibration_error, reliability_bins, softmax
from cellclass.models.logistic import fit_logistic, predict_logistic
from cellclass.predict import SavedRun
from cellclass.training.train import Split, gather_batch

__all__ = ["adversarial_outputs", "calibration_outputs", "confound_outputs", "loss_outputs"]

N_STATISTICS = 2 + len(probes.INTENSITY_PERCENTILES)  # intensity features per channel
MIN_VAL = 10  # validation images below which a run's temperature is not fitted
RELIABILITY_BINS = 10  # coarser than the report's 15: test sets here are small
NOTABLE_GAP = 0.05  # accuracy difference between runs of similar loss worth a sentence


def _share(values) -> str:
    return f"{100 * float(values):.0f} %"


# ---------------------------------------------------------------- calibration
def calibration_outputs(
    out: Path,
    run_dir: Path,
    runs: list[SavedRun],
    val_splits: dict[int, Split],
    predictions: list[dict],
) -> Outputs:
    """Fit one temperature per saved run on its validation split; reliability on the tests.

    Writes ``calibration.json`` into ``run_dir`` (for `cellclass predict`) and
    ``calibration.csv`` (run, model, dataset, temperature, ece_before, ece_after, n_images)
    into ``out``. ``val_splits`` maps run number to its validation split; ``predictions`` are
    the predictions.csv rows, recalibrated from their probabilities without the models.
    """
    usable = {run: split for run, split in val_splits.items() if len(split.labels) >= MIN_VAL}
    fits = {
        (saved.run, saved.model_name): probes.fit_calibration(
            split_logits(saved, usable[saved.run], saved.normalization), usable[saved.run].labels
        )
        for saved in runs
        if saved.run in usable
    }
    if not fits:
        fewest = min((len(split.labels) for split in val_splits.values()), default=0)
        return Outputs(
            notes=[
                f"Calibration left out: the runs kept {fewest} validation images "
                f"or fewer; a temperature needs at least {MIN_VAL}."
            ]
        )
    probes.write_calibration(run_dir, fits)
    table = [
        {"run": run, "model": model, "dataset": "val", **asdict(fit)}
        for (run, model), fit in fits.items()
    ]
    panels = _test_reliability(predictions, runs[0].meta["class_names"], fits, table)
    results.write_table(out / "calibration.csv", list(table[0]), table)
    notes = [_temperature_note(fits)] + [
        f"{name}: expected calibration error {_share(p['ece_before'])} before, "
        f"{_share(p['ece_after'])} after temperature scaling (runs pooled)."
        for name, p in panels.items()
    ]
    if not panels:
        return Outputs(notes=notes)
    path = probe_figures.reliability_comparison(
        panels, out / "figures" / "calibration.png", title="Calibration before and after T"
    )
    caption = (
        "Accuracy against confidence on the test sets; on the dashed diagonal, “90 % sure” "
        "is right 90 % of the time. T is fitted on validation images only."
    )
    return Outputs([figure_entry(out, path, "Calibration: temperature scaling", caption)], notes)


def _temperature_note(fits: dict) -> str:
    temperatures = sorted(fit.temperature for fit in fits.values())
    low, high = temperatures[0], temperatures[-1]
    verdict = (
        "the raw softmax was over-confident"
        if low > 1
        else "the raw softmax was under-confident"
        if high < 1
        else "T > 1 softens over-confident runs, T < 1 sharpens under-confident ones"
    )
    note = (
        f"Temperature scaling: T = {low:.2f}–{high:.2f} over {len(fits)} run(s), each fitted "
        f"on its own validation images ({verdict})."
    )
    if low <= 0.011 or high >= 99:  # at the search bounds of cellclass.metrics.fit_temperature
        note += " A T at 0.01 or 100 is a bound, not an estimate: too few or separable images."
    return note


def _test_reliability(predictions, class_names, fits, table: list[dict]) -> dict[str, dict]:
    """Reliability bins per (test set, model) before/after, runs pooled; rows added to table."""
    index = {name: i for i, name in enumerate(class_names)}
    columns = [f"p_{name}" for name in class_names]
    rows = [r for r in predictions if not r.get("control") and (r["run"], r["model"]) in fits]
    several = len({model for _, model in fits}) > 1
    panels = {}
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        subset = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        probs = np.array([[r[c] for c in columns] for r in subset], dtype=float)  # (N, K)
        probs /= probs.sum(1, keepdims=True)  # undo CSV rounding
        labels = np.array([index[r["true"]] for r in subset])  # (N,)
        run_of = np.array([r["run"] for r in subset])  # (N,)
        scaled = np.empty_like(probs)
        for run in np.unique(run_of):
            mine, fit = run_of == run, fits[int(run), model]
            scaled[mine] = probes.recalibrate(probs[mine], fit.temperature)
            table.append(
                {
                    "run": int(run),
                    "model": model,
                    "dataset": dataset,
                    "temperature": fit.temperature,
                    "ece_before": expected_calibration_error(probs[mine], labels[mine]),
                    "ece_after": expected_calibration_error(scaled[mine], labels[mine]),
                    "n_images": int(mine.sum()),
                }
            )
        name = f"{dataset} ({model})" if several else dataset
        panels[name] = {
            "before": reliability_bins(probs, labels, n_bins=RELIABILITY_BINS),
            "after": reliability_bins(scaled, labels, n_bins=RELIABILITY_BINS),
            "ece_before": expected_calibration_error(probs, labels),
            "ece_after": expected_calibration_error(scaled, labels),
        }
    return panels


# ---------------------------------------------------------------- adversarial
def adversarial_outputs(
    out: Path,
    runs: list[SavedRun],
    tests: list[Split],
    *,
    n_images: int,
    epsilons: tuple[float, ...],
    rng: np.random.Generator,
) -> Outputs:
    """FGSM against random sign noise for every run on up to ``n_images`` of each test set.

    Writes ``adversarial.csv`` (run, model, dataset, epsilon, attack, flipped, n_images), the
    sweep figure and an example panel of ``runs[0]`` on the first test set. Attacks use the
    plain model, without the test-time augmentation some recipes predict with.
    """
    seed = int(rng.integers(2**31))
    table = []
    for split in tests:
        rows = balanced_rows(split.labels, n_images, rng=rng)
        for saved in runs:
            x = gather_batch(split, rows, saved.normalization, CPU)  # as this run sees them
            generator = torch.Generator().manual_seed(seed)  # same noise for every run
            sweep = probes.flip_sweep(saved.model, x, epsilons, generator=generator)
            key = {"run": saved.run, "model": saved.model_name, "dataset": split.name}
            table += [{**key, **row} for row in sweep]
    if not table:
        return Outputs()
    results.write_table(out / "adversarial.csv", list(table[0]), table)
    path = probe_figures.flip_sweep_figure(
        table, out / "figures" / "adversarial.png", title="How easily is the decision flipped?"
    )
    caption = (
        "Share of predictions changed by an aimed perturbation (FGSM, red) and by random ± noise "
        "of the same size (grey), per pixel in grey levels of 255; thin lines: runs. A wide gap "
        "means a few invisible, aimed changes decide the class."
    )
    entries = [figure_entry(out, path, "Adversarial fragility", caption)]
    groups = dict.fromkeys((row["dataset"], row["model"]) for row in table)
    notes = [
        _sweep_note(table, dataset, model, len(groups) > len(tests)) for dataset, model in groups
    ]
    example = _example_panel(
        out,
        runs[0],
        tests[0],
        runs[0].normalization,
        _telling_epsilon(table, tests[0].name, runs[0].model_name),
        rng,
    )
    return Outputs(entries + example, notes)


def _mean_flips(table: list[dict], dataset: str, model: str, attack: str) -> dict[float, float]:
    """epsilon -> mean share flipped over the runs of one model on one test set."""
    values: dict[float, list[float]] = {}
    for row in table:
        if (row["dataset"], row["model"], row["attack"]) == (dataset, model, attack):
            values.setdefault(row["epsilon"], []).append(row["flipped"])
    return {eps: float(np.mean(v)) for eps, v in sorted(values.items())}


def _telling_epsilon(table: list[dict], dataset: str, model: str) -> float:
    """The smallest epsilon at which FGSM flips half the predictions, else the largest."""
    fgsm = _mean_flips(table, dataset, model, "FGSM")
    return next((eps for eps, share in fgsm.items() if share >= 0.5), max(fgsm))


def _sweep_note(table: list[dict], dataset: str, model: str, several: bool) -> str:
    eps = _telling_epsilon(table, dataset, model)
    aimed = _mean_flips(table, dataset, model, "FGSM")[eps]
    noise = _mean_flips(table, dataset, model, "random sign")[eps]
    runs = {row["run"] for row in table if (row["dataset"], row["model"]) == (dataset, model)}
    who = f"{dataset} ({model})" if several else dataset
    return (
        f"{who}: a perturbation of ±{255 * eps:g}/255 grey levels flips {_share(aimed)} of "
        f"predictions when aimed (FGSM) and {_share(noise)} when random "
        f"(mean of {len(runs)} run(s))."
    )


def _example_panel(out, saved: SavedRun, split: Split, norm, eps: float, rng) -> list[dict]:
    """Original / perturbation / adversarial for three images of one run, flipped ones first."""
    x = gather_batch(split, balanced_rows(split.labels, 12, rng=rng), norm, CPU)  # (12, C, H, W)
    with torch.no_grad():
        before = softmax(saved.model(x).numpy())  # (12, K)
    adversarial = probes.fgsm(saved.model, x, before.argmax(1), eps)  # (12, C, H, W)
    with torch.no_grad():
        after = softmax(saved.model(adversarial).numpy())  # (12, K)
    flipped = before.argmax(1) != after.argmax(1)
    shown = np.argsort(~flipped, kind="stable")[:3]  # flipped images first, then the others
    x, adversarial, before, after = x[shown], adversarial[shown], before[shown], after[shown]
    names = saved.meta["class_names"]
    captions = [
        (
            f"original: {names[b.argmax()]} {_share(b.max())}",
            f"FGSM: {names[a.argmax()]} {_share(a.max())}",
        )
        for b, a in zip(before, after, strict=True)
    ]
    path = probe_figures.adversarial_examples_figure(
        x.permute(0, 2, 3, 1).numpy(),
        adversarial.permute(0, 2, 3, 1).numpy(),
        captions,
        out / "figures" / f"adversarial-examples-{results.file_slug(split.name)}.png",
        epsilon=eps,
        title=f"Run {saved.run} ({saved.model_name}) on {split.name}",
    )
    caption = (
        "Left: a test image and the network's confidence; middle: the FGSM change, magnified; "
        "right: the perturbed image and what the network now says."
    )
    return [figure_entry(out, path, "Adversarial examples", caption, dataset=split.name)]


# ---------------------------------------------------------------- confound
def _split_features(split: Split, norm: Normalization, batch_size: int = 64) -> np.ndarray:
    """(N, F) `cellclass.explain.probes.intensity_features` of every image of a split, in chunks."""
    parts = []
    for start in range(0, len(split.indices), batch_size):
        rows = np.arange(start, min(start + batch_size, len(split.indices)))
        parts.append(probes.intensity_features(gather_batch(split, rows, norm, CPU)))
    return np.concatenate(parts)


def confound_outputs(
    out: Path,
    train: Split,
    tests: list[Split],
    norm: Normalization,
    run_rows: list[dict],
    *,
    class_names: list[str],
    margin: float,
) -> Outputs:
    """Logistic regression on intensity statistics, fitted on ``train``, against the CNN.

    Writes ``confound.csv`` (dataset, model, probe_accuracy, cnn_accuracy, chance, flagged)
    and the per-class intensity histograms of the training images. ``run_rows`` are the
    runs.csv rows giving each model's mean test accuracy.
    """
    features = _split_features(train, norm)  # (N, F)
    probe = fit_logistic(features, train.labels, len(class_names))
    table = []
    for split in tests:
        predicted = predict_logistic(probe, _split_features(split, norm)).argmax(1)
        accuracy = float((predicted == split.labels).mean())
        chance = float(np.bincount(split.labels).max() / len(split.labels))
        real = [r for r in run_rows if r["dataset"] == split.name and not r.get("control")]
        for model in dict.fromkeys(r["model"] for r in real):
            cnn = float(np.mean([r["accuracy"] for r in real if r["model"] == model]))
            flagged = probes.confound_flagged(accuracy, cnn, chance, margin=margin)
            table.append(
                {
                    "dataset": split.name,
                    "model": model,
                    "probe_accuracy": accuracy,
                    "cnn_accuracy": cnn,
                    "chance": chance,
                    "flagged": flagged,
                }
            )
    several = len({row["model"] for row in table}) > 1
    notes = [_confound_note(row, several, margin) for row in table]
    if table:
        results.write_table(out / "confound.csv", list(table[0]), table)
    per_channel = features.reshape(len(features), -1, N_STATISTICS)  # (N, C, 9)
    stats = {
        "mean intensity": per_channel[:, :, 0].mean(1),  # (N,) averaged over channels
        "intensity sd": per_channel[:, :, 1].mean(1),
        "99th percentile": per_channel[:, :, -1].mean(1),
    }
    path = probe_figures.intensity_histograms(
        stats,
        train.labels,
        class_names,
        out / "figures" / "intensity.png",
        title="Per-image intensity of the training images, by class",
    )
    caption = (
        "If the classes separate here, brightness alone can tell them apart: the confound "
        "probe (a logistic regression on these statistics) measures how well."
    )
    return Outputs([figure_entry(out, path, "Intensity by class", caption)], notes)


def _confound_note(row: dict, several: bool, margin: float) -> str:
    cnn = f"{row['model']} mean" if several else "CNN mean"
    text = (
        f"{row['dataset']}: intensity statistics alone classify {_share(row['probe_accuracy'])} "
        f"correctly ({cnn} {_share(row['cnn_accuracy'])}, commonest class "
        f"{_share(row['chance'])})"
    )
    if row["flagged"]:
        return text + ": the network may be using brightness rather than morphology."
    if row["cnn_accuracy"] <= row["chance"] + margin:
        return text + ": the CNN is near chance, so there is nothing for brightness to explain."
    return text + ": brightness alone does not explain the CNN's accuracy."


# ---------------------------------------------------------------- loss vs accuracy
def loss_outputs(
    out: Path, epoch_rows: list[dict], run_rows: list[dict], *, chance: float
) -> Outputs:
    """Final training loss against test accuracy per run; ``loss_accuracy.csv`` and scatter."""
    rows = probes.loss_accuracy_rows(epoch_rows, run_rows)
    if not rows:
        return Outputs(notes=["Loss against accuracy left out: no test-set results in runs.csv."])
    results.write_table(out / "loss_accuracy.csv", list(rows[0]), rows)
    path = probe_figures.loss_accuracy_figure(
        rows, out / "figures" / "loss-accuracy.png", chance=chance
    )
    caption = (
        "Training minimises the loss, but the lowest loss is not the best network: runs that "
        "end at similar loss can generalise differently. Compare runs of one model: label "
        "smoothing and augmentation raise a recipe's training loss by design."
    )
    notes = []
    for pair in probes.similar_loss_pairs(rows):
        (a, b), (loss_a, loss_b) = pair["runs"], pair["train_loss"]
        acc_a, acc_b = pair["accuracy"]
        who = f"{pair['dataset']} ({pair['model']})"
        if abs(acc_a - acc_b) < NOTABLE_GAP:
            notes.append(f"{who}: runs of similar training loss reached similar test accuracy.")
            continue
        notes.append(
            f"{who}: runs {a} and {b} ended at training loss {loss_a:.3g} and {loss_b:.3g} "
            f"but reached {_share(acc_a)} and {_share(acc_b)} test accuracy."
        )
    return Outputs([figure_entry(out, path, "Learning is not minimisation", caption)], notes)
