"""One training run: seed, optimiser, epochs, per-epoch metrics, checkpoint.

Data arrive as `Split` objects: raw pixels from a `PixelStore` plus the indices of the images
in this split. Batches are gathered and normalised as whole tensors; nothing in an epoch loops
over single images in Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cellclass.cache import PixelStore, normalize_batch
from cellclass.images import Normalization
from cellclass.models import build_model


@dataclass(frozen=True)
class TrainSettings:
    model: str = "badger"  # architecture name from cellclass.models.MODELS
    epochs: int = 9  # the study trained for 9 epochs
    batch_size: int = 20  # the study's batch size
    learning_rate: float = 1e-3  # Adam, Keras default
    adam_eps: float = 1e-7  # Keras' Adam epsilon (PyTorch's default is 1e-8)
    eval_batch_size: int = 100  # batch size for evaluation only; does not change results
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"


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
    logits: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class RunResult:
    model: nn.Module  # trained weights (on the CPU)
    epochs: list[EpochRecord]  # per epoch, per split
    final: dict[str, Evaluation]  # last-epoch evaluation of val and every test split
    seconds: float  # whole run


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when available; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available on this machine")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def gather_batch(
    split: Split, rows: np.ndarray, norm: Normalization, device: torch.device
) -> torch.Tensor:
    """Rows of ``split`` -> (B, C, S, S) float32 in [0, 1], channels_last, on ``device``."""
    store_rows = split.indices[rows]
    pixels = torch.from_numpy(np.asarray(split.store.pixels[store_rows]))  # (B, S, S, C)
    if pixels.dtype == torch.uint16:
        pixels = pixels.to(torch.int32)
    pixels = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, C, S, S)
    low = torch.from_numpy(split.store.low[store_rows]).to(device)
    high = torch.from_numpy(split.store.high[store_rows]).to(device)
    x = normalize_batch(pixels, norm, low=low, high=high)
    return x.contiguous(memory_format=torch.channels_last)


def train_run(
    train: Split,
    evaluations: list[Split],
    settings: TrainSettings,
    *,
    norm: Normalization,
    n_classes: int,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
    on_epoch: Callable[[list[EpochRecord]], None] | None = None,
) -> RunResult:
    """Train one model from scratch and evaluate it after every epoch.

    Parameters
    ----------
    train : the images the model learns from.
    evaluations : val and test splits evaluated after every epoch (memorisation shows here).
    seed : seeds weight initialisation and batch order; same seed, same numbers.
    on_batch : called with the number of images after every training batch (progress bars).
    on_epoch : called with the epoch's records (train, then every evaluation split).
    """
    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    image_size = train.store.pixels.shape[1]
    model = build_model(
        settings.model, in_channels=train.store.channels, n_classes=n_classes, image_size=image_size
    ).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, eps=settings.adam_eps
    )
    order_rng = np.random.default_rng(seed)
    records: list[EpochRecord] = []
    started = time.perf_counter()
    final: dict[str, Evaluation] = {}
    for epoch in range(1, settings.epochs + 1):
        epoch_records = [
            _train_epoch(
                model, optimizer, train, settings, norm, device, order_rng, epoch, on_batch
            )
        ]
        for split in evaluations:
            tick = time.perf_counter()
            result = evaluate(model, split, norm, batch_size=settings.eval_batch_size)
            seconds = time.perf_counter() - tick
            epoch_records.append(
                EpochRecord(epoch, split.name, result.loss, result.accuracy, seconds)
            )
            final[split.name] = result
        records += epoch_records
        if on_epoch is not None:
            on_epoch(epoch_records)
    model.to("cpu", memory_format=torch.contiguous_format)
    return RunResult(model, records, final, time.perf_counter() - started)


def _train_epoch(model, optimizer, train, settings, norm, device, rng, epoch, on_batch):
    model.train()
    tick = time.perf_counter()
    order = rng.permutation(len(train.indices))
    labels = torch.from_numpy(train.labels)
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), settings.batch_size):
        rows = np.sort(order[start : start + settings.batch_size])  # sorted: faster memmap reads
        x = gather_batch(train, rows, norm, device)  # (B, C, S, S)
        y = labels[rows].to(device)  # (B,)
        logits = model(x)  # (B, K)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(rows)
        correct += int((logits.argmax(1) == y).sum())
        if on_batch is not None:
            on_batch(len(rows))
    n = len(order)
    return EpochRecord(epoch, "train", total_loss / n, correct / n, time.perf_counter() - tick)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, split: Split, norm: Normalization, *, batch_size: int = 100
) -> np.ndarray:
    """(N, K) float32 logits for every image of ``split``, in split order."""
    model.eval()
    device = next(model.parameters()).device
    model.to(memory_format=torch.channels_last)
    chunks = []
    for start in range(0, len(split.indices), batch_size):
        rows = np.arange(start, min(start + batch_size, len(split.indices)))
        chunks.append(model(gather_batch(split, rows, norm, device)).float().cpu())
    return torch.cat(chunks).numpy()


def evaluate(
    model: nn.Module, split: Split, norm: Normalization, *, batch_size: int = 100
) -> Evaluation:
    """Loss and accuracy of ``model`` on ``split`` (the model is left in eval mode)."""
    logits = predict_logits(model, split, norm, batch_size=batch_size)
    labels = split.labels
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    accuracy = float((logits.argmax(1) == labels).mean())
    return Evaluation(split.name, loss, accuracy, logits, labels)
