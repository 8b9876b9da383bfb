"""Use trained runs: evaluate them on new labelled folders, predict unlabelled images.

A results folder's checkpoints carry everything needed: architecture, class map and the fitted
preprocessing, so new images are seen exactly as the training images were.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cellclass import results
from cellclass.data.cache import load_store
from cellclass.data.datasets import Dataset, dataset_info, load_dataset, pixel_size_mismatch
from cellclass.data.folders import is_hidden
from cellclass.data.images import IMAGE_EXTENSIONS, is_image_path
from cellclass.data.normalization import Normalization
from cellclass.data.preprocessing import Preprocessing, preprocessing_from_dict
from cellclass.metrics import softmax
from cellclass.models.cnn import build_model
from cellclass.progress import Observer
from cellclass.training import ExperimentError
from cellclass.training.records import prediction_rows, run_row
from cellclass.training.train import Split, evaluate, predict_logits


@dataclass(frozen=True)
class SavedRun:
    run: int  # run number (seed = experiment seed + run)
    model_name: str  # architecture
    model: torch.nn.Module  # weights loaded, eval mode, CPU
    meta: dict  # the checkpoint's metadata: class_names, preprocessing, seed...

    @property
    def preprocessing(self) -> Preprocessing:
        """The fitted preprocessing this run was trained with (each recipe has its own)."""
        return preprocessing_from_dict(self.meta["preprocessing"])

    @property
    def normalization(self) -> Normalization:
        return self.preprocessing.normalization

    @property
    def uses_tta(self) -> bool:
        """Whether the run's recipe averages predictions over the 8 dihedral transforms."""
        return bool(self.meta.get("recipe", {}).get("tta", False))


def load_runs(
    run_dir: str | Path, *, run: int | None = None, model: str | None = None
) -> list[SavedRun]:
    """Every saved run of a results folder (or only run ``run``, only model ``model``), sorted
    by run number."""
    folder = Path(run_dir) / "models"
    paths = sorted(folder.glob("run-*.pt")) if folder.is_dir() else []
    if not paths:
        raise ExperimentError(f"{run_dir}: no trained runs (models/run-NN.pt) found")
    config_path = Path(run_dir) / results.CONFIG_FILE
    config = results.read_json(config_path) if config_path.is_file() else {}
    loaded = []
    for path in paths:
        checkpoint = results.load_checkpoint(path)
        _check_belongs(path, checkpoint, config)
        if run not in (None, checkpoint["run"]) or model not in (None, checkpoint["model"]):
            continue
        if checkpoint.get("architecture") == "features":
            continue  # classical baseline: scored in the experiment, not used for prediction
        network = build_model(
            checkpoint.get("architecture", checkpoint["model"]),
            in_channels=checkpoint["in_channels"],
            n_classes=len(checkpoint["class_names"]),
            image_size=checkpoint["image_size"],
        )
        network.load_state_dict(checkpoint["state_dict"])
        network.eval()
        loaded.append(SavedRun(checkpoint["run"], checkpoint["model"], network, checkpoint))
    if not loaded:
        wanted = " ".join(f"{k} {v}" for k, v in (("model", model), ("run", run)) if v is not None)
        raise ExperimentError(f"{run_dir}: no {wanted}; see {folder} for the saved runs")
    return loaded


def _check_belongs(path: Path, checkpoint: dict, config: dict) -> None:
    """A checkpoint from another experiment (other classes, size or channels) is an error
    naming the file, not a shape error deep inside the ensemble."""
    expected = {
        "class_names": config.get("class_names"),
        "image_size": (config.get("settings") or {}).get("image_size"),
        "in_channels": config.get("in_channels"),
    }
    for key, value in expected.items():
        if value is not None and checkpoint.get(key) != value:
            raise ExperimentError(
                f"{path}: {key} {checkpoint.get(key)!r} differs from config.json's {value!r}; "
                "the checkpoint belongs to another experiment: move it out of models/"
            )


def one_model(runs: list[SavedRun], run_dir) -> list[SavedRun]:
    """``runs`` when they are all of one model; else a ValueError naming the models."""
    models = sorted({saved.model_name for saved in runs})
    if len(models) > 1:
        raise ExperimentError(
            f"{run_dir} holds runs of {len(models)} models ({', '.join(models)}); choose one "
            "with model=, so predictions are not averaged across recipes"
        )
    return runs


