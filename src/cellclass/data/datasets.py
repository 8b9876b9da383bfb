"""A class-folder tree, scanned and decoded: the unit an experiment trains and tests on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellclass.data.cache import PixelStore, Preprocessing, load_store
from cellclass.data.folders import FolderIndex, scan_folder
from cellclass.progress import Observer


@dataclass(frozen=True)
class Dataset:
    name: str  # "train" or the test-set name
    index: FolderIndex  # the scanned folder (class map, ignored and non-image files)
    store: PixelStore  # decoded pixels; bad files left out when skipping them
    labels: np.ndarray  # (N,) int64 labels aligned with store rows
    groups: list[str]  # provenance group of each store row


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
    store = load_store(
        index.paths,
        prep,
        cache_dir=Path(cache_dir) if cache_dir else None,
        skip_bad=skip_bad,
        progress=observer.decoding(name, len(index.samples)),
    )
    position = {path: i for i, path in enumerate(index.paths)}
    rows = [position[path] for path in store.paths]
    for path, reason in store.bad:
        observer.message(f"skipped unreadable image {path}: {reason}")
    data = Dataset(name, index, store, index.labels[rows], [index.samples[i].group for i in rows])
    observer.message(describe(data))
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
    }
