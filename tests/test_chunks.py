"""Cache-sized chunks change speed, not results."""

import copy

import numpy as np
import pytest
import torch

from cellclass.models.cnn import build_model
from cellclass.training import chunks
from cellclass.training.train import predict_logits, train_step

from .test_train import NORM, _splits


def test_the_last_level_cache_size_is_read():
    assert chunks.last_level_cache_bytes() >= 1 << 20  # sysfs, or the 32 MiB default


def test_chunks_keep_the_first_activation_within_the_cache(monkeypatch):
    monkeypatch.setattr(chunks, "last_level_cache_bytes", lambda: 32 << 20)
    cpu = torch.device("cpu")
    badger = build_model("badger", in_channels=3, n_classes=2, image_size=256)
    compact = build_model("compact", in_channels=3, n_classes=2, image_size=256)
    assert chunks.chunk_images(badger, 256, cpu) == 5  # 16 x 256 x 256 x 4 B = 4 MiB each
    assert chunks.chunk_images(badger, 128, cpu) == 21
    assert chunks.chunk_images(compact, 256, cpu) == 14  # 24-channel stride-2 stem: 1.5 MiB
    assert chunks.chunk_images(badger, 4096, cpu) == 1
    assert chunks.chunk_images(badger, 256, torch.device("meta")) is None  # not a CPU
    assert chunks.chunk_images(torch.nn.Linear(2, 2), 256, cpu) is None  # no convolution


def test_only_batchnorm_models_mix_the_images_of_a_batch():
    assert not chunks.mixes_images(build_model("badger", in_channels=1, n_classes=2, image_size=32))
    assert chunks.mixes_images(build_model("compact", in_channels=1, n_classes=2, image_size=32))


def test_in_chunks_gives_the_whole_batch_result():
    x = torch.arange(14.0).reshape(7, 2)
    calls = []

    def double(part):
        calls.append(len(part))
        return part * 2

    assert torch.equal(chunks.in_chunks(double, x, 3), x * 2)
    assert calls == [3, 3, 1]
    assert torch.equal(chunks.in_chunks(double, x, None), x * 2)
    assert calls[-1] == 7


def test_a_chunked_training_step_takes_the_same_step():
    torch.manual_seed(0)
    whole = build_model("badger", in_channels=1, n_classes=2, image_size=32)
    chunked, before = copy.deepcopy(whole), copy.deepcopy(whole)
    x = torch.rand(10, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(10) % 2
    results = []
    for model, chunk in ((whole, None), (chunked, 3)):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        results.append(train_step(model, optimizer, x, y, 0.1, None, chunk))
    assert results[0][1] == results[1][1]  # correct predictions
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)  # summed loss
    for a, b in zip(whole.parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(whole.classifier[1].weight, before.classifier[1].weight)  # a step


def test_chunked_prediction_matches_whole_batches(monkeypatch):
    _, val = _splits()
    torch.manual_seed(0)
    model = build_model("badger", in_channels=1, n_classes=2, image_size=32)
    monkeypatch.setattr("cellclass.training.train.chunk_images", lambda *args: None)
    whole = predict_logits(model, val, NORM, batch_size=10, tta=True)
    seen = []

    def three(*args):
        seen.append(3)
        return 3

    monkeypatch.setattr("cellclass.training.train.chunk_images", three)
    chunked = predict_logits(model, val, NORM, batch_size=10, tta=True)
    assert seen
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_the_chunk_budget_can_be_set_or_turned_off(monkeypatch):
    cpu = torch.device("cpu")
    badger = build_model("badger", in_channels=3, n_classes=2, image_size=256)
    monkeypatch.setenv("CELLCLASS_CHUNK_BYTES", str(8 << 20))
    assert chunks.chunk_images(badger, 256, cpu) == 2  # 8 MiB / 4 MiB per image
    monkeypatch.setenv("CELLCLASS_CHUNK_BYTES", "0")
    assert chunks.chunk_images(badger, 256, cpu) is None
    monkeypatch.setenv("CELLCLASS_CHUNK_BYTES", "lots")
    with pytest.raises(ValueError, match="CELLCLASS_CHUNK_BYTES='lots'"):
        chunks.chunk_images(badger, 256, cpu)


def test_training_chunks_only_models_that_keep_images_apart(monkeypatch):
    monkeypatch.setattr(chunks, "last_level_cache_bytes", lambda: 32 << 20)
    cpu = torch.device("cpu")
    badger = build_model("badger", in_channels=3, n_classes=2, image_size=256)
    compact = build_model("compact", in_channels=3, n_classes=2, image_size=256)
    assert chunks.training_chunk(badger, 256, cpu) == 4  # half the cache: 16 MiB
    assert chunks.training_chunk(badger, 128, cpu) == 16  # 1 MiB each
    assert chunks.chunk_setting()["training_budget_bytes"] == 16 << 20
    assert chunks.training_chunk(compact, 256, cpu) is None  # BatchNorm: whole batches
