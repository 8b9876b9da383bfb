"""The whole study as one call: what the ``cellclass`` command and notebooks both use.

`run_study` trains and evaluates every run of one experiment (`cellclass.training`), explains
it when asked (`cellclass.explain`) and writes its report (`cellclass.report`); `run_demo` does
that for each of the demo's two datasets and writes one page over both.

For notebooks, `train` takes plain keywords and returns a `Study`: the results folder with its
tables as pandas DataFrames, figures that display inline, `predict` and `report`; `load` opens
an existing results folder the same way. Warnings (leakage, missing classes, skipped images)
are raised as Python warnings, and a misspelled parameter is a ValueError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cellclass import results
from cellclass.checks import chance_levels
from cellclass.demo import REDUCTION_NOTE, DemoSettings, prepare_demo
from cellclass.explain.step import explain_run
from cellclass.figures.plots import draw_accuracy_boxplot, draw_training_curves
from cellclass.predict import predict_paths
from cellclass.progress import Observer, WarningObserver
from cellclass.report import write_report, write_study_report
from cellclass.report.build import read_results
from cellclass.report.findings import Finding, study_findings
from cellclass.summary import model_comparisons, summary_table
from cellclass.synthetic.folders import DemoData
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import resolve_recipes

__all__ = ["DemoResult", "Study", "StudyResult", "load", "run_demo", "run_study", "train"]

RECIPE_SHORTCUTS = ("epochs", "batch_size", "learning_rate")  # applied to every recipe


@dataclass(frozen=True)
class StudyResult:
    out: Path  # the results folder (config.json, runs.csv, epochs.csv, predictions.csv, ...)
    report: Path  # its report.html
    summary: list[dict]  # `cellclass.summary.summary_table` rows
    comparisons: list[dict]  # `cellclass.summary.model_comparisons` rows (several models)
    explain: Path | None = None  # the explain folder, when explanations were asked for


@dataclass(frozen=True)
class DemoResult:
    data: DemoData  # where the demo images were written
    studies: dict[str, StudyResult]  # one experiment per dataset ("snap29", "snf7")
    report: Path  # the page over both datasets
    findings: list[Finding] = field(default_factory=list)  # the answer, one per dataset/model
    note: str = ""  # how the demo reduces the study's protocol


def run_study(
    settings: ExperimentSettings,
    *,
    resume: bool = False,
    explain: bool = False,
    observer: Observer | None = None,
) -> StudyResult:
    """Train and evaluate every run, optionally explain them, and write the report.

    Raises the errors of `cellclass.training.run_experiment` (bad settings or data, found
    before any training starts).
    """
    out = run_experiment(settings, resume=resume, observer=observer)
    explained = explain_run(out) if explain else None
    return StudyResult(
        out=out,
        report=write_report(out),
        summary=summary_table(out),
        comparisons=model_comparisons(out),
        explain=explained,
    )


def run_demo(
    root: str | Path,
    demo: DemoSettings | None = None,
    *,
    observer: Observer | None = None,
    on_study=None,
) -> DemoResult:
    """Write the demo data under ``root``, run the study on each dataset, write the page over
    both (``root/results/report.html``). ``on_study(name, result)`` is called after each;
    ``demo`` None uses the `DemoSettings` defaults."""
    demo = demo or DemoSettings()
    data, experiments = prepare_demo(root, demo)
    studies = {}
    for name, settings in experiments.items():
        studies[name] = run_study(settings, observer=observer)
        if on_study is not None:
            on_study(name, studies[name])
    note = REDUCTION_NOTE.format(
        runs=demo.runs,
        n_train=demo.n_train,
        image_size=demo.image_size,
        strong_epochs=demo.strong_epochs,
    )
    run_dirs = {name: study.out for name, study in studies.items()}
    page = write_study_report(
        run_dirs,
        Path(root) / "results" / "report.html",
        title="cellclass demo: the study's two experiments (synthetic data)",
        notes=(note,),
    )
    return DemoResult(data, studies, page, study_findings(run_dirs), note)


class Study:
    """A results folder, for notebooks: tables as DataFrames, figures shown inline.

    ``Study(run_dir)`` (or `load`) opens a folder written by `train` or ``cellclass train``;
    nothing is read until asked for, so the tables are always the folder's current ones.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"Study({str(self.run_dir)!r})"

    def _table(self, name: str) -> pd.DataFrame:
        return pd.DataFrame(results.read_table(self.run_dir / name))

    @property
    def runs(self) -> pd.DataFrame:
        """runs.csv: one row per run and test set (accuracy, loss, ece, collapsed...)."""
        return self._table(results.RUNS_FILE)

    @property
    def epochs(self) -> pd.DataFrame:
        """epochs.csv: one row per run, epoch and split (train, val, test sets)."""
        return self._table(results.EPOCHS_FILE)

    @property
    def predictions(self) -> pd.DataFrame:
        """predictions.csv: one row per run and test image, with ``p_<class>`` columns."""
        return self._table(results.PREDICTIONS_FILE)

    def summary(self) -> pd.DataFrame:
        """Test accuracy over runs per model and test set: n, mean, sd, 95 % CI, min, max,
        ensemble, chance (the test set's majority share), collapsed runs."""
        return pd.DataFrame(summary_table(self.run_dir))

    def comparisons(self) -> pd.DataFrame:
        """Every pair of models per test set: Welch's test over runs, McNemar on ensembles."""
        return pd.DataFrame(model_comparisons(self.run_dir))

    def plot_accuracy(self, *, seed: int = 0) -> Figure:
        """Box plot with jittered points of test accuracy over runs, chance per test set."""
        data = read_results(self.run_dir)
        levels = chance_levels(data.config)
        chance = {row["dataset"]: levels.get(row["dataset"], levels[""]) for row in data.runs}
        return draw_accuracy_boxplot(
            data.runs, chance=chance, expert=data.config.get("expert") or {},
            rng=np.random.default_rng(seed),
        )  # fmt: skip

    def plot_curves(self, metric: str = "accuracy", *, seed: int = 0) -> Figure:
        """Per-epoch curves of ``metric`` ("accuracy" or "loss"), one panel per split."""
        if metric not in ("accuracy", "loss"):
            raise ValueError(f"metric {metric!r}: choose 'accuracy' or 'loss'")
        data = read_results(self.run_dir)
        epochs = [row for row in data.epochs if not row["control"]]
        return draw_training_curves(
            epochs, metric=metric, rng=np.random.default_rng(seed), run_rows=data.runs
        )

    def predict(self, paths, *, model: str | None = None, run: int | None = None) -> pd.DataFrame:
        """Classify images (files or folders) with the saved runs of ``model`` (default: the
        best by validation accuracy; collapsed runs left out). ``.attrs["runs"]`` of the
        returned table says which runs voted."""
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        notes = _Notes()
        rows = predict_paths(self.run_dir, paths, model=model, run=run, observer=notes)
        table = pd.DataFrame(rows)
        table.attrs["runs"] = " ".join(notes.lines)
        return table

    def report(self) -> Path:
        """(Re)write the self-contained report.html and return its path."""
        return write_report(self.run_dir)


