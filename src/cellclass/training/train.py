"""One training run: seed, optimiser, epochs, per-epoch metrics, checkpoint.

Data arrive as `Split` objects: raw pixels from a `PixelStore` plus the indices of the images
in this split. Batches are gathered and normalised as whole tensors; nothing in an epoch loops
over single images in Python. What is trained, and how, is a `cellclass.training.recipes.Recipe`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cellclass.choices import PRECISIONS
from cellclass.data.cache import PixelStore, read_rows
from cellclass.data.normalization import Normalization, normalize_batch
from cellclass.models.cnn import build_model
from cellclass.training.augment import augment_batch, tta_probabilities
from cellclass.training.chunks import chunk_images, in_chunks, training_chunk
from cellclass.training.recipes import Recipe


@dataclass(frozen=True)
class Split:
    name: str  # "train", "val" or a test-set name
    store: PixelStore  # pixels of the folder this split draws from
    indices: np.ndarray  # (N,) int64 rows of the store in this split
    labels: np.ndarray  # (N,) int64 class labels, aligned with indices


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    split: str  # "train", "val" or a test-set name
    loss: float  # mean cross-entropy
    accuracy: float
    seconds: float  # wall time of this split in this epoch


@dataclass(frozen=True)
class Evaluation:
    split: str
    loss: float
    accuracy: float
    logits: np.ndarray  # (N, K) float32 (log of TTA-averaged probabilities when TTA is on)
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class RunResult:
    model: nn.Module  # kept weights (last or best epoch), on the CPU
    epochs: list[EpochRecord]  # per epoch, per split
    final: dict[str, Evaluation]  # evaluation of val and every test split with kept weights
    epoch: int  # the epoch whose weights were kept
    seconds: float  # whole run


@contextmanager
def deterministic_kernels():
    """cuDNN restricted to deterministic kernels (no autotuning) inside, restored after.

    On the CPU this changes nothing; on a GPU it makes a seed give the same numbers every
    time (on an H200 it cost no measurable speed: benchmarks/bench_train.py --deterministic).
    cuBLAS is deterministic on one stream; its workspace setting is fixed for good measure.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


@contextmanager
def seeded_global_rng(seed: int, device: torch.device):
    """torch's global RNG (CPU, and ``device`` when it is a GPU) seeded with ``seed`` inside,
    restored to the caller's state after."""
    gpus = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        yield


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when available; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda: no CUDA GPU is available on this machine")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def gather_batch(
    split: Split, rows: np.ndarray, norm: Normalization, device: torch.device
) -> torch.Tensor:
    """Rows of ``split`` -> (B, C, S, S) float32 in [0, 1], channels_last, on ``device``."""
    store_rows = split.indices[rows]
    pixels = torch.from_numpy(read_rows(split.store, store_rows))  # (B, S, S, C)
    if pixels.dtype == torch.uint16:
        pixels = pixels.to(torch.int32)
    pixels = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, C, S, S)
    low = torch.from_numpy(split.store.low[store_rows]).to(device)
    high = torch.from_numpy(split.store.high[store_rows]).to(device)
    x = normalize_batch(pixels, norm, low=low, high=high)
    return x.contiguous(memory_format=torch.channels_last)


