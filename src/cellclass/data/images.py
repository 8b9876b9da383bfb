"""Read one image file into an (H, W, C) array with its metadata; normalise pixel values.

PNG, JPEG and BMP are decoded by Pillow; TIFF (8/12/16-bit, float, multi-channel, multi-page,
ImageJ/OME hyperstacks) by tifffile; an OME-Zarr folder (``name.ome.zarr``, NGFF 0.4 or 0.5)
by zarr (extra ``ome``); Zeiss CZI, Nikon ND2 and Leica LIF files by bioio and its plugins
(extra ``bioio``). Pixels keep their native dtype (uint8, uint16, float32): nothing is
rescaled on reading, so 12-bit camera data stays 0..4095, and how values map to [0, 1] is
chosen explicitly with a `Normalization`. An image larger than `max_image_pixels` is refused
from its header, before any pixel is decoded. `image_metadata` reads axes, shape and the
physical pixel size from the header alone. `write_image` writes PNG or TIFF so that
`read_image` reads the pixels back identically, atomically. Normalisation to [0, 1] lives in
`cellclass.data.normalization`.

Axes. Channel axes (TIFF samples such as RGB, ImageJ/OME ``C``, NGFF ``c``, bioio ``C`` and
``S``) become C; every other axis besides Y and X (Z, T, pages...) is flattened into pages, in
the file's order (page = t * n_z + z), and `read_image`'s ``page`` picks one. A 3-D TIFF with no
axis metadata (a plain multi-page TIFF, or an array saved without ImageJ/OME axes) is read by
one rule, which warns (once per folder) whenever it has to guess:

* (N, H, W) with N <= 8 and H, W > 8 N: N channels (channels first, e.g. (3, 512, 512));
* (H, W, N) with N <= 8 and H, W > 8 N (stored as H pages of W x N): N channels (channels
  last, e.g. (512, 512, 4) saved as a grey stack);
* otherwise N pages; N > 8 pages of a larger image is taken as a stack without a warning.

Scenes. A file that holds several images (an OME-TIFF or bioformats2raw OME-Zarr of several
series, a CZI/ND2/LIF of several scenes or positions) is read as its first scene, with a
warning once per folder; an OME-Zarr HCS plate or well is refused with a one-line error.
Scenes written as single same-shape pages are pages, as above.
"""

from __future__ import annotations

import importlib
import math
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from cellclass._files import atomic_path

