"""Cache-sized chunks: run a CPU model over a few images at a time.

A convolution's output for a batch of 20 fields of 256x256 is large (the reference model's
first layer writes 16 x 256 x 256 float32 values per image: 4 MiB, so 84 MiB per batch), and
the max-pool that reads it back finds it in main memory. Computing the same batch a few
images at a time keeps that activation in the processor's last-level cache. On a 2-core AMD
EPYC with AVX2 and 32 MiB of L3, side by side (batches of 40 images, 256 px, reference
model)::

    inference  images per pass   2: 231   5: 262   10: 167   20: 146   40: 124 images/s
    training   images per pass   2:  83   4:  87    5:  83   10:  66   20:  55 images/s
    (at 128 px the best pass is the whole batch of 20: its activation is 4x smaller)

Training keeps more of each chunk alive (the backward pass reads every layer's input), so
its chunks are smaller. On a 2-core AMD EPYC with AVX-512 (Zen 4, 32 MiB L3), training at
256 px, 3 repeats each, twice in alternation (`bench_train.py --repeats 3 --batches 5` with
``CELLCLASS_CHUNK_BYTES`` set)::

    training   images per pass   1: 87   2: 170   3: 188-193   4: 203-210   5: 141-162
               20 (no chunks): 121 images/s

The rule used here: one chunk's largest activation fills at most two thirds of the cache in
inference (`CACHE_FRACTION`) and half of it in training (`TRAINING_CACHE_FRACTION`), which
picks 5 and 4 images at 256 px, the best of both tables; at 128 px a chunk holds 16 images
in training (the same speed as whole batches of 20, within noise). Results do not depend on
the chunks, up to float rounding: inference treats images independently, and training
accumulates the gradient of the batch's mean loss over the chunks. Layers that mix images of
a batch (BatchNorm in training mode) would see smaller batches, so such models are trained on
whole batches. GPUs get whole batches.

The rule was measured on 2 cores. Elsewhere (many cores, a different cache) the environment
variable ``CELLCLASS_CHUNK_BYTES`` sets the activation budget per chunk in bytes instead, and
``CELLCLASS_CHUNK_BYTES=0`` turns chunking off; `benchmarks/bench_train.py` shows the effect.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

import torch
from torch import nn

CACHE_FRACTION = 0.66  # share of the last-level cache that one chunk's largest activation may fill
TRAINING_CACHE_FRACTION = 0.5  # the same in training, where the backward pass needs more
DEFAULT_CACHE_BYTES = 32 << 20  # where the cache size cannot be read
BUDGET_VARIABLE = "CELLCLASS_CHUNK_BYTES"  # overrides the budget; 0: whole batches


@cache
def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache, read from Linux sysfs (32 MiB where unknown)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()  # "32768K"
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=DEFAULT_CACHE_BYTES)


def chunk_images(
    model: nn.Module, image_size: int, device: torch.device, *, fraction: float = CACHE_FRACTION
) -> int | None:
    """Images per forward pass on this machine; None: the whole batch at once.

    Sized so the first convolution's output (the largest activation of both cellclass
    models) fills at most ``fraction`` of the last-level cache, or the byte budget given by
    the ``CELLCLASS_CHUNK_BYTES`` environment variable (0: no chunks).
    """
    budget = _budget(fraction)
    if device.type != "cpu" or budget == 0:
        return None
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return None
    side = math.ceil(image_size / conv.stride[0])
    per_image = conv.out_channels * side * side * 4  # float32 bytes
    return max(1, budget // per_image)


def chunk_setting() -> dict:
    """What sets the chunk budget on this machine, for config.json: chunks change how sums
    are split, so the same seed gives (slightly) different weights with another budget."""
    text = os.environ.get(BUDGET_VARIABLE, "").strip()
    source = f"{BUDGET_VARIABLE}={text}" if text else "last-level cache"
    return {
        "budget_bytes": _budget(CACHE_FRACTION),
        "training_budget_bytes": _budget(TRAINING_CACHE_FRACTION),
        "set_by": source,
    }


def _budget(fraction: float) -> int:
    text = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not text:
        return int(fraction * last_level_cache_bytes())
    if not text.isdigit():
        raise ValueError(f"{BUDGET_VARIABLE}={text!r}: give a number of bytes (0: no chunks)")
    return int(text)


def training_chunk(model: nn.Module, image_size: int, device: torch.device) -> int | None:
    """Images per training pass: `chunk_images` at `TRAINING_CACHE_FRACTION`, but whole
    batches where layers mix images."""
    if mixes_images(model):
        return None
    return chunk_images(model, image_size, device, fraction=TRAINING_CACHE_FRACTION)


def mixes_images(model: nn.Module) -> bool:
    """True when a training-mode forward pass couples the images of a batch (BatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def in_chunks(function, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``function`` (per-image independent, e.g. an eval-mode model) over chunks of ``x``."""
    if chunk is None or chunk >= len(x):
        return function(x)
    return torch.cat([function(x[start : start + chunk]) for start in range(0, len(x), chunk)])
