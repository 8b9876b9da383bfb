"""Rotate and mirror one image, and read the ``--angles`` SPEC.

Pure array operations used by `cellclass.prepare.steps.rotate_folder` (which walks the folders,
names the files and writes the manifest): `parse_angles` turns a SPEC into degrees,
`rotate_image` mirrors and turns one image, and `crop_shape` gives the corner-free rectangle for
``fill="crop"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["FILL_MODES", "FLIPS", "RotateSettings", "crop_shape", "parse_angles", "rotate_image"]

FILL_MODES = ("reflect", "constant", "crop")
FLIPS = ("h", "v")
_SPEC_HELP = (
    "give a list (0,90,180,270), a range START:END:STEP with END included (-5:5:1) "
    "or a step (step=18 for 0, 18, ..., 342)"
)
_MAX_ANGLES = 3600  # a longer SPEC is a typo (e.g. a step of 0.001)


@dataclass(frozen=True)
class RotateSettings:
    """How `prepare.rotate_folder` makes rotated copies of every image."""

    angles: tuple[float, ...]  # degrees, counter-clockwise as displayed; see `parse_angles`
    fill: str = "reflect"  # corners: "reflect" (mirror), "constant" (0) or "crop" (cut away)
    flips: tuple[str, ...] = ()  # "h" and/or "v": also write mirrored copies of every angle
    page: int = 0  # page of multi-page TIFFs to rotate
    overwrite: bool = False  # replace this step's earlier outputs in DST instead of refusing
    skip_bad: bool = False  # list unreadable files and go on instead of stopping


def parse_angles(spec: str) -> tuple[float, ...]:
    """Parse an ``--angles`` SPEC.

    ``"0,90,180,270"`` (a list), ``"-5:5:1"`` (START:END:STEP, END included) or ``"step=18"``
    (0, 18, ..., 342). Angles are degrees, counter-clockwise, rounded to 0.001.

    Raises
    ------
    ValueError
        One line quoting `spec` with an example, also when two angles are the same rotation.
    """
    text = str(spec).replace(" ", "")
    try:
        if text.startswith("step="):
            step = float(text[5:])
            values = np.arange(0.0, 360.0 - 1e-9, step) if 0 < step <= 360 else []
        elif ":" in text:
            start, end, step = (float(part) for part in text.split(":"))
            count = math.floor((end - start) / step + 1e-9) + 1 if step > 0 else 0
            values = start + step * np.arange(count) if 0 < count <= _MAX_ANGLES else []
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    angles = tuple(round(float(a), 3) + 0.0 for a in values)
    if not angles or not all(math.isfinite(a) for a in angles):
        raise ValueError(f"angles={spec!r}: cannot read it; {_SPEC_HELP}")
    if any(abs(a) > 360 for a in angles):
        raise ValueError(f"angles={spec!r}: give angles from -360 to 360 degrees, e.g. -5:5:1")
    turns = [a % 360 for a in angles]
    for i, turn in enumerate(turns):
        if turn in turns[:i]:
            first = angles[turns.index(turn)]
            raise ValueError(
                f"angles={spec!r}: {first:g} and {angles[i]:g} are the same rotation; "
                "list each rotation once"
            )
    return angles


def rotate_image(
    image: np.ndarray,
    angle: float,
    *,
    fill: str = "reflect",
    flip: str | None = None,
    crop_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """Mirror (optionally), then rotate one image counter-clockwise about its centre.

    Multiples of 90 degrees are exact (`numpy.rot90`: the array turns, H and W swap); other
    angles use bilinear interpolation (`scipy.ndimage.rotate`, order 1: no overshoot).

    Parameters
    ----------
    image : (H, W, C) ndarray, uint8, uint16 or float32
    angle : float
        Degrees, counter-clockwise as displayed with row 0 at the top.
    fill : {"reflect", "constant", "crop"}
        Corners that the rotated field does not cover: mirrored content, 0, or cut away by
        cropping the centred rectangle `crop_to` (default: `crop_shape` for this angle alone).
    flip : {None, "h", "v"}
        Mirror left-right ("h") or top-bottom ("v") before rotating.

    Returns
    -------
    rotated : (H', W', C) ndarray, dtype of `image`
        (H, W) for "reflect" and "constant" ((W, H) for 90 and 270), `crop_to` for "crop".
    """
    if fill not in FILL_MODES or flip not in (None, *FLIPS):
        raise ValueError(f"rotate_image: fill must be one of {FILL_MODES}, flip None, h or v")
    if flip is not None:
        image = image[:, ::-1] if flip == "h" else image[::-1]
    quarter_turns = angle / 90
    if quarter_turns == round(quarter_turns):
        rotated = np.rot90(image, int(round(quarter_turns)) % 4)
    else:
        mode = "reflect" if fill == "reflect" else "constant"
        pixels = ndimage.rotate(
            image.astype(np.float32),
            angle,
            axes=(1, 0),
            reshape=False,
            order=1,
            mode=mode,
            cval=0.0,
        )
        rotated = _cast_like(pixels, image.dtype)
    if fill == "crop":
        rotated = _center_crop(rotated, crop_to or crop_shape(*image.shape[:2], [angle]))
    return np.ascontiguousarray(rotated)


def crop_shape(height: int, width: int, angles) -> tuple[int, int]:
    """The centred (h, w) rectangle with the field's aspect that holds no corner fill at any
    of `angles` (one size for all copies, so all keep the original pixel scale).

    A centred rectangle s*(H, W) fits inside the field turned by t when
    ``s <= W / (W|cos t| + H|sin t|)`` and ``s <= H / (W|sin t| + H|cos t|)``; interpolated
    angles lose one more pixel on each side to edge blending.
    """
    scale, margin = 1.0, 0
    for angle in angles:
        cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        fit_width = width / (width * cos + height * sin)
        scale = min(scale, fit_width, height / (width * sin + height * cos))
        margin = margin if (angle / 90) == round(angle / 90) else 2
    return max(1, math.floor(scale * height + 1e-6) - margin), max(
        1, math.floor(scale * width + 1e-6) - margin
    )


def _center_crop(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    top, left = (image.shape[0] - shape[0]) // 2, (image.shape[1] - shape[1]) // 2
    return image[top : top + shape[0], left : left + shape[1]]


def _cast_like(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float pixels back to an integer `dtype`; floats are only cast."""
    if np.dtype(dtype).kind == "f":
        return pixels.astype(dtype)
    limits = np.iinfo(dtype)
    return np.clip(np.rint(pixels), limits.min, limits.max).astype(dtype)