__all__ = [
    "BIOIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "IMAGE_FOLDER_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "MAX_PIXELS_VARIABLE",
    "ImageMeta",
    "ImageReadError",
    "effective_bit_depth",
    "image_meta",
    "image_metadata",
    "is_image_path",
    "max_image_pixels",
    "parse_channels",
    "read_image",
    "resize",
    "select_channels",
    "to_display_uint8",
    "write_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})  # files
# Microscope vendor files, read through bioio (extra "bioio") with the plugin module named here.
BIOIO_READERS = {".czi": "bioio_czi", ".nd2": "bioio_nd2", ".lif": "bioio_lif"}
BIOIO_EXTENSIONS = frozenset(BIOIO_READERS)
IMAGE_FOLDER_SUFFIXES = frozenset({".zarr"})  # a folder ``name.ome.zarr`` is one image (OME-Zarr)
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
_MAX_GUESSED_CHANNELS = 8  # a generic stack's axis of N <= 8 with H, W > 8 * N is channels
_NGFF_CHANNEL_TYPES = ("channel",)  # NGFF axis types read as channels (besides the name "c")
# Length units to micrometres: OME-XML symbols, NGFF (UDUNITS) names, ImageJ's spellings.
_UM_PER_UNIT = {
    **dict.fromkeys(("m", "meter", "metre"), 1e6),
    **dict.fromkeys(("cm", "centimeter", "centimetre"), 1e4),
    **dict.fromkeys(("mm", "millimeter", "millimetre"), 1e3),
    **dict.fromkeys(("µm", "μm", "um", "micron", "microns", "micrometer", "micrometre"), 1.0),
    **dict.fromkeys(("\\u00b5m", "\\u03bcm"), 1.0),  # ImageJ writes the escape sequence
    **dict.fromkeys(("nm", "nanometer", "nanometre"), 1e-3),
    **dict.fromkeys(("å", "Å", "angstrom"), 1e-4),
    **dict.fromkeys(("pm", "picometer", "picometre"), 1e-6),
}
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
    refused above twice that: about 179 million pixels by default) unless the variable raises
    the limit above it: then Pillow's guard follows it for cellclass's reads.
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
    """Decode one PNG, JPEG, BMP or TIFF file (format recognised from the content), an
    OME-Zarr folder (level 0, full resolution) or a CZI, ND2 or LIF file (first scene).

    Parameters
    ----------
    path : str or PathLike
    page : int, optional
        Page of a multi-page image (TIFF series 0). Channel axes are channels, not pages; other
        axes (Z, T, ...) are flattened into pages (see the module's axis rule).

    Returns
    -------
    image : (H, W, C) ndarray, uint8, uint16 or float32
        Values as stored. Palette -> RGB; bool -> 0/255; other integers -> uint16 when they
        fit, else float32; float64 -> float32.

    Raises
    ------
    ImageReadError
        Missing, empty, truncated, corrupt or unsupported file, `page` out of range, or the
        extra that reads the format (``ome``, ``bioio``) not installed.
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
    kind, header = _file_kind(path)
    reader = {"zarr": _read_zarr, "bioio": _read_bioio, "tiff": _read_tiff}.get(kind, _read_pillow)
    try:
        image, n_pages = reader(path, page, header)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise _decode_error(path, error) from error
    image = _supported_dtype(path, image[:, :, np.newaxis] if image.ndim == 2 else image)
    return np.require(image, requirements=["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"]), n_pages


def _file_kind(path: Path) -> tuple[str, bytes]:
    """How `path` is read ("zarr", "bioio", "tiff" or "pillow") and its first bytes."""
    if path.is_dir():
        return "zarr", b""
    header = _read_header(path)
    if path.suffix.lower() in BIOIO_EXTENSIONS:
        return "bioio", header
    return ("tiff" if header.startswith(_TIFF_MAGIC) else "pillow"), header


def _decode_error(path: Path, error: Exception) -> ImageReadError:
    reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
    return ImageReadError(
        f"{path}: cannot decode the image ({reason}); the file is truncated, corrupt or an "
        "unsupported variant - re-export it or move it out of the image folder"
    )


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


_PILLOW_GUARD_LOCK = threading.Lock()  # Pillow's limit is a module global: change it one at a time


def _read_pillow(path: Path, page: int, header: bytes) -> tuple[np.ndarray, int]:
    """Decode a PNG, JPEG or BMP frame under cellclass's pixel limit (`_pillow_guard`)."""
    limit = max_image_pixels()
    pillow = Image.MAX_IMAGE_PIXELS
    if pillow is None or limit <= 2 * pillow:  # Pillow's own guard is at least as generous
        return _read_pillow_frame(path, page, header)
    with _PILLOW_GUARD_LOCK:  # the user raised the limit: Pillow must not refuse below it
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit  # warns above, we refuse
        try:
            return _read_pillow_frame(path, page, header)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _read_pillow_frame(path: Path, page: int, header: bytes) -> tuple[np.ndarray, int]:
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
            axes = _tiff_axes(path, series.axes, series.shape)
            _check_series_pixels(path, axes, series.shape)
            return _to_stack(path, series.asarray(), axes, series.shape)[0], len(tif.series)
        if len(tif.series) > 1:
            _warn_scenes(path, len(tif.series))
        series = tif.series[0]
        axes = _tiff_axes(path, series.axes, series.shape)
        if _pages_are_planes(series, axes):
            return _read_planes(path, series, axes, page)
        _check_series_pixels(path, axes, series.shape)  # the whole series is decoded
        stack = _to_stack(path, series.asarray(), axes, series.shape)  # (P, H, W, C)
        _check_page(path, page, len(stack))
        return stack[page], len(stack)


def _is_one_page_per_series(all_series: list) -> bool:
    first = all_series[0]
    return len(all_series) > 1 and all(
        len(s.pages) == 1 and s.shape == first.shape and s.dtype == first.dtype for s in all_series
    )


def _pages_are_planes(series, axes: str) -> bool:
    """Each TIFF page of the series is one (H, W) plane, in the order of the leading axes."""
    n_planes = math.prod(series.shape[:-2])
    return series.keyframe.ndim == 2 and axes.endswith("YX") and len(series.pages) == n_planes


