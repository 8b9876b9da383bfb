"""Scan one-folder-per-class image trees into an index of samples.

A training or test folder holds one subfolder per class::

    train/
      Control/  a.png b.tif ...
      Snap29/   c.png ...

Class names are sorted, so the class map does not depend on the order the file system lists
folders in. Test folders are mapped onto the training class map *by name*. Hidden and phantom
entries (``.DS_Store``, AppleDouble ``._x.png``, ``__MACOSX/``, ``Thumbs.db``...) are ignored;
non-image files are counted and reported, never loaded. An OME-Zarr image is a folder
(``field1.ome.zarr``): inside a class folder it is one image, never a subfolder to walk; CZI,
ND2 and LIF files are listed like any image (reading them needs the ``bioio`` extra).

Every sample carries a *group*: the source field it came from. Splits made by cellclass keep a
group on one side, so tiles or rotations of one field never straddle training and validation.
The group comes from ``manifest.csv`` (written by ``cellclass prepare``) when present, else from
a ``group_by`` regular expression on the file name, else each file is its own group.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellclass.csv_cells import unescape_row
from cellclass.data.images import BIOIO_EXTENSIONS, IMAGE_EXTENSIONS, is_image_path

PHANTOM_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini", "ehthumbs.db"})
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = [  # what `cellclass prepare` writes, one row per file
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


class FolderError(ValueError):
    """A folder cannot be used as a one-folder-per-class dataset; the message says why."""


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute path of the image file
    label: int  # index into the class map
    group: str  # provenance group (source field); splits never separate a group


@dataclass(frozen=True)
class FolderIndex:
    root: Path  # the folder that was scanned
    class_names: tuple[str, ...]  # the class map: label i is class_names[i]
    samples: tuple[Sample, ...]  # image files, sorted by class then path
    ignored: tuple[Path, ...]  # hidden and phantom entries that were skipped
    non_images: tuple[Path, ...]  # files that are not images (counted, not loaded)
    missing_classes: tuple[str, ...] = ()  # classes of the class map with no folder here

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels of the samples."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    @property
    def groups(self) -> list[str]:
        return [s.group for s in self.samples]

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name, in class-map order."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}

    def subset(self, indices) -> FolderIndex:
        """A copy holding only the samples at ``indices`` (same class map)."""
        picked = tuple(self.samples[int(i)] for i in indices)
        return FolderIndex(
            self.root, self.class_names, picked, self.ignored, self.non_images, self.missing_classes
        )


def is_hidden(path: Path) -> bool:
    """True for hidden and phantom entries: dot-files, ``._*``, ``__MACOSX``, ``Thumbs.db``..."""
    name = path.name
    return name.startswith(".") or name.lower() in PHANTOM_NAMES


def scan_folder(
    root: str | Path,
    *,
    class_names: tuple[str, ...] | None = None,
    group_by: str | None = None,
) -> FolderIndex:
    """Index a one-folder-per-class tree.

    Parameters
    ----------
    root : folder with one subfolder per class.
    class_names : the training class map, when scanning a test folder. Test classes are mapped
        by name; a class unknown to training raises `FolderError` naming it; a training class
        with no folder here is listed in ``missing_classes`` (the caller warns).
    group_by : regular expression applied to file names; its first group (or whole match) is
        the provenance group. Ignored when ``root/manifest.csv`` exists.

    Raises
    ------
    FolderError
        root missing or not a folder, no class subfolders, a class folder with no images, fewer
        than two classes in a training folder, a test class unknown to training.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FolderError(f"{root}: not a folder (expected one subfolder per class)")
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    ignored = [p for p in entries if is_hidden(p)]
    loops = [p for p in entries if p.is_dir() and p.is_symlink() and p.resolve() == root]
    ignored += loops  # a class folder that is a link to the folder itself
    visible = [p for p in entries if not is_hidden(p) and p not in loops]
    class_dirs = [p for p in visible if p.is_dir() and not is_image_path(p)]
    loose_files = [
        p for p in visible if (p.is_file() or is_image_path(p)) and p.name != MANIFEST_NAME
    ]
    if not class_dirs:
        raise FolderError(
            f"{root}: no class subfolders found; put the images of each class in their own "
            "subfolder, e.g. {root}/Control/ and {root}/Treated/"
        )
    _refuse_parent_of_class_trees(root, class_dirs)
    found_names = tuple(p.name for p in class_dirs)
    class_map = _resolve_class_map(root, found_names, class_names)
    grouper = _make_grouper(root, group_by)
    samples, non_images = [], [p for p in loose_files]
    for class_dir in class_dirs:
        files, skipped, others = _list_class_files(class_dir, root)
        ignored.extend(skipped)
        non_images.extend(others)
        if not files:
            supported = sorted(IMAGE_EXTENSIONS | BIOIO_EXTENSIONS)
            raise FolderError(
                f"{class_dir}: class folder has no images (supported: "
                f"{', '.join(supported)} files and .ome.zarr folders)"
            )
        label = class_map.index(class_dir.name)
        samples.extend(Sample(path, label, grouper(path)) for path in files)
    samples.sort(key=lambda s: (s.label, str(s.path)))
    missing = tuple(name for name in class_map if name not in found_names)
    return FolderIndex(root, class_map, tuple(samples), tuple(ignored), tuple(non_images), missing)


