from dataclasses import replace

import numpy as np
import pytest
import torch

from cellclass.data.normalization import Normalization
from cellclass.training.augment import AugmentSettings
from cellclass.training.batched import train_runs_batched
from cellclass.training.recipes import REFERENCE, STRONG
from cellclass.training.train import Split, train_run

from .conftest import quadrant_store

NORM = Normalization("dataset", low=(0.0,), high=(255.0,))
SEEDS = (0, 1, 2)


def _train_split(n=30, size=16, seed=0) -> Split:
    """Class 1 has a bright top-left quadrant; 30 images: one short last batch of 10."""
    store, labels = quadrant_store(n, size, seed)
    return Split("train", store, np.arange(n), labels)


def _one_at_a_time(train, recipe, seeds):
    return [
        train_run(
            train, [], recipe, norm=NORM, n_classes=2, seed=seed, device="cpu", precision="fp32"
        )
        for seed in seeds
    ]


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.state_dict().values()])


@pytest.mark.parametrize(
    "recipe",
    [
        replace(REFERENCE, epochs=2),
        # AdamW, warm-up, cosine, label smoothing, dihedral augmentation, mixup: per-run draws
        replace(
            REFERENCE,
            epochs=2,
            optimizer="adamw",
            weight_decay=0.05,
            warmup_epochs=1,
            schedule="cosine",
            label_smoothing=0.1,
            mixup=0.2,
            augment=AugmentSettings(dihedral=True, intensity=0.1),
        ),
    ],
    ids=["reference", "adamw-augmented"],
)
def test_batched_runs_equal_runs_one_at_a_time(recipe):
    train = _train_split()
    batched = train_runs_batched(
        train, recipe, norm=NORM, n_classes=2, seeds=SEEDS, device="cpu", precision="fp32"
    )
    single = _one_at_a_time(train, recipe, SEEDS)
    assert len(batched.models) == len(batched.epochs) == len(SEEDS)
    for k, run in enumerate(single):
        expected = [(r.epoch, r.loss, r.accuracy) for r in run.epochs if r.split == "train"]
        got = [(r.epoch, r.loss, r.accuracy) for r in batched.epochs[k]]
        assert [e for e, _, _ in got] == [e for e, _, _ in expected] == [1, 2]
        np.testing.assert_allclose(
            [loss for _, loss, _ in got], [loss for _, loss, _ in expected], rtol=1e-4
        )
        assert [a for _, _, a in got] == [a for _, _, a in expected]
        torch.testing.assert_close(
            _weights(batched.models[k]), _weights(run.model), rtol=1e-4, atol=1e-5
        )


def test_batched_runs_differ_from_each_other():
    """Each run keeps its own seed: a batched trainer that reused one seed's weights, batch
    order or draws for all runs would give identical runs and fail here."""
    train = _train_split()
    batched = train_runs_batched(
        train,
        replace(REFERENCE, epochs=2),
        norm=NORM,
        n_classes=2,
        seeds=SEEDS,
        device="cpu",
        precision="fp32",
    )
    weights = [_weights(model) for model in batched.models]
    losses = [tuple(r.loss for r in run) for run in batched.epochs]
    for a in range(len(SEEDS)):
        for b in range(a + 1, len(SEEDS)):
            assert not torch.allclose(weights[a], weights[b], rtol=1e-3, atol=1e-4)
            assert losses[a] != losses[b]
    assert all(np.isfinite(loss) for run in losses for loss in run)


def test_batch_norm_and_best_epoch_are_refused():
    train = _train_split()
    with pytest.raises(ValueError, match="BatchNorm or Dropout"):
        train_runs_batched(
            train,
            replace(STRONG, epochs=1, select="last", tta=False),
            norm=NORM,
            n_classes=2,
            seeds=SEEDS,
            device="cpu",
        )
    with pytest.raises(ValueError, match="select='best'"):
        train_runs_batched(train, STRONG, norm=NORM, n_classes=2, seeds=SEEDS, device="cpu")
    with pytest.raises(ValueError, match="seeds is empty"):
        train_runs_batched(train, REFERENCE, norm=NORM, n_classes=2, seeds=(), device="cpu")
