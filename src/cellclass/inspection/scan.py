"""Decode a class folder once and find its duplicate images (`inspection.dataset` uses it).

Each readable image gets its statistics, a digest of its pixels (equal for exact duplicates),
perceptual hashes and a small thumbnail. Near-duplicates are found in two steps.

1. Perceptual hash (candidates). The image is averaged over channels and resized to 64 x 64;
   of its 2-D DCT the 16 x 16 lowest frequencies except the constant term give 255 bits
   (coefficient above their median), so brightness and contrast do not matter. All 8 rotations
   and mirror images of one image are hashed; a pair is a candidate when some transform of one
   differs from the other in at most ``max_distance`` bits. Comparing all 8 (rather than keeping
   only the smallest of the 8 hashes as a canonical one) keeps the distance meaningful for noisy
   copies. The pair search is a matrix product of +-1 bit vectors: about a second per
   2000 x 2000 images.
2. Pixel check (confirmation). Look-alike objects (solar cells of one design, fields of one
   kind of cell) share their coarse layout, and with it most hash bits: the hash alone called a
   quarter of the distinct solar cells below copies of others. So each candidate is compared
   pixel by pixel, on thumbnails kept from the scan: the same 64 x 64 gray image, blurred by
   1 pixel (a sub-pixel offset then costs little) and standardised to zero mean and unit SD
   (8 KB of float16 per image). The centre (56 x 56) of the second image's thumbnail is
   correlated with the first's turned or mirrored in each of the 8 ways and shifted by up to
   4 pixels each way (by FFT; a parabola through the peak refines it between pixels), then,
   for the best transform, magnified by 0.95 to 1.05 (a crop of a few per cent, resized back).
   The best normalised cross-correlation is the pair's ``similarity``, -1 to 1; a candidate is
   "near" when it reaches ``min_similarity`` (`MIN_SIMILARITY`, 0.99). A thumbnail without
   contrast matches nothing but its exact copy (equal pixels).

Measured with ``python benchmarks/bench_leakage.py`` (AMD EPYC, AVX-512, 2 cores: 203 s):
40 training images of each of eight datasets (ELPV solar cells, 64 x 64 tiles of
scikit-image's brick, grass and gravel, the two demo datasets, scikit-image's 25 x 25 LFW
faces and non-faces, three synthetic phenotype families) copied in 10 ways each, and the clean
test folders of the same datasets::

    copies found (of 320 per kind)             hash <= 32 (before)  hash <= 64 + similarity
    rot90/180/270, mirrored, brightness            320 each             320 each
      0.8 x + 25; JPEG q75                          317                  320
    cropped 3 %, resized back                        72                  285
    cropped 5 %, resized back                         6                  170
    rot90+mirror, crop 3 %, brightness, JPEG         73                  271
    rot270, crop 5 %, contrast 1.2 (clips), JPEG      6                  125
    all 3,200 copies                              2074 (65 %)          2771 (87 %)
    clean test images flagged
    ELPV, split 75/25 stratified                  171 of 654            51 of 654
    LFW faces / non-faces                         0 of 50               1 of 50
    textures, demo (2), phenotype families (3)    0 of 508              0 of 508

The threshold is from the sweep (copies found of 3,200; ELPV test images flagged): 0.95:
2798, 277; 0.98: 2787, 138; 0.99: 2771, 51; 0.995: 2683, 8. At 0.99 the check keeps 99 % of
the copies the hash proposes (2771 of 2807); above it cropped copies start to go. What limits
recall is the hash: a crop of 5 % changes more than 64 of the 255 bits in about half the copies
(8008 ELPV candidates within 64 bits were checked in 10 s).

ELPV's 74 remaining pairs are not look-alikes but the same cells twice: 55 are neighbours in
ELPV's order (1-3 apart: cells of one module, stored together) and 10 exactly 542 apart (a run
of cells that recurs there); 30 are multicrystalline cells, whose grain pattern is unique to a
wafer and its sister wafers yet matches to the pixel; and the two cells share their defect
label in 88 % of pairs against 66 % for the same cells paired at random (p < 0.001). A random
split of ELPV leaks; `cellclass.inspection.splitting.split_folder` keeps such pairs on one
side (on ELPV: 0 of 658 test images flagged, 56 s).
The one non-face pair is two featureless background crops whose only structure is a dark edge
along one side, one 5 times brighter than the other: by its pixels, a copy at another
exposure, and the check (blind to brightness and contrast by design) cannot say otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.fft import dctn, irfft2, rfft2

from cellclass.choices import MIN_SIMILARITY  # the threshold measured above
from cellclass.data.folders import MANIFEST_NAME, FolderIndex
from cellclass.data.images import ImageReadError, effective_bit_depth, read_image, resize

HASH_SIDE = 64  # thumbnail side the perceptual hash and the pixel check are computed on
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
_BLUR = 1.0  # SD of the thumbnail blur before the pixel check, thumbnail pixels
_SHIFT = 4  # the pixel check tries offsets of up to this many thumbnail pixels per axis
_SCALES = (0.95, 0.975, 1.025, 1.05)  # magnifications tried besides 1: crops of up to ~5 %
_FLAT = 1e-5  # a thumbnail whose SD is below this fraction of its mean level has no contrast
_PAIRS = 128  # candidate pairs compared per block in the pixel check (tens of MB)


@dataclass(frozen=True)
class DuplicatePair:
    """Two files with equal pixels ("exact") or nearly equal hashes and pixels ("near")."""

    first: Path  # in the inspected folder (the training folder for leakage)
    second: Path  # in the same folder, or in the test folder for leakage
    kind: str  # "exact" (equal pixels), "near" (hash within max_distance and similarity at
    # least min_similarity) or "source" (cut from the same original field, per both folders'
    # manifests; find_leakage only)
    distance: int  # differing hash bits, 0 to 255 (best over the 8 transforms)
    transform: str  # what turns `first` into `second`, e.g. "rot90+flip" (see TRANSFORMS)
    similarity: float  # correlation of the aligned thumbnails, -1 to 1 (1.0 for "exact")
    same_class: bool = True  # both files sit in folders of one class name (else: one image,
    # two labels)


@dataclass(frozen=True)
class ScanResult:
    """Decoded facts of every readable image of one folder, aligned with `paths`."""

    index: FolderIndex  # the scanned folder
    paths: list[Path]  # readable images
    labels: np.ndarray  # (N,) int64
    groups: list[str]  # source field of each image
    stats: list[dict]  # size, dtype, bit depth, channels, mean, percentiles of each image
    digests: list[str]  # sha1 of dtype, shape and pixels: equal for exact duplicates
    bits: np.ndarray  # (N, 8, 255) bool perceptual hashes of the 8 dihedral transforms
    thumbs: np.ndarray  # (N, 64, 64) float16 blurred, standardised thumbnails (pixel check)
    corrupt: list[tuple[Path, str]]  # unreadable images and why


def scan_images(
    index: FolderIndex, page: int, progress: Callable[[int, int], None] | None
) -> ScanResult:
    """Decode every image of `index` once and keep its statistics, digest, hashes, thumbnail."""
    paths, labels, groups, stats, digests, bits, thumbs, corrupt = [], [], [], [], [], [], [], []
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
            thumb = _thumbnail(image)
            bits.append(_hash_bits(thumb))
            thumbs.append(_check_thumbnail(thumb))
        if progress is not None:
            progress(done, len(index.samples))
    n_bits = HASH_FREQUENCIES**2 - 1
    bits_array = np.array(bits, dtype=bool).reshape(-1, len(TRANSFORMS), n_bits)
    thumbs_array = np.array(thumbs, dtype=np.float16).reshape(-1, HASH_SIDE, HASH_SIDE)
    labels_array = np.array(labels, dtype=np.int64)
    return ScanResult(
        index, paths, labels_array, groups, stats, digests, bits_array, thumbs_array, corrupt
    )


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


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """(H, W, C) pixels averaged over channels and resized -> (64, 64) float32."""
    gray = np.nan_to_num(image.astype(np.float32).mean(axis=2, keepdims=True))  # (H, W, 1)
    return resize(gray, HASH_SIDE)[:, :, 0]


def _dihedral(images: np.ndarray) -> np.ndarray:
    """The 8 rotations/mirror images of (..., T, T) images -> (..., 8, T, T), TRANSFORMS order."""
    turns = [np.rot90(images, k, axes=(-2, -1)) for k in range(4)]
    return np.stack([view for turned in turns for view in (turned, turned[..., ::-1])], axis=-3)


# own DCT hash: one batched dctn over the 8 dihedral views; imagehash hashes one PIL image each
def _hash_bits(thumb: np.ndarray) -> np.ndarray:
    """Perceptual hashes of a (64, 64) thumbnail's 8 transforms -> (8, 255) bool."""
    low = dctn(_dihedral(thumb), axes=(1, 2), norm="ortho")[:, :HASH_FREQUENCIES, :HASH_FREQUENCIES]
    low = low.reshape(len(TRANSFORMS), -1)[:, 1:]  # (8, 255): no constant term
    return low > np.median(low, axis=1, keepdims=True)


