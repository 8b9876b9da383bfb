"""Tile and rotate class-folder trees into new trees, recording provenance in ``manifest.csv``.

Both steps read SRC (one subfolder per class) one file at a time, write their outputs under DST
with the same class (and sub)folders, and add one manifest row per written file::

    path, class, source, parent, step, tile_row, tile_col, angle, flip

``path`` is relative to DST. ``source`` is the original field the file descends from and
``parent`` the file it was made from, both as paths relative to DST (``../raw/A/f1.tif``), so
they resolve while the folders stay side by side. Chained steps inherit ``source`` (and tile
position, angle) from SRC's manifest, so splits made by `cellclass.folders.grouped_split` keep
every tile and rotation of one field on one side, and `cellclass.inspection` can tell when a
training and a test folder descend from the same field.

Names: tiles ``<stem>_r<row>c<col><ext>``, rotations ``<stem>_a<angle>[_fh|_fv]<ext>`` with the
angle in degrees as written (``_a-5``, ``_a2.5``). Pixels keep dtype, bit depth and channels;
PNG and TIFF keep their format, JPEG and BMP become PNG (re-encoding JPEG would add artefacts).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cellclass import results
from cellclass.folders import MANIFEST_NAME, scan_folder
from cellclass.images import ImageReadError, read_image, write_image

__all__ = [
    "EDGE_POLICIES",
    "FILL_MODES",
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

MANIFEST_COLUMNS = [
    "path",
    "class",
    "source",
    "parent",
    "step",
    "tile_row",
    "tile_col",
    "angle",
    "flip",
]
EDGE_POLICIES = ("drop", "pad")
FILL_MODES = ("reflect", "constant", "crop")
FLIPS = ("h", "v")
_SPEC_HELP = (
    "give a list (0,90,180,270), a range START:END:STEP with END included (-5:5:1) "
    "or a step (step=18 for 0, 18, ..., 342)"
)
_MAX_ANGLES = 3600  # a longer SPEC is a typo (e.g. a step of 0.001)
_OTSU_PIXELS = 2**18  # the foreground threshold is computed on at most this many pixels
_FAIR_DROP_GAP = 0.1  # warn when the share of tiles dropped differs more between classes
_TILE_NAME = re.compile(r"(?P<stem>.+)_r\d+c\d+")  # stem of an existing tile output
_ROTATION_NAME = re.compile(r"(?P<stem>.+)_a-?\d+(?:\.\d+)?(?:_f[hv])?")


class PrepareError(ValueError):
    """A prepare step cannot run; the message is one line saying what to change."""


@dataclass(frozen=True)
class TileSettings:
    """How `tile_folder` cuts every field; give exactly one of `grid` and `tile_size`."""

    grid: int | None = None  # cut each field into grid x grid tiles (the study used 4)
    tile_size: int | None = None  # or cut square tiles of this many pixels per side
    edge: str = "drop"  # remainder that does not fill a tile: "drop" it, or "pad" by mirroring
    min_foreground: float = 0.0  # drop tiles with a smaller fraction of foreground (0 keeps all)
    page: int = 0  # page of multi-page TIFFs to tile
    overwrite: bool = False  # replace this step's earlier outputs in DST instead of refusing
    skip_bad: bool = False  # list unreadable files and go on instead of stopping


@dataclass(frozen=True)
class RotateSettings:
    """How `rotate_folder` makes rotated copies of every image."""

    angles: tuple[float, ...]  # degrees, counter-clockwise as displayed; see `parse_angles`
    fill: str = "reflect"  # corners: "reflect" (mirror), "constant" (0) or "crop" (cut away)
    flips: tuple[str, ...] = ()  # "h" and/or "v": also write mirrored copies of every angle
    page: int = 0  # page of multi-page TIFFs to rotate
    overwrite: bool = False  # replace this step's earlier outputs in DST instead of refusing
    skip_bad: bool = False  # list unreadable files and go on instead of stopping


@dataclass(frozen=True)
class PrepareResult:
    """What one prepare step did."""

    dst: Path  # the output folder
    manifest: Path  # DST/manifest.csv, written or extended
    n_sources: int  # images read from SRC
    written: dict[str, int]  # files written to DST, per class
    dropped: dict[str, int]  # tiles left out as mostly background (min_foreground), per class
    no_output: tuple[Path, ...]  # sources that gave no file (smaller than a tile with "drop")
    skipped: tuple[tuple[Path, str], ...]  # unreadable sources and why (skip_bad)


@dataclass(frozen=True)
class _Step:
    """One prepare step as `_run_step` drives it."""

    name: str  # "tile" or "rotate", written to the manifest's step column
    owns: re.Pattern  # matches the stem of a file this step writes; group "stem" is the source
    make: Callable[[np.ndarray], Iterator[tuple[str, np.ndarray | None, dict]]]  # image ->
    # (name tag, pixels or None when dropped, manifest fields) for every output
    page: int  # TIFF page to read
    overwrite: bool  # replace earlier outputs
    skip_bad: bool  # go on past unreadable files


# ----------------------------------------------------------------------------- tiling


def tile_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    settings: TileSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Cut every image of every class folder of `src` into tiles under `dst`.

    Fields are read one at a time; tiles keep dtype, bit depth, channels and format.

    Parameters
    ----------
    src, dst : str or PathLike
        Class-folder tree to read, and the folder to write (never `src` or inside it).
    settings : TileSettings
    progress : callable, optional
        Called as ``progress(done, total)`` after every source image.

    Raises
    ------
    PrepareError
        Bad settings, `dst` equal to or inside `src`, or outputs of an earlier run in `dst`
        without ``overwrite``. `FolderError` and `ImageReadError` (both ValueError) for a bad
        folder or, unless ``skip_bad``, an unreadable image.
    """
    _check_tile_settings(settings)
    step = _Step(
        "tile",
        _TILE_NAME,
        lambda image: _tile_outputs(image, settings),
        settings.page,
        settings.overwrite,
        settings.skip_bad,
    )
    return _run_step(Path(src), Path(dst), step, progress)