def _refuse_parent_of_class_trees(root: Path, class_dirs: list[Path]) -> None:
    """``train data/`` instead of ``train data/train``: every "class" folder holds only
    subfolders, and the same subfolder names recur in several of them (Control/, ...)."""
    inner: dict[str, int] = {}
    for class_dir in class_dirs:
        children = [p for p in class_dir.iterdir() if not is_hidden(p)]
        if not children or any(p.is_file() or is_image_path(p) for p in children):
            return
        for name in {p.name for p in children if p.is_dir()}:
            inner[name] = inner.get(name, 0) + 1
    shared = sorted(name for name, count in inner.items() if count > 1)
    if len(class_dirs) > 1 and shared:
        raise FolderError(
            f"{root} looks like the parent of class-folder trees: "
            f"{', '.join(p.name + '/' for p in class_dirs)} each hold class folders "
            f"({', '.join(shared)}); pass one of them, e.g. {class_dirs[0]}"
        )


def _resolve_class_map(
    root: Path, found: tuple[str, ...], class_names: tuple[str, ...] | None
) -> tuple[str, ...]:
    if class_names is None:
        if len(found) < 2:
            raise FolderError(
                f"{root}: only one class folder ({found[0]!r}); a classifier needs at least two"
            )
        return tuple(sorted(found))
    unknown = [name for name in found if name not in class_names]
    if unknown:
        raise FolderError(
            f"{root}: class folder(s) {', '.join(map(repr, unknown))} unknown to training "
            f"(training classes: {', '.join(class_names)}); rename or remove them"
        )
    return tuple(class_names)


def _list_class_files(class_dir: Path, root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Images, ignored entries and non-image files below one class folder (recursive).

    A folder link that leads back into ``root`` (``self -> .``, ``up -> ..``) or to a folder
    already walked is not followed but listed as ignored: it would count images twice or put
    another class's images in this one.
    """
    images, ignored, others = [], [], []
    stack, walked = [class_dir], {class_dir.resolve()}
    while stack:
        folder = stack.pop()
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if is_hidden(path):
                ignored.append(path)
            elif is_image_path(path):
                images.append(path)  # a file, or a folder that is one image (OME-Zarr)
            elif path.is_dir():
                target = path.resolve()
                inside = target == root or root in target.parents
                if target in walked or (path.is_symlink() and inside):
                    ignored.append(path)
                else:
                    walked.add(target)
                    stack.append(path)
            else:
                others.append(path)
    return sorted(images), ignored, others


def _make_grouper(root: Path, group_by: str | None):
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        sources = read_manifest_groups(manifest)
        return lambda path: sources.get(_relative(path, root), _relative(path, root))
    if group_by:
        try:
            pattern = re.compile(group_by)
        except re.error as error:
            raise FolderError(
                f"group_by={group_by!r}: not a valid regular expression ({error})"
            ) from None
        return lambda path: _group_from_name(pattern, path)
    return lambda path: _relative(path, root)


def _group_from_name(pattern: re.Pattern, path: Path) -> str:
    match = pattern.search(path.name)
    if match is None:
        return path.name
    return match.group(1) if match.groups() else match.group(0)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def read_manifest_groups(manifest: Path) -> dict[str, str]:
    """Map each manifest row's ``path`` (relative to the manifest's folder) to its source image."""
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise FolderError(f"{manifest}: not a cellclass manifest (no 'path' column)")
        source_key = "source" if "source" in reader.fieldnames else "path"
        rows = [unescape_row(row) for row in reader]
        return {row["path"]: row[source_key] or row["path"] for row in rows}


def grouped_split(
    groups: list[str], labels: np.ndarray, fraction: float, *, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (train, held-out) keeping every group on one side.

    Groups are shuffled within each class (the class of a group is that of its first sample)
    and assigned to the held-out side until it holds about ``fraction`` of that class, so the
    split is stratified as far as the groups allow.

    Returns
    -------
    train, held_out : (N_train,), (N_held,) int64 sorted sample indices.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    held: list[int] = []
    for label in np.unique(labels):
        class_groups = [g for g, idx in members.items() if labels[idx[0]] == label]
        order = rng.permutation(len(class_groups))
        target = fraction * sum(len(members[g]) for g in class_groups)
        taken, n_taken = 0, 0
        for position in order:
            group = class_groups[position]
            too_many = taken and taken + len(members[group]) > target * 1.5
            if taken >= target or too_many or n_taken == len(class_groups) - 1:
                continue  # enough held out, or this group would leave the class untrained
            held.extend(members[group])
            taken, n_taken = taken + len(members[group]), n_taken + 1
    held_out = np.array(sorted(held), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(groups)), held_out)
    return train, held_out