def _check_thumbnail(thumb: np.ndarray) -> np.ndarray:
    """(64, 64) float32 thumbnail -> blurred, zero mean, unit SD float16; zeros if flat."""
    blurred = ndimage.gaussian_filter(thumb, _BLUR, mode="nearest")
    level = float(np.abs(blurred).mean())
    centred = blurred - blurred.mean()
    sd = float(centred.std())
    if not sd > _FLAT * max(level, 1.0):
        return np.zeros_like(thumb, dtype=np.float16)
    return (centred / sd).astype(np.float16)


def duplicate_pairs(
    a: ScanResult, b: ScanResult | None, max_distance: int, min_similarity: float = MIN_SIMILARITY
) -> list[DuplicatePair]:
    """Pairs (i in `a`, j in `b`) of exact or near-duplicates; `b` None: pairs i < j in `a`.

    Candidates are pairs whose hashes differ in at most `max_distance` bits (for some transform);
    of those, equal pixels make an "exact" pair and a similarity of at least `min_similarity`
    a "near" one (-1 keeps every candidate: the hash alone).
    """
    b_or_a = a if b is None else b
    candidates = _hash_candidates(a, b, max_distance)
    near = [(i, j) for i, j, _ in candidates if a.digests[i] != b_or_a.digests[j]]
    similarity, transform = pair_similarities(a, b_or_a, near)
    found = zip(near, similarity, transform, strict=True)
    checked = {pair: (float(value), int(turn)) for pair, value, turn in found}
    pairs = []
    for i, j, bits in candidates:
        first, second = a.paths[i], b_or_a.paths[j]
        same = _class_name(a, i) == _class_name(b_or_a, j)
        if (i, j) not in checked:
            pairs.append(DuplicatePair(first, second, "exact", bits, "as is", 1.0, same))
        elif checked[i, j][0] >= min_similarity:
            value, turn = checked[i, j]
            pair = DuplicatePair(first, second, "near", bits, TRANSFORMS[turn], value, same)
            pairs.append(pair)
    return pairs