def _check_tile_settings(settings: TileSettings) -> None:
    if (settings.grid is None) == (settings.tile_size is None):
        raise PrepareError("give exactly one of --grid N or --tile-size PIXELS, e.g. --grid 4")
    size = settings.grid if settings.grid is not None else settings.tile_size
    if size < 1:
        raise PrepareError(f"--grid/--tile-size must be at least 1, got {size}")
    if settings.edge not in EDGE_POLICIES:
        raise PrepareError(f"--edge {settings.edge!r}: choose one of {', '.join(EDGE_POLICIES)}")
    if not 0.0 <= settings.min_foreground <= 1.0:
        raise PrepareError(
            f"--min-foreground {settings.min_foreground}: give a fraction from 0 to 1, e.g. 0.1"
        )


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


def _tile_outputs(image: np.ndarray, settings: TileSettings) -> Iterator[tuple]:
    for row, col, tile, fraction in cut_tiles(image, settings):
        kept = fraction is None or fraction >= settings.min_foreground
        yield f"r{row}c{col}", tile if kept else None, {"tile_row": row, "tile_col": col}


# ----------------------------------------------------------------------------- rotation


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
        raise ValueError(f"--angles {spec!r}: cannot read it; {_SPEC_HELP}")
    if any(abs(a) > 360 for a in angles):
        raise ValueError(f"--angles {spec!r}: give angles from -360 to 360 degrees, e.g. -5:5:1")
    turns = [a % 360 for a in angles]
    for i, turn in enumerate(turns):
        if turn in turns[:i]:
            first = angles[turns.index(turn)]
            raise ValueError(
                f"--angles {spec!r}: {first:g} and {angles[i]:g} are the same rotation; "
                "list each rotation once"
            )
    return angles


