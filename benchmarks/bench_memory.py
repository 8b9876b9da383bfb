"""Peak resident memory of training on many images (issue 6: 10,000 x 256x256 RGB < 1.5 GB).

Writes N RGB PNG images of 256x256 in two classes, then runs, in a child process::

    cellclass train DIR --runs 1 --epochs 1 --image-size 256 --out OUT --cache-dir CACHE --quiet

with a fresh pixel cache (so decoding is included), and prints the child's wall time and peak
resident memory (``ru_maxrss``: anonymous memory plus the file pages it has mapped), next to
what a float32 copy of the whole data set would take.

    python benchmarks/bench_memory.py                     # 10,000 images, one epoch
    python benchmarks/bench_memory.py --n-images 2000     # a quick look
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256


def write_images(root: Path, n_images: int) -> Path:
    """Smooth random RGB fields, half per class (class 1 a little brighter in red)."""
    train = root / "train"
    for name in ("Control", "Treated"):
        (train / name).mkdir(parents=True)

    def one(index: int) -> None:
        rng = np.random.default_rng(index)
        label = index % 2
        coarse = rng.random((16, 16, 3)) * 200
        coarse[..., 0] += 40 * label
        image = Image.fromarray(coarse.clip(0, 255).astype(np.uint8)).resize((SIZE, SIZE))
        noisy = np.asarray(image, np.int16) + rng.integers(-8, 9, (SIZE, SIZE, 3))
        name = ("Control", "Treated")[label]
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            train / name / f"{name}_{index:05d}.png", compress_level=1
        )

    with ThreadPoolExecutor() as pool:
        list(pool.map(one, range(n_images)))
    return train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--model", default="badger")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        train = write_images(root, args.n_images)
        print(f"{args.n_images} PNG images written in {time.perf_counter() - started:.0f} s")
        command = [
            sys.executable, "-m", "cellclass", "train", str(train),
            "--runs", "1", "--epochs", str(args.epochs), "--model", args.model,
            "--image-size", str(SIZE), "--out", str(root / "run"),
            "--cache-dir", str(root / "cache"), "--quiet",
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KB on Linux
    float32_gb = args.n_images * SIZE * SIZE * 3 * 4 / 1e9
    print(
        f"train {args.model}, {args.n_images} images 256x256x3, {args.epochs} epoch(s), "
        "decoding included"
    )
    print(f"{'wall time':<40}{wall:>10.0f} s")
    print(f"{'peak resident memory (ru_maxrss)':<40}{peak_mb:>10.0f} MB")
    print(f"{'uint8 pixel cache on disk':<40}{float32_gb / 4 * 1000:>10.0f} MB")
    print(f"{'a float32 copy of the data would be':<40}{float32_gb * 1000:>10.0f} MB")


if __name__ == "__main__":
    main()
