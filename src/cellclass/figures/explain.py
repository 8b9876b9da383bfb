"""Figures of attribution maps: overlays of maps on images, per image and per class.

Same contract as `cellclass.figures.plots`: each public function takes plain numpy data and table
rows, draws its own `matplotlib.figure.Figure` (never pyplot) and writes one PNG atomically,
returning its path. Images are ``(N, H, W, C)`` float arrays in [0, 1], as the model sees
them; attribution maps are ``(N, H, W)`` float arrays (`cellclass.explain.attribution`).

Overlays show the image in grey with the map as a heat map whose opacity grows with the
map's magnitude, so weak attributions leave the cells visible. Signed maps (gradient x input,
occlusion) use red for pixels that support the class and blue for pixels that argue against
it; Grad-CAM (never negative) uses yellow-red. Each tile is scaled by its own 99th
percentile of absolute values: compare shapes between tiles, not intensities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from cellclass.data.images import to_display_uint8
from cellclass.figures.drawing import (
    RIGHT_COLOUR,
    WRONG_COLOUR,
    new_figure,
    save_png,
    short_name,
)

__all__ = ["MapRow", "attribution_figure", "normalize_maps", "overlay", "prediction_title"]

TILE = 1.45  # inches per image tile
MAX_ALPHA = 0.8  # opacity of the strongest signed attribution in an overlay
MAX_ALPHA_CAM = 0.6  # Grad-CAM covers whole regions: lighter, so the cells stay visible


@dataclass(frozen=True)
class MapRow:
    label: str  # row title, e.g. "Grad-CAM\npredicted class"
    maps: np.ndarray  # (N, H, W) float, one map per column
    signed: bool  # red/blue around zero (True) or yellow-red from zero (False)
    shown: np.ndarray | None = None  # (N,) bool; False leaves the tile blank with a dash


def normalize_maps(maps: np.ndarray, *, percentile: float = 99.0) -> np.ndarray:
    """Each (H, W) map divided by its ``percentile`` of absolute values, clipped to [-1, 1].

    A robust per-image scale, so one hot pixel does not wash out the rest and every image
    counts equally in a class average. All-zero maps stay zero.

    Parameters
    ----------
    maps : (N, H, W) ndarray of float

    Returns
    -------
    (N, H, W) ndarray of float32 in [-1, 1]
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {maps.shape}")
    scale = np.percentile(np.abs(maps).reshape(len(maps), -1), percentile, axis=1)  # (N,)
    scale = np.where(scale > 0, scale, 1.0)[:, None, None]
    return np.clip(maps / scale, -1.0, 1.0).astype(np.float32)


def overlay(image: np.ndarray, attribution: np.ndarray, *, signed: bool) -> np.ndarray:
    """An image in grey with ``attribution`` as a semi-transparent heat map on top.

    Parameters
    ----------
    image : (H, W, C) ndarray, float in [0, 1]
    attribution : (H, W) ndarray of float, any scale (scaled here by its 99th percentile)
    signed : diverging red/blue colours around zero, else sequential from zero

    Returns
    -------
    (H, W, 3) ndarray of float in [0, 1]
    """
    grey = to_display_uint8(image).mean(2, keepdims=True) / 255.0  # (H, W, 1)
    scaled = normalize_maps(np.nan_to_num(attribution)[None])[0]  # (H, W) in [-1, 1]
    if signed:
        colours = colormaps["RdBu_r"]((scaled + 1) / 2)[..., :3]  # (H, W, 3)
        alpha = MAX_ALPHA * np.abs(scaled)[..., None]  # (H, W, 1)
    else:
        positive = np.clip(scaled, 0, 1)
        colours = colormaps["YlOrRd"](0.2 + 0.6 * positive)[..., :3]  # yellow to red
        alpha = MAX_ALPHA_CAM * positive[..., None]
    return (1 - alpha) * (0.85 * grey) + alpha * colours


