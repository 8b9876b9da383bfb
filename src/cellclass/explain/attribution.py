"""Attribution: which pixels make a trained model say class c.

Three methods, each ``(model, x, targets) -> maps`` with ``x`` a (B, C, H, W) float32 batch
in [0, 1] (exactly what the model sees) and ``maps`` a (B, H, W) float32 array:

- `gradient_x_input`: the score's gradient times the pixel value, summed over channels. Signed
  and pixel-sharp, but noisy: it says how the score changes for a small change of each pixel.
- `occlusion`: how much the score drops when a square patch is replaced by the image's own
  mean. Signed and coarse (patch-sized), model-agnostic, and slow (one forward pass per
  patch position). Positive: the patch supports the class.
- `grad_cam`: a conv layer's feature maps weighted by their mean gradient, rectified and
  upsampled to the input size. Non-negative and coarse (feature-map resolution); it says
  *where* the evidence for the class is. It reads the deepest conv layer that still has at
  least 8 x 8 positions, since the study's CNN shrinks its last one to 2 x 2.

Every method explains the same score: the target class's logit minus the mean of the other
logits (`class_score`). For two classes that is the decision margin, so the maps of one class
are the negatives of the other's (Grad-CAM differs through its rectification). Unlike the
softmax probability, the margin does not saturate on confident images.

No function here changes the model: gradients are taken with `torch.autograd.grad`, so no
``.grad`` is left on the parameters, and hooks are removed before returning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from cellclass.figures.explain import normalize_maps

__all__ = [
    "METHODS",
    "SIGNED",
    "class_average_maps",
    "class_score",
    "conv_layers",
    "explain_batch",
    "grad_cam",
    "gradient_x_input",
    "occlusion",
]


def class_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Target logit minus the mean of the other logits: (B, K), (B,) int64 -> (B,).

    With one class only, the score is the logit itself.
    """
    n_classes = logits.shape[1]
    target = logits.gather(1, targets[:, None])[:, 0]  # (B,)
    if n_classes == 1:
        return target
    others = (logits.sum(1) - target) / (n_classes - 1)  # (B,)
    return target - others


def _check_batch(model: nn.Module, x: torch.Tensor, targets) -> torch.Tensor:
    """Validate shapes; return targets as a (B,) int64 tensor on x's device."""
    if x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64, device=x.device)
    if targets.shape != (x.shape[0],):
        raise ValueError(f"targets must have shape ({x.shape[0]},), got {tuple(targets.shape)}")
    if model.training:
        raise ValueError("explain a model in eval mode: call model.eval() first")
    return targets


def gradient_x_input(model: nn.Module, x: torch.Tensor, targets) -> np.ndarray:
    """Gradient of `class_score` times the input, summed over channels.

    Parameters
    ----------
    model : nn.Module in eval mode, (B, C, H, W) -> (B, K) logits
    x : (B, C, H, W) float32 tensor in [0, 1]
    targets : (B,) int class whose score is explained, per image

    Returns
    -------
    (B, H, W) ndarray of float32, signed: positive pixels raise the score.
    """
    targets = _check_batch(model, x, targets)
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)  # (B, C, H, W)
        score = class_score(model(inputs), targets)  # (B,)
        (gradient,) = torch.autograd.grad(score.sum(), inputs)  # (B, C, H, W)
    return (gradient * inputs.detach()).sum(1).cpu().numpy().astype(np.float32)  # (B, H, W)


def _patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins along one axis covering 0..size, the last flush with the edge."""
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


@torch.no_grad()
def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    targets,
    *,
    patch_size: int,
    stride: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Drop of `class_score` when a patch is replaced by the image's per-channel mean.

    Each pixel gets the mean drop over the patch positions that cover it.

    Parameters
    ----------
    model : nn.Module in eval mode, (B, C, H, W) -> (B, K) logits
    x : (B, C, H, W) float32 tensor in [0, 1]
    targets : (B,) int class whose score is explained, per image
    patch_size : side of the square patch in pixels (at most min(H, W))
    stride : step between patch positions; default ``patch_size // 2``
    batch_size : occluded images per forward pass (several positions at once)

    Returns
    -------
    (B, H, W) ndarray of float32, signed: positive where hiding the patch lowers the score.
    """
    targets = _check_batch(model, x, targets)
    height, width = x.shape[2:]
    if not 1 <= patch_size <= min(height, width):
        raise ValueError(f"patch_size must be in 1..{min(height, width)}, got {patch_size}")
    stride = stride or max(1, patch_size // 2)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    windows = [
        (slice(top, top + patch_size), slice(left, left + patch_size))
        for top in _patch_starts(height, patch_size, stride)
        for left in _patch_starts(width, patch_size, stride)
    ]
    baseline = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    reference = class_score(model(x), targets)  # (B,)
    total = torch.zeros(x.shape[0], height, width, device=x.device)  # (B, H, W)
    count = torch.zeros(height, width, device=x.device)  # (H, W)
    per_pass = max(1, batch_size // x.shape[0])  # patch positions per forward pass
    for first in range(0, len(windows), per_pass):
        group = windows[first : first + per_pass]
        hidden = x.repeat(len(group), 1, 1, 1)  # (P * B, C, H, W), position-major
        for i, (rows, cols) in enumerate(group):
            hidden[i * len(x) : (i + 1) * len(x), :, rows, cols] = baseline
        scores = class_score(model(hidden), targets.repeat(len(group)))  # (P * B,)
        drops = reference - scores.reshape(len(group), len(x))  # (P, B)
        for (rows, cols), drop in zip(group, drops, strict=True):
            total[:, rows, cols] += drop[:, None, None]
            count[rows, cols] += 1
    return (total / count).cpu().numpy().astype(np.float32)  # (B, H, W)


ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)  # rectify a conv's output
# Between a conv and its activation: normalisation, dropout, and max-pooling (the badger
# model pools before its ReLU, which is the same function as pooling after it).
_PASS_THROUGH = (nn.BatchNorm2d, nn.GroupNorm, nn.Dropout, nn.Dropout2d, nn.MaxPool2d)