def _class_name(scan: ScanResult, i: int) -> str:
    return scan.index.class_names[int(scan.labels[i])]


def _hash_candidates(
    a: ScanResult, b: ScanResult | None, max_distance: int
) -> list[tuple[int, int, int]]:
    """(i in `a`, j in `b`, differing bits) of pairs within `max_distance`; `b` None: i < j."""
    same = b is None
    b = a if same else b
    if not len(a.paths) or not len(b.paths):
        return []
    n_bits = a.bits.shape[2]
    targets = _signs(b.bits[:, 0]).T  # (255, Nb) +-1: b as is
    size = max(1, min(_CHUNK, _CHUNK_VALUES // (len(TRANSFORMS) * len(b.paths))))
    candidates = []
    for start in range(0, len(a.paths), size):
        chunk = _signs(a.bits[start : start + size])  # (k, 8, 255)
        first = start if same else 0  # within one folder compare each pair once
        agree = chunk.reshape(-1, n_bits) @ targets[:, first:]  # (k * 8, Nb - first)
        distance = (n_bits - agree.reshape(len(chunk), len(TRANSFORMS), -1)) / 2  # (k, 8, M)
        best = distance.min(axis=1)  # (k, M)
        for i, j in zip(*np.nonzero(best <= max_distance), strict=True):
            i_a, j_b = start + int(i), first + int(j)
            if not same or j_b > i_a:
                candidates.append((i_a, j_b, int(best[i, j])))
    return candidates


def _signs(bits: np.ndarray) -> np.ndarray:
    """Bits as float32 +1/-1, so that a dot product counts agreements minus disagreements."""
    return np.where(bits, np.float32(1), np.float32(-1))


def pair_similarities(
    a: ScanResult, b: ScanResult, pairs: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel check of image pairs (i in `a`, j in `b`), see the module docstring.

    Returns
    -------
    similarity : (P,) float32, -1 to 1
        Best correlation of j's thumbnail centre with i's, turned, shifted and magnified.
    transform : (P,) int64
        Index into TRANSFORMS of what turns i into j.
    """
    similarity = np.zeros(len(pairs), dtype=np.float32)
    transform = np.zeros(len(pairs), dtype=np.int64)
    for start in range(0, len(pairs), _PAIRS):
        block = np.array(pairs[start : start + _PAIRS], dtype=np.int64)  # (P, 2)
        found = _similarities(a.thumbs[block[:, 0]], b.thumbs[block[:, 1]])
        similarity[start : start + len(block)], transform[start : start + len(block)] = found
    return similarity, transform


def _similarities(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, T, T) thumbnails -> (P,) best correlations and (P,) TRANSFORMS indices."""
    first, second = first.astype(np.float32), second.astype(np.float32)
    side = first.shape[-1]
    size = side - 2 * _SHIFT
    centre = _standardized(second[:, _SHIFT : side - _SHIFT, _SHIFT : side - _SHIFT])
    # a window of a turned image is the turned window of the image: its moments turn along
    moments = [_dihedral(moment) for moment in _window_moments(first, size)]  # (P, 8, n, n)
    turned = _shift_correlation(_dihedral(first), centre, *moments)  # (P, 8)
    best = turned.argmax(axis=1)
    chosen = _dihedral(first)[np.arange(len(first)), best]  # (P, T, T)
    zoomed = np.stack([_magnified(chosen, scale) for scale in _SCALES], axis=1)  # (P, 4, T, T)
    scaled = _shift_correlation(zoomed, centre, *_window_moments(zoomed, size)).max(axis=1)
    return np.maximum(turned.max(axis=1), scaled), best


def _standardized(images: np.ndarray) -> np.ndarray:
    """(P, H, W) float32 -> zero mean and unit SD each; images without contrast -> zeros."""
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    sd = centred.std(axis=(1, 2), keepdims=True)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 1e-3)


def _window_moments(images: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of every size x size window of (..., T, T) images -> 2 x (..., n, n).

    n = T - size + 1 offsets per axis; cumulative sums down the columns, then along the rows.
    """
    moments = []
    for values in (images, images * images):
        total = np.cumsum(values, axis=-2)
        columns = total[..., size - 1 :, :].copy()  # (..., n, T) sums of `size` rows
        columns[..., 1:, :] -= total[..., :-size, :]
        total = np.cumsum(columns, axis=-1)
        sums = total[..., size - 1 :].copy()  # (..., n, n)
        sums[..., 1:] -= total[..., :-size]
        moments.append(sums / size**2)
    mean, squares = moments
    return mean, squares - mean**2


def _shift_correlation(
    views: np.ndarray, centre: np.ndarray, mean: np.ndarray, variance: np.ndarray
) -> np.ndarray:
    """Best correlation of `centre` with the windows of `views` it fits in -> (P, K) float32.

    views : (P, K, T, T) float32; centre : (P, s, s) float32 of zero mean and unit SD, s <= T;
    mean, variance : (P, K, n, n) of the windows (`_window_moments`), n = T - s + 1.
    Every offset of up to T - s pixels per axis is tried (by FFT), then refined between pixels.
    """
    side, size = views.shape[-1], centre.shape[-1]
    n = side - size + 1
    spectrum = rfft2(views) * np.conj(rfft2(centre, s=(side, side)))[:, None]
    products = irfft2(spectrum, s=(side, side))[..., :n, :n]  # (P, K, n, n) sum window * centre
    # the centre has zero mean, so the window's mean drops out of the covariance
    correlation = products / size**2 / np.sqrt(np.maximum(variance, 1e-6))
    return _refined_peak(correlation).astype(np.float32)


def _refined_peak(surface: np.ndarray) -> np.ndarray:
    """Maximum of (..., n, n) surfaces, refined between pixels -> (...).

    Along each axis a parabola through the peak and its two neighbours gives the value at its
    vertex (at most half a pixel away): copies are rarely a whole number of pixels apart.
    """
    n = surface.shape[-1]
    grid = surface.reshape(-1, n, n)
    k = np.arange(len(grid))
    rows, cols = np.divmod(grid.reshape(len(grid), -1).argmax(axis=1), n)
    peak = grid[k, rows, cols]
    refined = peak.copy()
    for at, before, after in (
        (rows, grid[k, np.maximum(rows - 1, 0), cols], grid[k, np.minimum(rows + 1, n - 1), cols]),
        (cols, grid[k, rows, np.maximum(cols - 1, 0)], grid[k, rows, np.minimum(cols + 1, n - 1)]),
    ):
        curvature = before - 2 * peak + after  # < 0 at a strict maximum
        inside = (at > 0) & (at < n - 1) & (curvature < 0)
        gain = -(((after - before) / 2) ** 2) / (2 * np.where(inside, curvature, -1.0))
        refined += np.where(inside, gain, 0.0)
    return np.minimum(refined, 1.0).reshape(surface.shape[:-2])


def _magnified(images: np.ndarray, scale: float) -> np.ndarray:
    """(P, T, T) images magnified `scale` times about their centre (bilinear, edges repeat)."""
    side = images.shape[-1]
    middle = (side - 1) / 2
    where = np.clip((np.arange(side) - middle) / scale + middle, 0, side - 1)
    low = np.minimum(where.astype(np.int64), side - 2)
    weight = (where - low).astype(np.float32)
    rows = images[:, low] * (1 - weight)[:, None] + images[:, low + 1] * weight[:, None]
    return rows[:, :, low] * (1 - weight) + rows[:, :, low + 1] * weight


def source_pairs(a: ScanResult, b: ScanResult) -> list[tuple[str, DuplicatePair]]:
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
        if source in first:
            found.setdefault(source, (first[source], j))
    sources = sorted(found, key=str)
    pairs = [found[source] for source in sources]
    similarity, transform = pair_similarities(a, b, pairs)
    listed = []
    for source, (i, j), value, turn in zip(sources, pairs, similarity, transform, strict=True):
        signs = _signs(a.bits[i]) @ _signs(b.bits[j, 0])  # (8,) agreements - disagreements
        gap = int((a.bits.shape[2] - signs.max()) / 2)
        same = _class_name(a, i) == _class_name(b, j)
        pair = DuplicatePair(
            a.paths[i], b.paths[j], "source", gap, TRANSFORMS[turn], float(value), same
        )
        listed.append((str(source), pair))
    return listed