def rotate_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    settings: RotateSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Write rotated (and optionally mirrored) copies of every image of `src` under `dst`.

    Parameters and errors as for `tile_folder`; every source gives ``len(angles) *
    (1 + len(flips))`` files, the 0-degree copy included when 0 is listed.
    """
    _check_rotate_settings(settings)
    step = _Step(
        "rotate",
        _ROTATION_NAME,
        lambda image: _rotation_outputs(image, settings),
        settings.page,
        settings.overwrite,
        settings.skip_bad,
    )
    return _run_step(Path(src), Path(dst), step, progress)


def _check_rotate_settings(settings: RotateSettings) -> None:
    if not settings.angles:
        raise PrepareError("no angles given; pass --angles, e.g. --angles 0,90,180,270")
    if settings.fill not in FILL_MODES:
        raise PrepareError(f"--fill {settings.fill!r}: choose one of {', '.join(FILL_MODES)}")
    unknown = [flip for flip in settings.flips if flip not in FLIPS]
    if unknown or len(set(settings.flips)) != len(settings.flips):
        raise PrepareError(f"--flip {settings.flips}: give h and/or v, each at most once")
    turns = {a % 360 for a in settings.angles}
    if len(settings.flips) == 2 and any((turn + 180) % 360 in turns for turn in turns):
        raise PrepareError(
            "--flip h --flip v with angles 180 degrees apart writes identical copies "
            "(a v flip is an h flip turned by 180); use --flip h alone"
        )


def _rotation_outputs(image: np.ndarray, settings: RotateSettings) -> Iterator[tuple]:
    shape = None
    if settings.fill == "crop":
        shape = crop_shape(image.shape[0], image.shape[1], settings.angles)
    for angle in settings.angles:
        for flip in (None, *settings.flips):
            tag = f"a{angle:g}" + (f"_f{flip}" if flip else "")
            pixels = rotate_image(image, angle, fill=settings.fill, flip=flip, crop_to=shape)
            yield tag, pixels, {"angle": f"{angle:g}", "flip": flip or ""}


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


def format_result(result: PrepareResult) -> str:
    """What a prepare step did, as lines for a terminal."""
    per_class = ", ".join(f"{name} {n}" for name, n in result.written.items())
    lines = [
        f"{sum(result.written.values())} files written to {result.dst} from "
        f"{result.n_sources} images ({per_class})"
    ]
    if any(result.dropped.values()):
        shares = [
            f"{name} {n} ({n / max(1, n + result.written[name]):.0%})"
            for name, n in result.dropped.items()
        ]
        lines.append("tiles dropped as background: " + ", ".join(shares))
        rates = [n / max(1, n + result.written[name]) for name, n in result.dropped.items()]
        if max(rates) - min(rates) > _FAIR_DROP_GAP:
            lines.append(
                "warning: classes lose different shares of tiles, so --min-foreground selects "
                "them differently (a possible confound); lower it or check the fields"
            )
    if result.no_output:
        lines.append(
            f"{len(result.no_output)} image(s) gave no file (smaller than a tile: --edge pad "
            f"keeps them; or all background), e.g. {result.no_output[0]}"
        )
    lines += [f"skipped unreadable image {why}" for _, why in result.skipped]
    return "\n".join([*lines, f"manifest: {result.manifest}"])


# ----------------------------------------------------------------------------- the folder walk


def _run_step(
    src: Path, dst: Path, step: _Step, progress: Callable[[int, int], None] | None
) -> PrepareResult:
    """Read every image of `src` once, write `step`'s outputs under `dst`, extend the manifest."""
    src, dst = _check_folders(src, dst)
    relative = [sample.path.relative_to(src) for sample in scan_folder(src).samples]
    _check_outputs_free(dst, relative, step)
    parents = _read_manifest(src / MANIFEST_NAME)
    rows, no_output, skipped = [], [], []
    dropped = dict.fromkeys(sorted({rel.parts[0] for rel in relative}), 0)
    try:
        for done, rel in enumerate(relative, start=1):
            try:
                image = read_image(src / rel, page=step.page)
            except ImageReadError as error:
                if not step.skip_bad:
                    raise
                skipped.append((src / rel, str(error)))
                image = None
            if image is not None:
                written = _write_outputs(image, src, dst, rel, step, parents.get(rel.as_posix()))
                dropped[rel.parts[0]] += written.count(None)
                rows.extend(row for row in written if row is not None)
                no_output += [src / rel] if written.count(None) == len(written) else []
            if progress is not None:
                progress(done, len(relative))
    finally:
        manifest = _extend_manifest(dst, rows)
    counts = {name: sum(row["class"] == name for row in rows) for name in dropped}
    n_read = len(relative) - len(skipped)
    return PrepareResult(dst, manifest, n_read, counts, dropped, tuple(no_output), tuple(skipped))


