"""Training and inference throughput of the reference model, as cellclass really runs it.

Prints images/s (median of several repeats, with min-max) for one training step loop and
one inference loop on in-memory uint8 batches gathered from a memmapped pixel store, exactly
the path `cellclass.training.train` uses (gather -> normalise -> channels_last -> model), plus peak
resident memory.

    python benchmarks/bench_train.py                      # badger, 256x256 RGB, batch 20
    python benchmarks/bench_train.py --channels 1 --repeats 7
    python benchmarks/bench_train.py --keras              # side by side with Keras, same data
    python benchmarks/bench_train.py --device cuda --precision bf16 --batch-size 100

``--keras`` runs the identical Keras model (same layers, Glorot init, Adam eps 1e-7) on the
same arrays in the same process, alternating PyTorch and Keras repeats so both see the same
machine load, and prints the ratios. TensorFlow is not a dependency of cellclass; install
the reference into an environment of its own (measured with TensorFlow 2.21, Keras 3.15)::

    python3 -m venv .venv-keras
    .venv-keras/bin/pip install -c constraints.txt -e . "tensorflow-cpu==2.21.0"
    .venv-keras/bin/python benchmarks/bench_train.py --keras --repeats 5 --batches 5

Peak memory then includes TensorFlow's (~1 GB more).

Run it on a quiet machine: figures from a loaded machine are noise.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cellclass.data.cache import PixelStore
from cellclass.data.normalization import Normalization
from cellclass.models.cnn import build_model
from cellclass.training.chunks import (
    chunk_images,
    in_chunks,
    last_level_cache_bytes,
    training_chunk,
)
from cellclass.training.train import (
    PRECISIONS,
    Split,
    autocast_dtype,
    gather_batch,
    resolve_device,
    train_step,
)


def make_split(n_images: int, size: int, channels: int, seed: int, folder: Path) -> Split:
    """A memmapped uint8 store of random images, like the one `cellclass.data.cache` writes."""
    rng = np.random.default_rng(seed)
    pixels = np.lib.format.open_memmap(
        folder / "pixels.npy", "w+", np.uint8, (n_images, size, size, channels)
    )
    pixels[:] = rng.integers(0, 256, pixels.shape, dtype=np.uint8)
    low = np.zeros((n_images, channels), np.float32)
    store = PixelStore(pixels, low, low + 255, 8, tuple(Path(f"{i}.png") for i in range(n_images)))
    labels = rng.integers(0, 2, n_images)
    return Split("bench", store, np.arange(n_images), labels)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_train_rate(model, optimizer, split, norm, batch_size: int, n_batches: int, autocast):
    """Training steps exactly as `cellclass.training.train` takes them (cache-sized chunks
    included)."""
    model.train()
    device = next(model.parameters()).device
    chunk = training_chunk(model, split.store.pixels.shape[1], device)
    synchronize(device)
    started = time.perf_counter()
    labels = torch.from_numpy(split.labels).to(device)
    for b in range(n_batches):
        rows = np.arange(b * batch_size, (b + 1) * batch_size) % len(split.indices)
        x = gather_batch(split, rows, norm, device)
        train_step(model, optimizer, x, labels[rows], autocast=autocast, chunk=chunk)
    synchronize(device)
    return n_batches * batch_size / (time.perf_counter() - started)


@torch.inference_mode()
def torch_infer_rate(model, split, norm, batch_size: int, n_batches: int) -> float:
    """Inference as `cellclass.training.train.predict_logits` runs it (cache-sized chunks
    included)."""
    model.eval()
    device = next(model.parameters()).device
    chunk = chunk_images(model, split.store.pixels.shape[1], device)
    synchronize(device)
    started = time.perf_counter()
    for b in range(n_batches):
        rows = np.arange(b * batch_size, (b + 1) * batch_size) % len(split.indices)
        in_chunks(model, gather_batch(split, rows, norm, device), chunk).float().cpu()
    synchronize(device)
    return n_batches * batch_size / (time.perf_counter() - started)


def keras_model(size: int, channels: int, n_classes: int, *, metrics=()):
    """The study's Keras model: Glorot init, zero biases, Adam eps 1e-7. Pools pad 'same':
    identical to the study's 'valid' pools at 256 pixels, and like cellclass's ceil-mode pools
    below it, where eight 'valid' pools would shrink the map to nothing."""
    import keras

    layers = [keras.Input((size, size, channels))]
    for item in (16, "P", 16, "P", 16, "P", 32, "P", 32, 32, "P", 64, "P", 64, "P", 64, "P"):
        if item == "P":
            layers.append(keras.layers.MaxPooling2D(2, padding="same"))
        else:
            layers.append(keras.layers.Conv2D(item, 3, padding="same", activation="relu"))
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dense(n_classes),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-7),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    return model


def keras_rates(model, split, batch_size: int, n_batches: int) -> tuple[float, float]:
    n = batch_size * n_batches
    rows = np.arange(n) % len(split.indices)
    x = np.asarray(split.store.pixels[rows], dtype=np.float32) / 255.0
    y = split.labels[rows]
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    train = n / (time.perf_counter() - started)
    started = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    return train, n / (time.perf_counter() - started)


def describe_device(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name:<28}{statistics.median(values):>9.1f} img/s  "
        f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
    )


def training_gflop(model, size: int, channels: int, device) -> float:
    """Floating-point work of one training image (forward + backward), in GFLOP, as PyTorch's
    flop counter tallies the convolutions and matrix products of a batch of one."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, channels, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def matmul_gflops(device, dtype=torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """What this machine's BLAS reaches on one large square matrix product (median), in
    GFLOP/s: a practical ceiling for convolution-heavy training."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    rates = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        (a @ b).sum().item()
        rates.append(2 * n**3 / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="badger")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--batches", type=int, default=10, help="batches per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keras", action="store_true", help="also time the Keras reference")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic cuDNN kernels, as `cellclass train` uses them (GPU only)",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    autocast = autocast_dtype(args.precision, device)
    torch.backends.cudnn.deterministic = args.deterministic
    torch.manual_seed(0)
    norm = Normalization("dataset", low=(0.0,) * args.channels, high=(255.0,) * args.channels)
    with tempfile.TemporaryDirectory() as folder:
        split = make_split(
            args.batch_size * args.batches, args.size, args.channels, 0, Path(folder)
        )
        model = build_model(
            args.model, in_channels=args.channels, n_classes=2, image_size=args.size
        )
        model = model.to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        reference = keras_model(args.size, args.channels, 2) if args.keras else None
        torch_train_rate(model, optimizer, split, norm, args.batch_size, 2, autocast)  # warm-up
        rates: dict[str, list[float]] = {k: [] for k in ("train", "infer", "k_train", "k_infer")}
        if reference is not None:
            keras_rates(reference, split, args.batch_size, 2)  # warm-up / graph build
        for _ in range(args.repeats):  # alternate so both see the same machine load
            rates["train"].append(
                torch_train_rate(
                    model, optimizer, split, norm, args.batch_size, args.batches, autocast
                )
            )
            rates["infer"].append(
                torch_infer_rate(model, split, norm, args.batch_size, args.batches)
            )
            if reference is not None:
                k_train, k_infer = keras_rates(reference, split, args.batch_size, args.batches)
                rates["k_train"].append(k_train)
                rates["k_infer"].append(k_infer)
    print(
        f"{args.model}, {args.size}x{args.size}x{args.channels}, batch {args.batch_size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {describe_device(device)}, "
        f"{'bf16 autocast' if autocast else 'fp32'}"
        + (", deterministic cuDNN" if args.deterministic and device.type == "cuda" else "")
    )
    chunk = chunk_images(model, args.size, device)
    print(
        f"images per forward pass: inference {chunk or args.batch_size}, training "
        f"{training_chunk(model, args.size, device) or args.batch_size} "
        f"(last-level cache {last_level_cache_bytes() >> 20} MiB)"
    )
    print(describe("cellclass train", rates["train"]))
    gflop = training_gflop(model, args.size, args.channels, device)
    fp32, bf16 = matmul_gflops(device), matmul_gflops(device, torch.bfloat16)
    print(
        f"work: {gflop:.2f} GFLOP per training image, so cellclass trains at "
        f"{gflop * statistics.median(rates['train']):.0f} GFLOP/s; a 2048x2048 matrix product "
        f"reaches {fp32:.0f} GFLOP/s in fp32 and {bf16:.0f} in bf16 on this machine"
    )
    print(describe("cellclass inference", rates["infer"]))
    if reference is not None:
        print(describe("keras train", rates["k_train"]))
        print(describe("keras inference", rates["k_infer"]))
        for kind in ("train", "infer"):
            ratio = statistics.median(rates[kind]) / statistics.median(rates["k_" + kind])
            print(f"ratio cellclass/keras {kind:<6}{ratio:>8.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
