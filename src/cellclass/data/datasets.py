"""A class-folder tree, scanned and decoded: the unit an experiment trains and tests on.

Each dataset carries a fingerprint of its files (`folder_fingerprint`): config.json records it,
and a resumed experiment compares it (`fingerprint_changes`) to refuse data that changed. It also
carries the pixel sizes its images record (`folder_pixel_sizes`), for config.json too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellclass.data.cache import PixelStore, file_digests, load_store
from cellclass.data.folders import FolderIndex, scan_folder
from cellclass.data.images import ImageReadError, image_metadata
from cellclass.data.preprocessing import Preprocessing
from cellclass.progress import Observer


@dataclass(frozen=True)
class Dataset:
    name: str  # "train" or the test-set name
    index: FolderIndex  # the scanned folder (class map, ignored and non-image files)
    store: PixelStore  # decoded pixels; bad files left out when skipping them
    labels: np.ndarray  # (N,) int64 labels aligned with store rows
    groups: list[str]  # provenance group of each store row
    fingerprint: dict = field(default_factory=dict)  # the files' `folder_fingerprint`
    pixel_size_um: list | None = None  # `folder_pixel_sizes` of the decoded files


# Pixel sizes of one folder that differ by more than this fraction are warned about: the network
# sees pixels, not micrometres, so a cell imaged at another magnification looks another size.
PIXEL_SIZE_TOLERANCE = 0.03


def load_dataset(
    name: str,
    folder: str | Path,
    prep: Preprocessing,
    *,
    class_names: tuple[str, ...] | None = None,
    group_by: str | None = None,
    skip_bad: bool = False,
    cache_dir: str | None = None,
    observer: Observer | None = None,
) -> Dataset:
    """Scan a class-folder tree and decode it into a pixel store (verifying every file).

    Raises FolderError for an unusable tree and BadImagesError for unreadable files (unless
    ``skip_bad``, which leaves them out and reports each through ``observer``).
    """
    observer = observer or Observer()
    index = scan_folder(folder, class_names=class_names, group_by=group_by)
    digests = file_digests(index.paths)
    store = load_store(
        index.paths,
        prep,
        cache_dir=Path(cache_dir) if cache_dir else None,
        skip_bad=skip_bad,
        progress=observer.decoding(name, len(index.samples)),
        digests=digests,
    )
    position = {path: i for i, path in enumerate(index.paths)}
    rows = [position[path] for path in store.paths]
    for path, reason in store.bad:
        observer.message(f"skipped unreadable image {path}: {reason}")
    groups = [index.samples[i].group for i in rows]
    fingerprint, pixel_sizes = folder_fingerprint(index, digests), folder_pixel_sizes(store.paths)
    data = Dataset(name, index, store, index.labels[rows], groups, fingerprint, pixel_sizes)
    observer.message(describe(data))
    copies = exact_copies(index.paths, digests)
    if copies:
        first = copies[0]
        observer.message(
            f"warning: {name} folder {folder}: {sum(len(c) - 1 for c in copies)} file(s) are "
            f"byte-identical copies of another (e.g. {first[1]} = {first[0]}); copies in one "
            "folder can land on both sides of the train/validation split and count twice in "
            "a test: remove them"
        )
    if pixel_size_spread(pixel_sizes) > PIXEL_SIZE_TOLERANCE:
        known = [(entry["y"], entry["x"]) for entry in pixel_sizes if entry["x"] is not None]
        observer.message(
            f"warning: {name}: the images of {index.root} have different pixel sizes "
            f"({', '.join(f'{y:g} x {x:g}' for y, x in known)} um); the network sees pixels, "
            "not micrometres: resample them to one pixel size or image at one magnification"
        )
    return data


def describe(data: Dataset) -> str:
    """One line: images per class, and what was ignored or skipped (never silently)."""
    counts = ", ".join(f"{name} {n}" for name, n in dataset_info(data)["class_counts"].items())
    line = f"{data.name}: {len(data.labels)} images ({counts}) from {data.index.root}"
    extras = [
        (len(data.index.ignored), "hidden/phantom entries ignored"),
        (len(data.index.non_images), "non-image files not loaded"),
        (len(data.store.bad), "unreadable images skipped"),
    ]
    notes = [f"{n} {what}" for n, what in extras if n]
    return line + ("; " + ", ".join(notes) if notes else "")


def dataset_info(data: Dataset) -> dict:
    """What config.json records about a folder: path, counts, skipped files, bit depth."""
    return {
        "path": str(data.index.root),
        "n_images": int(len(data.labels)),
        "class_counts": {
            name: int((data.labels == i).sum()) for i, name in enumerate(data.index.class_names)
        },
        "n_ignored": len(data.index.ignored),
        "n_non_images": len(data.index.non_images),
        "n_bad": len(data.store.bad),
        "bit_depth": data.store.bit_depth,
        "dtype": str(data.store.pixels.dtype),
        "channels": data.store.channels,
        "fingerprint": data.fingerprint,
        "pixel_size_um": data.pixel_size_um,  # distinct (y, x) pixel sizes recorded by the files
    }


def folder_pixel_sizes(paths: Sequence[Path]) -> list[dict] | None:
    """The pixel sizes (micrometres) the image files record, as config.json keeps them.

    Returns one ``{"y": um, "x": um, "n_images": n}`` per distinct size, most common first,
    then ``{"y": None, "x": None, "n_images": n}`` for files that record none; None when no
    file records a pixel size (PNG, JPEG, plain TIFF).
    """
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        counts = Counter(pool.map(_pixel_size_or_none, paths))
    if not any(size is not None for size in counts):
        return None
    order = sorted(counts, key=lambda size: (size is None, -counts[size], size or ()))
    return [
        {"y": size[0] if size else None, "x": size[1] if size else None, "n_images": counts[size]}
        for size in order
    ]


def _pixel_size_or_none(path: Path) -> tuple[float, float] | None:
    try:
        return image_metadata(path)["pixel_size_um"]
    except ImageReadError:  # decoded once already; metadata that cannot be read is unknown
        return None


def pixel_size_spread(sizes: list[dict] | None) -> float:
    """Largest relative difference between the known pixel sizes of `folder_pixel_sizes`, per
    axis (0.1: one image's pixels are 10 % larger than another's); 0 for one or no size."""
    spread = 0.0
    for axis in ("y", "x"):
        values = [entry[axis] for entry in sizes or () if entry[axis] is not None]
        if values:
            spread = max(spread, max(values) / min(values) - 1)
    return spread


def pixel_size_mismatch(name: str, sizes: list[dict] | None, reference: list[dict] | None) -> str:
    """A warning when the most common pixel size of a test folder (`folder_pixel_sizes`)
    differs from the training folder's by more than `PIXEL_SIZE_TOLERANCE`; "" when they agree
    or either records none. A network trained at one magnification sees objects of another
    at a different size in pixels, and its accuracy there says little."""
    known = [
        next((entry for entry in found or () if entry["x"] is not None), None)
        for found in (sizes, reference)
    ]
    if None in known or pixel_size_spread(known) <= PIXEL_SIZE_TOLERANCE:
        return ""
    test, train = ((entry["y"], entry["x"]) for entry in known)
    return (
        f"warning: {name}: its images have pixels of {test[0]:g} x {test[1]:g} um, the training "
        f"images {train[0]:g} x {train[1]:g} um; the network sees pixels, not micrometres, so "
        "objects appear at another size: resample one set to the other's pixel size"
    )


def exact_copies(paths: Sequence[Path], digests: Sequence[bytes]) -> list[list[Path]]:
    """Groups of files with the same content digest (byte-identical), in path order."""
    groups: dict[bytes, list[Path]] = {}
    for path, digest in zip(paths, digests, strict=True):
        groups.setdefault(digest, []).append(path)
    return [group for group in groups.values() if len(group) > 1]


def folder_fingerprint(index: FolderIndex, digests: Sequence[bytes]) -> dict:
    """What tells later whether a folder's images changed: per class the number of image
    files and a digest of their names and contents, a digest of their source groups
    (manifest.csv or ``group_by``), and one digest of it all.

    digests : the `file_digests` of ``index.paths``. Names are taken relative to the folder,
    so a moved or renamed folder keeps its fingerprint.
    """
    hashes: dict[str, hashlib.blake2b] = {}
    counts: dict[str, int] = {}
    groups = hashlib.blake2b(digest_size=16)
    for sample, content in zip(index.samples, digests, strict=True):
        name = _relative_name(sample.path, index.root)
        class_name = index.class_names[sample.label]
        hashes.setdefault(class_name, hashlib.blake2b(digest_size=16))
        hashes[class_name].update(json.dumps([name, content.hex()]).encode())
        counts[class_name] = counts.get(class_name, 0) + 1
        groups.update(json.dumps([name, sample.group]).encode())
    classes = {c: {"n_files": counts[c], "digest": hashes[c].hexdigest()} for c in hashes}
    whole = hashlib.blake2b(json.dumps([classes, groups.hexdigest()]).encode(), digest_size=16)
    return {
        "n_files": len(index.samples),
        "digest": whole.hexdigest(),
        "classes": classes,
        "groups": groups.hexdigest(),
    }


def _relative_name(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:  # reached through a link from outside the folder
        return Path(path).as_posix()


def fingerprint_changes(saved: dict, now: dict) -> list[str]:
    """What differs between two `folder_fingerprint` results, one phrase each
    ("3 files added to 'Control'"); empty when the files are the same."""
    if saved.get("digest") == now.get("digest"):
        return []
    before, after = saved.get("classes", {}), now.get("classes", {})
    changes = [
        f"class {c!r} removed ({before[c]['n_files']} files)" for c in before if c not in after
    ]
    for name, files in after.items():
        if name not in before:
            changes.append(f"class {name!r} added ({files['n_files']} files)")
            continue
        added = files["n_files"] - before[name]["n_files"]
        if added:
            changes.append(
                f"{abs(added)} file(s) {'added to' if added > 0 else 'removed from'} {name!r}"
            )
        elif files["digest"] != before[name]["digest"]:
            changes.append(f"files of {name!r} edited, replaced or renamed")
    if not changes:
        changes.append("source groups changed (manifest.csv or group_by)")
    return changes
