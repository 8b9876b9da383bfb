"""Probes on data and models built here: calibration, FGSM, the confound probe, loss tables."""

import numpy as np
import pytest
import torch
from torch import nn

from cellclass import results
from cellclass.explain import probes
from cellclass.metrics import expected_calibration_error, softmax
from cellclass.models.logistic import fit_logistic, predict_logistic


# ---------------------------------------------------------------- calibration
def _overconfident_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a linear model on overlapping 2-D classes, weights blown up 20 times."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    points = rng.normal(size=(n, 2)) + np.where(labels[:, None] == 1, 0.8, -0.8)  # (N, 2)
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]) * 20)
        model.bias.zero_()
        logits = model(torch.from_numpy(points).float()).numpy()  # (N, 2)
    return logits, labels


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    val_logits, val_labels = _overconfident_logits(400, seed=0)
    test_logits, test_labels = _overconfident_logits(400, seed=1)
    fit = probes.fit_calibration(val_logits, val_labels)
    assert fit.temperature > 5  # the weights were scaled up 20 times
    assert fit.ece_after < fit.ece_before / 2
    before = expected_calibration_error(softmax(test_logits), test_labels)
    after = expected_calibration_error(
        softmax(test_logits, temperature=fit.temperature), test_labels
    )
    assert after < before / 2  # and it holds on images it was not fitted on
    assert fit.n_images == 400


def test_recalibrating_saved_probabilities_equals_scaling_the_logits():
    logits, _ = _overconfident_logits(50, seed=2)
    from_probs = probes.recalibrate(softmax(logits / 20), 3.0)
    np.testing.assert_allclose(from_probs, softmax(logits / 20, temperature=3.0), atol=1e-9)


def test_calibration_file_round_trip(tmp_path):
    assert results.load_temperatures(tmp_path) == {}
    fits = {
        (0, "badger"): probes.Calibration(1.5, 0.2, 0.05, 30),
        (1, "strong"): probes.Calibration(0.8, 0.1, 0.04, 30),
    }
    path = probes.write_calibration(tmp_path, fits)
    assert path.name == results.CALIBRATION_FILE
    assert results.load_temperatures(tmp_path) == {(0, "badger"): 1.5, (1, "strong"): 0.8}
    path.write_text('{"runs": [{"run": 0}]}')
    with pytest.raises(ValueError, match="not a calibration file"):
        results.load_temperatures(tmp_path)


def test_calibration_needs_images():
    with pytest.raises(ValueError, match="no validation images"):
        probes.fit_calibration(np.zeros((0, 2)), np.zeros(0, int))


# ---------------------------------------------------------------- FGSM
def _bars(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 12, 12) noisy images: class 0 a vertical bar, class 1 a horizontal bar."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    position = torch.randint(2, 10, (n, 1, 1), generator=generator)
    index = torch.arange(12)
    vertical = (index[None, None, :] == position).expand(n, 12, 12)  # (N, H, W)
    horizontal = (index[None, :, None] == position).expand(n, 12, 12)
    bar = torch.where(labels[:, None, None] == 0, vertical, horizontal)
    x = 0.3 * torch.rand(n, 1, 12, 12, generator=generator) + 0.5 * bar[:, None]  # (N, C, H, W)
    return x.clamp(0, 1), labels


@pytest.fixture(scope="module")
def tiny_model():
    """A small CNN trained here, full batch, for 80 Adam steps (seeded, about a second)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _bars(256, generator)
    for _ in range(80):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    x, y = _bars(200, generator)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95  # it learned the task
    return model, x


def test_fgsm_flips_more_predictions_than_random_noise_of_the_same_size(tiny_model):
    model, x = tiny_model
    rows = probes.flip_sweep(model, x, (0.05, 0.1, 0.2), generator=torch.Generator().manual_seed(1))
    flipped = {(row["epsilon"], row["attack"]): row["flipped"] for row in rows}
    for eps in (0.05, 0.1, 0.2):
        assert flipped[eps, "FGSM"] > flipped[eps, "random sign"] + 0.2
    assert flipped[0.2, "FGSM"] >= flipped[0.05, "FGSM"]
    assert {row["n_images"] for row in rows} == {200}


def test_perturbations_stay_in_range_and_within_epsilon(tiny_model):
    model, x = tiny_model
    targets = torch.zeros(len(x), dtype=torch.int64)
    for perturbed in (
        probes.fgsm(model, x, targets, 0.03),
        probes.sign_noise(x, 0.03, generator=torch.Generator().manual_seed(0)),
    ):
        assert perturbed.shape == x.shape
        assert perturbed.min() >= 0 and perturbed.max() <= 1
        assert (perturbed - x).abs().max() <= 0.03 + 1e-6
    first = probes.sign_noise(x, 0.03, generator=torch.Generator().manual_seed(4))
    again = probes.sign_noise(x, 0.03, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- confound probe
def _textures(n: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 1, 16, 16) smooth random textures in [0, 1]."""
    coarse = rng.random((n, 1, 4, 4))
    return np.kron(coarse, np.ones((4, 4)))