def choose_runs(
    run_dir: str | Path, *, run: int | None = None, model: str | None = None
) -> tuple[list[SavedRun], str]:
    """The runs whose ensemble predicts, and one line saying which and why.

    ``model`` None with several models: the one with the best mean validation accuracy (at
    each run's kept epoch), never a mix. Runs whose training never left chance (``collapsed``
    in runs.csv) are left out unless ``run`` names one or no other run is left.

    Raises
    ------
    ExperimentError
        Several models and no validation split to choose by, or no such run or model.
    """
    runs = load_runs(run_dir, run=run, model=model)
    models = sorted({saved.model_name for saved in runs})
    why = ""
    if len(models) > 1:
        scores = validation_scores(run_dir)
        if not all(name in scores for name in models):
            one_model(runs, run_dir)  # raises: nothing to choose by
        best = max(models, key=lambda name: scores[name])
        others = ", ".join(f"{name} {scores[name]:.1%}" for name in models if name != best)
        why = f" (best validation accuracy, {scores[best]:.1%}; {others})"
        runs = [saved for saved in runs if saved.model_name == best]
    name = runs[0].model_name
    stuck = collapsed_runs(run_dir, name)
    left_out = [saved.run for saved in runs if saved.run in stuck]
    if run is None and left_out and len(left_out) < len(runs):
        runs = [saved for saved in runs if saved.run not in stuck]
        why += f"; left out {len(left_out)} collapsed run(s): {', '.join(map(str, left_out))}"
    numbers = ", ".join(str(saved.run) for saved in runs)
    return runs, f"predicting with {len(runs)} run(s) of {name}{why}: run {numbers}"


def validation_scores(run_dir: str | Path) -> dict[str, float]:
    """Mean validation accuracy per model over its real runs, at each run's kept epoch."""
    run_dir = Path(run_dir)
    kept = {
        (row["run"], row["model"]): row.get("epoch")
        for row in results.read_table(run_dir / results.RUNS_FILE)
        if not row.get("control")
    }
    per_model: dict[str, list[float]] = {}
    for row in results.read_table(run_dir / results.EPOCHS_FILE):
        key = (row["run"], row["model"])
        if row["split"] == "val" and not row.get("control") and kept.get(key) == row["epoch"]:
            per_model.setdefault(row["model"], []).append(row["accuracy"])
    return {model: float(np.mean(values)) for model, values in per_model.items()}


def collapsed_runs(run_dir: str | Path, model: str) -> set[int]:
    """Run numbers of ``model`` whose training never left chance (runs.csv ``collapsed``)."""
    rows = results.read_table(Path(run_dir) / results.RUNS_FILE)
    return {
        row["run"]
        for row in rows
        if row["model"] == model and not row.get("control") and row.get("collapsed") == 1
    }


