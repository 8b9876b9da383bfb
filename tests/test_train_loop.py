"""What one run's training loop records and keeps (issue 21: mutants of training/train.py that
test_train let through): the training metrics come from the training passes themselves, each
epoch is numbered and timed, the weights kept are the ones evaluated, the optimiser is the
recipe's, 16-bit pixels reach the model unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cellclass.data.cache import PixelStore
from cellclass.data.normalization import Normalization
from cellclass.models.cnn import build_model
from cellclass.training import train as train_module
from cellclass.training.recipes import REFERENCE
from cellclass.training.train import (
    Split,
    cpu_has_native_bf16,
    evaluate,
    gather_batch,
    make_optimizer,
    predict_logits,
    train_run,
    train_step,
)

from .conftest import quadrant_store

NORM = Normalization("dataset", low=(0.0,), high=(255.0,))


def _splits(n=24, size=16):
    store, labels = quadrant_store(n, size)
    train = Split("train", store, np.arange(0, 16), labels[:16])
    val = Split("val", store, np.arange(16, n), labels[16:])
    return train, val


def _still(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.0)  # steps that change nothing


@pytest.mark.parametrize("chunk", [None, 3])
def test_a_training_step_returns_the_summed_loss_and_correct_count(chunk):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(8, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    logits = model(x)
    expected = nn.functional.cross_entropy(logits, y, reduction="sum").item()
    total, correct = train_step(model, _still(model), x, y, chunk=chunk)
    assert total == pytest.approx(expected, rel=1e-5)
    assert correct == int((logits.argmax(1) == y).sum())
    soft = nn.functional.one_hot(y, 3).float() * 0.7 + 0.1  # mixup: the dominant class counts
    assert train_step(model, _still(model), x, soft, chunk=chunk)[1] == correct


def test_a_chunked_step_gives_the_whole_batchs_gradient():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x, y = torch.randn(7, 3, 2, 2), torch.tensor([0, 1, 1, 0, 1, 0, 0])
    whole, chunked = copy.deepcopy(model), copy.deepcopy(model)
    train_step(whole, torch.optim.SGD(whole.parameters(), lr=1.0), x, y)
    train_step(chunked, torch.optim.SGD(chunked.parameters(), lr=1.0), x, y, chunk=3)
    for a, b in zip(whole.parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_epochs_training_record_is_what_its_passes_saw():
    """With a learning rate of 0 the weights never move, so the record of the training epoch
    (summed over batches, the last one short) must equal an evaluation on the same images."""
    train, _ = _splits()
    recipe = replace(REFERENCE, epochs=1, batch_size=5, learning_rate=0.0)
    result = train_run(train, [], recipe, norm=NORM, n_classes=2, seed=0, device="cpu")
    record = result.epochs[0]
    check = evaluate(result.model, train, NORM)
    assert record.split == "train" and record.epoch == 1
    assert record.loss == pytest.approx(check.loss, rel=1e-4)
    assert record.accuracy == pytest.approx(check.accuracy)


@pytest.mark.parametrize("select", ["best", "last"])
def test_the_weights_kept_are_the_ones_the_final_scores_describe(select):
    train, val = _splits()
    recipe = replace(REFERENCE, epochs=4, batch_size=4, select=select, learning_rate=3e-3)
    result = train_run(train, [val], recipe, norm=NORM, n_classes=2, seed=2, device="cpu")
    assert [r.epoch for r in result.epochs if r.split == "train"] == [1, 2, 3, 4]
    assert all(0 <= r.seconds < 60 for r in result.epochs) and 0 < result.seconds < 600
    val_records = {r.epoch: r for r in result.epochs if r.split == "val"}
    if select == "last":
        assert result.epoch == 4
    else:  # the first epoch with the best validation accuracy
        best = max(r.accuracy for r in val_records.values())
        assert result.epoch == min(e for e, r in val_records.items() if r.accuracy == best)
    kept = val_records[result.epoch]
    final = evaluate(result.model, val, NORM)
    assert final.accuracy == pytest.approx(kept.accuracy)
    assert final.loss == pytest.approx(kept.loss, rel=1e-4)
    assert result.final["val"].loss == pytest.approx(kept.loss, rel=1e-4)


def test_the_recipes_optimizer_is_used():
    model = nn.Linear(2, 2)
    adamw = replace(REFERENCE, optimizer="adamw", weight_decay=0.05)
    optimizer, _ = make_optimizer(model, adamw, steps=4)
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    assert type(make_optimizer(model, REFERENCE, steps=4)[0]) is torch.optim.Adam


def test_sixteen_bit_pixels_reach_the_model_unchanged():
    values = np.array([0, 1, 4095, 65535], dtype=np.uint16).reshape(4, 1, 1, 1)
    pixels = np.broadcast_to(values, (4, 2, 2, 1)).copy()
    low = np.zeros((4, 1), np.float32)
    store = PixelStore(pixels, low, low + 65535, 16, ())
    split = Split("t", store, np.arange(4), np.zeros(4, np.int64))
    norm = Normalization("bitdepth", low=(0.0,), high=(65535.0,))
    x = gather_batch(split, np.arange(4), norm, torch.device("cpu"))
    expected = torch.tensor([0, 1, 4095, 65535], dtype=torch.float32) / 65535
    torch.testing.assert_close(x[:, 0, 0, 0], expected)


def test_a_model_built_for_the_store_trains_on_its_image_size():
    train, _ = _splits(size=16)
    model = build_model("badger", in_channels=1, n_classes=2, image_size=16)
    result = train_run(
        train, [], replace(REFERENCE, epochs=1), norm=NORM, n_classes=2, seed=0, device="cpu"
    )
    assert [p.shape for p in result.model.parameters()] == [p.shape for p in model.parameters()]


def _rates(recipe, steps: int) -> list[float]:
    optimizer, scheduler = make_optimizer(nn.Linear(2, 2), recipe, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_one_epoch_with_one_warmup_epoch_warms_up_over_the_whole_run():
    recipe = replace(REFERENCE, epochs=1, warmup_epochs=1, learning_rate=1.0)
    assert _rates(recipe, 4) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_the_schedule_spans_every_batch_of_the_run(monkeypatch):
    """The cosine decay ends at the run's last batch: its length is epochs x batches."""
    seen = {}

    def keep(model, recipe, steps):
        seen["steps"] = steps
        seen["optimizer"], scheduler = make_optimizer(model, recipe, steps)
        return seen["optimizer"], scheduler

    monkeypatch.setattr(train_module, "make_optimizer", keep)
    train, val = _splits()  # 16 training images: 4 batches of up to 5
    recipe = replace(REFERENCE, epochs=3, batch_size=5, schedule="cosine", learning_rate=1.0)
    train_run(train, [val], recipe, norm=NORM, n_classes=2, seed=0, device="cpu")
    assert seen["steps"] == 3 * 4
    assert seen["optimizer"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cos(pi)


def test_test_sets_are_evaluated_after_every_epoch_by_default():
    train, val = _splits()
    test = Split("t", val.store, val.indices, val.labels)
    recipe = replace(REFERENCE, epochs=3, batch_size=8)
    result = train_run(train, [val, test], recipe, norm=NORM, n_classes=2, seed=0, device="cpu")
    assert [r.epoch for r in result.epochs if r.split == "t"] == [1, 2, 3]


def test_logits_are_the_models_own_unless_tta_is_asked():
    _, val = _splits()
    torch.manual_seed(0)
    model = build_model("badger", in_channels=1, n_classes=2, image_size=16).eval()
    with torch.no_grad():
        direct = model(gather_batch(val, np.arange(len(val.indices)), NORM, torch.device("cpu")))
    np.testing.assert_allclose(
        predict_logits(model, val, NORM), direct.numpy(), rtol=1e-5, atol=1e-6
    )
    averaged = predict_logits(model, val, NORM, tta=True)
    assert not np.allclose(averaged, direct.numpy(), atol=1e-4)


def test_a_machine_without_proc_cpuinfo_has_no_native_bf16(monkeypatch):
    """macOS and Windows have no /proc/cpuinfo: "auto" must not guess bf16 there."""
    from pathlib import Path

    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if str(self) == "/proc/cpuinfo":
            raise FileNotFoundError(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert cpu_has_native_bf16() is False
