"""Cut one field into tiles, and tell its foreground from its background.

Pure array operations used by `cellclass.prepare.steps.tile_folder` (which walks the folders, names
the files and writes the manifest): `cut_tiles` yields the tiles of one field row by row, and
`foreground_mask` marks the pixels that ``--min-foreground`` counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["EDGE_POLICIES", "TileSettings", "cut_tiles", "foreground_mask"]

EDGE_POLICIES = ("drop", "pad")
_OTSU_PIXELS = 2**18  # the foreground threshold is computed on at most this many pixels


@dataclass(frozen=True)
class TileSettings:
    """How `prepare.tile_folder` cuts every field; give exactly one of `grid` and `tile_size`."""

    grid: int | None = None  # cut each field into grid x grid tiles (the study used 4)
    tile_size: int | None = None  # or cut square tiles of this many pixels per side
    edge: str = "drop"  # remainder that does not fill a tile: "drop" it, or "pad" by mirroring
    min_foreground: float = 0.0  # drop tiles with a smaller fraction of foreground (0 keeps all)
    page: int = 0  # page of multi-page TIFFs to tile
    overwrite: bool = False  # replace this step's earlier outputs in DST instead of refusing
    skip_bad: bool = False  # list unreadable files and go on instead of stopping


def cut_tiles(
    image: np.ndarray, settings: TileSettings
) -> Iterator[tuple[int, int, np.ndarray, float | None]]:
    """Cut one field into tiles, row by row.

    Parameters
    ----------
    image : (H, W, C) ndarray, any dtype
    settings : TileSettings
        ``grid`` gives ``H // grid`` x ``W // grid`` tiles ("drop") or ceil-sized ones ("pad");
        ``tile_size`` gives square tiles. "pad" fills the last row and column by mirroring the
        field (numpy "reflect"), so no artificial black band appears.

    Yields
    ------
    row, col : int
    tile : (h, w, C) ndarray, dtype of `image` (a view when nothing was padded)
    foreground : float or None
        Fraction of tile pixels in `foreground_mask` (padded pixels count as background);
        None when ``settings.min_foreground`` is 0.
    """
    height, width = image.shape[:2]
    tile_h, tile_w, n_rows, n_cols = _tile_layout(height, width, settings)
    mask = foreground_mask(image) if settings.min_foreground > 0 else None
    pad_h, pad_w = max(0, n_rows * tile_h - height), max(0, n_cols * tile_w - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        mask = None if mask is None else np.pad(mask, ((0, pad_h), (0, pad_w)))
    for row in range(n_rows):
        for col in range(n_cols):
            rows = slice(row * tile_h, (row + 1) * tile_h)
            cols = slice(col * tile_w, (col + 1) * tile_w)
            fraction = None if mask is None else float(mask[rows, cols].mean())
            yield row, col, image[rows, cols], fraction


def _tile_layout(height: int, width: int, settings: TileSettings) -> tuple[int, int, int, int]:
    """(tile_h, tile_w, n_rows, n_cols) for a field of (height, width)."""
    rounding = math.ceil if settings.edge == "pad" else math.floor
    if settings.grid is not None:
        tile_h, tile_w = rounding(height / settings.grid), rounding(width / settings.grid)
        if tile_h == 0 or tile_w == 0:
            return 0, 0, 0, 0
        return tile_h, tile_w, settings.grid, settings.grid
    size = settings.tile_size
    return size, size, rounding(height / size), rounding(width / size)


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Pixels brighter than the field's Otsu threshold on log intensities, in any channel.

    Per field and channel, Otsu's threshold (256-bin histogram of up to 2**18 evenly spaced
    pixels) is computed on ``log(1 + value - min)``: it follows exposure changes between
    fields, and on heavy-tailed fluorescence it separates cells from background, where on
    linear values it would pick out only the brightest spots (and so drop more tiles of a class
    with bright aggregates).

    Parameters
    ----------
    image : (H, W, C) ndarray, any numeric dtype

    Returns
    -------
    mask : (H, W) ndarray, bool
        All False for a constant channel (a blank field has no foreground).
    """
    mask = np.zeros(image.shape[:2], dtype=bool)
    for channel in range(image.shape[2]):
        values = image[:, :, channel]  # (H, W)
        sample = values.reshape(-1)[:: max(1, values.size // _OTSU_PIXELS)].astype(np.float64)
        lowest = np.nanmin(sample)
        threshold = np.expm1(_otsu_threshold(np.log1p(sample - lowest))) + lowest
        mask |= values > threshold  # the log is monotonic: compare in native units
    return mask


def _otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of `values` (any shape): maximises the between-class variance."""
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    counts, edges = np.histogram(values, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1].astype(np.float64)  # pixels at or below each cut
    weight_high = counts.sum() - weight_low
    sums = np.cumsum(counts * centers)[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sums / weight_low
        mean_high = (sums[-1] + counts[-1] * centers[-1] - sums) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:-1][np.argmax(np.nan_to_num(between, nan=-1.0))])
