"""Inspect a class-folder dataset before training: what is in it, and what could fool a model.

`inspect_dataset` decodes every image once and reports, per class, counts, sizes, dtypes,
effective bit depths (12-bit data in 16-bit files shows as 12), channels and intensity
statistics; hidden, non-image and corrupt files; exact duplicates (equal pixels) and
near-duplicates (a perceptual hash that also matches the image turned by 90, 180 or 270 degrees
or mirrored). Duplicates between the dataset and a test folder are leakage.

The perceptual hash: the image is averaged over channels and resized to 64 x 64; of its 2-D DCT
the 16 x 16 lowest frequencies except the constant term give 255 bits (coefficient above their
median), so brightness and contrast do not matter. All 8 rotations and mirror images of one
image are hashed; two images are near-duplicates when some transform of one differs from the
other in at most ``max_distance`` bits. Distinct microscopy fields differ in about half the bits.
Comparing all 8 (rather than keeping only the smallest of the 8 hashes as a canonical one) keeps
the distance meaningful for noisy copies, whose smallest hash may come from another transform.
The pair search is a matrix product of +-1 bit vectors: about a second per 2000 x 2000 images.

Inside one folder, duplicates of the same source field (its rotated copies, per the manifest or
``--group-by``) are expected and only counted; duplicates across source fields are listed, as
they would end up on both sides of a validation split.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.fft import dctn

from cellclass import results
from cellclass.folders import MANIFEST_NAME, FolderIndex, scan_folder
from cellclass.images import ImageReadError, effective_bit_depth, read_image, resize

__all__ = [
    "DuplicatePair",
    "ClassSummary",
    "FolderReport",
    "InspectSettings",
    "InspectionReport",
    "find_leakage",
    "format_report",
    "inspect_dataset",
    "leakage_message",
    "write_report_json",
]

HASH_SIDE = 64  # thumbnail side the perceptual hash is computed on
HASH_FREQUENCIES = 16  # DCT frequencies kept per axis: 16 * 16 - 1 = 255 bits
TRANSFORMS = (
    "as is",
    "flipped",
    "rot90",
    "rot90+flip",
    "rot180",
    "rot180+flip",
    "rot270",
    "rot270+flip",
)
_PERCENTILE_PIXELS = 65536  # percentiles are estimated on at most this many evenly spaced pixels
_CHUNK = 256  # images compared per block in the pair search
_CHUNK_VALUES = 2**22  # at most this many distances per block (16 MB of float32)
_KIND_WORDS = {"exact": "exact copies", "near": "near-duplicates (also turned or mirrored)",
               "source": "shared source fields"}  # fmt: skip
_DESCRIPTORS = {
    "sizes": "image size",
    "dtypes": "dtype",
    "bit_depths": "bit depth",
    "channels": "channel count",
}


@dataclass(frozen=True)
class InspectSettings:
    """What `inspect_dataset` and `find_leakage` check and how strictly."""

    group_by: str | None = None  # regex on file names giving the source field (no manifest)
    page: int = 0  # page of multi-page TIFFs to read, as in training
    max_distance: int = 32  # near-duplicate: at most this many of the 255 hash bits differ
    confound_effect: float = 1.0  # flag classes whose mean brightness differs by more than this
    # many pooled between-image SDs (a standardized difference: a model can use it alone)


@dataclass(frozen=True)
class ClassSummary:
    """What the images of one class look like."""

    name: str  # class (folder) name
    n_images: int  # readable images
    sizes: dict[str, int]  # "HxW" -> number of images
    dtypes: dict[str, int]  # decoded dtype -> number of images
    bit_depths: dict[int, int]  # effective bit depth -> number of images
    channels: dict[int, int]  # channel count -> number of images
    mean: float  # mean over images of the image's mean pixel value (all channels)
    sd: float  # SD between images of that mean (0 for a single image)
    percentiles: tuple[float, float, float]  # medians over images of the 1st, 50th, 99th pct


@dataclass(frozen=True)
class DuplicatePair:
    """Two files with equal pixels ("exact") or nearly equal perceptual hashes ("near")."""

    first: Path  # in the inspected folder (the training folder for leakage)
    second: Path  # in the same folder, or in the test folder for leakage
    kind: str  # "exact" (equal pixels), "near" (hash within max_distance) or "source" (cut
    # from the same original field, per both folders' manifests; find_leakage only)
    distance: int  # differing hash bits, 0 to 255 (best over the 8 transforms)
    transform: str  # what turns `first` into `second`, e.g. "rot90+flip" (see TRANSFORMS)


@dataclass(frozen=True)
class FolderReport:
    """Everything found in one class-folder tree."""

    root: Path  # the folder
    classes: tuple[ClassSummary, ...]  # in class-map order
    ignored: tuple[Path, ...]  # hidden and phantom entries, skipped
    non_images: tuple[Path, ...]  # files that are not images, skipped
    corrupt: tuple[tuple[Path, str], ...]  # unreadable images and why
    duplicates: tuple[DuplicatePair, ...]  # within the folder, between different source fields
    n_same_source: int  # duplicate pairs within one source field (e.g. its rotations): expected
    warnings: tuple[str, ...]  # possible confounds, one line each


@dataclass(frozen=True)
class InspectionReport:
    """`inspect_dataset`'s result; `against[i]` pairs with `leakage[i]` and `shared_sources[i]`."""

    folder: FolderReport  # the dataset (training folder)
    against: tuple[FolderReport, ...]  # each test folder
    leakage: tuple[tuple[DuplicatePair, ...], ...]  # duplicates between the dataset and it
    shared_sources: tuple[tuple[str, ...], ...]  # manifest source fields found in both


