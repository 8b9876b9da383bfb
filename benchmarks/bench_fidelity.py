"""Fidelity of the reference recipe: cellclass (PyTorch) vs the study's own Keras model.

Trains K runs of cellclass's ``reference`` recipe (the study's badger CNN) and,
with ``--keras``, K runs of the study's Keras model on the SAME two class folders (the demo's
easy pair, Control vs Snap29: chance 50 %), seeds seed .. seed+K-1, and prints for each side
the mean, sd, min and max test accuracy, the number of collapsed runs and every run's
accuracy, then the difference of the means.

Both sides train on every training image (no validation split, as the study did), 9 epochs
of batch 20, shuffled. The Keras side sees exactly the pixels cellclass trains on (read and
resized by cellclass's own pixel store), scaled the study's way: divided by the true
bit-depth maximum (255 for 8-bit PNG, 4095 for the demo's 12-bit TIFF). The cellclass side
uses the recipe's own normalisation unless ``--normalize`` is given.

A run is *collapsed* when its predictions on the training set stay one constant class:
training accuracy of its last two epochs at most the majority share + 0.02
(`cellclass.metrics.collapsed`: the rule behind runs.csv's ``collapsed`` column, applied to
the Keras history's training accuracy too).

    python benchmarks/bench_fidelity.py --runs 2                   # cellclass side only
    .venv-keras/bin/python benchmarks/bench_fidelity.py --runs 6 --keras
    .venv-keras/bin/python benchmarks/bench_fidelity.py --keras --image-size 256 --format png
    .venv-keras/bin/python benchmarks/bench_fidelity.py --data DIR --keras  # DIR/train, DIR/test
    python benchmarks/bench_fidelity.py --runs 6 --precision bf16  # vs the fp32 default: same mean?

The Keras model is `bench_train.keras_model` ('same' padding in its pools: identical at
256 pixels, and the only way to build it below that; cellclass's pools use ceil mode).

TensorFlow is not a dependency of cellclass; install the reference beside it, in an
environment that also holds cellclass (see ``benchmarks/bench_train.py``)::

    python3 -m venv .venv-keras
    .venv-keras/bin/pip install -c constraints.txt -e . "tensorflow-cpu==2.21.0"

Targets (issue 15): the means within 3 points, and no more collapsed runs for cellclass
than for Keras.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cellclass import results
from cellclass.choices import PRECISIONS
from cellclass.data.datasets import load_dataset
from cellclass.data.normalization import NORMALIZATION_MODES
from cellclass.data.preprocessing import Preprocessing
from cellclass.metrics import collapsed
from cellclass.synthetic.folders import FORMATS, write_class_folders
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported
from bench_train import keras_model  # noqa: E402  (the study's Keras model, one definition)

CLASSES = ("Control", "Snap29")  # the demo's easy pair
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
KERAS_HINT = (
    "--keras: this interpreter has no keras; run the script with .venv-keras/bin/python "
    "(see the module docstring for installing it)"
)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its runs' test accuracies and which runs collapsed."""

    name: str  # "cellclass reference" or "keras"
    accuracies: list[float]  # test accuracy per run, in seed order
    collapsed: list[bool]  # per run: training predictions stayed one class
    seconds: float  # wall time of all runs' training and evaluation
    train: list[float]  # per run: training accuracy of the last epoch (memorisation shows here)


def write_data(root: Path, *, n_train: int, n_test: int, seed: int, fmt: str) -> Path:
    """The demo's Control and Snap29 images (same seeds and streams as `write_demo`):
    ``root/train/{Control,Snap29}`` and ``root/test/{Control,Snap29}``; returns root."""
    options = {"size": 256, "seed": seed, "fmt": fmt}
    write_class_folders(root / "train", dict.fromkeys(CLASSES, n_train), stream=0, **options)
    write_class_folders(root / "test", dict.fromkeys(CLASSES, n_test), stream=1, **options)
    return root