def _write_outputs(
    image: np.ndarray, src: Path, dst: Path, rel: Path, step: _Step, parent_row: dict | None
) -> list[dict | None]:
    """Write the outputs of one source; return its manifest rows (None for a dropped tile).

    `parent_row` is the source's row in SRC's manifest (None when SRC has none for it): its
    source, tile position and angle are inherited, so chained steps keep the original field.
    """
    parent_row = parent_row or {}
    out_dir = dst / rel.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    inherited = {key: parent_row.get(key, "") for key in MANIFEST_COLUMNS}
    source = _path_from(dst, src / parent_row["source"] if parent_row.get("source") else src / rel)
    rows: list[dict | None] = []
    for tag, pixels, fields in step.make(image):
        if pixels is None:
            rows.append(None)
            continue
        path = out_dir / f"{rel.stem}_{tag}{_output_suffix(rel.suffix, pixels)}"
        write_image(path, np.ascontiguousarray(pixels))
        rows.append(
            {
                **inherited,
                **fields,
                "path": path.relative_to(dst).as_posix(),
                "class": rel.parts[0],
                "source": source,
                "step": step.name,
                "parent": _path_from(dst, src / rel),
            }
        )
    return rows


def _path_from(folder: Path, path: Path) -> str:
    """`path` relative to `folder` ("../raw/A/f.tif"), or absolute on another drive."""
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # Windows: no relative path between drives
        return path.as_posix()


def _output_suffix(suffix: str, pixels: np.ndarray) -> str:
    """Keep PNG and TIFF; JPEG and BMP become lossless PNG; TIFF for what PNG cannot hold."""
    suffix = suffix.lower()
    if suffix in (".tif", ".tiff"):
        return suffix
    png_ok = (pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3, 4)) or (
        pixels.dtype == np.uint16 and pixels.shape[2] == 1
    )
    return ".png" if png_ok else ".tif"


def _check_folders(src: Path, dst: Path) -> tuple[Path, Path]:
    src, dst = src.expanduser().resolve(), dst.expanduser().resolve()
    if src == dst or src in dst.parents:
        raise PrepareError(
            f"DST {dst} is SRC or inside it; write to a folder outside SRC, e.g. "
            f"{src.parent / (src.name + '-prepared')}"
        )
    if dst in src.parents:
        raise PrepareError(f"SRC {src} is inside DST {dst}; choose a DST outside SRC's folders")
    if dst.exists() and not dst.is_dir():
        raise PrepareError(f"DST {dst} is a file; give a folder")
    return src, dst


def _check_outputs_free(dst: Path, relative: list[Path], step: _Step) -> None:
    """Refuse when two sources would write the same names, or `dst` holds earlier outputs."""
    claimed: dict[tuple[Path, str], Path] = {}
    existing: dict[Path, dict[str, str]] = {}
    for rel in relative:
        key = (rel.parent, rel.stem)
        if key in claimed:
            raise PrepareError(
                f"{claimed[key]} and {rel} would write the same {step.name} names; rename one"
            )
        claimed[key] = rel
        if rel.parent not in existing:
            existing[rel.parent] = _outputs_by_stem(dst / rel.parent, step.owns)
        earlier = existing[rel.parent].get(rel.stem)
        if earlier and not step.overwrite:
            raise PrepareError(
                f"{dst} already holds {step.name} outputs of {rel} (e.g. {earlier}); pass "
                "--overwrite to replace them (nothing else is deleted) or choose another DST"
            )


def _outputs_by_stem(folder: Path, owns: re.Pattern) -> dict[str, str]:
    """Map source stem -> one existing output name, for files in `folder` matching `owns`."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = owns.fullmatch(path.stem)
        if match and path.is_file():
            found.setdefault(match["stem"], path.name)
    return found


def _read_manifest(path: Path) -> dict[str, dict]:
    """Rows of a manifest keyed by their ``path``; empty when the file does not exist."""
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise PrepareError(f"{path}: not a cellclass manifest (no 'path' column); move it away")
        return {row["path"]: row for row in reader}


def _extend_manifest(dst: Path, rows: list[dict]) -> Path:
    """Add `rows` to DST/manifest.csv (rows with the same path are replaced), atomically."""
    manifest = dst / MANIFEST_NAME
    if not rows:
        return manifest
    merged = _read_manifest(manifest)
    merged.update((row["path"], row) for row in rows)
    extra = [key for row in merged.values() for key in row if key not in MANIFEST_COLUMNS]
    columns = MANIFEST_COLUMNS + list(dict.fromkeys(extra))
    results.write_table(manifest, columns, [merged[key] for key in sorted(merged)])
    return manifest
