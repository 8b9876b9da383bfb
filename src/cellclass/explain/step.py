"""The explain step of a results folder: what the network looks at, and how far to trust it.

`explain_run` loads the saved runs and the folders recorded in ``config.json`` (the training
folder, for each run's validation split and the confound probe; the test folders) and writes::

    <run_dir>/calibration.json     one temperature per run (`results.load_temperatures`)
    <run_dir>/explain/             (or ``out_dir``)
      explain.json                 what was computed: settings, figures with captions, notes
      calibration.csv              run, model, dataset, temperature, ece_before, ece_after, n_images
      adversarial.csv              run, model, dataset, epsilon, attack, flipped, n_images
      confound.csv                 dataset, model, probe_accuracy, cnn_accuracy, chance, flagged
      loss_accuracy.csv            run, model, dataset, train_loss, accuracy
      figures/*.png                attribution overlays, class averages, probe figures

`explain_section` turns ``explain.json`` into a section of the HTML report. Attribution
maps are drawn for one run (``--run``, ``--model``; default the first). Calibration covers
every run; the FGSM sweep the first ``adversarial_runs`` runs of each model. The validation
split of each run is recomputed from its seed (`cellclass.training.run_splits`), so the
training folder must still be where config.json says; if it is not, those probes are left
out with a note.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from cellclass import results
from cellclass.checks import chance_levels
from cellclass.explain import attribution as explain
from cellclass.explain.common import (
    CPU,
    ExplainFolder,
    Outputs,
    balanced_rows,
    figure_entry,
    load_path_split,
    load_test_splits,
    load_training_splits,
    open_folder,
)
from cellclass.explain.probe_step import (
    adversarial_outputs,
    calibration_outputs,
    confound_outputs,
    loss_outputs,
)
from cellclass.figures import explain as explain_figures
from cellclass.metrics import softmax
from cellclass.predict import SavedRun
from cellclass.training.train import Split, gather_batch

__all__ = ["EXPLAIN_FILE", "ExplainSettings", "explain_run", "explain_section"]

EXPLAIN_FILE = "explain.json"  # inside the explain folder
SECTION_TITLE = "What is the network looking at, and how far can it be trusted?"


@dataclass(frozen=True)
class ExplainSettings:
    run: int | None = None  # saved run whose attribution maps are drawn; None: the first
    model: str | None = None  # its model (runs.csv label) when there are several; None: first
    tests: tuple[str, ...] = ()  # test sets of config.json to explain; (): every one
    n_images: int = 8  # images per test set in the attribution panels (classes take turns)
    n_average: int = 48  # images per test set averaged into the per-class maps
    n_adversarial: int = 100  # images per test set in the FGSM sweep (CPU time grows with it)
    adversarial_runs: int = 3  # runs per model in the FGSM sweep; enough to show their spread
    epsilons: tuple[float, ...] = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)  # [0, 1] units
    patch_fraction: float = 0.125  # occlusion patch side as a fraction of the image side
    probes: bool = True  # also calibration, FGSM, confound and loss-vs-accuracy (else maps only)
    confound_margin: float = 0.05  # the probe within this of the CNN's accuracy raises the flag
    seed: int = 0  # seeds which images are drawn and the random-sign control


# ---------------------------------------------------------------- attribution
def _attribution_outputs(
    folder: ExplainFolder, saved: SavedRun, split: Split, settings, rng
) -> Outputs:
    """Overlay panel of a few images and per-class average maps of one split."""
    norm = saved.normalization
    size = split.store.pixels.shape[1]
    patch = max(1, round(settings.patch_fraction * size))
    plain = saved.uses_tta  # maps explain one forward pass, not the 8-view TTA average
    temperatures = {} if plain else results.load_temperatures(folder.run_dir)  # T fits TTA outputs
    temperature = temperatures.get((saved.run, saved.model_name), 1.0)
    rows = balanced_rows(split.labels, settings.n_images, rng=rng)
    x = gather_batch(split, rows, norm, CPU)  # (B, C, H, W)
    with torch.no_grad():
        probs = softmax(saved.model(x).numpy(), temperature=temperature)  # (B, K)
    predicted, labels = probs.argmax(1), split.labels[rows]
    maps = explain.explain_batch(saved.model, x, predicted, patch_size=patch)
    map_rows = [
        explain_figures.MapRow(f"{name}\npredicted class", values, explain.SIGNED[name])
        for name, values in maps.items()
    ]
    wrong = (labels >= 0) & (labels != predicted)
    if wrong.any():
        true_maps = explain.explain_batch(saved.model, x[wrong], labels[wrong], patch_size=patch)
        for name, values in true_maps.items():
            full = np.full((len(rows), *values.shape[1:]), np.nan, np.float32)
            full[wrong] = values
            map_rows.append(
                explain_figures.MapRow(f"{name}\ntrue class", full, explain.SIGNED[name], wrong)
            )
    names = saved.meta["class_names"]
    titles = [
        explain_figures.prediction_title(names[t] if t >= 0 else None, names[p], probs[i, p])
        for i, (t, p) in enumerate(zip(labels, predicted, strict=True))
    ]
    images = x.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    path = explain_figures.attribution_figure(
        images,
        map_rows,
        titles,
        folder.out / "figures" / f"attribution-{results.file_slug(split.name)}.png",
        title=f"What run {saved.run} ({saved.model_name}) looks at: {split.name}",
    )
    scaled = "calibrated " if temperature != 1.0 else ""
    scaled += "single-view (no test-time augmentation) " if plain else ""
    caption = (
        "Red: pixels that push towards the class, blue: against it (occlusion: hiding a "
        f"{patch}-pixel square under the image's mean). Grad-CAM: where the deepest conv layer "
        f"with at least 8 x 8 positions finds the evidence. % = {scaled}confidence."
    )
    entries = [
        figure_entry(
            folder.out, path, f"Attribution maps: {split.name}", caption, dataset=split.name
        )
    ]
    entries += _average_outputs(folder, saved, split, settings.n_average, rng)
    return Outputs(entries)


def _average_outputs(folder: ExplainFolder, saved: SavedRun, split: Split, n_images: int, rng):
    """Mean image and mean normalised maps (gradient x input, Grad-CAM) per class."""
    rows = balanced_rows(split.labels, n_images, rng=rng)
    x = gather_batch(split, rows, saved.normalization, CPU)  # (B, C, H, W)
    labels = split.labels[rows]
    if (labels < 0).any():  # unlabelled images: group by the predicted class
        with torch.no_grad():
            labels = saved.model(x).argmax(1).numpy()
    methods = ("gradient x input", "Grad-CAM")
    maps = explain.explain_batch(saved.model, x, labels, methods=methods, patch_size=None)
    names = saved.meta["class_names"]
    present = np.unique(labels)
    means = np.stack([x[labels == c].mean(0).permute(1, 2, 0).numpy() for c in present])
    images = means / max(float(np.percentile(means, 99.5)), 1e-6)  # (K, H, W, C) stretched
    sigma = x.shape[-1] / 64  # pixel noise of gradient x input would hide any spatial bias
    map_rows = [
        explain_figures.MapRow(
            f"{name}\nclass average",
            ndimage.gaussian_filter(
                explain.class_average_maps(values, labels, len(names))[present],
                sigma=(0, sigma, sigma) if explain.SIGNED[name] else 0,
            ),
            explain.SIGNED[name],
        )
        for name, values in maps.items()
    ]
    titles = [(f"{names[c]}\n(mean of {(labels == c).sum()})", "black") for c in present]
    path = explain_figures.attribution_figure(
        images,
        map_rows,
        titles,
        folder.out / "figures" / f"average-{results.file_slug(split.name)}.png",
        title=f"Per-class average, run {saved.run} ({saved.model_name}): {split.name}",
    )
    caption = (
        "Mean image (contrast stretched) and mean attribution of each class towards its own "
        "class (gradient x input lightly smoothed). Cells sit anywhere, so a sharp pattern "
        "here (an edge, a corner, uneven illumination) is a position bias of the data."
    )
    title = f"Per-class average maps: {split.name}"
    return [figure_entry(folder.out, path, title, caption, dataset=split.name)]


# ---------------------------------------------------------------- the step
def _probe_outputs(folder: ExplainFolder, explained: SavedRun, tests, settings, rng, notes) -> list:
    """Every probe over every saved run; ``explained`` gives the adversarial example panel."""
    norm = folder.prep.normalization
    train, val_splits = load_training_splits(folder, notes)
    run_rows = results.read_table(folder.run_dir / results.RUNS_FILE)
    runs = [explained] + [saved for saved in folder.runs if saved is not explained]
    attacked = [s for s in runs if _rank(s, runs) < settings.adversarial_runs]  # per model
    outputs = []
    if val_splits:
        predictions = results.read_table(folder.run_dir / results.PREDICTIONS_FILE)
        outputs.append(
            calibration_outputs(folder.out, folder.run_dir, runs, val_splits, predictions)
        )
    if tests:
        outputs.append(
            adversarial_outputs(
                folder.out,
                attacked,
                tests,
                n_images=settings.n_adversarial,
                epsilons=settings.epsilons,
                rng=rng,
            )
        )
    if train is not None and tests:
        outputs.append(
            confound_outputs(
                folder.out,
                train,
                tests,
                norm,
                run_rows,
                class_names=folder.config["class_names"],
                margin=settings.confound_margin,
            )
        )
    epoch_rows = results.read_table(folder.run_dir / results.EPOCHS_FILE)
    chance = chance_levels(folder.config)
    chance = {row["dataset"]: chance.get(row["dataset"], chance[""]) for row in run_rows}
    outputs.append(loss_outputs(folder.out, epoch_rows, run_rows, chance=chance))
    return outputs


def _rank(saved: SavedRun, runs: list[SavedRun]) -> int:
    """Position of ``saved`` among the runs of its own model, in ``runs`` order."""
    same = [other for other in runs if other.model_name == saved.model_name]
    return next(i for i, other in enumerate(same) if other is saved)


def _check_settings(settings: ExplainSettings) -> None:
    problems = [
        (settings.n_images < 1 or settings.n_average < 1, "n_images and n_average must be >= 1"),
        (
            settings.n_adversarial < 1 or settings.adversarial_runs < 1,
            "n_adversarial and adversarial_runs must be >= 1",
        ),
        (not 0 < settings.patch_fraction <= 1, "patch_fraction must be in (0, 1]"),
        (not settings.epsilons or min(settings.epsilons) <= 0, "epsilons must be positive"),
    ]
    for failed, message in problems:
        if failed:
            raise ValueError(f"explain settings: {message}")


def _explained_run(folder: ExplainFolder, settings: ExplainSettings) -> SavedRun:
    """The saved run whose maps are drawn: ``settings.run`` and ``settings.model``, or the first."""
    chosen = [
        saved
        for saved in folder.runs
        if settings.run in (None, saved.run) and settings.model in (None, saved.model_name)
    ]
    if not chosen:
        have = ", ".join(f"{saved.run} ({saved.model_name})" for saved in folder.runs)
        raise ValueError(
            f"run={settings.run}, model={settings.model}: no such saved run in "
            f"{folder.run_dir}; it has runs {have}"
        )
    return chosen[0]


def explain_run(
    run_dir: str | Path,
    *,
    paths=(),
    out_dir: str | Path | None = None,
    settings: ExplainSettings = ExplainSettings(),
) -> Path:
    """Attribution maps and probes of a results folder; returns the explain folder.

    Parameters
    ----------
    run_dir : results folder of `cellclass.training.experiment.run_experiment`
    paths : image files or folders to explain instead of the test sets (their class is read
        from the parent folder's name when it is a class of the experiment)
    out_dir : where to write; default ``run_dir/explain``
    settings : which run, how many images, epsilons, and whether to run the probes

    Raises
    ------
    FileNotFoundError, ValueError (ExperimentError, FolderError, BadImagesError)
        Not a results folder, no such run or test set, unreadable images.
    """
    _check_settings(settings)
    folder = open_folder(Path(run_dir), out_dir)
    explained = _explained_run(folder, settings)
    rng = np.random.default_rng(settings.seed)
    notes: list[str] = []
    tests = load_test_splits(folder, settings.tests, notes)
    probed = (
        _probe_outputs(folder, explained, tests, settings, rng, notes) if settings.probes else []
    )
    sets = [load_path_split(folder, paths)] if paths else tests
    outputs = [_attribution_outputs(folder, explained, s, settings, rng) for s in sets] + probed
    record = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run": explained.run,
        "model": explained.model_name,
        "settings": asdict(settings),
        "paths": [str(p) for p in paths],
        "figures": [entry for output in outputs for entry in output.figures],
        "notes": notes + [note for output in outputs for note in output.notes],
    }
    results.write_json(folder.out / EXPLAIN_FILE, record)
    return folder.out


def explain_section(run_dir: str | Path, *, out_dir: str | Path | None = None) -> dict:
    """The report section of an explained results folder.

    Returns
    -------
    dict
        ``"title"``; ``"figures"``: list of {"path" (absolute PNG), "title", "caption",
        "dataset"} where dataset names the test set a figure belongs to (attribution maps,
        adversarial examples; to sit next to that test set's prediction panels) or is None
        (figures about the whole experiment); ``"notes"``: list of str, one finding each.

    Raises
    ------
    FileNotFoundError
        The folder was never explained (run `cellclass explain RUN_DIR` first).
    """
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "explain"
    path = out / EXPLAIN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not explained yet; run `cellclass explain {run_dir}`")
    record = results.read_json(path)
    figures = [
        {
            "path": str((out / entry["file"]).resolve()),
            "title": entry["title"],
            "caption": entry["caption"],
            "dataset": entry.get("dataset"),
        }
        for entry in record["figures"]
    ]
    return {"title": SECTION_TITLE, "figures": figures, "notes": list(record["notes"])}
