"""Split one class-folder tree into ``train/`` and ``test/`` that the leakage check accepts.

A random split of real data leaks when one object is in the folder more than once: tiles or
rotations of one field (their ``manifest.csv`` names the field), files named after one field
(``group_by``), or the same object imaged twice (ELPV holds such twins: neighbouring solar cells
that match to the pixel, see `cellclass.inspection.scan`). `split_folder` groups the files by
source field, joins the groups of every exact or near-duplicate pair that the leakage check
finds within the folder (same thresholds), and puts whole groups on one side, stratified by
class as far as the groups allow (`cellclass.data.folders.grouped_split`). Files are copied
byte for byte into a hidden folder in DST that is renamed to ``train/`` and ``test/`` once
complete, so an interrupted split leaves nothing to clean up; SRC is only read. Each side gets
a ``manifest.csv`` whose ``source`` column keeps naming the original field, so later steps and
the leakage check still see where every file came from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cellclass import results
from cellclass._files import relative_path
from cellclass.choices import MAX_DISTANCE, MIN_SIMILARITY  # the leakage check's thresholds
from cellclass.data.folders import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    FolderError,
    FolderIndex,
    Sample,
    grouped_split,
    scan_folder,
)
from cellclass.inspection.scan import duplicate_pairs, scan_images

SIDES = ("train", "test")


@dataclass(frozen=True)
class SplitSettings:
    """How `split_folder` splits."""

    test_fraction: float = 0.25  # share of each class's images to put in test/ (about)
    seed: int = 0  # the same seed and files give the same split
    group_by: str | None = None  # regex on file names giving the source field (no manifest)
    twins: bool = True  # keep exact and near-duplicate images on one side
    page: int = 0  # page of multi-page TIFFs, for the duplicate check


@dataclass(frozen=True)
class SplitResult:
    """What `split_folder` wrote."""

    train: Path  # DST/train
    test: Path  # DST/test
    counts: dict[str, dict[str, int]]  # side -> class -> files
    n_groups: int  # groups placed whole (source fields, joined by twins)
    n_twin_pairs: int  # duplicate pairs found within SRC (0 with twins=False)
    n_joined: int  # source fields that share a group with another because of a pair


def split_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    settings: SplitSettings = SplitSettings(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SplitResult:
    """Copy the images of `src` into ``dst/train`` and ``dst/test``, no object on both sides.

    Parameters
    ----------
    src : class-folder tree to split (only read).
    dst : folder to write ``train/`` and ``test/`` into; neither may exist yet.
    settings : SplitSettings
    progress : called as ``progress(done, total)`` while decoding images (twins only).

    Raises
    ------
    FolderError
        A bad SRC (no class folders, one class), DST inside SRC or the reverse, existing
        ``dst/train`` or ``dst/test``, a bad fraction, or an unreadable image (twins only).
    """
    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    _check_paths(src, dst, settings.test_fraction)
    index = scan_folder(src, group_by=settings.group_by)
    groups, n_pairs, n_joined = list(index.groups), 0, 0
    if settings.twins:
        groups, n_pairs, n_joined = _join_twins(index, settings.page, progress)
    rng = np.random.default_rng(settings.seed)
    split = grouped_split(groups, index.labels, settings.test_fraction, rng=rng)
    sides = dict(zip(SIDES, split, strict=True))
    manifest = _read_manifest(src)
    first = {}  # a group's first source field in SRC's order names the whole group
    for group, sample in zip(groups, index.samples, strict=True):
        first.setdefault(group, sample.group)
    counts = {}
    dst.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".split-", dir=dst))  # an interrupted split leaves
    try:  # neither train/ nor test/ behind, so running it again just works
        for side, chosen in sides.items():
            rows = [
                _copy(src, staging / side, dst / side, index.samples[k], first[groups[k]], manifest)
                for k in chosen
            ]
            results.write_table(staging / side / MANIFEST_NAME, MANIFEST_COLUMNS, rows)
            counts[side] = {c: sum(r["class"] == c for r in rows) for c in index.class_names}
        for side in SIDES:
            os.replace(staging / side, dst / side)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SplitResult(dst / "train", dst / "test", counts, len(set(groups)), n_pairs, n_joined)


def _check_paths(src: Path, dst: Path, fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise FolderError(f"test_fraction={fraction}: give a share between 0 and 1, e.g. 0.25")
    if src == dst or src in dst.parents or dst in src.parents:
        raise FolderError(f"DST {dst} and SRC {src} overlap; write outside SRC's folders")
    for side in SIDES:
        if (dst / side).exists():
            raise FolderError(
                f"{dst / side} exists; nothing is overwritten: choose a new DST or move it away"
            )


def _join_twins(
    index: FolderIndex, page: int, progress: Callable[[int, int], None] | None
) -> tuple[list[str], int, int]:
    """Groups with every duplicate pair's two groups joined -> (groups, pairs, fields joined)."""
    scan = scan_images(index, page, progress)
    if scan.corrupt:
        path, why = scan.corrupt[0]
        raise FolderError(f"cannot read {path} ({why}); fix or remove it before splitting")
    # both orders of every pair: the hash compares one image's 8 transforms with the other as
    # is, and the pixel check the second's centre with the first, so a pair near a threshold
    # can pass one way only; the leakage check later meets it in either order
    pairs = duplicate_pairs(scan, scan, MAX_DISTANCE, MIN_SIMILARITY)
    pairs = [pair for pair in pairs if pair.first != pair.second]
    names = sorted(set(index.groups))
    number = {name: k for k, name in enumerate(names)}
    group_of = dict(zip(scan.paths, scan.groups, strict=True))
    rows = [number[group_of[pair.first]] for pair in pairs]
    cols = [number[group_of[pair.second]] for pair in pairs]
    links = coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(names), len(names)))
    component = connected_components(links, directed=False)[1]
    sizes = np.bincount(component)
    joined = int(np.sum(sizes[sizes > 1]))
    n_pairs = len({frozenset((pair.first, pair.second)) for pair in pairs})
    return [f"twins-{component[number[group]]}" for group in index.groups], n_pairs, joined


