"""Seconds per epoch of K reference runs trained one at a time vs batched (`training.batched`).

One at a time is `cellclass.training.train.train_run` per seed, as a study runs them in one
process; batched is `cellclass.training.batched.train_runs_batched` with the same seeds. Both
train the reference recipe's model (``badger``) for one epoch on a memmapped uint8 store of
random images, fp32, and include building the models (milliseconds). For each repeat, every
K is timed one at a time and then batched, so both see the same machine load; the table gives
medians (with min-max) over the repeats.

    python benchmarks/bench_batched.py                          # 200 images, 128 px, CPU (+CUDA)
    python benchmarks/bench_batched.py --images 40 --repeats 3  # the run below

Measured with the second command on a 2-core AMD EPYC shared with other jobs (load average
4.5 at the start, so the spreads are wide; the ratios at K >= 3 are far outside them)::

    torch 2.13.0+cpu, 2 threads; AMD EPYC
    flags: avx2 avx512f avx512_bf16 -amx_bf16 -amx_tile -amx_int8
    badger, 40 images 128x128 RGB, batch 20, fp32, 1 epoch
    seconds per epoch of all K runs, median (min-max) of 3

    cpu         K  one at a time         batched               speed-up
                1     0.71 (0.48-3.03)     0.55 (0.44-3.38)   1.31x
                3     1.38 (1.21-2.50)     3.38 (2.81-7.59)   0.41x
                6     2.95 (2.51-3.00)     7.55 (7.12-7.57)   0.39x
               12     4.95 (3.22-5.51)    21.34 (20.50-24.07)   0.23x

On this CPU batching loses: one run's batch of 20 at 128 px keeps its largest activation
(21 MB) in the 32 MB L3 cache, K runs together do not (K x 21 MB), and the profile of a K=6
epoch is dominated by the grouped convolutions' backward pass and max-pooling over those
out-of-cache tensors. Not measured on a GPU (no device was lent to this task); that is where
batching small models is expected to pay.

Run it on a quiet machine: figures from a loaded machine are noise.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cellclass.data.cache import PixelStore
from cellclass.data.normalization import Normalization
from cellclass.training.batched import train_runs_batched
from cellclass.training.recipes import REFERENCE
from cellclass.training.train import Split, train_run

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> str:
    """The `lscpu` Flags line's flags that matter for fp32/bf16 kernels, and the CPU model."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    present = set(fields.get("Flags", "").split())
    flags = " ".join(flag if flag in present else f"-{flag}" for flag in FLAGS)
    return f"{fields.get('Model name', platform.processor()).strip()}\nflags: {flags}"


def make_split(n_images: int, size: int, folder: Path) -> Split:
    """A memmapped uint8 RGB store of random images with random labels of 2 classes."""
    rng = np.random.default_rng(0)
    pixels = np.lib.format.open_memmap(
        folder / "pixels.npy", "w+", np.uint8, (n_images, size, size, 3)
    )
    pixels[:] = rng.integers(0, 256, pixels.shape, dtype=np.uint8)
    low = np.zeros((n_images, 3), np.float32)
    store = PixelStore(pixels, low, low + 255, 8, tuple(Path(f"{i}.png") for i in range(n_images)))
    return Split("train", store, np.arange(n_images), rng.integers(0, 2, n_images))


def one_at_a_time(split: Split, recipe, n_runs: int, device: str) -> float:
    started = time.perf_counter()
    for seed in range(n_runs):
        train_run(
            split, [], recipe, norm=NORM, n_classes=2, seed=seed, device=device, precision="fp32"
        )
    return time.perf_counter() - started


def batched(split: Split, recipe, n_runs: int, device: str) -> float:
    started = time.perf_counter()
    train_runs_batched(
        split, recipe, norm=NORM, n_classes=2, seeds=range(n_runs), device=device, precision="fp32"
    )
    return time.perf_counter() - started


NORM = Normalization("bitdepth", low=(0.0,) * 3, high=(255.0,) * 3)


def measure(split: Split, recipe, runs: list[int], repeats: int, device: str) -> dict:
    """{K: (one-at-a-time seconds, batched seconds)} over ``repeats``, alternated."""
    batched(split, recipe, 1, device)  # warm-up: kernels, allocator, vmap's first trace
    one_at_a_time(split, recipe, 1, device)
    times = {k: ([], []) for k in runs}
    for _ in range(repeats):
        for k in runs:
            times[k][0].append(one_at_a_time(split, recipe, k, device))
            times[k][1].append(batched(split, recipe, k, device))
    return times


def describe(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="training images per epoch")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 3, 6, 12])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda if any")
    args = parser.parse_args()
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    recipe = replace(REFERENCE, epochs=1, batch_size=args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {cpu_flags()}")
    print(
        f"badger, {args.images} images {args.size}x{args.size} RGB, batch {args.batch_size}, "
        f"fp32, 1 epoch\nseconds per epoch of all K runs, median (min-max) of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as folder:
        split = make_split(args.images, args.size, Path(folder))
        for device in devices:
            name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
            print(f"\n{name:<10}  K  one at a time         batched               speed-up")
            for k, (single, stacked) in measure(
                split, recipe, args.runs, args.repeats, device
            ).items():
                ratio = statistics.median(single) / statistics.median(stacked)
                print(f"{'':<10} {k:>2}  {describe(single)}  {describe(stacked)}  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
