"""Read one image file into an (H, W, C) array with its metadata; normalise pixel values.

PNG, JPEG and BMP are decoded by Pillow; TIFF (8/12/16-bit, float, multi-channel, multi-page,
ImageJ/OME hyperstacks) by tifffile. Pixels keep their native dtype (uint8, uint16, float32):
nothing is rescaled on reading, so 12-bit camera data stays 0..4095, and how values map to
[0, 1] is chosen explicitly with a `Normalization`. An image larger than `max_image_pixels`
is refused from its header, before any pixel is decoded. Normalisation lives in
`cellclass.data.normalization` and writing in `cellclass.data.image_writing`; both are
re-exported here.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from cellclass.data.image_writing import write_image
from cellclass.data.normalization import (
    NORMALIZATION_MODES,
    Normalization,
    fit_normalization,
    image_percentiles,
    normalize,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_PIXELS_VARIABLE",
    "NORMALIZATION_MODES",
    "ImageMeta",
    "ImageReadError",
    "Normalization",
    "effective_bit_depth",
    "fit_normalization",
    "image_meta",
    "image_percentiles",
    "max_image_pixels",
    "normalize",
    "parse_channels",
    "read_image",
    "resize",
    "select_channels",
    "to_display_uint8",
    "write_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
# Larger images are refused before decoding: a 21 KB TIFF can claim 100000 x 100000 pixels
# (9.3 GiB), and an image to be resized to 256 px that large is a whole slide to tile first.
MAX_IMAGE_PIXELS = 2**28  # 16384 x 16384 (width x height x planes decoded; channels free)
MAX_PIXELS_VARIABLE = "CELLCLASS_MAX_IMAGE_PIXELS"  # environment variable that changes it

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PILLOW_FORMATS = ("PNG", "JPEG", "BMP")  # never let Pillow run other plugins (EPS: Ghostscript)
_PILLOW_DIRECT_MODES = {"1", "L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16B", "I;16L"}
_CHANNEL_AXES = "CS"  # tifffile axis codes read as channels: C channel, S samples (e.g. RGB)
_GENERIC_AXES = "QI"  # tifffile codes for a stack of unknown meaning (may be channels-first)
_MAX_CHANNELS_FIRST = 8  # a generic (C, H, W) stack with C <= 8 and H, W > 8 * C is channels
_UINT16_BIT_DEPTHS = (10, 12, 14, 16)
# What Pillow, tifffile, zlib and numpy raise on corrupt or truncated files (found by fuzzing;
# tifffile raises anything from KeyError to AssertionError on garbage header values).
_LIBRARY_ERRORS = (struct.error, zlib.error, Image.DecompressionBombError, ZeroDivisionError)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, LookupError, TypeError, MemoryError)
_DECODE_ERRORS += (RuntimeError, AssertionError, *_LIBRARY_ERRORS)


class ImageReadError(ValueError):
    """An image file cannot be read; the message is one line: ``"<path>: <what is wrong>"``."""


@dataclass(frozen=True)
class ImageMeta:
    """What one decoded image looks like (the pixels `read_image` returns for that page)."""

    path: Path  # the file as given
    height: int  # H of the (H, W, C) pixels
    width: int  # W
    channels: int  # C, >= 1
    dtype: str  # numpy dtype name of the decoded pixels: "uint8", "uint16" or "float32"
    bit_depth: int  # effective bit depth (`effective_bit_depth`): 12 for 12-bit camera data
    n_pages: int  # pages that `page` can select (1 for a single image)


# ----------------------------------------------------------------------------- reading


def max_image_pixels() -> int:
    """The most pixels one image may have: ``$CELLCLASS_MAX_IMAGE_PIXELS`` when set, else
    `MAX_IMAGE_PIXELS` (read at every call, so it can be raised for one command).

    PNG, JPEG and BMP files are also held to Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``,
    refused above twice that: about 179 million pixels by default).
    """
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={text!r}: give a number of pixels, e.g. {2**30}")
    return int(text)


def _check_pixels(path: Path, height: int, width: int, planes: int = 1) -> None:
    """Refuse an image whose decoded size exceeds `max_image_pixels`, before decoding it."""
    limit = max_image_pixels()
    if height * width * planes <= limit:
        return
    size = f"{width} x {height} pixels" + (f" x {planes} planes" if planes > 1 else "")
    raise ImageReadError(
        f"{path}: {size} is more than the limit of {limit:,} pixels (a damaged or hostile "
        "file, or a whole slide to tile first); to read it anyway, raise the limit with the "
        f"environment variable {MAX_PIXELS_VARIABLE}"
    )


def read_image(path: str | os.PathLike, *, page: int = 0) -> np.ndarray:
    """Decode one PNG, JPEG, BMP or TIFF file (format recognised from the content).

    Parameters
    ----------
    path : str or PathLike
    page : int, optional
        Page of a multi-page TIFF, series 0. ImageJ/OME channel axes are channels, not pages;
        other axes (Z, T, ...) are flattened into pages.

    Returns
    -------
    image : (H, W, C) ndarray, uint8, uint16 or float32
        Values as stored. Palette -> RGB; bool -> 0/255; other integers -> uint16 when they
        fit, else float32; float64 -> float32.

    Raises
    ------
    ImageReadError
        Missing, empty, truncated, corrupt or unsupported file, or `page` out of range.
    """
    image, _ = _decode(Path(path), page)
    return image


def image_meta(path: str | os.PathLike, *, page: int = 0) -> ImageMeta:
    """Decode `path` like `read_image` and describe the pixels; raises `ImageReadError`."""
    path = Path(path)
    image, n_pages = _decode(path, page)
    height, width, channels = image.shape
    bit_depth = effective_bit_depth(image)
    return ImageMeta(path, height, width, channels, image.dtype.name, bit_depth, n_pages)


def effective_bit_depth(image: np.ndarray) -> int:
    """Bits used by `image` (any shape): 8 for bool and 8-bit types, 32 for floats.

    Wider integers get the smallest of 10, 12, 14, 16 (else 32) that holds the maximum, so
    12-bit camera data in a uint16 file gives 12.
    """
    image = np.asarray(image)
    kind = image.dtype.kind
    if kind == "f":
        return 32
    if kind == "b" or (kind in "iu" and image.dtype.itemsize == 1):
        return 8
    if kind not in "iu":
        raise ValueError(f"effective_bit_depth needs integer or float pixels, got {image.dtype}")
    max_value = int(image.max()) if image.size else 0
    return next((bits for bits in _UINT16_BIT_DEPTHS if max_value < 2**bits), 32)


def _decode(path: Path, page: int) -> tuple[np.ndarray, int]:
    """Return (H, W, C) pixels of `page` and the number of pages; every failure names `path`."""
    if not isinstance(page, int | np.integer) or isinstance(page, bool):
        raise TypeError(f"page must be an int, got {page!r}")
    header = _read_header(path)
    reader = _read_tiff if header.startswith(_TIFF_MAGIC) else _read_pillow
    try:
        image, n_pages = reader(path, page, header)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
        raise ImageReadError(
            f"{path}: cannot decode the image ({reason}); the file is truncated, corrupt or an "
            "unsupported variant - re-export it or move it out of the image folder"
        ) from error
    image = _supported_dtype(path, image[:, :, np.newaxis] if image.ndim == 2 else image)
    return np.require(image, requirements=["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"]), n_pages


def _read_header(path: Path) -> bytes:
    """First bytes of the file, to recognise the format."""
    try:
        with open(path, "rb") as file:
            header = file.read(32)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open the file ({error.strerror or error})") from error
    if not header:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    return header


def _check_page(path: Path, page: int, n_pages: int) -> None:
    if not 0 <= page < n_pages:
        raise ImageReadError(
            f"{path}: page {page} is out of range; the image has {n_pages} page(s), "
            f"numbered 0 to {n_pages - 1}"
        )


def _read_pillow(path: Path, page: int, header: bytes) -> tuple[np.ndarray, int]:
    """Decode a PNG, JPEG or BMP frame; load() makes a truncated file fail here."""
    if header.startswith(_PNG_MAGIC) and len(header) > 25 and header[24] == 16 and header[25]:
        raise ImageReadError(
            f"{path}: 16-bit colour PNG, which Pillow would silently cut to 8 bits; "
            "save it as a 16-bit TIFF instead"
        )
    if header.startswith(_PNG_MAGIC) and len(header) >= 24:  # IHDR: width, height
        width, height = struct.unpack(">II", header[16:24])
        _check_pixels(path, height, width)
    try:
        opened = Image.open(path, formats=_PILLOW_FORMATS)
    except UnidentifiedImageError as error:
        message = f"{path}: not a PNG, JPEG, BMP or TIFF image (or its header is corrupt)"
        raise ImageReadError(message) from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            f"{path}: more pixels than Pillow reads ({error}); save it as a TIFF and raise "
            f"{MAX_PIXELS_VARIABLE} if it is a real image"
        ) from error
    with opened as image:
        _check_pixels(path, image.height, image.width)
        n_pages = getattr(image, "n_frames", 1)
        _check_page(path, page, n_pages)
        image.seek(page)
        image.load()
        if image.mode in ("P", "PA"):  # palette -> RGB, palette with alpha -> RGBA
            rgba = np.asarray(image.convert("RGBA"))
            return (rgba if image.mode == "PA" else rgba[:, :, :3]), n_pages
        if image.mode not in _PILLOW_DIRECT_MODES:  # CMYK, YCbCr, LAB, ...
            return np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB")), n_pages
        return np.asarray(image), n_pages


def _supported_dtype(path: Path, image: np.ndarray) -> np.ndarray:
    """Convert decoded pixels to native-endian uint8, uint16 or float32."""
    kind, itemsize = image.dtype.kind, image.dtype.itemsize
    if kind == "b":
        return image.astype(np.uint8) * np.uint8(255)
    if kind == "u" and itemsize <= 2:
        return image.astype(f"uint{8 * itemsize}", copy=False)
    if kind in "iu":  # signed or 32/64-bit integers: lossless uint16 when the values fit
        fits = image.size == 0 or (image.min() >= 0 and image.max() <= np.iinfo(np.uint16).max)
        return image.astype(np.uint16 if fits else np.float32)
    if kind == "f":
        return image.astype(np.float32, copy=False)
    raise ImageReadError(f"{path}: unsupported pixel type {image.dtype}; save as uint8 or uint16")


def _read_tiff(path: Path, page: int, header: bytes) -> tuple[np.ndarray, int]:
    """Decode one page of a TIFF as (H, W, C); also return the number of pages."""
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path}: the TIFF holds no image data")
        if _is_one_page_per_series(tif.series):  # pages written one by one, e.g. TiffWriter
            _check_page(path, page, len(tif.series))
            series = tif.series[page]
            _check_series_pixels(path, series.axes, series.shape)
            return _to_stack(path, series.asarray(), series.axes, series.shape)[0], len(tif.series)
        series = tif.series[0]
        if _pages_are_planes(series):
            return _read_planes(path, series, page)
        _check_series_pixels(path, series.axes, series.shape)  # the whole series is decoded
        stack = _to_stack(path, series.asarray(), series.axes, series.shape)  # (P, H, W, C)
        _check_page(path, page, len(stack))
        return stack[page], len(stack)


def _is_one_page_per_series(all_series: list) -> bool:
    first = all_series[0]
    return len(all_series) > 1 and all(
        len(s.pages) == 1 and s.shape == first.shape and s.dtype == first.dtype for s in all_series
    )


def _pages_are_planes(series) -> bool:
    """Each TIFF page of the series is one (H, W) plane, in the order of the leading axes."""
    n_planes = math.prod(series.shape[:-2])
    return (
        series.keyframe.ndim == 2 and series.axes.endswith("YX") and len(series.pages) == n_planes
    )


def _read_planes(path: Path, series, page: int) -> tuple[np.ndarray, int]:
    """Decode only the 2-D TIFF pages that make up `page`; a long stack is not read whole."""
    index = np.arange(len(series.pages)).reshape(series.shape[:-2] + (1, 1))
    keys = _to_stack(path, index, series.axes, series.shape)  # (P, 1, 1, C) page numbers
    _check_page(path, page, len(keys))
    _check_pixels(path, *series.shape[-2:])  # only this page's planes are decoded
    planes = series.asarray(key=keys[page, 0, 0].tolist())  # (C, H, W), or (H, W) if C == 1
    return planes.reshape(-1, *series.shape[-2:]).transpose(1, 2, 0), len(keys)


def _check_series_pixels(path: Path, axes: str, shape: tuple) -> None:
    """`_check_pixels` for a whole TIFF series: Y x X x every axis that is not a channel."""
    if "Y" not in axes or "X" not in axes:
        return  # `_to_stack` explains the layout
    channels_first = _looks_channels_first(axes, shape)
    planes = math.prod(
        n
        for i, (axis, n) in enumerate(zip(axes, shape, strict=True))
        if axis not in "YX" + _CHANNEL_AXES and not (channels_first and i == 0)
    )
    _check_pixels(path, shape[axes.index("Y")], shape[axes.index("X")], planes)


def _to_stack(path: Path, array: np.ndarray, axes: str, shape: tuple) -> np.ndarray:
    """Rearrange a TIFF series with tifffile `axes` into (P, H, W, C).

    C and S axes become channels, every other axis (Z, T, pages...) is flattened into P.
    `shape` is the series' true shape: `array` may be an index grid with size-1 Y and X.
    """
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"{path}: unsupported TIFF layout (axes {axes!r} lack Y and X)")
    channels = [i for i, axis in enumerate(axes) if axis in _CHANNEL_AXES]
    if not channels and _looks_channels_first(axes, shape):
        channels = [0]
    spatial = [axes.index("Y"), axes.index("X")]
    pages = [i for i in range(len(axes)) if i not in spatial and i not in channels]
    moved = array.transpose(pages + spatial + channels)
    height, width = moved.shape[len(pages)], moved.shape[len(pages) + 1]
    return moved.reshape(-1, height, width, math.prod(array.shape[i] for i in channels))


def _looks_channels_first(axes: str, shape: tuple) -> bool:
    """A plain (C, H, W) stack without axis metadata and with few planes is channels."""
    if len(axes) != 3 or axes[0] not in _GENERIC_AXES or axes[1:] != "YX":
        return False
    n = shape[0]
    return n <= _MAX_CHANNELS_FIRST and min(shape[1], shape[2]) > _MAX_CHANNELS_FIRST * n


# ----------------------------------------------------------------------------- channels, size


def parse_channels(spec: str) -> tuple[int, ...]:
    """Parse a ``--channels`` value: ``"1"``, ``"0,0,0"`` (gray to 3) or ``"2,1,0"`` (reorder).

    Returns 0-based channel indices in output order; raises ValueError quoting a bad `spec`.
    """
    parts = [part.strip() for part in str(spec).split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(
            f"--channels {spec!r} is not a list of channel indices; give comma-separated 0-based "
            "indices, e.g. '1' (one channel), '0,0,0' (gray to 3 channels) or '2,1,0' (reorder)"
        )
    return tuple(int(part) for part in parts)


def select_channels(image: np.ndarray, channels: tuple[int, ...] | None) -> np.ndarray:
    """Pick, repeat or reorder channels: (H, W, C) -> (H, W, len(channels)), same dtype.

    `channels` indexes C (see `parse_channels`); None returns `image` itself.
    """
    if channels is None:
        return image
    if image.ndim != 3 or len(channels) == 0:
        raise ValueError(
            f"select_channels needs (H, W, C) pixels and >= 1 channel index, got "
            f"shape {image.shape} and channels {channels!r}"
        )
    n_channels = image.shape[2]
    for channel in channels:
        if not 0 <= channel < n_channels:
            raise ValueError(
                f"channel {channel} does not exist: the image has {n_channels} channel(s), "
                f"numbered 0 to {n_channels - 1}; check --channels"
            )
    return np.take(image, list(channels), axis=2)


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resample with antialiased bilinear interpolation (torch, like Pillow's BILINEAR).

    Parameters
    ----------
    image : (H, W, C) ndarray, integer or float
    size : int or (height, width)

    Returns
    -------
    resized : (size_h, size_w, C) ndarray, dtype of `image`
        Integers rounded and clipped to the dtype range; `image` itself if the size matches.
    """
    target = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(target) != 2 or not all(_is_positive_int(n) for n in target):
        raise ValueError(f"resize size must be a positive int or (height, width), got {size!r}")
    target = (int(target[0]), int(target[1]))
    if image.ndim != 3 or image.dtype.kind not in "uif":
        raise ValueError(f"resize needs (H, W, C) numeric pixels, got {image.shape} {image.dtype}")
    if image.shape[:2] == target:
        return image
    pixels = np.require(image, dtype=np.float32, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # (1, C, H, W)
    batch = F.interpolate(batch, size=target, mode="bilinear", antialias=True, align_corners=False)
    resized = batch[0].permute(1, 2, 0).contiguous().numpy()  # (size_h, size_w, C) float32
    if image.dtype.kind == "f":
        return resized.astype(image.dtype, copy=False)
    limits = np.iinfo(image.dtype)
    return np.clip(np.rint(resized), limits.min, limits.max).astype(image.dtype)


def _is_positive_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


# ----------------------------------------------------------------------------- display


def to_display_uint8(image_float01: np.ndarray) -> np.ndarray:
    """Normalised (H, W, C) or (H, W) float pixels in [0, 1] -> (H, W, 3) uint8 RGB for display.

    C == 1: gray; C == 2: red and green, blue 0; C >= 3: the first three channels.
    """
    image = np.asarray(image_float01, dtype=np.float32)
    image = image[:, :, np.newaxis] if image.ndim == 2 else image
    if image.ndim != 3 or image.shape[2] == 0:
        raise ValueError(f"to_display_uint8 needs (H, W, C) pixels, got shape {image.shape}")
    if image.shape[2] == 1:
        rgb = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 2:
        rgb = np.concatenate([image, np.zeros_like(image[:, :, :1])], axis=2)
    else:
        rgb = image[:, :, :3]
    return np.rint(np.clip(np.nan_to_num(rgb), 0.0, 1.0) * 255).astype(np.uint8)
