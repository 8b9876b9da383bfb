"""`cellclass train` and `cellclass predict` against the study's Keras script, end to end.

Issue 19's ratios, measured as a user meets them: whole commands timed from outside, in fresh
processes, on the same PNG files (2 classes, 256x256 RGB; 416 to train on, 416 new ones to
predict), both sides alternating within each repeat so they see the same machine load.

* **train, per epoch**: the reference recipe through the command line (``cellclass --quiet
  train DATA --runs 1 --val-split 0 --recipe reference --image-size 256``) for 1 and for 5
  epochs; (time(5) - time(1)) / 4 removes start-up, decoding, evaluation and the report, which
  both commands share. The Keras side is the study's script: read the PNGs with Pillow, divide
  by 255, ``model.fit`` batch 20 (`bench_train.keras_model`, the same network), for 1 and 5
  epochs, the same subtraction.
* **predict, end to end**: ``cellclass --quiet predict RUN_DIR NEW_DIR -o FILE`` with an empty
  pixel cache, against a Keras script that loads the saved model, reads and scales the PNGs,
  predicts and writes a CSV. Start-up (imports) counts on both sides: it is what a user waits.

Run it from an environment holding both cellclass and TensorFlow (see bench_train.py)::

    .venv-keras/bin/python benchmarks/bench_cli_keras.py --repeats 3

Prints the machine line (CPU flags, versions), every timing, the medians and the ratios
(Keras time / cellclass time: above 1, cellclass is faster). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fidelity import machine_line  # noqa: E402

SIZE = 256


def write_images(root: Path, n_per_class: int, *, seed: int, flat: bool = False) -> Path:
    """PNG files of two classes (a bright square in a class-specific corner over noise), in
    class folders, or all in ``root`` when ``flat``."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("Control", "Treated")):
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
            y, x = (0, 0) if label == 0 else (SIZE // 2, SIZE // 2)
            pixels[y : y + SIZE // 2, x : x + SIZE // 2, label] += 120
            Image.fromarray(pixels).save(folder / f"{name}_{i:04d}.png")
    return root


def timed(command: list[str]) -> float:
    """Seconds one command takes, start-up included; stops the benchmark when it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def cellclass_train(data: Path, out: Path, epochs: int, cache: Path) -> list[str]:
    return [
        sys.executable, "-m", "cellclass", "--quiet", "train", str(data), "-o", str(out),
        "--runs", "1", "--val-split", "0", "--recipe", "reference", "--image-size", str(SIZE),
        "--epochs", str(epochs), "--cache-dir", str(cache),
    ]  # fmt: skip


def keras_command(*args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--keras-side", *map(str, args)]


# ---------------------------------------------------------------- the Keras side (own process)
def read_folder(paths: list[Path]) -> np.ndarray:
    """The study's loading: each PNG as float32 / 255, (N, S, S, 3)."""
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p in paths]
    )


def keras_train(data: Path, epochs: int, model_file: Path) -> None:
    import keras
    from bench_train import keras_model

    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    paths = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((data / name).glob("*.png"))
    ]
    x = read_folder([p for p, _ in paths])
    y = np.array([label for _, label in paths])
    keras.utils.set_random_seed(0)
    model = keras_model(SIZE, 3, len(classes), metrics=["accuracy"])
    model.fit(x, y, batch_size=20, epochs=epochs, shuffle=True, verbose=0)
    model.save(model_file)


def keras_predict(model_file: Path, folder: Path, out: Path) -> None:
    import keras

    model = keras.models.load_model(model_file)
    paths = sorted(folder.glob("*.png"))
    logits = model.predict(read_folder(paths), batch_size=100, verbose=0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    lines = [f"{p},{int(q.argmax())},{q.max():.4f}" for p, q in zip(paths, probs, strict=True)]
    out.write_text("path,predicted,confidence\n" + "\n".join(lines) + "\n")


# ---------------------------------------------------------------- the comparison
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-per-class", type=int, default=208, help="images per class (416)")
    parser.add_argument("--keras-side", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keras_side:
        kind, *rest = args.keras_side
        if kind == "train":
            keras_train(Path(rest[0]), int(rest[1]), Path(rest[2]))
        else:
            keras_predict(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        return
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_images(work / "train", args.n_per_class, seed=0)
        new = write_images(work / "new", args.n_per_class, seed=1, flat=True)
        times = {
            key: []
            for key in ("ours-1", "ours-5", "keras-1", "keras-5", "ours-predict", "keras-predict")
        }
        for repeat in range(args.repeats):
            r = work / f"r{repeat}"
            for epochs in (1, 5):
                out = r / f"ours-{epochs}"
                times[f"ours-{epochs}"].append(
                    timed(cellclass_train(data, out, epochs, r / f"cache-{epochs}"))
                )
                model_file = r / f"keras-{epochs}.keras"
                times[f"keras-{epochs}"].append(
                    timed(keras_command("train", data, epochs, model_file))
                )
            predict = [
                sys.executable,
                "-m",
                "cellclass",
                "--quiet",
                "predict",
                str(r / "ours-5"),
                str(new),
            ]
            predict += ["-o", str(r / "ours.csv"), "--cache-dir", str(r / "cache-predict")]
            times["ours-predict"].append(timed(predict))
            times["keras-predict"].append(
                timed(keras_command("predict", r / "keras-5.keras", new, r / "keras.csv"))
            )
            line = ", ".join(f"{key} {values[-1]:.1f} s" for key, values in times.items())
            print(f"repeat {repeat + 1}: {line}", flush=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    per_epoch = {
        side: (median[f"{side}-5"] - median[f"{side}-1"]) / 4 for side in ("ours", "keras")
    }
    n = 2 * args.n_per_class
    print(f"\n{n} images {SIZE}x{SIZE} RGB, medians of {args.repeats} repeats:")
    print(f"{'measurement':<28}{'cellclass':>12}{'keras':>12}{'ratio':>9}")
    rows = [
        ("train, s per epoch", per_epoch["ours"], per_epoch["keras"]),
        ("predict, s end to end", median["ours-predict"], median["keras-predict"]),
        ("train 5 epochs, s", median["ours-5"], median["keras-5"]),
    ]
    for name, ours, keras in rows:
        print(f"{name:<28}{ours:>12.2f}{keras:>12.2f}{keras / ours:>8.2f}x")


if __name__ == "__main__":
    main()
