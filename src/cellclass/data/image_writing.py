"""Write (H, W) or (H, W, C) pixels as PNG or TIFF so that `cellclass.data.images.read_image`
reads them back identically; every write is atomic (temporary file renamed over the target).
`cellclass.data.images` re-exports `write_image`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from cellclass._files import atomic_path


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write (H, W) or (H, W, C) pixels so that `read_image` reads them back identically.

    ``.tif``/``.tiff``: uint8, uint16 or float32 with any C. ``.png``: uint8 with C in (1, 3, 4)
    or uint16 with C == 1. Atomic: a hidden temporary file in the same folder is renamed over
    `path`, so readers never see half a file. Other combinations raise ValueError.
    """
    path = Path(path)
    image = np.asarray(image)
    image = image.astype(image.dtype.newbyteorder("="), copy=False)  # native byte order
    image = image[:, :, np.newaxis] if image.ndim == 2 else image
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"{path}: write_image needs (H, W) or (H, W, C) pixels, got {image.shape}")
    suffix, n_channels, dtype = path.suffix.lower(), image.shape[2], image.dtype.name
    if suffix in (".tif", ".tiff"):
        if dtype not in ("uint8", "uint16", "float32"):
            raise ValueError(
                f"{path}: TIFF is written for uint8, uint16 or float32 pixels, got {dtype}; "
                "convert first, e.g. image.astype(np.float32)"
            )
        _replace_atomically(path, lambda file: _save_tiff(file, image))
    elif suffix == ".png":
        if (dtype, n_channels) not in (("uint8", 1), ("uint8", 3), ("uint8", 4), ("uint16", 1)):
            raise ValueError(
                f"{path}: PNG holds uint8 with 1, 3 or 4 channels or uint16 with 1 channel, not "
                f"{dtype} with {n_channels} channel(s); use a .tif path instead"
            )
        pixels = Image.fromarray(image[:, :, 0] if n_channels == 1 else image)
        _replace_atomically(path, lambda file: pixels.save(file, format="PNG"))
    else:
        raise ValueError(f"{path}: write_image writes .png, .tif or .tiff files, not {suffix!r}")


def _save_tiff(file: BinaryIO, image: np.ndarray) -> None:
    if image.shape[2] == 1:
        tifffile.imwrite(file, image[:, :, 0], photometric="minisblack")
    else:  # channels-last in one page; read back through the S (samples) axis
        photometric = "rgb" if image.shape[2] in (3, 4) else "minisblack"
        tifffile.imwrite(file, image, photometric=photometric, planarconfig="contig")


def _replace_atomically(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Run `save` on a hidden temporary file next to `path`, then rename it to `path`."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        save(file)