# Architectures whose training under CPU bf16 autocast was measured faster at unchanged accuracy
# (2-core AMD EPYC with AVX512_BF16, 128 px, the demo's datasets, 6 seeds, Welch's test). compact
# (strong): hard dataset 64.6 +- 2.8 % fp32 vs 65.0 +- 1.9 % bf16 (p = 0.77), easy 98.8 vs 99.4 %
# (p = 0.48), 1.8x faster end to end (70 vs 38 s), measured with scratch scripts; compact-fine
# (strong's model today), `bench_recipes.py --runs 6 --precision fp32|bf16` (hard dataset, 128
# px, seeds 0-5): 61.5 +- 1.5 % fp32 vs 60.8 +- 2.3 % bf16 (t = 0.6, p ~ 0.55). The study's
# badger trains 1.7x faster under bf16 but lower: `bench_fidelity.py --runs 12 [--precision
# bf16]` (easy demo pair, 128 px, seeds 0-11) gave 95.9 +- 1.2 % fp32 vs 94.7 +- 1.8 % bf16
# (Welch p = 0.058; fp32 higher in 5 seeds, lower in 1), as 6 seeds did before (96.5 vs 94.4 %,
# p = 0.085): the faithful recipe stays fp32. bench_train.py gives the rates.
CPU_BF16_MODELS = frozenset({"compact", "compact-fine"})


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX), per /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(text.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast_dtype(
    precision: str, device: torch.device, model: str | None = None
) -> torch.dtype | None:
    """The training autocast dtype for ``precision``, or None for plain fp32.

    "auto" picks only what was measured to gain speed at equal accuracy: bf16 for the
    architectures in `CPU_BF16_MODELS` on CPUs with native bf16 (AVX512_BF16, AMX), fp32
    otherwise. BatchNorm under bf16 ran slower on CPUs without bf16 units, and on an NVIDIA
    H200, at the study's batch of 20 images, bf16 trained the reference model 18 % slower than
    fp32 (3,802 vs 4,661 images/s, benchmarks/bench_train.py). "bf16" forces bfloat16
    autocast. Evaluation always runs in fp32. ``device`` is where the model runs and ``model``
    its architecture, for choices that depend on them.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        native = device.type == "cpu" and cpu_has_native_bf16()
        return torch.bfloat16 if native and model in CPU_BF16_MODELS else None
    return torch.bfloat16 if precision == "bf16" else None


def make_optimizer(model: nn.Module, recipe: Recipe, steps: int):
    """Optimiser and per-step learning-rate scheduler for ``steps`` training steps."""
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=recipe.learning_rate,
            eps=recipe.adam_eps,
            weight_decay=recipe.weight_decay,
        )
    else:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=recipe.learning_rate, eps=recipe.adam_eps
        )
    warmup = recipe.warmup_epochs * steps / max(recipe.epochs, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_run(
    train: Split,
    evaluations: list[Split],
    recipe: Recipe,
    *,
    norm: Normalization,
    n_classes: int,
    seed: int,
    device: str = "auto",
    precision: str = "auto",
    on_batch: Callable[[int], None] | None = None,
    on_epoch: Callable[[list[EpochRecord]], None] | None = None,
    test_every: int = 1,
) -> RunResult:
    """Train one model from scratch and evaluate it after every epoch.

    Parameters
    ----------
    train : the images the model learns from.
    evaluations : val and test splits evaluated after every epoch (memorisation shows here).
    seed : seeds weight initialisation, batch order and augmentation; same seed, same numbers.
    precision : "auto", "fp32" or "bf16" (see `autocast_dtype`).
    on_batch : called with the number of images after every training batch (progress bars).
    on_epoch : called with the epoch's records (train, then every evaluation split).
    test_every : test splits (all but "val") are evaluated after every ``test_every``-th
        epoch and the last one; fewer points on their curves, the same final results.
    """
    if test_every < 1:
        raise ValueError(f"test_every={test_every}: give a whole number of epochs, 1 or more")
    torch_device = resolve_device(device)
    # the global RNG seeds the weights and draws dropout masks: seeded inside a fork, so the
    # caller's random state is the same after the run as before it
    with seeded_global_rng(seed, torch_device):
        model = build_model(
            recipe.model,
            in_channels=train.store.channels,
            n_classes=n_classes,
            image_size=train.store.pixels.shape[1],
        ).to(torch_device, memory_format=torch.channels_last)
        steps = recipe.epochs * math.ceil(len(train.indices) / recipe.batch_size)
        optimizer, scheduler = make_optimizer(model, recipe, steps)
        state = _Loop(
            np.random.default_rng(seed),
            torch.Generator().manual_seed(seed),
            on_batch,
            on_epoch,
            autocast_dtype(precision, torch_device, recipe.model),
            test_every,
        )
        started = time.perf_counter()
        with deterministic_kernels():  # same seed, same numbers on one GPU too
            records, kept, last = _fit(
                model, optimizer, scheduler, train, evaluations, recipe, norm, state
            )
            if kept != recipe.epochs or recipe.tta:  # else the last epoch's evaluations are final
                last = {
                    split.name: evaluate(
                        model, split, norm, batch_size=recipe.eval_batch_size, tta=recipe.tta
                    )
                    for split in evaluations
                }
        model.to("cpu", memory_format=torch.contiguous_format)
        return RunResult(model, records, last, kept, time.perf_counter() - started)


def _fit(model, optimizer, scheduler, train, evaluations, recipe, norm, state):
    """The epochs: train, evaluate the splits due, keep the best or last weights in ``model``.

    Returns the per-epoch records, the epoch whose weights were kept and the last epoch's
    evaluations (split name -> `Evaluation`).
    """
    records: list[EpochRecord] = []
    best = (-1.0, 0, None)  # (validation accuracy, epoch, weights)
    for epoch in range(1, recipe.epochs + 1):
        epoch_records = [
            _train_epoch(model, optimizer, scheduler, train, recipe, norm, state, epoch)
        ]
        due = epoch % state.test_every == 0 or epoch == recipe.epochs
        results = {}
        for split in evaluations:
            if split.name != "val" and not due:
                continue
            tick = time.perf_counter()
            results[split.name] = evaluate(model, split, norm, batch_size=recipe.eval_batch_size)
            seconds = time.perf_counter() - tick
            result = results[split.name]
            epoch_records.append(
                EpochRecord(epoch, split.name, result.loss, result.accuracy, seconds)
            )
            if split.name == "val" and result.accuracy > best[0]:
                best = (result.accuracy, epoch, copy.deepcopy(model.state_dict()))
        records += epoch_records
        if state.on_epoch is not None:
            state.on_epoch(epoch_records)
    if recipe.select == "best" and best[2] is not None and best[1] != recipe.epochs:
        model.load_state_dict(best[2])
        return records, best[1], results
    return records, recipe.epochs, results


@dataclass
class _Loop:
    rng: np.random.Generator  # batch order
    generator: torch.Generator  # augmentation draws
    on_batch: Callable[[int], None] | None  # progress callback
    on_epoch: Callable[[list[EpochRecord]], None] | None  # per-epoch callback
    autocast: torch.dtype | None  # mixed-precision dtype for the forward pass, None: fp32
    test_every: int  # test splits are evaluated after every test_every-th epoch and the last


def _train_epoch(model, optimizer, scheduler, train: Split, recipe: Recipe, norm, state, epoch):
    model.train()
    device = next(model.parameters()).device
    tick = time.perf_counter()
    order = state.rng.permutation(len(train.indices))
    labels = torch.from_numpy(train.labels)
    chunk = training_chunk(model, train.store.pixels.shape[1], device)
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), recipe.batch_size):
        rows = np.sort(order[start : start + recipe.batch_size])  # sorted: faster memmap reads
        x = gather_batch(train, rows, norm, device)  # (B, C, S, S)
        x = augment_batch(x, recipe.augment, state.generator)
        y = labels[rows].to(device)  # (B,)
        if recipe.mixup > 0:
            x, y = mix_batch(x, y, model_classes(model), recipe.mixup, state.generator)
        loss, right = train_step(
            model, optimizer, x, y, recipe.label_smoothing, state.autocast, chunk
        )
        scheduler.step()
        total_loss += loss
        correct += right
        if state.on_batch is not None:
            state.on_batch(len(rows))
    n = len(order)
    return EpochRecord(epoch, "train", total_loss / n, correct / n, time.perf_counter() - tick)


def model_classes(model: nn.Module) -> int:
    """Number of outputs of a classifier (its last linear layer's)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each image blended with another of the batch by one weight
    drawn from Beta(alpha, alpha), and their one-hot labels alike -> (x, (B, K) soft labels).

    Draws come from ``generator`` (CPU), so runs stay reproducible on every device.
    """
    weight = _beta_draw(alpha, generator)
    weight = max(weight, 1 - weight)  # the first image dominates: its label stays the majority
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    onehot = nn.functional.one_hot(y, n_classes).float()
    return weight * x + (1 - weight) * x[partner], weight * onehot + (1 - weight) * onehot[partner]


def _beta_draw(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, seeded from ``generator`` (torch has no seeded Beta)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    label_smoothing: float = 0.0,
    autocast: torch.dtype | None = None,
    chunk: int | None = None,
) -> tuple[float, int]:
    """One optimiser step on the gradient of the batch's mean loss.

    With ``chunk`` the gradient is accumulated over chunks of that many images (the same
    gradient up to float rounding; see `cellclass.training.chunks`). Returns the batch's summed loss
    and its number of correct predictions.
    """
    optimizer.zero_grad(set_to_none=True)
    n = len(x)
    size = chunk or n
    total, correct = 0.0, 0
    for start in range(0, n, size):
        xs, ys = x[start : start + size], y[start : start + size]
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(xs).float()  # (b, K)
        if len(xs) == n:  # one pass: the batch's mean loss
            loss = nn.functional.cross_entropy(logits, ys, label_smoothing=label_smoothing)
            loss.backward()
            total += loss.item() * n
        else:
            loss = nn.functional.cross_entropy(
                logits, ys, label_smoothing=label_smoothing, reduction="sum"
            )
            (loss / n).backward()
            total += loss.item()
        hard = ys.argmax(1) if ys.ndim == 2 else ys  # mixup: the dominant image's class
        correct += int((logits.argmax(1) == hard).sum())
    optimizer.step()
    return total, correct


def predict_logits(
    model: nn.Module, split: Split, norm: Normalization, *, batch_size: int = 100, tta: bool = False
) -> np.ndarray:
    """(N, K) float32 logits for every image of ``split``, in split order.

    With ``tta`` the probabilities are averaged over the 8 dihedral transforms and their log
    is returned, so a softmax of the result gives the averaged probabilities.
    """
    model.eval()
    device = next(model.parameters()).device
    model.to(memory_format=torch.channels_last)  # outside inference mode: weights stay usable
    chunk = chunk_images(model, split.store.pixels.shape[1], device)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(split.indices), batch_size):
            rows = np.arange(start, min(start + batch_size, len(split.indices)))
            x = gather_batch(split, rows, norm, device)  # (B, C, S, S)
            if tta:
                probabilities = in_chunks(partial(tta_probabilities, model), x, chunk)
                out = torch.log(probabilities.clamp_min(1e-12))
            else:
                out = in_chunks(model, x, chunk)
            outputs.append(out.float().cpu())
    return torch.cat(outputs).numpy()


def evaluate(
    model: nn.Module, split: Split, norm: Normalization, *, batch_size: int = 100, tta: bool = False
) -> Evaluation:
    """Loss and accuracy of ``model`` on ``split`` (the model is left in eval mode)."""
    logits = predict_logits(model, split, norm, batch_size=batch_size, tta=tta)
    labels = split.labels
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    accuracy = float((logits.argmax(1) == labels).mean())
    return Evaluation(split.name, loss, accuracy, logits, labels)
