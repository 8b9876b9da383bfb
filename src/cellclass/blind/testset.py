"""The test images a scorer sees: the answer key and the pixels, exactly as the model sees them.

With a results folder (``run_dir``) the images get that experiment's preprocessing (size,
channels, fitted normalisation), so the scorer and the network look at the same pixels, and
the answer buttons are the run's classes that have a folder in the test folder. Without one,
each image is stretched to its own percentiles (``"image"`` normalisation) at its native size.
The answer key (paths, labels) is kept here, on the server side.

The page shows each image at these pixels' size or a zoom the scorer chooses; the optional
contrast stretch (`render_png`'s ``stretch``) maps the same percentiles of the whole test set
to black and white in every image, so it brightens dim images without evening out brightness
differences between them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cellclass import results
from cellclass.data.cache import load_store
from cellclass.data.folders import scan_folder
from cellclass.data.images import image_meta, to_display_uint8
from cellclass.data.normalization import Normalization, normalize_batch
from cellclass.data.preprocessing import Preprocessing, preprocessing_from_dict

STRETCH_PERCENTILES = (0.5, 99.5)  # contrast stretch: these percentiles become black, white
_CHUNK = 64  # images normalised at a time, to bound memory on large test sets


@dataclass(frozen=True)
class BlindTest:
    test_dir: str  # resolved test folder (one subfolder per class)
    class_names: tuple[str, ...]  # answer buttons: the folder's classes (in the run's order)
    paths: tuple[str, ...]  # absolute image paths (answer key: server only)
    labels: tuple[str, ...]  # true class name of each image (answer key: server only)
    pixels: np.ndarray  # (N, S, S, 3) uint8: the model's input as an RGB picture
    source: str  # one line saying how the pixels were normalised, for the startup message
    absent_classes: tuple[str, ...] = ()  # classes of the run with no folder here: no button

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Row of ``pixels`` holding each path."""
        return {path: row for row, path in enumerate(self.paths)}

    @cached_property
    def stretch_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (3,) float: per channel, the `STRETCH_PERCENTILES` of every pixel
        of every image (one mapping for all images; counted in a histogram, no float copy)."""
        channels = self.pixels.reshape(-1, 3)  # (N * S * S, 3) uint8
        limits = []
        for channel in range(3):
            cumulative = np.cumsum(np.bincount(channels[:, channel], minlength=256))
            shares = 100.0 * cumulative / cumulative[-1]
            limits.append([np.searchsorted(shares, q) for q in STRETCH_PERCENTILES])
        low, high = np.array(limits, dtype=float).T  # (3,), (3,)
        return low, np.maximum(high, low + 1)  # a flat channel stays as it is

    @property
    def answer_key(self) -> list[tuple[str, str]]:
        """``(path, true label)`` of every image, in folder order."""
        return list(zip(self.paths, self.labels, strict=True))


def load_test(
    test_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
) -> BlindTest:
    """Scan a test folder and decode its images for display.

    Parameters
    ----------
    test_dir : folder with one subfolder per class.
    run_dir : results folder whose preprocessing and class map to use (recommended).
    image_size : display the images at this model size; only without ``run_dir``
        (default: the first image's native size).
    cache_dir : decoded-pixel cache (default: the user cache folder).
    skip_bad : leave unreadable images out instead of stopping.

    Raises
    ------
    FolderError, BadImagesError, ValueError
        A folder that is not a class tree, unreadable images, conflicting options.
    """
    if run_dir is not None and image_size is not None:
        raise ValueError("image_size cannot be combined with run_dir: the run fixes the size")
    if run_dir is not None:
        if not (Path(run_dir) / results.CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{run_dir}: no config.json; not a cellclass results folder")
        config = results.read_json(Path(run_dir) / results.CONFIG_FILE)
        prep = preprocessing_from_dict(config["preprocessing"])
        index = scan_folder(test_dir, class_names=tuple(config["class_names"]))
        source = (
            f"as the model of {Path(run_dir).name} sees them ({prep.image_size} px, "
            f"{prep.normalization.mode} normalisation)"
        )
    else:
        index = scan_folder(test_dir)
        size = image_size or _native_size(index.paths[0])
        prep = Preprocessing(image_size=size, normalization=Normalization("image"))
        source = (
            f"with per-image percentile normalisation at {size} px (no results folder given: "
            "with one, exactly as its model sees them)"
        )
    store = load_store(index.paths, prep, cache_dir=cache_dir, skip_bad=skip_bad)
    label_of = {sample.path: index.class_names[sample.label] for sample in index.samples}
    absent = tuple(index.missing_classes)
    return BlindTest(
        test_dir=str(index.root),
        class_names=tuple(name for name in index.class_names if name not in absent),
        paths=tuple(str(path) for path in store.paths),
        labels=tuple(label_of[path] for path in store.paths),
        pixels=_display_pixels(store, prep.normalization),
        source=source,
        absent_classes=absent,
    )


def _native_size(path: Path) -> int:
    meta = image_meta(path)
    return max(meta.height, meta.width)


def _display_pixels(store, norm: Normalization) -> np.ndarray:
    """(N, S, S, C) stored pixels -> (N, S, S, 3) uint8, normalised as for the model."""
    shown = []
    for start in range(0, len(store.pixels), _CHUNK):
        stop = start + _CHUNK
        raw = torch.from_numpy(np.array(store.pixels[start:stop]))  # a writable copy
        x = normalize_batch(
            raw.permute(0, 3, 1, 2),
            norm,  # (B, C, S, S)
            low=torch.from_numpy(store.low[start:stop]),
            high=torch.from_numpy(store.high[start:stop]),
        )
        shown += [to_display_uint8(image) for image in x.permute(0, 2, 3, 1).numpy()]
    return np.stack(shown)


def render_png(image: np.ndarray, *, stretch: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """Encode one display image as PNG at its own size (the page zooms it).

    The PNG carries no text chunks (no file name or other metadata).

    Parameters
    ----------
    image : (H, W, 3) ndarray, uint8
    stretch : (low, high), each (3,) float, optional
        Contrast stretch: per channel, ``low`` becomes 0 and ``high`` 255, linearly, clipped
        (`BlindTest.stretch_limits`: the same for every image of a test set).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"render_png needs (H, W, 3) uint8 pixels, got {image.shape} {image.dtype}"
        )
    if stretch is not None:
        low, high = (np.asarray(limit, dtype=np.float32) for limit in stretch)  # (3,), (3,)
        scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))  # (H, W, 3)
        image = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