def _read_manifest(src: Path) -> dict[str, dict]:
    """SRC's manifest rows by path (empty without one)."""
    path = src / MANIFEST_NAME
    return {row["path"]: row for row in results.read_table(path)} if path.is_file() else {}


def _copy(
    src: Path, staging: Path, side: Path, sample: Sample, source: str, manifest: dict[str, dict]
) -> dict:
    """Copy one file from SRC to the same place under `staging`; its manifest row, with paths
    relative to `side`, where `staging` will be moved.

    `source` is the group's source field as SRC's scan gives it (a manifest's source, the
    ``group_by`` field, or the file itself; for duplicates joined into one group, its first
    member's), resolved from SRC, so later splits of the new folders (validation) keep the
    group together; ``parent`` names the file itself.
    """
    relative = sample.path.relative_to(src)
    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample.path, staging / relative)
    row = {key: manifest.get(relative.as_posix(), {}).get(key, "") for key in MANIFEST_COLUMNS}
    return {
        **row,
        "path": relative.as_posix(),
        "class": relative.parts[0],
        "source": relative_path(src / source, side),
        "parent": relative_path(sample.path, side),
        "step": "split",
    }


def format_split(result: SplitResult) -> str:
    """What `split_folder` did, as lines for a terminal."""
    lines = []
    for side, path in (("train", result.train), ("test", result.test)):
        per_class = ", ".join(f"{name} {n}" for name, n in result.counts[side].items())
        lines.append(f"{side}: {sum(result.counts[side].values())} files in {path} ({per_class})")
    lines.append(
        f"{result.n_groups} groups placed whole; {result.n_twin_pairs} duplicate pair(s) found "
        f"within the folder joined {result.n_joined} source field(s) into shared groups"
    )
    empty = [name for name, n in result.counts["test"].items() if not n]
    if empty:
        lines.append(
            f"warning: no test images for {', '.join(empty)}: all its images form one group"
        )
    return "\n".join(lines)