def load(run_dir: str | Path) -> Study:
    """Open an existing results folder as a `Study`."""
    if not (Path(run_dir) / results.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; not a cellclass results folder")
    return Study(run_dir)


def train(
    train_dir: str | Path,
    *,
    out: str | Path,
    tests: dict[str, str | Path] | None = None,
    recipes: tuple[str, ...] = ("reference",),
    **options,
) -> Study:
    """Train and evaluate many runs from scratch, write the report, return the `Study`.

    Parameters
    ----------
    train_dir : one subfolder per class
    out : new results folder
    tests : test-set name -> folder with the same class subfolders
    recipes : "reference" (the study) and/or "strong"
    **options : any `cellclass.training.ExperimentSettings` field (``runs``, ``seed``,
        ``image_size``, ``val_split``, ...) and ``epochs``, ``batch_size``,
        ``learning_rate`` for every recipe. A name that is none of these is a ValueError.
    """
    known = {f.name for f in fields(ExperimentSettings)} - {"train_dir", "out", "tests", "recipes"}
    unknown = sorted(set(options) - known - set(RECIPE_SHORTCUTS))
    if unknown:
        choices = ", ".join(sorted(known | set(RECIPE_SHORTCUTS)))
        raise ValueError(f"train(): unknown parameter {unknown[0]!r}; choose from {choices}")
    if isinstance(recipes, str):
        recipes = (recipes,)
    shortcuts = [f"{k}={options.pop(k)}" for k in RECIPE_SHORTCUTS if k in options]
    settings = ExperimentSettings(
        train_dir=str(train_dir),
        out=str(out),
        tests=tuple((name, str(folder)) for name, folder in (tests or {}).items()),
        recipes=resolve_recipes(list(recipes), [], shortcuts),
        **options,
    )
    return Study(run_study(settings, observer=WarningObserver()).out)


class _Notes(WarningObserver):
    """Keeps every message; warnings are still raised as Python warnings."""

    def __init__(self):
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)
        super().message(text)
