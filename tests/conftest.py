"""Shared fixtures: tiny class-folder trees written with Pillow, in tmp_path."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_class_tree(
    root: Path, counts: dict[str, int], *, size: int = 32, seed: int = 0, offset: int = 0
) -> Path:
    """One folder per class; class i has a bright square in a class-specific corner.

    The classes are easy to learn, so a tiny model trained for a few epochs beats chance.
    """
    rng = np.random.default_rng(seed)
    for label, (name, n) in enumerate(counts.items()):
        for i in range(n):
            image = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
            corner = label % 4
            y, x = (corner // 2) * size // 2, (corner % 2) * size // 2
            image[y : y + size // 2, x : x + size // 2] += 150
            write_png(root / name / f"{name}_{i + offset:03d}.png", image)
    return root


IN_CI = os.environ.get("CI") == "true"  # CI installs Chromium, Ray and the export extras


def require(available: bool, what: str, *, module_level: bool = False) -> None:
    """Skip a test whose optional tool is missing here; under CI, which installs every one of
    them, fail instead, so a broken install cannot pass as skipped tests."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing under CI, which installs it", pytrace=False)
    pytest.skip(what, allow_module_level=module_level)


def import_or_require(name: str, what: str, *, module_level: bool = False):
    """`pytest.importorskip`, but a failure under CI (see `require`)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, what, module_level=module_level)


# Debian's Chromium, as the browser tests launch it: no sandbox (root), nothing fetched.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    return make_class_tree(tmp_path / "train", {"Control": 12, "Treated": 12})


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def quadrant_store(n: int, size: int, seed: int = 0):
    """(PixelStore, labels) of ``n`` random 8-bit images, alternating classes; class 1 has a
    bright top-left quadrant, learnable in a few epochs."""
    from cellclass.data.cache import PixelStore

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.integers(0, 80, (n, size, size, 1)).astype(np.uint8)
    pixels[labels == 1, : size // 2, : size // 2] += 150
    low = np.zeros((n, 1), np.float32)
    return PixelStore(pixels, low, low + 255, 8, tuple(f"{i}.png" for i in range(n))), labels