@dataclass(frozen=True)
class _Scan:
    """Decoded facts of every readable image of one folder, aligned with `paths`."""

    index: FolderIndex  # the scanned folder
    paths: list[Path]  # readable images
    labels: np.ndarray  # (N,) int64
    groups: list[str]  # source field of each image
    stats: list[dict]  # size, dtype, bit depth, channels, mean, percentiles of each image
    digests: list[str]  # sha1 of dtype, shape and pixels: equal for exact duplicates
    bits: np.ndarray  # (N, 8, 255) bool perceptual hashes of the 8 dihedral transforms
    corrupt: list[tuple[Path, str]]  # unreadable images and why


# ----------------------------------------------------------------------------- public API


def inspect_dataset(
    root: str | os.PathLike,
    *,
    against: Sequence[str | os.PathLike] = (),
    settings: InspectSettings = InspectSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> InspectionReport:
    """Inspect a training folder and compare it with test folders.

    Parameters
    ----------
    root : folder with one subfolder per class.
    against : test folders (class folders named as in `root`; a subset is fine).
    settings : InspectSettings
    progress : called as ``progress(done, total)`` after every image of a folder.

    Raises
    ------
    FolderError
        A folder is missing, has no class subfolders, has an empty class folder, or (test
        folders) a class unknown to `root`.
    """
    _check_max_distance(settings.max_distance)
    main = _scan(scan_folder(root, group_by=settings.group_by), settings.page, progress)
    folder = _folder_report(main, settings)
    reports, leakage, shared = [], [], []
    for test_root in against:
        classes = main.index.class_names
        index = scan_folder(test_root, class_names=classes, group_by=settings.group_by)
        test = _scan(index, settings.page, progress)
        report = _folder_report(test, settings)
        shift = _shift_warnings(folder.classes, report.classes)
        reports.append(replace(report, warnings=report.warnings + tuple(shift)))
        leakage.append(tuple(_duplicate_pairs(main, test, settings.max_distance)))
        shared.append(tuple(source for source, _ in _source_pairs(main, test)))
    return InspectionReport(folder, tuple(reports), tuple(leakage), tuple(shared))


def find_leakage(
    train_index: FolderIndex,
    test_indexes: Sequence[FolderIndex],
    *,
    max_distance: int = InspectSettings.max_distance,
    page: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicatePair]:
    """Exact and near-duplicate images between a training folder and test folders.

    Parameters
    ----------
    train_index, test_indexes : folders as scanned by `cellclass.folders.scan_folder`.
    max_distance : near-duplicate threshold in hash bits (see the module docstring).
    page : TIFF page to read.
    progress : called as ``progress(done, total)`` while decoding each folder.

    Returns
    -------
    pairs : list of DuplicatePair
        ``first`` in the training folder, ``second`` in a test folder; unreadable files are
        left out (training reports them itself).
    """
    _check_max_distance(max_distance)
    if not test_indexes:
        return []
    train = _scan(train_index, page, progress)
    pairs = []
    for test_index in test_indexes:
        test = _scan(test_index, page, progress)
        pairs += _duplicate_pairs(train, test, max_distance)
        pairs += [pair for _, pair in _source_pairs(train, test)]
    return pairs


def leakage_message(pairs: Sequence[DuplicatePair]) -> str:
    """One line summing up `find_leakage` pairs (not empty), with an example and what to do."""
    kinds = Counter(pair.kind for pair in pairs)
    counts = ", ".join(f"{n} {_KIND_WORDS[kind]}" for kind, n in sorted(kinds.items()))
    example = pairs[0]
    return (
        f"test images leak training data ({counts}), e.g. {example.second} vs {example.first} "
        f"({example.kind}, {example.transform}); list all with `cellclass inspect TRAIN_DIR "
        "--against TEST_DIR` and move or remove them"
    )


def _check_max_distance(max_distance: int) -> None:
    n_bits = HASH_FREQUENCIES**2 - 1
    if not 0 <= max_distance < n_bits:
        raise ValueError(f"--max-distance {max_distance}: give 0 to {n_bits - 1} bits, e.g. 32")


def write_report_json(report: InspectionReport, path: str | os.PathLike) -> Path:
    """Write `report` as JSON (paths as strings) atomically; return the path."""
    path = Path(path)
    results.write_json(path, asdict(report))
    return path


# ----------------------------------------------------------------------------- decoding


def _scan(index: FolderIndex, page: int, progress: Callable[[int, int], None] | None) -> _Scan:
    """Decode every image of `index` once and keep its statistics, digest and hashes."""
    paths, labels, groups, stats, digests, bits, corrupt = [], [], [], [], [], [], []
    for done, sample in enumerate(index.samples, start=1):
        try:
            image = read_image(sample.path, page=page)
        except ImageReadError as error:
            corrupt.append((sample.path, str(error).removeprefix(f"{sample.path}: ")))
        else:
            paths.append(sample.path)
            labels.append(sample.label)
            groups.append(sample.group)
            stats.append(_image_stats(image))
            digests.append(_pixel_digest(image))
            bits.append(_hash_bits(image))
        if progress is not None:
            progress(done, len(index.samples))
    n_bits = HASH_FREQUENCIES**2 - 1
    bits_array = np.array(bits, dtype=bool).reshape(-1, len(TRANSFORMS), n_bits)
    labels_array = np.array(labels, dtype=np.int64)
    return _Scan(index, paths, labels_array, groups, stats, digests, bits_array, corrupt)


def _image_stats(image: np.ndarray) -> dict:
    """Size, dtype, bit depth, channels, mean and 1/50/99th percentiles of (H, W, C) pixels."""
    flat = image.reshape(-1)
    sample = flat[:: max(1, flat.size // _PERCENTILE_PIXELS)].astype(np.float64)
    sample = sample[np.isfinite(sample)] if image.dtype.kind == "f" else sample
    low, median, high = np.percentile(sample, [1, 50, 99]) if sample.size else (np.nan,) * 3
    return {
        "size": f"{image.shape[0]}x{image.shape[1]}",
        "dtype": image.dtype.name,
        "bit_depth": effective_bit_depth(image),
        "channels": image.shape[2],
        "mean": float(np.nanmean(image, dtype=np.float64)),
        "percentiles": (float(low), float(median), float(high)),
    }


def _pixel_digest(image: np.ndarray) -> str:
    digest = hashlib.sha1(f"{image.dtype.str}{image.shape}".encode(), usedforsecurity=False)
    digest.update(memoryview(np.ascontiguousarray(image)).cast("B"))
    return digest.hexdigest()


def _hash_bits(image: np.ndarray) -> np.ndarray:
    """Perceptual hashes of the 8 rotations/mirror images -> (8, 255) bool, TRANSFORMS order."""
    gray = np.nan_to_num(image.astype(np.float32).mean(axis=2, keepdims=True))  # (H, W, 1)
    thumb = resize(gray, HASH_SIDE)[:, :, 0]  # (64, 64) float32
    turns = [np.rot90(thumb, k) for k in range(4)]
    views = np.stack([view for turned in turns for view in (turned, turned[:, ::-1])])
    low = dctn(views, axes=(1, 2), norm="ortho")[:, :HASH_FREQUENCIES, :HASH_FREQUENCIES]
    low = low.reshape(len(TRANSFORMS), -1)[:, 1:]  # (8, 255): no constant term
    return low > np.median(low, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- duplicates


def _duplicate_pairs(a: _Scan, b: _Scan | None, max_distance: int) -> list[DuplicatePair]:
    """Pairs (i in `a`, j in `b`) of exact or near-duplicates; `b` None: pairs i < j in `a`."""
    same = b is None
    b = a if same else b
    if not len(a.paths) or not len(b.paths):
        return []
    n_bits = a.bits.shape[2]
    targets = _signs(b.bits[:, 0]).T  # (255, Nb) +-1: b as is
    size = max(1, min(_CHUNK, _CHUNK_VALUES // (len(TRANSFORMS) * len(b.paths))))
    pairs = []
    for start in range(0, len(a.paths), size):
        chunk = _signs(a.bits[start : start + size])  # (k, 8, 255)
        first = start if same else 0  # within one folder compare each pair once
        agree = chunk.reshape(-1, n_bits) @ targets[:, first:]  # (k * 8, Nb - first)
        distance = (n_bits - agree.reshape(len(chunk), len(TRANSFORMS), -1)) / 2  # (k, 8, M)
        best = distance.min(axis=1)  # (k, M)
        for i, j in zip(*np.nonzero(best <= max_distance), strict=True):
            i_a, j_b = start + int(i), first + int(j)
            if same and j_b <= i_a:
                continue
            exact = a.digests[i_a] == b.digests[j_b]
            transform = "as is" if exact else TRANSFORMS[int(distance[i, :, j].argmin())]
            kind, gap = ("exact" if exact else "near"), int(best[i, j])
            pairs.append(DuplicatePair(a.paths[i_a], b.paths[j_b], kind, gap, transform))
    return pairs


def _signs(bits: np.ndarray) -> np.ndarray:
    """Bits as float32 +1/-1, so that a dot product counts agreements minus disagreements."""
    return np.where(bits, np.float32(1), np.float32(-1))


def _source_pairs(a: _Scan, b: _Scan) -> list[tuple[str, DuplicatePair]]:
    """One (source, pair) per original field that files of both folders descend from.

    Only with a manifest in both folders: its ``source`` paths resolve to the same file.
    """
    if not all((scan.index.root / MANIFEST_NAME).is_file() for scan in (a, b)):
        return []
    first = {}
    for i, group in enumerate(a.groups):
        first.setdefault((a.index.root / group).resolve(), i)
    found = {}
    for j, group in enumerate(b.groups):
        source = (b.index.root / group).resolve()
        if source in first and source not in found:
            i = first[source]
            signs = _signs(a.bits[i]) @ _signs(b.bits[j, 0])  # (8,) agreements - disagreements
            gap = (a.bits.shape[2] - signs) / 2
            transform = TRANSFORMS[int(gap.argmin())]
            found[source] = DuplicatePair(
                a.paths[i], b.paths[j], "source", int(gap.min()), transform
            )
    return sorted((str(source), pair) for source, pair in found.items())


# ----------------------------------------------------------------------------- summaries


def _folder_report(scan: _Scan, settings: InspectSettings) -> FolderReport:
    classes = tuple(
        _class_summary(scan, label, name)
        for label, name in enumerate(scan.index.class_names)
        if (scan.labels == label).any()
    )
    pairs = _duplicate_pairs(scan, None, settings.max_distance)
    group = dict(zip(scan.paths, scan.groups, strict=True))
    across = tuple(pair for pair in pairs if group[pair.first] != group[pair.second])
    warnings = _brightness_warnings(classes, settings.confound_effect)
    warnings += _class_difference_warnings(classes)
    return FolderReport(
        root=scan.index.root,
        classes=classes,
        ignored=scan.index.ignored,
        non_images=scan.index.non_images,
        corrupt=tuple(scan.corrupt),
        duplicates=across,
        n_same_source=len(pairs) - len(across),
        warnings=tuple(warnings),
    )


def _class_summary(scan: _Scan, label: int, name: str) -> ClassSummary:
    stats = [s for s, lab in zip(scan.stats, scan.labels, strict=True) if lab == label]
    means = np.array([s["mean"] for s in stats])
    return ClassSummary(
        name=name,
        n_images=len(stats),
        sizes=dict(Counter(s["size"] for s in stats).most_common()),
        dtypes=dict(Counter(s["dtype"] for s in stats).most_common()),
        bit_depths=dict(Counter(s["bit_depth"] for s in stats).most_common()),
        channels=dict(Counter(s["channels"] for s in stats).most_common()),
        mean=float(means.mean()),
        sd=float(means.std(ddof=1)) if len(means) > 1 else 0.0,
        percentiles=tuple(float(v) for v in np.median([s["percentiles"] for s in stats], axis=0)),
    )


def _brightness_warnings(classes: tuple[ClassSummary, ...], effect: float) -> list[str]:
    """Class pairs whose mean brightness differs by more than `effect` pooled SDs."""
    warnings = []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            pooled = np.sqrt((a.sd**2 + b.sd**2) / 2)
            gap = abs(a.mean - b.mean)
            size = gap / pooled if pooled > 0 else (np.inf if gap > 0 else 0.0)
            if size > effect:
                warnings.append(
                    f"possible brightness confound: mean intensity {a.name} {a.mean:.4g} vs "
                    f"{b.name} {b.mean:.4g} ({size:.1f} SDs apart); a model can tell these classes "
                    "apart by brightness alone - check exposure, or train with --normalize image"
                )
    return warnings


def _class_difference_warnings(classes: tuple[ClassSummary, ...]) -> list[str]:
    """Classes whose most common size, dtype or channel count differ.

    Effective bit depth is left out: within one dtype it follows brightness, which
    `_brightness_warnings` judges against the spread between images.
    """
    warnings = []
    for field in ("sizes", "dtypes", "channels"):
        typical = {summary.name: _typical((summary,), field) for summary in classes}
        if len(set(typical.values())) > 1:
            listed = ", ".join(f"{name} {value}" for name, value in typical.items())
            warnings.append(
                f"classes differ in {_DESCRIPTORS[field]} ({listed}); a model can learn that "
                "instead of biology - make the classes alike"
            )
    return warnings


def _shift_warnings(train: tuple[ClassSummary, ...], test: tuple[ClassSummary, ...]) -> list[str]:
    """Typical size, dtype, bit depth or channel count of a test folder unlike training's."""
    warnings = []
    for field in _DESCRIPTORS:
        expected, found = _typical(train, field), _typical(test, field)
        if expected != found:
            warnings.append(
                f"typical {_DESCRIPTORS[field]} is {found} here but {expected} in the training "
                "folder; the model will see data unlike what it learned from"
            )
    return warnings


def _typical(summaries: tuple[ClassSummary, ...], field: str) -> str:
    """The most common value of `field` ("sizes", "dtypes"...) over `summaries`."""
    counts = Counter()
    for summary in summaries:
        counts.update(getattr(summary, field))
    return str(counts.most_common(1)[0][0]) if counts else "-"


# ----------------------------------------------------------------------------- printing


def format_report(report: InspectionReport, *, max_pairs: int = 10) -> str:
    """The report as text for a terminal; at most `max_pairs` pairs are listed per kind."""
    lines = _folder_lines(report.folder, "dataset", max_pairs)
    for test, pairs, shared in zip(
        report.against, report.leakage, report.shared_sources, strict=True
    ):
        lines += ["", *_folder_lines(test, "test folder", max_pairs)]
        lines += _leakage_lines(report.folder.root, test.root, pairs, shared, max_pairs)
    return "\n".join(lines)


def _folder_lines(folder: FolderReport, title: str, max_pairs: int) -> list[str]:
    n_images = sum(summary.n_images for summary in folder.classes)
    lines = [f"{title} {folder.root}: {len(folder.classes)} classes, {n_images} readable images"]
    lines.append(
        f"  {'class':<16}{'images':>7}  {'size':<11}{'dtype':<9}{'bits':>4}{'ch':>4}"
        f"{'mean':>10}{'sd':>9}  p1 / p50 / p99"
    )
    for c in folder.classes:
        size = _typical((c,), "sizes") + ("+" if len(c.sizes) > 1 else "")
        low, median, high = (f"{v:.4g}" for v in c.percentiles)
        lines.append(
            f"  {c.name:<16}{c.n_images:>7}  {size:<11}{_typical((c,), 'dtypes'):<9}"
            f"{_typical((c,), 'bit_depths'):>4}{_typical((c,), 'channels'):>4}"
            f"{c.mean:>10.4g}{c.sd:>9.3g}  {low} / {median} / {high}"
        )
    lines.append("  (mean, sd: of each image's mean intensity; p1/p50/p99: median per image)")
    lines += _listing("ignored hidden/phantom entries", folder.ignored, folder.root, max_pairs)
    lines += _listing("non-image files", folder.non_images, folder.root, max_pairs)
    corrupt = [f"{_relative(path, folder.root)}: {why}" for path, why in folder.corrupt]
    lines += _listing("corrupt images", corrupt, folder.root, max_pairs)
    exact = sum(pair.kind == "exact" for pair in folder.duplicates)
    near = len(folder.duplicates) - exact
    line = f"  duplicates between different source fields: {exact} exact, {near} near"
    if folder.n_same_source:
        line += f"; {folder.n_same_source} pair(s) within one source field (rotated copies)"
    lines.append(line)
    shown = folder.duplicates[:max_pairs]
    lines += [f"    {_pair_text(pair, folder.root, folder.root)}" for pair in shown]
    lines += _more(len(folder.duplicates), max_pairs)
    return lines + [f"  warning: {text}" for text in folder.warnings]


def _leakage_lines(
    train_root: Path, test_root: Path, pairs, shared: tuple[str, ...], max_pairs: int
) -> list[str]:
    if not pairs and not shared:
        return [f"  no leakage: no test image duplicates a training image of {train_root}"]
    lines = []
    if pairs:
        lines.append(f"  LEAKAGE: {len(pairs)} duplicate pair(s) between {train_root} and here:")
        lines += [f"    {_pair_text(p, train_root, test_root)}" for p in pairs[:max_pairs]]
        lines += _more(len(pairs), max_pairs)
    if shared:
        listed = ", ".join(shared[:max_pairs]) + (" ..." if len(shared) > max_pairs else "")
        lines.append(f"  LEAKAGE: {len(shared)} source field(s) in both manifests: {listed}")
    return lines


def _listing(title: str, items, root: Path, limit: int) -> list[str]:
    if not items:
        return []
    shown = [_relative(item, root) if isinstance(item, Path) else item for item in items[:limit]]
    lines = [f"  {title}: {len(items)}", *(f"    {text}" for text in shown)]
    return lines + _more(len(items), limit)


def _pair_text(pair: DuplicatePair, first_root: Path, second_root: Path) -> str:
    sign = "==" if pair.kind == "exact" else "~"
    detail = "exact" if pair.kind == "exact" else f"near, {pair.distance} bits"
    return (
        f"{_relative(pair.first, first_root)} {sign} {_relative(pair.second, second_root)} "
        f"({detail}, {pair.transform})"
    )


def _more(n_items: int, limit: int) -> list[str]:
    return [f"    ... and {n_items - limit} more (see --json)"] if n_items > limit else []


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