def collect_images(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Image files named directly or found in folders (recursively), and skipped non-images."""
    images, skipped = [], []
    for item in map(Path, paths):
        if item.is_dir() and not is_image_path(item):
            _walk_for_images(item, images, skipped)
        elif item.exists():
            if not is_image_path(item):
                raise ExperimentError(
                    f"{item}: not a supported image ({', '.join(sorted(IMAGE_EXTENSIONS))}, "
                    "an .ome.zarr folder, or .czi/.nd2/.lif with the bioio extra)"
                )
            images.append(item)
        else:
            raise ExperimentError(f"{item}: no such file or folder")
    if not images:
        raise ExperimentError("no images found in " + ", ".join(map(str, paths)))
    return [p.resolve() for p in images], skipped


def _walk_for_images(folder: Path, images: list, skipped: list) -> None:
    """Images under ``folder``, sorted; an ``.ome.zarr`` folder is one image, not walked, and
    links to folders are not followed (a link to ``.`` would never end)."""
    for path in sorted(folder.iterdir()):
        if is_hidden(path):
            continue
        if is_image_path(path):
            images.append(path)
        elif path.is_dir() and not path.is_symlink():
            _walk_for_images(path, images, skipped)
        elif path.is_file():
            skipped.append(path)


def predict_paths(
    run_dir: str | Path,
    paths: list[str | Path],
    *,
    run: int | None = None,
    model: str | None = None,
    skip_bad: bool = False,
    cache_dir: str | None = None,
    observer: Observer | None = None,
) -> list[dict]:
    """Classify unlabelled images with the saved runs.

    Returns one dict per image: path, predicted, confidence, agreement (fraction of runs whose
    own prediction equals the ensemble's), n_runs, and ``p_<class>`` averaged over the runs.
    Probabilities are temperature-calibrated when ``cellclass explain`` fitted temperatures on
    the validation split (``calibration.json``). The runs that vote are `choose_runs`': one
    model's (``model``, by default the best by validation accuracy; recipes are never averaged
    together), collapsed runs left out, or only run ``run``. Which runs voted goes to
    ``observer`` as one message.
    """
    runs, note = choose_runs(run_dir, run=run, model=model)
    (observer or Observer()).message(note)
    images, _ = collect_images(paths)
    meta = runs[0].meta
    prep = preprocessing_from_dict(meta["preprocessing"])
    store = load_store(
        images, prep, cache_dir=Path(cache_dir) if cache_dir else None, skip_bad=skip_bad
    )
    _check_channels(store.channels, meta["in_channels"], images[0])
    split = Split(
        "predict", store, np.arange(len(store.paths)), np.zeros(len(store.paths), np.int64)
    )
    temperatures = results.load_temperatures(run_dir)  # from `cellclass explain`; {} when never run
    probs = np.stack(
        [
            softmax(
                predict_logits(r.model, split, r.normalization, tta=r.uses_tta),
                temperature=temperatures.get((r.run, r.model_name), 1.0),
            )
            for r in runs
        ]
    )
    mean = probs.mean(0)  # (N, K)
    votes = probs.argmax(2)  # (R, N)
    class_names = meta["class_names"]
    rows = []
    for i, path in enumerate(store.paths):
        best = int(mean[i].argmax())
        row = {
            "path": str(path),
            "predicted": class_names[best],
            "confidence": float(mean[i, best]),
            "agreement": float((votes[:, i] == best).mean()),
            "n_runs": len(runs),
        }
        row.update({f"p_{name}": float(mean[i, j]) for j, name in enumerate(class_names)})
        rows.append(row)
    return rows


def _check_channels(have: int, want: int, example: Path) -> None:
    if have != want:
        raise ExperimentError(
            f"{example}: images have {have} channel(s) but the model was trained on {want}; "
            "use channels= to match"
        )


def prediction_table_columns(class_names: list[str]) -> list[str]:
    return ["path", "predicted", "confidence", "agreement", "n_runs"] + [
        f"p_{c}" for c in class_names
    ]


def evaluate_folder(
    run_dir: str | Path,
    name: str,
    folder: str | Path,
    *,
    skip_bad: bool = False,
    cache_dir: str | None = None,
    observer: Observer | None = None,
) -> list[dict]:
    """Evaluate every saved run on a labelled folder and append the results.

    Rows go to runs.csv and predictions.csv under dataset ``name``; config.json records the
    new test set. Returns the new runs.csv rows.
    """
    run_dir = Path(run_dir)
    config = results.read_json(run_dir / results.CONFIG_FILE)
    if name in config.get("tests", {}) or name in ("train", "val"):
        raise ExperimentError(f"test set {name!r}: {run_dir} already has one of that name")
    runs = load_runs(run_dir)
    prep = preprocessing_from_dict(config["preprocessing"])
    class_names = tuple(config["class_names"])
    data = load_dataset(
        name,
        folder,
        prep,
        class_names=class_names,
        skip_bad=skip_bad,
        cache_dir=cache_dir,
        observer=observer,
    )
    _check_channels(data.store.channels, runs[0].meta["in_channels"], data.store.paths[0])
    trained_at = config.get("train", {}).get("pixel_size_um")
    if mismatch := pixel_size_mismatch(name, data.pixel_size_um, trained_at):
        (observer or Observer()).message(mismatch)
    stuck = {  # collapse is a property of the run, recorded when it was trained
        (row["run"], row["model"]): row.get("collapsed", "")
        for row in results.read_table(run_dir / results.RUNS_FILE)
        if not row.get("control")
    }
    run_rows, pred_rows = _evaluate_runs(runs, data, class_names)
    for row in run_rows:
        row["collapsed"] = stuck.get((row["run"], row["model"]), "")
    results.append_rows(run_dir / results.RUNS_FILE, results.RUNS_COLUMNS, run_rows)
    results.append_rows(
        run_dir / results.PREDICTIONS_FILE, results.prediction_columns(class_names), pred_rows
    )
    results.update_config(run_dir, {"tests": {name: dataset_info(data)}})
    return run_rows


def _evaluate_runs(runs: list[SavedRun], data: Dataset, class_names) -> tuple[list, list]:
    split = Split(data.name, data.store, np.arange(len(data.labels)), data.labels)
    run_rows, pred_rows = [], []
    for saved in runs:
        result = evaluate(saved.model, split, saved.normalization, tta=saved.uses_tta)
        probs = softmax(result.logits)
        about = {"run": saved.run, "model": saved.model_name, "seed": saved.meta["seed"]}
        about |= {"seconds": "", "control": 0, "epoch": saved.meta.get("epoch", "")}
        run_rows.append(run_row(about, data.name, result, probs))
        pred_rows += prediction_rows(saved.run, saved.model_name, data, probs, class_names)
    return run_rows, pred_rows