def _read_planes(path: Path, series, axes: str, page: int) -> tuple[np.ndarray, int]:
    """Decode only the 2-D TIFF pages that make up `page`; a long stack is not read whole."""
    index = np.arange(len(series.pages)).reshape(series.shape[:-2] + (1, 1))
    keys = _to_stack(path, index, axes, series.shape)  # (P, 1, 1, C) page numbers
    _check_page(path, page, len(keys))
    _check_pixels(path, *series.shape[-2:])  # only this page's planes are decoded
    planes = series.asarray(key=keys[page, 0, 0].tolist())  # (C, H, W), or (H, W) if C == 1
    return planes.reshape(-1, *series.shape[-2:]).transpose(1, 2, 0), len(keys)


def _check_series_pixels(path: Path, axes: str, shape: tuple) -> None:
    """`_check_pixels` for a whole TIFF series: Y x X x every axis that is not a channel."""
    if "Y" not in axes or "X" not in axes:
        return  # `_to_stack` explains the layout
    planes = math.prod(
        n for axis, n in zip(axes, shape, strict=True) if axis not in "YX" + _CHANNEL_AXES
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
    spatial = [axes.index("Y"), axes.index("X")]
    pages = [i for i in range(len(axes)) if i not in spatial and i not in channels]
    moved = array.transpose(pages + spatial + channels)
    height, width = moved.shape[len(pages)], moved.shape[len(pages) + 1]
    return moved.reshape(-1, height, width, math.prod(array.shape[i] for i in channels))


def _tiff_axes(path: Path, axes: str, shape: tuple) -> str:
    """The axes a TIFF series is read with: tifffile's `axes`, except that a 3-D stack without
    axis metadata (``QYX`` or ``IYX``) follows the module's axis rule: ``"CYX"`` (channels
    first), ``"YXC"`` (channels last, stored as H pages of W x C) or unchanged (pages). When the
    rule has to guess, a `UserWarning` says so once per folder.
    """
    if len(axes) != 3 or axes[0] not in _GENERIC_AXES or axes[1:] != "YX" or shape[0] == 1:
        return axes
    n, height, width = shape
    limit = _MAX_GUESSED_CHANNELS
    if n <= limit and min(height, width) > limit * n:
        resolved = "CYX"
        choice = (
            f"{n} channels (channels first); if they are pages, pick one with channels=(K,), "
            "or save the file with ImageJ/OME axes"
        )
    elif width <= limit and min(n, height) > limit * width:
        resolved = "YXC"
        choice = (
            f"one {n} x {height} image with {width} channels (channels last); if it is not, "
            "save the file with ImageJ/OME axes"
        )
    elif n <= limit:
        resolved = axes
        choice = (
            f"{n} pages; if they are channels, save the file with ImageJ/OME axes "
            "(e.g. tifffile.imwrite(..., metadata={'axes': 'CYX'}))"
        )
    else:
        return axes  # many planes of a larger image: a stack, no doubt worth a warning
    _warn_once(
        path.parent,
        resolved,
        f"{path}: TIFF of shape {tuple(shape)} without axis metadata read as {choice}; "
        "not repeated for other files of this folder",
    )
    return resolved


_warned_guesses: set[tuple[Path, str]] = set()  # (folder, choice) pairs already warned about
_warned_lock = threading.Lock()  # files are decoded by a thread pool


def _warn_once(folder: Path, choice: str, message: str) -> None:
    with _warned_lock:
        if (folder, choice) in _warned_guesses:
            return
        _warned_guesses.add((folder, choice))
    warnings.warn(message, UserWarning, stacklevel=2)


def _warn_scenes(path: Path, n_scenes: int) -> None:
    """Say (once per folder) that only the first of a file's scenes is read."""
    _warn_once(
        path.parent,
        "scenes",
        f"{path}: holds {n_scenes} scenes (image series); cellclass reads the first only, here "
        "and in every such file of this folder: save each scene as its own file to use them all",
    )


# ----------------------------------------------------------------------------- OME-Zarr, bioio


def _import_extra(path: Path, module: str, extra: str):
    """Import an optional reader, or raise a one-line `ImageReadError` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        reason = " ".join(str(error).split())
        raise ImageReadError(
            f"{path}: reading this format needs the optional package {module!r} ({reason}); "
            f"install it with: pip install 'cellclass[{extra}]'"
        ) from error


def _open_ngff(path: Path) -> tuple:
    """(level-0 array, axes as NGFF dicts, (y, x) pixel size in um or None) of an OME-Zarr
    image folder: NGFF 0.4 (zarr v2, ``.zattrs``) or 0.5 (zarr v3, attributes under ``ome``)."""
    zarr = _import_extra(path, "zarr", "ome")
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    attrs = attrs.get("ome", attrs)
    if "plate" in attrs or "well" in attrs:
        kind = "plate" if "plate" in attrs else "well"
        raise ImageReadError(
            f"{path}: an OME-Zarr HCS {kind}, not one image; cellclass reads one field of view "
            "per file or .ome.zarr folder: export the fields as OME-TIFF or .ome.zarr images"
        )
    if "multiscales" not in attrs and "bioformats2raw.layout" in attrs:
        scenes = [key for key in group.group_keys() if key.isdigit()]
        if len(scenes) > 1:
            _warn_scenes(path, len(scenes))
        group = group["0"]  # bioformats2raw writes each image as a numbered subgroup
        attrs = dict(group.attrs)
        attrs = attrs.get("ome", attrs)
    if not attrs.get("multiscales"):
        raise ImageReadError(
            f"{path}: a zarr folder without OME-Zarr (NGFF) 'multiscales' metadata; "
            "export it as OME-Zarr or as OME-TIFF"
        )
    image = attrs["multiscales"][0]
    level = image["datasets"][0]  # the first dataset is the full resolution
    array = group[level["path"]]
    axes = image.get("axes") or list("tczyx"[-array.ndim :])  # NGFF < 0.3: always tczyx
    axes = [axis if isinstance(axis, dict) else {"name": axis} for axis in axes]
    if len(axes) != array.ndim:
        raise ImageReadError(f"{path}: {len(axes)} axes for an array of {array.ndim} dimensions")
    transforms = level.get("coordinateTransformations", [])
    transforms += image.get("coordinateTransformations", [])  # applies to every level
    scale = np.ones(array.ndim)
    for transform in transforms:
        if transform.get("type") == "scale":
            scale *= np.asarray(transform["scale"], dtype=float)
    roles = _ngff_roles(path, axes)
    unit = {role: axis.get("unit") for role, axis in zip(roles, axes, strict=True)}
    size_y, size_x = (scale[roles.index(role)] for role in "yx")
    pixel_size = _pixel_size_um(size_y, unit["y"], size_x, unit["x"])
    return array, roles, pixel_size


def _ngff_roles(path: Path, axes: list[dict]) -> list[str]:
    """Each NGFF axis as "y", "x", "c" (channel) or "page" (t, z and any other axis)."""
    roles = []
    for axis in axes:
        name = str(axis.get("name", "")).lower()
        if name in ("y", "x"):
            roles.append(name)
        elif name == "c" or axis.get("type") in _NGFF_CHANNEL_TYPES:
            roles.append("c")
        else:
            roles.append("page")
    if roles.count("y") != 1 or roles.count("x") != 1:
        names = [axis.get("name") for axis in axes]
        raise ImageReadError(f"{path}: unsupported OME-Zarr axes {names} (need one y and one x)")
    return roles


def _read_zarr(path: Path, page: int, header: bytes) -> tuple[np.ndarray, int]:
    """Decode one page of an OME-Zarr image's level 0 as (H, W, C); only its chunks are read."""
    array, roles, _ = _open_ngff(path)
    shape = tuple(int(n) for n in array.shape)
    page_sizes = [n for n, role in zip(shape, roles, strict=True) if role == "page"]
    n_pages = math.prod(page_sizes)
    _check_page(path, page, n_pages)
    height, width = shape[roles.index("y")], shape[roles.index("x")]
    _check_pixels(path, height, width)
    position = iter(np.unravel_index(page, page_sizes) if page_sizes else ())
    index = tuple(int(next(position)) if role == "page" else slice(None) for role in roles)
    plane = np.asarray(array[index])  # the axes that are not pages, in the file's order
    kept = [role for role in roles if role != "page"]
    order = [kept.index("y"), kept.index("x")] + [i for i, r in enumerate(kept) if r == "c"]
    return plane.transpose(order).reshape(height, width, -1), n_pages


def _open_bioio(path: Path):
    """A `bioio.BioImage` of a vendor file, read by the plugin of its extension."""
    bioio = _import_extra(path, "bioio", "bioio")
    plugin = _import_extra(path, BIOIO_READERS[path.suffix.lower()], "bioio")
    exceptions = _import_extra(path, "bioio_base.exceptions", "bioio")
    try:
        return bioio.BioImage(path, reader=plugin.Reader)
    except exceptions.UnsupportedFileFormatError as error:  # bioio's word for corrupt, too
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ImageReadError(
            f"{path}: {plugin.__name__} cannot read it ({lines[-1] if lines else error}); the "
            "file is truncated, corrupt or an unsupported variant"
        ) from error


def _read_bioio(path: Path, page: int, header: bytes) -> tuple[np.ndarray, int]:
    """Decode one page of a CZI, ND2 or LIF file (first scene) as (H, W, C).

    bioio's dimensions are T, C, Z, Y, X (and S for RGB samples): C and S become channels,
    the others pages.
    """
    image = _open_bioio(path)
    if len(getattr(image, "scenes", ())) > 1:
        _warn_scenes(path, len(image.scenes))
    order = image.dims.order  # e.g. "TCZYX", or "TCZYXS" for RGB
    sizes = dict(zip(order, (int(n) for n in image.shape), strict=True))
    page_axes = [axis for axis in order if axis not in "YX" + _CHANNEL_AXES]
    page_sizes = [sizes[axis] for axis in page_axes]
    n_pages = math.prod(page_sizes)
    _check_page(path, page, n_pages)
    _check_pixels(path, sizes["Y"], sizes["X"])
    position = np.unravel_index(page, page_sizes) if page_sizes else ()
    where = {axis: int(i) for axis, i in zip(page_axes, position, strict=True)}
    channels = "".join(axis for axis in order if axis in _CHANNEL_AXES)
    plane = np.asarray(image.get_image_data("YX" + channels, **where))  # (H, W, C[, S])
    return plane.reshape(sizes["Y"], sizes["X"], -1), n_pages


# ----------------------------------------------------------------------------- metadata


def is_image_path(path: str | os.PathLike) -> bool:
    """True for what cellclass reads as one image: a file whose extension is in
    `IMAGE_EXTENSIONS` or `BIOIO_EXTENSIONS`, or a folder named like ``name.ome.zarr``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        return suffix in IMAGE_FOLDER_SUFFIXES
    return suffix in IMAGE_EXTENSIONS or suffix in BIOIO_EXTENSIONS


def image_metadata(path: str | os.PathLike) -> dict:
    """What a file says about its image, read from its header (no pixel is decoded; see
    `image_meta` for the pixels `read_image` returns).

    Returns
    -------
    metadata : dict
        ``format`` ("png", "jpeg", "bmp", "tiff", "imagej-tiff", "ome-tiff", "ome-zarr",
        "czi", "nd2" or "lif"); ``axes`` (str, one upper-case letter per axis of ``shape``:
        T, C, Z, Y, X, S for samples such as RGB, Q or I for a TIFF stack of unknown
        meaning); ``shape`` (tuple of int, TIFF series 0, OME-Zarr level 0, first scene);
        ``dtype`` (numpy name as stored); ``pixel_size_um``: (y, x) float pixel size in
        micrometres, or None when the file records none (OME-XML PhysicalSizeY/X, ImageJ
        resolution and unit, OME-Zarr level-0 scale with a length unit, bioio's physical pixel
        sizes; Y is taken equal to X when only X is recorded).

    Raises
    ------
    ImageReadError
        Missing, empty, corrupt or unsupported file, or its extra not installed.
    """
    path = Path(path)
    kind, _ = _file_kind(path)
    reader = {"zarr": _zarr_metadata, "bioio": _bioio_metadata, "tiff": _tiff_metadata}
    try:
        return reader.get(kind, _pillow_metadata)(path)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise _decode_error(path, error) from error


def _tiff_metadata(path: Path) -> dict:
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path}: the TIFF holds no image data")
        series = tif.series[0]
        if tif.is_ome:
            kind, pixel_size = "ome-tiff", _ome_pixel_size(tif.ome_metadata)
        elif tif.is_imagej:
            kind, pixel_size = "imagej-tiff", _imagej_pixel_size(tif)
        else:
            kind, pixel_size = "tiff", None
        shape = tuple(int(n) for n in series.shape)
        return _metadata(kind, series.axes, shape, series.dtype, pixel_size)


def _pillow_metadata(path: Path) -> dict:
    try:
        opened = Image.open(path, formats=_PILLOW_FORMATS)
    except UnidentifiedImageError as error:
        message = f"{path}: not a PNG, JPEG, BMP or TIFF image (or its header is corrupt)"
        raise ImageReadError(message) from error
    with opened as image:
        bands = len(image.getbands())
        shape = (image.height, image.width) + ((bands,) if bands > 1 else ())
        dtype = {"1": "bool", "I": "int32", "F": "float32"}.get(image.mode, "uint8")
        dtype = "uint16" if image.mode.startswith("I;16") else dtype
        axes = "YXS" if bands > 1 else "YX"
        return _metadata(str(image.format).lower(), axes, shape, dtype, None)


def _zarr_metadata(path: Path) -> dict:
    array, roles, pixel_size = _open_ngff(path)
    axes = "".join({"page": "Q"}.get(role, role.upper()) for role in roles)
    shape = tuple(int(n) for n in array.shape)
    return _metadata("ome-zarr", axes, shape, array.dtype, pixel_size)


def _bioio_metadata(path: Path) -> dict:
    image = _open_bioio(path)
    sizes = image.physical_pixel_sizes  # micrometres, None where unknown
    pixel_size = _pixel_size_um(sizes.Y, "um", sizes.X, "um")
    shape = tuple(int(n) for n in image.shape)
    return _metadata(path.suffix.lower()[1:], image.dims.order, shape, image.dtype, pixel_size)


def _metadata(kind: str, axes: str, shape: tuple, dtype, pixel_size) -> dict:
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return {
        "format": kind,
        "axes": axes,
        "shape": shape,
        "dtype": name,
        "pixel_size_um": pixel_size,
    }


def _ome_pixel_size(xml: str | None) -> tuple[float, float] | None:
    """(y, x) micrometres from the OME-XML of image 0 (PhysicalSizeY/X, default unit um)."""
    try:
        images = tifffile.xml2dict(xml or "").get("OME", {}).get("Image")
    except (SyntaxError, ValueError, AttributeError):  # malformed XML: no size, not an error
        return None
    image = images[0] if isinstance(images, list) else images
    pixels = image.get("Pixels", {}) if isinstance(image, dict) else {}
    return _pixel_size_um(
        pixels.get("PhysicalSizeY"),
        pixels.get("PhysicalSizeYUnit", "µm"),
        pixels.get("PhysicalSizeX"),
        pixels.get("PhysicalSizeXUnit", "µm"),
    )


def _imagej_pixel_size(tif) -> tuple[float, float] | None:
    """(y, x) micrometres from an ImageJ TIFF's resolution tags (pixels per unit) and unit."""
    unit = (tif.imagej_metadata or {}).get("unit")
    tags = tif.pages.first.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    (x_num, x_den), (y_num, y_den) = tags["XResolution"].value, tags["YResolution"].value
    size_x = x_den / x_num if x_num else None
    size_y = y_den / y_num if y_num else None
    return _pixel_size_um(size_y, unit, size_x, unit)


def _pixel_size_um(size_y, unit_y, size_x, unit_x) -> tuple[float, float] | None:
    """(y, x) in micrometres, or None unless X is a positive length in a known unit."""
    if size_y is None:
        size_y, unit_y = size_x, unit_x  # only X recorded: square pixels
    converted = []
    for size, unit in ((size_y, unit_y), (size_x, unit_x)):
        factor = _UM_PER_UNIT.get(str(unit).strip().lower()) if unit else None
        try:
            value = float(size) * factor if factor is not None and size is not None else None
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            return None
        converted.append(round(value, 9))
    return converted[0], converted[1]


# ----------------------------------------------------------------------------- writing


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
                f"numbered 0 to {n_channels - 1}; check channels="
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
