"""The whole study end to end through the command line, timed by phase.

Writes ~2,000 synthetic PNG tiles for training (Control and Snap29) and two test folders of
~750 tiles each, then runs::

    cellclass train TRAIN --test a=TEST_A --test b=TEST_B --runs 12 --epochs 9 \\
        --train-sample 400 --val-split 0 --quiet

with a fresh pixel cache, and prints the wall time split into decoding + set-up (everything
before the first run and the report after the last), training and evaluation (per-epoch and
final evaluation of both test folders), from the tables the run wrote.

    python benchmarks/bench_study.py                  # the study's size (256-pixel inputs)
    python benchmarks/bench_study.py --image-size 128 --runs 3    # a quick look

Options it does not know are passed on to ``cellclass train``, e.g. ``--device cuda`` or
``--executor ray --gpus-per-run 0.25``. With a parallel executor runs overlap, so their
summed times exceed the wall time and no set-up time is printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cellclass import results
from cellclass.synthetic.folders import write_class_folders


def write_data(root: Path, n_train: int, n_test: int) -> tuple[Path, Path, Path]:
    """Training and two test folders, written in parallel (one process each)."""
    folders = (root / "train", root / "test-a", root / "test-b")
    halves = (n_train // 2, n_test // 2, n_test // 2)
    with ProcessPoolExecutor(3) as pool:
        jobs = [
            pool.submit(
                write_class_folders,
                folder,
                {"Control": half, "Snap29": half},
                fmt="png",
                seed=0,
                stream=stream,
            )
            for stream, (folder, half) in enumerate(zip(folders, halves, strict=True))
        ]
        for job in jobs:
            job.result()
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=750)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument(
        "--data-dir", type=Path, help="keep the tiles here and reuse them in later calls"
    )
    args, train_options = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = args.data_dir or root / "data"
        started = time.perf_counter()
        if (data / "test-b").is_dir():
            train, test_a, test_b = data / "train", data / "test-a", data / "test-b"
        else:
            train, test_a, test_b = write_data(data, args.n_train, args.n_test)
            print(f"data written in {time.perf_counter() - started:.0f} s (not counted)")
        command = [
            sys.executable,
            "-m",
            "cellclass",
            "train",
            str(train),
            "--test",
            f"a={test_a}",
            "--test",
            f"b={test_b}",
            "--runs",
            str(args.runs),
            "--epochs",
            "9",
            "--train-sample",
            "400",
            "--val-split",
            "0",
            "--image-size",
            str(args.image_size),
            "--out",
            str(root / "run"),
            "--cache-dir",
            str(root / "cache"),
            "--quiet",
            *train_options,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"cellclass train failed:\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - started
        epochs = results.read_table(root / "run" / "epochs.csv")
        runs = results.run_seconds(results.read_table(root / "run" / "runs.csv"))
    training = sum(r["seconds"] for r in epochs if r["split"] == "train")
    in_runs = sum(runs.values())
    evaluation = in_runs - training
    print(
        f"study: {args.runs} runs x 9 epochs on 400 of {args.n_train} PNG tiles, "
        f"2 test folders of {args.n_test}, {args.image_size}-pixel inputs"
        + (f", {' '.join(train_options)}" if train_options else "")
    )
    print(f"{'wall time':<34}{wall:>8.0f} s")
    if wall >= in_runs:
        print(f"{'  decoding + set-up + report':<34}{wall - in_runs:>8.0f} s")
    else:
        print(f"  runs overlapped: {in_runs:.0f} s of run time in {wall:.0f} s of wall time")
    print(f"{'  training':<34}{training:>8.0f} s")
    print(f"{'  evaluation (every epoch + final)':<34}{evaluation:>8.0f} s")


if __name__ == "__main__":
    main()
