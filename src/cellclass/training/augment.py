"""On-the-fly, label-preserving augmentation of whole batches, and test-time augmentation.

Microscopy fields have no "up": the 8 symmetries of the square (4 rotations by 90 degrees,
each optionally mirrored) leave the phenotype unchanged and are exact on the pixel grid, so
they are the backbone here. Small intensity and contrast jitter stand in for exposure and
staining variation between fields; random crops (rescaled back to the model size) for
framing. Every function works on a whole batch ``(B, C, H, W)`` with a `torch.Generator`, so
runs are reproducible and no Python loop touches single images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

N_DIHEDRAL = 8  # rotations k*90 degrees (k = 0..3), each plain or mirrored


@dataclass(frozen=True)
class AugmentSettings:
    dihedral: bool = False  # random rotation by k*90 degrees and mirror, per image
    intensity: float = 0.0  # brightness gain drawn from [1 - x, 1 + x], per image
    contrast: float = 0.0  # contrast around the image mean scaled by [1 - x, 1 + x]
    crop: float = 1.0  # random crop of this fraction of the side (1.0: none), resized back

    @property
    def active(self) -> bool:
        return self.dihedral or self.intensity > 0 or self.contrast > 0 or self.crop < 1.0


def dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """Transform ``index`` (0..7) of the dihedral group: rotate by (index % 4) * 90 degrees
    counter-clockwise, mirrored left-right first when index >= 4. x: (B, C, H, W)."""
    if index >= 4:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, index % 4, dims=(2, 3))


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image gets its own random dihedral transform (square images only)."""
    choice = torch.randint(0, N_DIHEDRAL, (x.shape[0],), generator=generator)
    out = x.clone()
    for index in range(N_DIHEDRAL):
        picked = (choice == index).nonzero().flatten()
        if len(picked):
            out[picked] = dihedral(x[picked], index)
    return out


def jitter(x: torch.Tensor, intensity: float, contrast: float, generator: torch.Generator):
    """Per-image brightness gain and contrast change, clipped back to [0, 1]."""
    batch = x.shape[0]
    # drawn on the generator's (CPU) device, so CPU and GPU runs see the same draws
    gain = 1 + intensity * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
    scale = 1 + contrast * (2 * torch.rand(batch, 1, 1, 1, generator=generator) - 1)
    gain, scale = gain.to(x.device), scale.to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return ((x - mean) * scale + mean) * gain


def random_crop(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """One random square crop of ``fraction`` of the side per batch position, resized back."""
    size = x.shape[-1]
    side = max(1, round(size * fraction))
    out = torch.empty_like(x)
    offsets = torch.randint(0, size - side + 1, (x.shape[0], 2), generator=generator)
    for i, (top, left) in enumerate(offsets.tolist()):
        patch = x[i : i + 1, :, top : top + side, left : left + side]  # (1, C, side, side)
        out[i] = functional.interpolate(patch, size=(size, size), mode="bilinear")[0]
    return out


def augment_batch(
    x: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> torch.Tensor:
    """Apply the configured augmentations to a (B, C, H, W) float batch in [0, 1]."""
    if not settings.active:
        return x
    memory_format = (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    if settings.crop < 1.0:
        x = random_crop(x, settings.crop, generator)
    if settings.dihedral:
        x = random_dihedral(x, generator)
    if settings.intensity > 0 or settings.contrast > 0:
        x = jitter(x, settings.intensity, settings.contrast, generator).clamp_(0.0, 1.0)
    return x.contiguous(memory_format=memory_format)


def tta_probabilities(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities averaged over the 8 dihedral transforms of x: (B, K)."""
    total = None
    for index in range(N_DIHEDRAL):
        view = dihedral(x, index).contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(model(view).float(), dim=1)  # (B, K)
        total = probs if total is None else total + probs
    return total / N_DIHEDRAL