def cellclass_settings(args, data: Path, work: Path) -> ExperimentSettings:
    """The experiment: K runs of the recipe, every training image (val_split 0), one test."""
    chosen = {"normalize": args.normalize} if args.normalize else {}  # else the recipe's own
    return ExperimentSettings(
        train_dir=str(data / "train"),
        out=str(work / "results"),
        tests=(("test", str(data / "test")),),
        test_every=REFERENCE.epochs,  # test once, after the last epoch, as the Keras side does
        runs=args.runs,
        seed=args.seed,
        recipes=(REFERENCE,),
        val_split=0.0,
        image_size=args.image_size,
        device=args.device,
        precision=args.precision,
        cache_dir=str(work / "cache"),
        **chosen,
    )


def run_cellclass(args, data: Path, work: Path) -> tuple[Side, str]:
    """Train the cellclass runs; returns the side and the normalisation it used."""
    out = run_experiment(cellclass_settings(args, data, work))
    config = results.read_json(out / "config.json")
    runs = [
        row
        for row in results.read_table(out / "runs.csv")
        if row["dataset"] == "test" and not int(row.get("control", 0))
    ]
    runs.sort(key=lambda row: int(row["run"]))
    seconds = results.run_seconds(results.read_table(out / "runs.csv"))
    last: dict[int, tuple[int, float]] = {}
    for row in results.read_table(out / "epochs.csv"):
        if row["split"] == "train" and not row["control"]:
            if row["epoch"] >= last.get(row["run"], (-1, 0.0))[0]:
                last[row["run"]] = (row["epoch"], row["accuracy"])
    side = Side(
        "cellclass reference",
        [float(row["accuracy"]) for row in runs],
        [bool(row["collapsed"]) for row in runs],
        sum(v for (_, _, control), v in seconds.items() if not control),  # not decoding
        [last[int(row["run"])][1] for row in runs],
    )
    return side, describe_normalization(config["preprocessing"]["normalization"])


def describe_normalization(norm: dict) -> str:
    """ "bitdepth (0 .. 4095)" from config.json's normalisation record."""
    if norm.get("high"):
        return f"{norm['mode']} ({norm['low'][0]:g} .. {norm['high'][0]:g})"
    return norm["mode"]


def study_pixels(folder: Path, args, work: Path, class_names=None):
    """Pixels as cellclass decodes and resizes them, scaled as the study scaled them.

    Returns (N, S, S, C) float32 in [0, 1] (divided by 2**bit_depth - 1), (N,) int64 labels,
    the class names and the scale used.
    """
    prep = Preprocessing(args.image_size)
    data = load_dataset(
        folder.name, folder, prep, class_names=class_names, cache_dir=str(work / "cache")
    )
    top = 1.0 if data.store.bit_depth == 32 else float(2**data.store.bit_depth - 1)
    pixels = np.asarray(data.store.pixels, dtype=np.float32) / top  # (N, S, S, C)
    return pixels, data.labels, data.index.class_names, top


def keras_run(x, y, x_test, y_test, seed: int) -> tuple[float, bool, float]:
    """One run of the study's Keras model: test accuracy, whether it collapsed, and the
    training accuracy of its last epoch.

    x : (N, S, S, C) float32 in [0, 1]; y : (N,) int64. Likewise the test set.
    """
    import keras

    keras.utils.set_random_seed(seed)
    n_classes = int(max(y.max(), y_test.max())) + 1
    model = keras_model(x.shape[1], x.shape[3], n_classes, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=20, epochs=9, shuffle=True, verbose=0)
    predicted = model.predict(x_test, batch_size=100, verbose=0).argmax(1)  # (N_test,)
    stuck = collapsed(history.history["accuracy"], y)  # the rule runs.csv's column uses
    return float((predicted == y_test).mean()), stuck, float(history.history["accuracy"][-1])


def run_keras(args, data: Path, work: Path) -> tuple[Side, str]:
    """Train the Keras runs on the same pixels; returns the side and the scaling it used."""
    x, y, class_names, top = study_pixels(data / "train", args, work)
    x_test, y_test, _, _ = study_pixels(data / "test", args, work, class_names)
    started = time.perf_counter()
    runs = [keras_run(x, y, x_test, y_test, args.seed + k) for k in range(args.runs)]
    seconds = time.perf_counter() - started
    side = Side("keras", [r[0] for r in runs], [r[1] for r in runs], seconds, [r[2] for r in runs])
    return side, f"divided by {top:g}"