def _brightness_only(n: int, rng: np.random.Generator):
    """Classes differ only in brightness: the same kind of texture at 0.3 or 0.6 gain."""
    labels = rng.integers(0, 2, n)
    gain = np.where(labels == 1, 0.6, 0.3)[:, None, None, None]
    return torch.from_numpy(_textures(n, rng) * gain).float(), labels


def _brightness_matched(n: int, rng: np.random.Generator):
    """Classes differ only in arrangement: class 1 is a class-0-like image with its pixels
    shuffled, so every intensity statistic has the same distribution in both classes."""
    labels = rng.integers(0, 2, n)
    images = _textures(n, rng) * rng.uniform(0.3, 0.9, (n, 1, 1, 1))
    for i in np.flatnonzero(labels == 1):
        images[i, 0] = rng.permutation(images[i, 0].ravel()).reshape(16, 16)
    return torch.from_numpy(images).float(), labels


@pytest.mark.parametrize("make, fires", [(_brightness_only, True), (_brightness_matched, False)])
def test_confound_probe_detects_classes_that_differ_only_in_brightness(make, fires):
    rng = np.random.default_rng(0)
    train_x, train_y = make(200, rng)
    test_x, test_y = make(200, rng)
    probe = fit_logistic(probes.intensity_features(train_x), train_y, 2)
    predicted = predict_logistic(probe, probes.intensity_features(test_x)).argmax(1)
    accuracy = float((predicted == test_y).mean())
    chance = float(np.bincount(test_y).max() / len(test_y))
    assert probes.confound_flagged(accuracy, 0.95, chance) is fires  # a CNN at 95 %
    assert accuracy > 0.95 if fires else accuracy < chance + 0.1


def test_intensity_features_are_per_channel_statistics():
    x = torch.stack([torch.full((4, 4), 0.25), torch.linspace(0, 1, 16).reshape(4, 4)])[None]
    features = probes.intensity_features(x)  # (1, 18)
    names = probes.intensity_feature_names(2)
    assert features.shape == (1, len(names)) == (1, 18)
    row = dict(zip(names, features[0], strict=True))
    assert row["mean_c0"] == pytest.approx(0.25) and row["sd_c0"] == pytest.approx(0.0)
    assert row["p50_c1"] == pytest.approx(0.5) and row["p99_c1"] == pytest.approx(0.99)


@pytest.mark.parametrize(
    "probe, cnn, chance, expected",
    [
        (0.90, 0.92, 0.5, True),
        (0.97, 0.90, 0.5, True),
        (0.60, 0.92, 0.5, False),
        (0.56, 0.52, 0.5, False),
    ],
)
def test_confound_flag_needs_a_cnn_above_chance_and_a_probe_close_to_it(
    probe, cnn, chance, expected
):
    assert probes.confound_flagged(probe, cnn, chance) is expected


def test_logistic_regression_refuses_mismatched_input():
    with pytest.raises(ValueError, match="features"):
        fit_logistic(np.zeros((3, 2)), np.zeros(4, int), 2)


# ---------------------------------------------------------------- loss vs accuracy
def _epochs(run, losses, model="badger", control=0):
    return [
        {
            "run": run,
            "model": model,
            "epoch": e + 1,
            "split": "train",
            "loss": loss,
            "control": control,
        }
        for e, loss in enumerate(losses)
    ]


def test_loss_rows_use_the_kept_epoch_and_skip_control_runs():
    epochs = (
        _epochs(0, [0.9, 0.5, 0.4]) + _epochs(1, [0.8, 0.3, 0.42]) + _epochs(0, [1.0], control=1)
    )
    epochs.append({"run": 0, "model": "badger", "epoch": 3, "split": "val", "loss": 9.0})
    runs = [
        {"run": 0, "model": "badger", "dataset": "t", "accuracy": 0.9, "control": 0, "epoch": ""},
        {"run": 1, "model": "badger", "dataset": "t", "accuracy": 0.6, "control": 0, "epoch": 2},
        {"run": 0, "model": "badger", "dataset": "t", "accuracy": 0.5, "control": 1},
    ]
    rows = probes.loss_accuracy_rows(epochs, runs)
    assert [(r["run"], r["train_loss"], r["accuracy"]) for r in rows] == [
        (0, 0.4, 0.9),
        (1, 0.3, 0.6),
    ]


def test_similar_loss_pairs_finds_the_widest_accuracy_gap():
    rows = [
        {"run": k, "model": "m", "dataset": "t", "train_loss": loss, "accuracy": acc}
        for k, (loss, acc) in enumerate([(0.30, 0.9), (0.31, 0.7), (0.32, 0.85), (0.9, 0.2)])
    ]
    (pair,) = probes.similar_loss_pairs(rows, tolerance=0.1)
    assert pair["runs"] == (0, 1) and pair["accuracy"] == (0.9, 0.7)
    assert probes.similar_loss_pairs(rows[2:], tolerance=0.1) == []
