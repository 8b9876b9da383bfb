"""Tile and rotate class-folder trees into new trees, recording provenance in ``manifest.csv``.

Both steps read SRC (one subfolder per class) one file at a time, write their outputs under DST
with the same class (and sub)folders, and add one manifest row per written file::

    path, class, source, parent, step, tile_row, tile_col, angle, flip

``path`` is relative to DST. ``source`` is the original field the file descends from and
``parent`` the file it was made from, both as paths relative to DST (``../raw/A/f1.tif``), so
they resolve while the folders stay side by side. Chained steps inherit ``source`` (and tile
position, angle) from SRC's manifest, so splits made by `cellclass.data.folders.grouped_split` keep
every tile and rotation of one field on one side, and `cellclass.inspection.dataset` can tell when a
training and a test folder descend from the same field.

Names: tiles ``<stem>_r<row>c<col><ext>``, rotations ``<stem>_a<angle>[_fh|_fv]<ext>`` with the
angle in degrees as written (``_a-5``, ``_a2.5``). Pixels keep dtype, bit depth and channels;
PNG and TIFF keep their format, JPEG and BMP become PNG (re-encoding JPEG would add artefacts).

This module owns the two steps' entry points, the folder walk, output names, the overwrite
check, the manifest and what a step did (`PrepareResult`, `format_result`). The pixel work
lives in `cellclass.prepare.tiling` (`cut_tiles`, `foreground_mask`) and
`cellclass.prepare.rotation` (`parse_angles`, `rotate_image`, `crop_shape`).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass._files import relative_path
from cellclass.csv_cells import unescape_row
from cellclass.data.folders import MANIFEST_COLUMNS, MANIFEST_NAME, scan_folder
from cellclass.data.images import ImageReadError, read_image, write_image
from cellclass.prepare.rotation import (
    FILL_MODES,
    FLIPS,
    RotateSettings,
    crop_shape,
    rotate_image,
)
from cellclass.prepare.tiling import EDGE_POLICIES, TileSettings, cut_tiles

__all__ = [
    "MANIFEST_COLUMNS",
    "PrepareError",
    "PrepareResult",
    "format_result",
    "rotate_folder",
    "tile_folder",
]

_TILE_NAME = re.compile(r"(?P<stem>.+)_r\d+c\d+")  # stem of an existing tile output
_FAIR_DROP_GAP = 0.1  # warn when the share of tiles dropped differs more between classes
_ROTATION_NAME = re.compile(r"(?P<stem>.+)_a-?\d+(?:\.\d+)?(?:_f[hv])?")


class PrepareError(ValueError):
    """A prepare step cannot run; the message is one line saying what to change."""


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
        raise PrepareError("give exactly one of grid=N or tile_size=PIXELS, e.g. grid=4")
    size = settings.grid if settings.grid is not None else settings.tile_size
    if size < 1:
        raise PrepareError(f"grid= or tile_size= must be at least 1, got {size}")
    if settings.edge not in EDGE_POLICIES:
        raise PrepareError(f"edge={settings.edge!r}: choose one of {', '.join(EDGE_POLICIES)}")
    if not 0.0 <= settings.min_foreground <= 1.0:
        raise PrepareError(
            f"min_foreground={settings.min_foreground}: give a fraction from 0 to 1, e.g. 0.1"
        )


def _tile_outputs(image: np.ndarray, settings: TileSettings) -> Iterator[tuple]:
    for row, col, tile, fraction in cut_tiles(image, settings):
        kept = fraction is None or fraction >= settings.min_foreground
        yield f"r{row}c{col}", tile if kept else None, {"tile_row": row, "tile_col": col}


# ----------------------------------------------------------------------------- rotation


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
        raise PrepareError("no angles given; pass angles=, e.g. angles=0,90,180,270")
    if settings.fill not in FILL_MODES:
        raise PrepareError(f"fill={settings.fill!r}: choose one of {', '.join(FILL_MODES)}")
    unknown = [flip for flip in settings.flips if flip not in FLIPS]
    if unknown or len(set(settings.flips)) != len(settings.flips):
        raise PrepareError(f"flips={settings.flips}: give h and/or v, each at most once")
    turns = {a % 360 for a in settings.angles}
    if len(settings.flips) == 2 and any((turn + 180) % 360 in turns for turn in turns):
        raise PrepareError(
            "flips h and v with angles 180 degrees apart write identical copies "
            "(a v flip is an h flip turned by 180); use flips=h alone"
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
    origin = src / parent_row["source"] if parent_row.get("source") else src / rel
    source = relative_path(origin, dst)
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
                "parent": relative_path(src / rel, dst),
            }
        )
    return rows


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
                "overwrite=True to replace them (nothing else is deleted) or choose another DST"
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
        rows = [unescape_row(row) for row in reader]
        return {row["path"]: row for row in rows}


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


# ----------------------------------------------------------------------------- what a step did


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
                "warning: classes lose different shares of tiles, so the foreground threshold "
                "(min_foreground=) selects them differently (a possible confound); lower it "
                "or check the fields"
            )
    if result.no_output:
        lines.append(
            f"{len(result.no_output)} image(s) gave no file (smaller than a tile: edge='pad' "
            f"keeps them; or all background), e.g. {result.no_output[0]}"
        )
    lines += [f"skipped unreadable image {why}" for _, why in result.skipped]
    return "\n".join([*lines, f"manifest: {result.manifest}"])