def machine_line() -> str:
    """CPU model, the SIMD/AMX flags that matter, cores and library versions."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        elif key.strip() == "Flags":
            flags = set(value.split())
    present = " ".join(flag for flag in CPU_FLAGS if flag in flags) or "none of " + "/".join(
        CPU_FLAGS
    )
    versions = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if importlib.util.find_spec("keras") is not None:
        import keras
        import tensorflow

        versions += f", tensorflow {tensorflow.__version__}, keras {keras.__version__}"
    cuda = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"machine: {model}, {os.cpu_count()} CPUs, flags: {present}{cuda}; {versions}"


def print_table(sides: list[Side]) -> None:
    print(
        f"{'side':<20}{'K':>3}{'mean':>8}{'sd':>7}{'min':>8}{'max':>8}{'collapsed':>11}"
        f"{'train':>7}{'s/run':>7}  runs"
    )
    for side in sides:
        acc = side.accuracies
        sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
        marks = ["*" if c else "" for c in side.collapsed]
        runs = " ".join(f"{a:.1%}{m}" for a, m in zip(acc, marks, strict=True))
        print(
            f"{side.name:<20}{len(acc):>3}{statistics.mean(acc):>8.1%}{sd:>7.1%}"
            f"{min(acc):>8.1%}{max(acc):>8.1%}{sum(side.collapsed):>11}"
            f"{statistics.mean(side.train):>7.1%}{side.seconds / len(acc):>7.0f}  {runs}"
        )
    print(
        "(* collapsed: training predictions stayed one class; train: mean training accuracy of"
        " the last epoch, as each side reports it while training)"
    )


def print_verdict(ours: Side, keras: Side) -> None:
    difference = statistics.mean(ours.accuracies) - statistics.mean(keras.accuracies)
    within = "yes" if abs(difference) <= 0.03 else "NO"
    print(f"difference of means ({ours.name} - keras): {difference * 100:+.1f} points")
    print(f"means within 3 points: {within}")
    fewer = "yes" if sum(ours.collapsed) <= sum(keras.collapsed) else "NO"
    print(
        f"collapsed runs, cellclass {sum(ours.collapsed)} vs keras {sum(keras.collapsed)}: "
        f"no more for cellclass: {fewer}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs per side (K)")
    parser.add_argument("--seed", type=int, default=0, help="seed of run 0, and of the data")
    parser.add_argument("--image-size", type=int, default=128, help="model input, pixels")
    parser.add_argument("--n-train", type=int, default=150, help="training images per class")
    parser.add_argument("--n-test", type=int, default=40, help="test images per class")
    parser.add_argument("--format", default="tif", choices=FORMATS, help="demo files written")
    parser.add_argument("--data", type=Path, help="use DIR/train and DIR/test instead")
    parser.add_argument(
        "--normalize", choices=NORMALIZATION_MODES, help="override the recipe's normalisation"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="cellclass side's training"
    )
    parser.add_argument("--keras", action="store_true", help="also train the Keras model")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.keras and importlib.util.find_spec("keras") is None:
        sys.exit(KERAS_HINT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # one fresh model per run: retraces
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as tmp:
        work = Path(tmp)
        data = args.data or write_data(
            work / "data",
            n_train=args.n_train,
            n_test=args.n_test,
            seed=args.seed,
            fmt=args.format,
        )
        print(
            f"data: {data} ({', '.join(CLASSES) if not args.data else 'given'}), "
            f"{args.image_size}-pixel inputs, seeds {args.seed}..{args.seed + args.runs - 1}"
        )
        ours, norm = run_cellclass(args, data, work)
        print(f"cellclass reference: normalisation {norm}, precision {args.precision}")
        sides = [ours]
        if args.keras:
            keras, scaling = run_keras(args, data, work)
            print(f"keras: pixels {scaling} (the study's scaling)")
            sides.append(keras)
    print_table(sides)
    if args.keras:
        print_verdict(ours, sides[1])


if __name__ == "__main__":
    main()
