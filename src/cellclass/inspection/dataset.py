"""Inspect a class-folder dataset before training: what is in it, and what could fool a model.

`inspect_dataset` decodes every image once and reports, per class, counts, sizes, dtypes,
effective bit depths (12-bit data in 16-bit files shows as 12), channels and intensity
statistics; hidden, non-image and corrupt files; exact duplicates (equal pixels) and
near-duplicates (a perceptual hash that also matches the image turned by 90, 180 or 270 degrees
or mirrored, confirmed pixel by pixel: re-encoded, brightness-shifted or slightly cropped copies
correlate at 0.99 or more). Duplicates between the dataset and a test folder are leakage.

The hash, the pixel check and their measured error rates are in `cellclass.inspection.scan`.

Inside one folder, duplicates of the same source field (its rotated copies, per the manifest or
``--group-by``) are expected and only counted; duplicates across source fields are listed, as
they would end up on both sides of a validation split.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from cellclass import results
from cellclass.choices import CONFOUND_EFFECT, MAX_DISTANCE
from cellclass.data.folders import FolderIndex, scan_folder
from cellclass.inspection.scan import (
    HASH_FREQUENCIES,
    MIN_SIMILARITY,
    DuplicatePair,
    ScanResult,
    duplicate_pairs,
    scan_images,
    source_pairs,
)

__all__ = [
    "CONFOUND_EFFECT",
    "ClassSummary",
    "FolderReport",
    "InspectSettings",
    "InspectionReport",
    "brightness_confounds",
    "find_leakage",
    "format_report",
    "inspect_dataset",
    "leakage_message",
    "write_report_json",
]

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
    max_distance: int = MAX_DISTANCE  # near-duplicate candidate: at most this many hash bits differ
    min_similarity: float = MIN_SIMILARITY  # near-duplicate: a candidate whose aligned pixels
    # correlate at least this much (-1: the hash alone decides)
    confound_effect: float = CONFOUND_EFFECT  # flag classes whose mean brightness differs by
    # more than this many pooled between-image SDs (a model can use that difference alone)


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
    _check_thresholds(settings.max_distance, settings.min_similarity)
    main = scan_images(scan_folder(root, group_by=settings.group_by), settings.page, progress)
    folder = _folder_report(main, settings)
    reports, leakage, shared = [], [], []
    for test_root in against:
        classes = main.index.class_names
        index = scan_folder(test_root, class_names=classes, group_by=settings.group_by)
        test = scan_images(index, settings.page, progress)
        report = _folder_report(test, settings)
        shift = _shift_warnings(folder.classes, report.classes)
        reports.append(replace(report, warnings=report.warnings + tuple(shift)))
        pairs = duplicate_pairs(main, test, settings.max_distance, settings.min_similarity)
        leakage.append(tuple(pairs))
        shared.append(tuple(source for source, _ in source_pairs(main, test)))
    return InspectionReport(folder, tuple(reports), tuple(leakage), tuple(shared))


def find_leakage(
    train_index: FolderIndex,
    test_indexes: Sequence[FolderIndex],
    *,
    max_distance: int = InspectSettings.max_distance,
    min_similarity: float = InspectSettings.min_similarity,
    page: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[DuplicatePair]:
    """Exact and near-duplicate images between a training folder and test folders.

    Parameters
    ----------
    train_index, test_indexes : folders as scanned by `cellclass.data.folders.scan_folder`.
    max_distance : near-duplicate candidate threshold in hash bits (see `inspection.scan`).
    min_similarity : near-duplicate threshold on the correlation of the aligned thumbnails.
    page : TIFF page to read.
    progress : called as ``progress(done, total)`` while decoding each folder.

    Returns
    -------
    pairs : list of DuplicatePair
        ``first`` in the training folder, ``second`` in a test folder; unreadable files are
        left out (training reports them itself).
    """
    _check_thresholds(max_distance, min_similarity)
    if not test_indexes:
        return []
    train = scan_images(train_index, page, progress)
    pairs = []
    for test_index in test_indexes:
        test = scan_images(test_index, page, progress)
        pairs += duplicate_pairs(train, test, max_distance, min_similarity)
        pairs += [pair for _, pair in source_pairs(train, test)]
    return pairs


def leakage_message(pairs: Sequence[DuplicatePair]) -> str:
    """One line summing up `find_leakage` pairs (not empty), with an example and what to do."""
    kinds = Counter(pair.kind for pair in pairs)
    counts = ", ".join(f"{n} {_KIND_WORDS[kind]}" for kind, n in sorted(kinds.items()))
    crossed = sum(not pair.same_class for pair in pairs)
    if crossed:
        counts += f"; {crossed} of them in folders of different classes: check those labels"
    example = pairs[0]
    return (
        f"test images leak training data ({counts}), e.g. {example.second} vs {example.first} "
        f"({_pair_detail(example)}); list all with inspect_dataset(TRAIN_DIR, "
        "against=TEST_DIR) and move or remove them, or split again with split_folder (keeps "
        "duplicates on one side)"
    )


def _check_thresholds(max_distance: int, min_similarity: float) -> None:
    n_bits = HASH_FREQUENCIES**2 - 1
    if not 0 <= max_distance < n_bits:
        raise ValueError(f"max_distance={max_distance}: give 0 to {n_bits - 1} bits, e.g. 64")
    if not -1 <= min_similarity <= 1:
        raise ValueError(
            f"min_similarity={min_similarity}: give a correlation from -1 to 1, e.g. "
            f"{MIN_SIMILARITY}"
        )


def write_report_json(report: InspectionReport, path: str | os.PathLike) -> Path:
    """Write `report` as JSON (paths as strings) atomically; return the path."""
    path = Path(path)
    results.write_json(path, asdict(report))
    return path


# ----------------------------------------------------------------------------- summaries


def _folder_report(scan: ScanResult, settings: InspectSettings) -> FolderReport:
    classes = tuple(
        _class_summary(scan, label, name)
        for label, name in enumerate(scan.index.class_names)
        if (scan.labels == label).any()
    )
    pairs = duplicate_pairs(scan, None, settings.max_distance, settings.min_similarity)
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


def _class_summary(scan: ScanResult, label: int, name: str) -> ClassSummary:
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


CONFOUND_MIN_GAP = 0.10  # ... and a gap above this share of the brighter class's mean


def _brightness_warnings(classes: tuple[ClassSummary, ...], effect: float) -> list[str]:
    """Class pairs whose mean brightness differs by more than `effect` pooled SDs."""
    return brightness_confounds([(c.name, c.mean, c.sd) for c in classes], effect)


def brightness_confounds(
    classes: Sequence[tuple[str, float, float]], effect: float = CONFOUND_EFFECT
) -> list[str]:
    """One line per pair of classes whose images differ in mean brightness by more than
    ``effect`` pooled between-image SDs, and by more than `CONFOUND_MIN_GAP` of the brighter
    mean (images that hardly vary would otherwise flag a trivial difference): a model can tell
    them apart by brightness alone.

    ``classes``: (name, mean over images of the image's mean pixel value, SD of that mean
    between images) per class.
    """
    warnings = []
    for i, (name_a, mean_a, sd_a) in enumerate(classes):
        for name_b, mean_b, sd_b in classes[i + 1 :]:
            pooled = np.sqrt((sd_a**2 + sd_b**2) / 2)
            gap = abs(mean_a - mean_b)
            size = gap / pooled if pooled > 0 else (np.inf if gap > 0 else 0.0)
            relative = gap / max(abs(mean_a), abs(mean_b)) if gap else 0.0
            if size > effect and relative > CONFOUND_MIN_GAP:
                warnings.append(
                    f"possible brightness confound: mean intensity {name_a} {mean_a:.4g} vs "
                    f"{name_b} {mean_b:.4g} ({size:.1f} SDs apart); a model can tell these "
                    "classes apart by brightness alone - check that both were imaged alike "
                    "(exposure, session), or use a model that standardises each image"
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
    return (
        f"{_relative(pair.first, first_root)} {sign} {_relative(pair.second, second_root)} "
        f"({_pair_detail(pair)})"
    )


def _pair_detail(pair: DuplicatePair) -> str:
    """How a pair is described: "exact", or e.g. "near, similarity 0.993, 12 bits, rot90+flip"."""
    labels = "" if pair.same_class else ", different classes"
    if pair.kind == "exact":
        return f"exact{labels}"
    detail = f"{pair.kind}, similarity {pair.similarity:.3f}, {pair.distance} bits"
    return f"{detail}, {pair.transform}{labels}"


def _more(n_items: int, limit: int) -> list[str]:
    return (
        [f"    ... and {n_items - limit} more (all are in the JSON report)"]
        if n_items > limit
        else []
    )


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
