"""K runs of one recipe trained as one batched computation (opt-in; not used by the CLI yet).

The runs of a study are independent copies of one small network. Here their parameters are
stacked (`torch.func.stack_module_state`, a leading run axis of K) and one forward/backward
pass computes every run's batch (`torch.vmap` over `torch.func.functional_call`: convolutions
become grouped convolutions with K groups). Each run keeps what `train.train_run` gives it for
its seed, drawn in the same way:

- initial weights: the model is built under `train.seeded_global_rng(seed)`;
- batch order: ``np.random.default_rng(seed).permutation`` once per epoch;
- augmentation and mixup draws: ``torch.Generator().manual_seed(seed)``, applied per run.

The loss backpropagated is the *sum* over runs of each run's batch-mean loss, so run k's
gradient is exactly its own. Adam and AdamW update each element from its own gradient and
moments only, so one optimiser over the stacked parameters equals K optimisers (same
`train.make_optimizer`, so the reference's Keras-style Adam, lr 1e-3, eps 1e-7, and the
strong recipe's AdamW with warm-up and cosine schedule alike). Per-run per-epoch training loss
and accuracy, and final weights, equal one-at-a-time `train_run` up to float rounding
(tests/test_batched.py); the difference is the order of sums in grouped vs single convolutions.

Limits (checked, with errors that say so): no BatchNorm (its running statistics are buffers
written in place, and it couples images of a batch) and no Dropout (vmap would draw one mask
stream for all runs, not each run's own). So ``badger`` and ``badger-deep`` qualify; the
``compact`` models do not. Not mirrored: per-epoch validation/test evaluation, best-epoch
selection (``select="best"``) and TTA; the runs' `EpochRecord.seconds` is the wall time of
all K together; and train.py's cache-sized chunks on the CPU: a batch of K runs is computed
whole (splitting it so each pass's activation fits the cache made K=12 three times slower
still, at one image per run per pass). On a 2-core AVX-512 CPU batching was slower than one
run at a time for K >= 3 (`benchmarks/bench_batched.py`), so nothing uses it automatically.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from cellclass.data.normalization import Normalization
from cellclass.models.cnn import build_model
from cellclass.training.augment import augment_batch
from cellclass.training.chunks import mixes_images
from cellclass.training.recipes import Recipe
from cellclass.training.train import (
    EpochRecord,
    Split,
    autocast_dtype,
    deterministic_kernels,
    gather_batch,
    make_optimizer,
    mix_batch,
    model_classes,
    resolve_device,
    seeded_global_rng,
)


@dataclass(frozen=True)
class BatchedResult:
    models: list[nn.Module]  # one per seed, in the order of the seeds, on the CPU
    epochs: list[list[EpochRecord]]  # per run: its "train" record of every epoch
    seconds: float  # wall time of all runs together


@dataclass
class _Runs:
    """The stacked state of K runs and what draws their randomness."""

    template: nn.Module  # the architecture, on the meta device: functional_call's skeleton
    params: dict[str, nn.Parameter]  # name -> (K, ...) stacked parameters
    buffers: dict[str, torch.Tensor]  # name -> (K, ...) stacked buffers
    rngs: list[np.random.Generator]  # per run: batch order
    generators: list[torch.Generator]  # per run: augmentation and mixup draws


def train_runs_batched(
    train: Split,
    recipe: Recipe,
    *,
    norm: Normalization,
    n_classes: int,
    seeds: Sequence[int],
    device: str = "auto",
    precision: str = "auto",
) -> BatchedResult:
    """Train one run per seed of ``recipe`` on ``train``, all K runs in one computation.

    Run k equals ``train_run(train, [], recipe, seed=seeds[k], ...)`` up to float rounding:
    same initial weights, batch order, augmentation, per-epoch training loss and accuracy,
    and final weights (those of the last epoch). See the module notes for what is not covered.

    Raises ValueError for an empty ``seeds``, ``select="best"``, TTA, or a model with
    BatchNorm or Dropout.
    """
    if not seeds:
        raise ValueError("seeds is empty: give one seed per run to train")
    if recipe.select != "last" or recipe.tta:
        raise ValueError(
            f"recipe {recipe.label!r}: batched training keeps the last epoch's weights and "
            "evaluates nothing; use train_run for select='best' or tta=True"
        )
    torch_device = resolve_device(device)
    runs = stack_runs(train, recipe, n_classes, seeds, torch_device)
    steps = recipe.epochs * math.ceil(len(train.indices) / recipe.batch_size)
    holder = nn.ParameterList(runs.params.values())  # make_optimizer wants .parameters()
    optimizer, scheduler = make_optimizer(holder, recipe, steps)
    autocast = autocast_dtype(precision, torch_device, recipe.model)
    records: list[list[EpochRecord]] = [[] for _ in seeds]
    started = time.perf_counter()
    with deterministic_kernels():
        for epoch in range(1, recipe.epochs + 1):
            epoch_records = _train_epoch(
                runs, optimizer, scheduler, train, recipe, norm, autocast, epoch
            )
            for run, record in zip(records, epoch_records, strict=True):
                run.append(record)
    models = unstack_runs(runs, train, recipe, n_classes)
    return BatchedResult(models, records, time.perf_counter() - started)


def stack_runs(
    train: Split, recipe: Recipe, n_classes: int, seeds: Sequence[int], device: torch.device
) -> _Runs:
    """Each seed's model built exactly as `train_run` builds it, stacked along a run axis."""
    models = [_build(train, recipe, n_classes, seed, device) for seed in seeds]
    check_batchable(models[0], recipe.model)
    params, buffers = stack_module_state(models)  # name -> (K, ...), leaves with gradients
    params = {name: nn.Parameter(value.detach()) for name, value in params.items()}
    template = copy.deepcopy(models[0]).to("meta")
    return _Runs(
        template,
        params,
        buffers,
        [np.random.default_rng(seed) for seed in seeds],
        [torch.Generator().manual_seed(seed) for seed in seeds],
    )


