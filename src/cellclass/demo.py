"""The built-in demo: synthetic fluorescence data and a reduced version of the study.

The study ran one binary experiment per dataset (Control vs Snap29: easy; Control vs Snf7:
hard), 12 runs each on 400-image draws. The demo keeps that design (two datasets, each its own
experiment with its own training and test folders, several runs from scratch of the study's
reference recipe and of the modern ``strong`` recipe) at a size that finishes in a few minutes
on a laptop CPU, then writes one page over both (`cellclass.report.study`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cellclass.synthetic.folders import DemoData, write_demo
from cellclass.training import ExperimentSettings
from cellclass.training.recipes import REFERENCE, STRONG, get_recipe


@dataclass(frozen=True)
class DemoSettings:
    n_train: int = 150  # per class; ~15 Adam steps per epoch, as the study's 400-image draws had
    n_test: int = 40  # test images per class in each test folder
    runs: int = 3  # trainings from scratch per recipe and dataset (the study used 12)
    epochs: int = 9  # the reference recipe's epochs, as in the study
    image_size: int = 128  # model input; the study used 256 (4x the compute on a laptop CPU)
    seed: int = 0  # seeds both the data and the runs
    recipes: tuple[str, ...] = ("reference", "strong")  # the study's recipe and the modern one
    strong_epochs: int = 15  # the strong recipe's 20 epochs, shortened to fit the demo's budget


REDUCTION_NOTE = (
    "demo: the study's two experiments (Control vs Snap29-like, Control vs Snf7-like) in a "
    "reduced protocol ({runs} runs per recipe, {n_train} training images per class, "
    "{image_size}-pixel inputs, strong recipe {strong_epochs} epochs) so it finishes in a few "
    "minutes on a laptop CPU; the study's protocol is "
    "`cellclass train DIR --runs 12 --train-sample 400` (256-pixel inputs)"
)


def prepare_demo(
    root: str | Path, demo: DemoSettings
) -> tuple[DemoData, dict[str, ExperimentSettings]]:
    """Write the demo folders under ``root/data``; return one experiment per dataset
    (results in ``root/results/<dataset>``)."""
    root = Path(root)
    data = write_demo(root / "data", n_train=demo.n_train, n_test=demo.n_test, seed=demo.seed)
    experiments = {
        name: ExperimentSettings(
            train_dir=str(dataset.train),
            out=str(root / "results" / name),
            tests=((name, str(dataset.test)),),
            runs=demo.runs,
            seed=demo.seed,
            image_size=demo.image_size,
            cache_dir=str(root / "cache"),
            recipes=tuple(_demo_recipe(recipe, demo) for recipe in demo.recipes),
        )
        for name, dataset in data.datasets.items()
    }
    return data, experiments


def _demo_recipe(name: str, demo: DemoSettings):
    """The reference recipe with the demo's epochs, the strong one with its demo epochs."""
    if name == "reference":
        return replace(REFERENCE, epochs=demo.epochs)
    if name == "strong":
        return replace(STRONG, epochs=demo.strong_epochs)
    return get_recipe(name)
