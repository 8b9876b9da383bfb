import pytest
import torch

from cellclass.training.augment import (
    N_DIHEDRAL,
    AugmentSettings,
    augment_batch,
    dihedral,
    random_dihedral,
    tta_probabilities,
)


def _batch(seed=0, b=6, c=2, size=16):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_dihedral_transforms_are_exact_rotations_and_mirrors():
    x = _batch()
    assert torch.equal(dihedral(x, 0), x)
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(dihedral(x, 2), torch.rot90(x, 2, dims=(2, 3)))
    assert torch.equal(dihedral(x, 4), torch.flip(x, dims=(3,)))
    images = {tuple(dihedral(x, i)[0, 0].flatten().tolist()) for i in range(N_DIHEDRAL)}
    assert len(images) == N_DIHEDRAL  # eight distinct views of a random image


def test_random_dihedral_gives_each_image_one_of_its_eight_views():
    x = _batch(b=32)
    out = random_dihedral(x, torch.Generator().manual_seed(1))
    for i in range(len(x)):
        assert any(torch.equal(out[i], dihedral(x[i : i + 1], k)[0]) for k in range(N_DIHEDRAL))
    assert not torch.equal(out, x)


@pytest.mark.parametrize(
    "settings",
    [
        AugmentSettings(dihedral=True),
        AugmentSettings(intensity=0.2, contrast=0.2),
        AugmentSettings(crop=0.8),
        AugmentSettings(dihedral=True, intensity=0.1, contrast=0.1, crop=0.9),
    ],
)
def test_augmentation_keeps_shape_range_and_is_seeded(settings):
    x = _batch(b=8)
    a = augment_batch(x, settings, torch.Generator().manual_seed(3))
    b = augment_batch(x, settings, torch.Generator().manual_seed(3))
    c = augment_batch(x, settings, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_label_preserving_dihedral_keeps_what_a_symmetric_classifier_sees():
    """A rotation-invariant statistic (count of bright pixels) is unchanged per image."""
    x = (torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(5)) > 0.8).float()
    out = augment_batch(x, AugmentSettings(dihedral=True), torch.Generator().manual_seed(0))
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))


def test_no_augmentation_returns_the_batch_unchanged():
    x = _batch()
    assert augment_batch(x, AugmentSettings(), torch.Generator()) is x


class _Corner(torch.nn.Module):
    """Logits depend on the top-left pixel only: not rotation invariant."""

    def forward(self, x):
        value = x[:, 0, 0, 0]
        return torch.stack([value * 4, -value * 4], dim=1)


def test_tta_averages_probabilities_over_the_eight_views():
    x = _batch(b=3, c=1, size=8)
    model = _Corner()
    expected = torch.stack(
        [torch.softmax(model(dihedral(x, i)), dim=1) for i in range(N_DIHEDRAL)]
    ).mean(0)
    got = tta_probabilities(model, x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(3))
    assert not torch.allclose(got, torch.softmax(model(x), dim=1))


def test_augmentations_keep_the_batch_on_its_device():
    """Draws come from a CPU generator; everything applied to the batch follows its device
    (a GPU batch once failed in jitter). The meta device stands in for CUDA here."""
    settings = AugmentSettings(dihedral=True, intensity=0.2, contrast=0.2, crop=0.75)
    x = torch.empty(4, 3, 16, 16, device="meta")
    out = augment_batch(x, settings, torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == x.shape