def conv_layers(model: nn.Module) -> list[nn.Module]:
    """The feature maps Grad-CAM can read, shallow to deep: one per Conv2d of the model.

    Looks in ``model.features`` when the model has one (as `cellclass.models.cnn` models do),
    else in the whole model. For each Conv2d it returns the activation that follows it (past
    any normalisation), whose output is the rectified feature map, else the conv itself.
    """
    container = getattr(model, "features", model)
    modules = [m for m in container.modules() if not list(m.children())]  # leaves, in order
    layers = []
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Conv2d):
            continue
        chosen = module
        for following in modules[index + 1 :]:
            if isinstance(following, ACTIVATIONS):
                chosen = following
            if not isinstance(following, _PASS_THROUGH):
                break
        layers.append(chosen)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return layers


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets,
    *,
    layer: nn.Module | None = None,
    min_size: int = 8,
) -> np.ndarray:
    """Grad-CAM of `class_score`, upsampled to the input size.

    By default it reads the deepest conv layer whose feature map still has at least
    ``min_size`` x ``min_size`` positions: the study's CNN pools its last conv layer down to
    2 x 2 at 256 px, which would only say which quadrant holds the evidence.

    Parameters
    ----------
    model : nn.Module in eval mode, (B, C, H, W) -> (B, K) logits
    x : (B, C, H, W) float32 tensor in [0, 1]
    targets : (B,) int class whose score is explained, per image
    layer : module whose (B, F, h, w) output is weighted (e.g. ``conv_layers(model)[-1]``,
        the very last conv layer); it must run once per forward pass
    min_size : smallest side (h, w) of the feature map chosen when ``layer`` is None; the
        shallowest conv layer is used when none is that large

    Returns
    -------
    (B, H, W) ndarray of float32, >= 0, bilinearly upsampled from (h, w).
    """
    targets = _check_batch(model, x, targets)
    candidates = [layer] if layer is not None else conv_layers(model)
    captured: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(candidates))}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, i=i: captured[i].append(out))
        for i, module in enumerate(candidates)
    ]
    try:
        with torch.enable_grad():
            inputs = x.detach().clone().requires_grad_(True)  # (B, C, H, W): builds the graph
            score = class_score(model(inputs), targets)  # (B,)
            once = [i for i, outputs in captured.items() if len(outputs) == 1]  # no shared ReLU
            if not once:
                raise ValueError("the Grad-CAM layer must run exactly once per forward pass")
            large = [i for i in once if min(captured[i][0].shape[2:]) >= min_size]
            (activation,) = captured[large[-1] if large else once[0]]
            (gradient,) = torch.autograd.grad(score.sum(), activation)  # (B, F, h, w)
    finally:
        for handle in handles:
            handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (B, F, 1, 1)
    cam = functional.relu((weights * activation.detach()).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = functional.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam[:, 0].cpu().numpy().astype(np.float32)  # (B, H, W)


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "gradient x input": gradient_x_input,
    "occlusion": occlusion,
    "Grad-CAM": grad_cam,
}  # name shown in figures -> method; occlusion also needs patch_size
SIGNED = {"gradient x input": True, "occlusion": True, "Grad-CAM": False}  # maps can be < 0


def explain_batch(
    model: nn.Module,
    x: torch.Tensor,
    targets,
    *,
    methods: Sequence[str] = tuple(METHODS),
    patch_size: int | None = None,
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Every method of ``methods`` on ``x``, in chunks of ``batch_size`` images.

    Parameters
    ----------
    x : (N, C, H, W) float32 tensor in [0, 1]
    targets : (N,) int class explained per image
    patch_size : occlusion patch side in pixels (stride half of it); needed for occlusion

    Returns
    -------
    dict
        method name -> (N, H, W) float32 maps.
    """
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution methods {unknown}; choose from {list(METHODS)}")
    if "occlusion" in methods and patch_size is None:
        raise ValueError("occlusion needs patch_size (the side of the hidden square, in pixels)")
    targets = np.asarray(targets, dtype=np.int64)
    maps: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    for start in range(0, len(targets), batch_size):
        chunk, chunk_targets = x[start : start + batch_size], targets[start : start + batch_size]
        for name in methods:
            options = {"patch_size": patch_size} if name == "occlusion" else {}
            maps[name].append(METHODS[name](model, chunk, chunk_targets, **options))
    return {name: np.concatenate(parts) for name, parts in maps.items()}


def class_average_maps(maps: np.ndarray, labels, n_classes: int) -> np.ndarray:
    """Mean of the `normalize_maps` maps of each class.

    Parameters
    ----------
    maps : (N, H, W) ndarray of float
    labels : (N,) int class of each map, in 0..n_classes-1
    n_classes : int

    Returns
    -------
    (n_classes, H, W) ndarray of float32; NaN for classes without images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(maps),):
        raise ValueError(f"labels must have shape ({len(maps)},), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}")
    scaled = normalize_maps(maps) if len(maps) else np.zeros((0, *np.shape(maps)[1:]), np.float32)
    average = np.full((n_classes, *scaled.shape[1:]), np.nan, dtype=np.float32)
    for label in np.unique(labels):
        average[label] = scaled[labels == label].mean(0)
    return average