def _tile_grid(n_rows: int, n_cols: int, *, top: float):
    """A figure of square tiles with fixed margins (inches): room for row labels on the left
    and ``top`` for titles. Constrained layout is slow with dozens of axes and gains nothing
    on a regular grid."""
    gap, left = 0.06, 0.5
    width = left + 0.1 + n_cols * TILE + (n_cols - 1) * gap
    height = top + 0.1 + n_rows * TILE + (n_rows - 1) * gap
    figure = new_figure(width, height, constrained=False)
    figure.subplots_adjust(
        left=left / width,
        right=1 - 0.1 / width,
        bottom=0.1 / height,
        top=1 - top / height,
        wspace=gap / TILE,
        hspace=gap / TILE,
    )
    return figure, figure.subplots(n_rows, n_cols, squeeze=False)


def _draw_tile(axes, image: np.ndarray, values: np.ndarray | None, *, signed: bool) -> None:
    """One overlay tile; a dash where there is no map (None or all NaN)."""
    if values is None or not np.isfinite(values).any():
        axes.text(0.5, 0.5, "–", ha="center", va="center", color="#888888", fontsize=9)
        return
    axes.imshow(overlay(image, values, signed=signed), interpolation="auto")
    if not signed and not (np.nan_to_num(values) > 0).any():
        axes.text(
            0.5,
            0.04,
            "no positive evidence",
            transform=axes.transAxes,
            ha="center",
            va="bottom",
            fontsize=6.5,
            color="white",
        )


def _check_grid(images: np.ndarray, rows: Sequence[MapRow], column_titles) -> None:
    n_images = len(images)
    if n_images == 0 or len(column_titles) != n_images:
        raise ValueError(
            f"need N >= 1 images and N column titles, got {n_images}, {len(column_titles)}"
        )
    for row in rows:
        if len(row.maps) != n_images:
            raise ValueError(f"row {row.label!r} has {len(row.maps)} maps for {n_images} images")


def attribution_figure(
    images: np.ndarray,
    rows: Sequence[MapRow],
    column_titles: Sequence[tuple[str, str]],
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Images in the top row, one row of overlays per `MapRow` below.

    Parameters
    ----------
    images : (N, H, W, C) ndarray, float in [0, 1]
    rows : sequence of MapRow, each with (N, H, W) maps
    column_titles : N pairs (text, colour) above the images, e.g. prediction and truth
    out_path : path of the PNG
    title : figure title

    Returns
    -------
    Path
        `out_path`.
    """
    _check_grid(images, rows, column_titles)
    n_lines = max(text.count("\n") + 1 for text, _ in column_titles)
    figure, grid = _tile_grid(1 + len(rows), len(images), top=0.35 + 0.15 * n_lines)
    for column, (text, colour) in enumerate(column_titles):
        grid[0, column].imshow(to_display_uint8(images[column]), interpolation="auto")
        grid[0, column].set_title(text, color=colour, fontsize=7.5)
    for index, row in enumerate(rows, start=1):
        shown = np.ones(len(images), bool) if row.shown is None else np.asarray(row.shown, bool)
        for column, image in enumerate(images):
            values = row.maps[column] if shown[column] else None
            _draw_tile(grid[index, column], image, values, signed=row.signed)
        grid[index, 0].text(
            -0.06,
            0.5,
            row.label,
            transform=grid[index, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    for axes in grid.ravel():
        axes.set_xticks([])
        axes.set_yticks([])
        axes.spines[:].set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, out_path)


def prediction_title(true: str | None, predicted: str, confidence: float) -> tuple[str, str]:
    """Column title "pred X 97 %\\ntrue Y", green when right, red when wrong, black if unknown."""
    text = f"pred {short_name(predicted, 14)} {100 * confidence:.0f} %"
    if true is None:
        return text + "\ntrue ?", "black"
    return (
        f"{text}\ntrue {short_name(true, 14)}",
        RIGHT_COLOUR if true == predicted else WRONG_COLOUR,
    )