def check_batchable(model: nn.Module, name: str) -> None:
    """Raise ValueError when ``model`` holds layers that K stacked runs cannot share."""
    if mixes_images(model) or any(isinstance(m, nn.Dropout) for m in model.modules()):
        raise ValueError(
            f"model {name!r} has BatchNorm or Dropout, which batched runs do not reproduce "
            "(in-place running statistics, one shared mask stream); train its runs one at a "
            "time with train_run, or pick badger / badger-deep"
        )


def unstack_runs(runs: _Runs, train: Split, recipe: Recipe, n_classes: int) -> list[nn.Module]:
    """One CPU model per run, holding that run's slice of the stacked weights."""
    models = []
    for k in range(len(runs.rngs)):
        model = build_model(
            recipe.model,
            in_channels=train.store.channels,
            n_classes=n_classes,
            image_size=train.store.pixels.shape[1],
        )
        state = {name: value[k].detach().cpu() for name, value in runs.params.items()}
        state |= {name: value[k].cpu() for name, value in runs.buffers.items()}
        model.load_state_dict(state)
        models.append(model)
    return models


def _build(train: Split, recipe: Recipe, n_classes: int, seed: int, device: torch.device):
    with seeded_global_rng(seed, device):  # the same draws as train_run's weights
        model = build_model(
            recipe.model,
            in_channels=train.store.channels,
            n_classes=n_classes,
            image_size=train.store.pixels.shape[1],
        )
    return model.to(device)


def _train_epoch(runs, optimizer, scheduler, train, recipe, norm, autocast, epoch):
    """One epoch of every run: each its own batch order; returns one record per run."""
    device = next(iter(runs.params.values())).device
    tick = time.perf_counter()
    orders = [rng.permutation(len(train.indices)) for rng in runs.rngs]
    n_runs, n = len(orders), len(train.indices)
    total_loss, correct = np.zeros(n_runs), np.zeros(n_runs, np.int64)
    for start in range(0, n, recipe.batch_size):
        x, y = _run_batches(runs, orders, start, train, recipe, norm, device)
        losses, right = _step(runs, optimizer, x, y, recipe.label_smoothing, autocast)
        scheduler.step()
        total_loss += losses
        correct += right
    seconds = time.perf_counter() - tick
    return [
        EpochRecord(epoch, "train", float(total_loss[k] / n), float(correct[k] / n), seconds)
        for k in range(n_runs)
    ]


def _run_batches(runs, orders, start, train, recipe, norm, device):
    """Each run's batch at ``start`` of its own order -> (K, B, C, S, S), (K, B) or (K, B, n)."""
    labels = torch.from_numpy(train.labels)
    xs, ys = [], []
    for order, generator in zip(orders, runs.generators, strict=True):
        rows = np.sort(order[start : start + recipe.batch_size])  # as train_run reads them
        x = gather_batch(train, rows, norm, device)  # (B, C, S, S)
        x = augment_batch(x, recipe.augment, generator)
        y = labels[rows].to(device)  # (B,)
        if recipe.mixup > 0:
            x, y = mix_batch(x, y, model_classes(runs.template), recipe.mixup, generator)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def _step(runs, optimizer, x, y, label_smoothing, autocast):
    """One optimiser step for every run on the sum of the runs' batch-mean losses.

    Returns each run's summed loss over the batch, (K,) float64 ndarray, and its number of
    correct predictions, (K,) int64 ndarray.
    """

    def run_loss(params, buffers, xs, ys):
        with torch.autocast(xs.device.type, dtype=autocast, enabled=autocast is not None):
            logits = functional_call(runs.template, (params, buffers), (xs,)).float()  # (B, n)
        loss = nn.functional.cross_entropy(logits, ys, label_smoothing=label_smoothing)
        return loss, logits

    optimizer.zero_grad(set_to_none=True)
    losses, logits = torch.vmap(run_loss)(runs.params, runs.buffers, x, y)  # (K,), (K, B, n)
    losses.sum().backward()  # run k's gradient is the gradient of its own mean loss
    optimizer.step()
    hard = y.argmax(2) if y.ndim == 3 else y  # mixup: the dominant image's class
    right = (logits.detach().argmax(2) == hard).sum(1)  # (K,)
    return losses.detach().double().cpu().numpy() * x.shape[1], right.cpu().numpy()
