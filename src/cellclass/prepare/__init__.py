"""Prepare fields of view (layer 2): tiling (`tiling`) and rotation (`rotation`) of one image,
and the steps that turn a class-folder tree into a new one with a provenance manifest and
say what they did (`steps`).
"""

from cellclass.prepare.rotation import (
    FILL_MODES,
    FLIPS,
    RotateSettings,
    crop_shape,
    parse_angles,
    rotate_image,
)
from cellclass.prepare.steps import (
    MANIFEST_COLUMNS,
    PrepareError,
    PrepareResult,
    format_result,
    rotate_folder,
    tile_folder,
)
from cellclass.prepare.tiling import EDGE_POLICIES, TileSettings, cut_tiles, foreground_mask

__all__ = [
    "EDGE_POLICIES",
    "FILL_MODES",
    "FLIPS",
    "MANIFEST_COLUMNS",
    "PrepareError",
    "PrepareResult",
    "RotateSettings",
    "TileSettings",
    "crop_shape",
    "cut_tiles",
    "foreground_mask",
    "format_result",
    "parse_angles",
    "rotate_folder",
    "rotate_image",
    "tile_folder",
]
