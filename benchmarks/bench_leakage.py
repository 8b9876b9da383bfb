"""Leakage check (issue 18): does it find real copies, and does it leave look-alikes alone?

Prints, before (perceptual hash alone, the old default of 32 bits) and after (hash within
64 bits, then the pixel check at `MIN_SIMILARITY`):

(a) recall on true duplicates made from real training images: JPEG at quality 75, turned by
    90/180/270 degrees, mirrored, brightness/contrast-shifted, cropped by 3 or 5 % (random
    offset) and resized back, and two combinations; each copy goes into a test folder and
    counts as found when its pair with its own source is reported;
(b) false alarms on real and synthetic data with no planted copies: ELPV (2,624 300 x 300
    electroluminescence images of solar cells, split 75/25 stratified by defect probability
    and cell type, as a user would), non-overlapping 64 x 64 tiles of scikit-image's brick,
    grass and gravel textures (split 75/25 by texture), the demo data
    (`cellclass.synthetic.folders.write_demo`: two train/test pairs of fluorescence fields),
    and from `dataset_suite` (bench_datasets' suite) scikit-image's LFW faces and non-faces
    (25 x 25 crops that all look alike) and the three phenotype families (aggregates, puncta
    density, lobed nuclei). A flagged test image is one with at least one reported pair.

Then a sweep of the similarity threshold (recall over all copies, test images flagged), and
whether ELPV's flagged pairs are look-alikes or repeats (`elpv_twins`: where the two cells sit
in ELPV's order, and whether they share a label more often than chance), what `split_folder`
(``cellclass prepare split``) makes of the same ELPV images, the CPU and the time.

    .venv/bin/python benchmarks/bench_leakage.py           # ~210 s of CPU (2 cores: 3-4 min)
    .venv/bin/python benchmarks/bench_leakage.py --quick   # a quarter of ELPV, fewer copies

Needs the ``bench`` extra (``elpv-dataset``) and scikit-image.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dataset_suite import DATASETS  # benchmarks/, next to this file
from PIL import Image

from cellclass.data.folders import scan_folder
from cellclass.data.images import read_image
from cellclass.inspection import split_folder
from cellclass.inspection.scan import MIN_SIMILARITY, DuplicatePair, duplicate_pairs, scan_images
from cellclass.synthetic.folders import write_demo

OLD_MAX_DISTANCE = 32  # the hash-only default before the pixel check
MAX_DISTANCE = 64  # the candidate threshold with the pixel check
SWEEP = (0.95, 0.97, 0.98, 0.99, 0.993, 0.995)  # similarity thresholds shown in the sweep
TILE = 64  # side of the texture tiles
SUITE = ("faces", "aggregates", "density", "shape")  # clean sets taken from dataset_suite
ELPV_REPEAT = 542  # ELPV positions k and k + 542 hold the same cells (see elpv_twins)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "neon", "asimd")


@dataclass(frozen=True)
class Split:
    """A written dataset: its training folder and test folder(s)."""

    name: str
    train: Path
    tests: tuple[Path, ...]


# ----------------------------------------------------------------------------- datasets


def _save(path: Path, image: np.ndarray, quality: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if quality is None:
        Image.fromarray(image).save(path)
    else:
        Image.fromarray(image).save(path, "JPEG", quality=quality)


def _stratified(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool, True for a test image: 25 % of every stratum, drawn at random."""
    test = np.zeros(len(strata), dtype=bool)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        test[members[: round(len(members) / 4)]] = True
    return test


def write_elpv(root: Path, rng: np.random.Generator, step: int) -> Split:
    """ELPV as class folders by defect probability; files named by their index in ELPV."""
    from elpv_dataset.utils import load_dataset  # the bench extra

    images, probabilities, types = load_dataset()
    keep = np.arange(0, len(images), step)
    classes = np.array([f"p{round(100 * p):03d}" for p in probabilities])
    test = _stratified(np.char.add(classes[keep], types[keep]), rng)
    for index, is_test in zip(keep, test, strict=True):
        folder = root / ("test" if is_test else "train") / classes[index]
        _save(folder / f"cell{index:04d}.png", images[index])
    return Split("ELPV", root / "train", (root / "test",))


def write_textures(root: Path, rng: np.random.Generator) -> Split:
    """Non-overlapping TILE x TILE tiles of brick, grass and gravel; class = texture."""
    import skimage.data  # dev dependency

    names, tiles = [], []
    for name in ("brick", "grass", "gravel"):
        texture = getattr(skimage.data, name)()  # (512, 512) uint8
        for y in range(0, texture.shape[0] - TILE + 1, TILE):
            for x in range(0, texture.shape[1] - TILE + 1, TILE):
                names.append(name)
                tiles.append((f"{name}_{y:03d}_{x:03d}.png", texture[y : y + TILE, x : x + TILE]))
    test = _stratified(np.array(names), rng)
    for name, (file, tile), is_test in zip(names, tiles, test, strict=True):
        _save(root / ("test" if is_test else "train") / name / file, tile)
    return Split("textures", root / "train", (root / "test",))


def write_demo_splits(root: Path) -> list[Split]:
    demo = write_demo(root)
    return [Split(f"demo {name}", d.train, (d.test,)) for name, d in demo.datasets.items()]


def write_suite_splits(root: Path, quick: bool) -> list[Split]:
    """bench_datasets' faces (look-alike real photographs) and its three phenotype families."""
    splits = []
    for name in SUITE:
        folders = DATASETS[name].build(root / name, quick)
        splits.append(Split(name, folders.train, (folders.test,)))
    return splits


# ----------------------------------------------------------------------------- true copies


def _eight_bit(image: np.ndarray) -> np.ndarray:
    """(H, W, C) pixels -> (H, W) uint8 gray, scaled to the image's maximum."""
    gray = image.astype(np.float64).mean(axis=2)
    return np.clip(gray / max(gray.max(), 1e-12) * 255, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.array(Image.open(buffer))


def _crop(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Cut `fraction` of each side length (split at random between the two ends), resize back."""
    height, width = image.shape
    cut_y, cut_x = round(height * fraction), round(width * fraction)
    top, left = rng.integers(0, cut_y + 1), rng.integers(0, cut_x + 1)
    kept = image[top : height - (cut_y - top), left : width - (cut_x - left)]
    return np.array(Image.fromarray(kept).resize((width, height), Image.BILINEAR))


def _levels(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(image.astype(np.float64) * gain + offset, 0, 255).astype(np.uint8)


Copy = Callable[[np.ndarray, np.random.Generator], np.ndarray]
COPIES: dict[str, tuple[Copy, bool]] = {  # name -> (make, save as JPEG)
    "JPEG q75": (lambda x, rng: x, True),
    "rot90": (lambda x, rng: np.rot90(x, 1), False),
    "rot180": (lambda x, rng: np.rot90(x, 2), False),
    "rot270": (lambda x, rng: np.rot90(x, 3), False),
    "mirrored": (lambda x, rng: x[:, ::-1], False),
    "brightness 0.8x+25": (lambda x, rng: _levels(x, 0.8, 25), False),
    "crop 3 %": (lambda x, rng: _crop(x, 0.03, rng), False),
    "crop 5 %": (lambda x, rng: _crop(x, 0.05, rng), False),
    "rot90+mirror+crop3+bright+JPEG": (
        lambda x, rng: _levels(_crop(np.rot90(x)[:, ::-1], 0.03, rng), 0.8, 25),
        True,
    ),
    "rot270+crop5+contrast1.2+JPEG": (
        lambda x, rng: _levels(_crop(np.rot90(x, 3), 0.05, rng), 1.2, -20),
        True,
    ),
}


def write_copies(split: Split, root: Path, n_sources: int, rng: np.random.Generator) -> dict:
    """Copies of `n_sources` random training images -> {copy path: (source path, copy name)}."""
    index = scan_folder(split.train)
    chosen = rng.choice(len(index.samples), min(n_sources, len(index.samples)), replace=False)
    truth = {}
    for k in sorted(chosen):
        sample = index.samples[int(k)]
        source = _eight_bit(read_image(sample.path))
        class_name = sample.path.parent.name
        for number, (name, (make, as_jpeg)) in enumerate(COPIES.items()):
            copy = np.ascontiguousarray(make(source, rng))
            suffix = ".jpg" if as_jpeg else ".png"
            path = root / class_name / f"{sample.path.stem}_copy{number}{suffix}"
            _save(path, copy, quality=75 if as_jpeg else None)
            truth[path] = (sample.path, name)
    return truth


# ----------------------------------------------------------------------------- measuring


def flagged(pairs: list[DuplicatePair], max_distance: int, min_similarity: float) -> list:
    """Pairs kept by a (hash, similarity) rule; exact copies always are."""
    return [
        pair
        for pair in pairs
        if pair.distance <= max_distance
        and (pair.kind == "exact" or pair.similarity >= min_similarity)
    ]


def found_copies(pairs: list[DuplicatePair], truth: dict, max_distance: int, threshold: float):
    """{copy name: (found, total)} for the pairs a rule keeps."""
    kept = {(p.first, p.second) for p in flagged(pairs, max_distance, threshold)}
    counts = {name: [0, 0] for name in COPIES}
    for copy, (source, name) in truth.items():
        counts[name][0] += (source, copy) in kept
        counts[name][1] += 1
    return counts


def candidates(train_root: Path, test_root: Path) -> tuple[list[DuplicatePair], int, float]:
    """All hash candidates within MAX_DISTANCE with their similarity; test images; seconds."""
    train = scan_images(scan_folder(train_root), 0, None)
    classes = train.index.class_names
    test = scan_images(scan_folder(test_root, class_names=classes), 0, None)
    started = time.perf_counter()
    pairs = duplicate_pairs(train, test, MAX_DISTANCE, min_similarity=-1.0)
    return pairs, len(test.paths), time.perf_counter() - started


def cpu_line() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.partition(":")[::2] for line in text.splitlines())
    model = " ".join(fields.get("Model name", "unknown CPU").split())
    flags = set(fields.get("Flags", "").split())
    return f"{model}; flags: {' '.join(f for f in CPU_FLAGS if f in flags) or '-'}"


def _rate(found: int, total: int) -> str:
    return f"{found}/{total} ({100 * found / max(total, 1):.0f} %)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of ELPV, fewer copies")
    parser.add_argument("--seed", type=int, default=0, help="split and copy seed")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_leakage_") as tmp:
        root = Path(tmp)
        splits = [
            write_elpv(root / "elpv", rng, step=4 if args.quick else 1),
            write_textures(root / "textures", rng),
            *write_demo_splits(root / "demo"),
            *write_suite_splits(root / "suite", args.quick),
        ]
        clean, copies = {}, {}
        for split in splits:
            pairs, n_test, seconds = candidates(split.train, split.tests[0])
            clean[split.name] = (pairs, n_test, seconds)
            folder = root / "copies" / split.name.replace(" ", "_")
            truth = write_copies(split, folder, 12 if args.quick else 40, rng)
            copies[split.name] = (candidates(split.train, folder)[0], truth)
        report(clean, copies)
        resplit(splits[0], root / "elpv_resplit")
    print(f"\nCPU: {cpu_line()}")
    print(f"time: {time.perf_counter() - started:.0f} s ({time.process_time():.0f} s of CPU)")


def report(clean: dict, copies: dict) -> None:
    names = list(clean)
    rules = {
        f"hash <= {OLD_MAX_DISTANCE} (before)": (OLD_MAX_DISTANCE, -1.0),
        f"hash <= {MAX_DISTANCE}": (MAX_DISTANCE, -1.0),
        f"hash <= {MAX_DISTANCE} + similarity >= {MIN_SIMILARITY} (after)": (
            MAX_DISTANCE,
            MIN_SIMILARITY,
        ),
    }
    print("(a) recall on true copies of training images (found / made)")
    print(f"  {'copy':<32}" + "".join(f"{name:>16}" for name in names) + "   before -> after")
    totals = {rule: [0, 0] for rule in rules}
    for copy_name in COPIES:
        cells, before, after = [], [0, 0], [0, 0]
        for name in names:
            pairs, truth = copies[name]
            old = found_copies(pairs, truth, *rules[next(iter(rules))])[copy_name]
            new = found_copies(pairs, truth, MAX_DISTANCE, MIN_SIMILARITY)[copy_name]
            cells.append(f"{old[0]:>3}->{new[0]:>3} of {new[1]:<3}")
            before = [before[0] + old[0], before[1] + old[1]]
            after = [after[0] + new[0], after[1] + new[1]]
        print(f"  {copy_name:<32}" + "".join(f"{c:>16}" for c in cells), end="")
        print(f"   {_rate(*before)} -> {_rate(*after)}")
    for rule, (distance, threshold) in rules.items():
        for name in names:
            for found, total in found_copies(*copies[name], distance, threshold).values():
                totals[rule][0] += found
                totals[rule][1] += total
        print(f"  all copies, {rule}: {_rate(*totals[rule])}")

    print("\n(b) false alarms on clean data: test images flagged (pairs)")
    print(f"  {'rule':<48}" + "".join(f"{name:>18}" for name in names))
    for rule, (distance, threshold) in rules.items():
        cells = []
        for name in names:
            pairs, n_test, _ = clean[name]
            kept = flagged(pairs, distance, threshold)
            n_images = len({pair.second for pair in kept})
            cells.append(f"{n_images}/{n_test} ({len(kept)})")
        print(f"  {rule:<48}" + "".join(f"{c:>18}" for c in cells))
    checked = ", ".join(f"{name} {len(clean[name][0])} in {clean[name][2]:.1f} s" for name in names)
    print(f"  pixel checks (hash candidates within {MAX_DISTANCE} bits): {checked}")
    sweep(clean, copies)
    elpv_twins(clean.get("ELPV"))


def sweep(clean: dict, copies: dict) -> None:
    print(f"\nsimilarity threshold sweep (hash <= {MAX_DISTANCE})")
    print(f"  {'threshold':>9}  {'recall, all copies':>20}" + "".join(f"{n:>16}" for n in clean))
    for threshold in SWEEP:
        found = total = 0
        for pairs, truth in copies.values():
            for hit, made in found_copies(pairs, truth, MAX_DISTANCE, threshold).values():
                found, total = found + hit, total + made
        cells = []
        for pairs, n_test, _ in clean.values():
            n_images = len({pair.second for pair in flagged(pairs, MAX_DISTANCE, threshold)})
            cells.append(f"{n_images}/{n_test}")
        mark = "  <- MIN_SIMILARITY" if threshold == MIN_SIMILARITY else ""
        print(
            f"  {threshold:>9}  {_rate(found, total):>20}"
            + "".join(f"{c:>16}" for c in cells)
            + mark
        )


def resplit(split: Split, root: Path) -> None:
    """The same images put back in one tree and split by `split_folder`: still flagged?"""
    for folder in (split.train, *split.tests):
        for path in folder.rglob("*.png"):
            target = root / "all" / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    started = time.perf_counter()
    result = split_folder(root / "all", root / "split")
    seconds = time.perf_counter() - started
    pairs, n_test, _ = candidates(result.train, result.test)
    n_flagged = len({pair.second for pair in flagged(pairs, MAX_DISTANCE, MIN_SIMILARITY)})
    print(
        f"\n{split.name} split again by split_folder (cellclass prepare split, 25 %, "
        f"{seconds:.0f} s): {result.n_twin_pairs} duplicate pairs within the images joined "
        f"{result.n_joined} cells into groups; test images flagged: {n_flagged} of {n_test}"
    )


def elpv_twins(clean) -> None:
    """Are ELPV's flagged pairs look-alikes or the same cell twice? Three facts decide.

    (1) Where the two cells sit in ELPV's order: cells of one module are stored together,
    and a run of cells recurs ELPV_REPEAT places later. (2) Whether both carry one label,
    against the agreement expected by chance: the same training cells paired with the same
    test cells at random (within a cell type), 2,000 shuffles. (3) Which cell types they are:
    a multicrystalline cell's grain pattern is unique to its wafer (and its sister wafers
    cut next to it), so a poly pair that matches to 0.99 is one wafer.
    """
    if clean is None:
        return
    from elpv_dataset.utils import load_dataset  # the bench extra

    _, probabilities, types = load_dataset()
    pairs = sorted(flagged(clean[0], MAX_DISTANCE, MIN_SIMILARITY), key=lambda p: -p.similarity)
    if not pairs:
        return
    first = np.array([int(p.first.stem[4:]) for p in pairs])
    second = np.array([int(p.second.stem[4:]) for p in pairs])
    gaps = np.abs(first - second)
    agree = float(np.mean(probabilities[first] == probabilities[second]))
    rng = np.random.default_rng(0)
    chance = []
    for _ in range(2000):
        shuffled = second.copy()
        for kind in np.unique(types[first]):
            members = np.flatnonzero(types[first] == kind)
            shuffled[members] = rng.permutation(second[members])
        chance.append(np.mean(probabilities[first] == probabilities[shuffled]))
    p_value = (np.sum(np.array(chance) >= agree) + 1) / (len(chance) + 1)
    two_labels = int(np.sum(probabilities[first] != probabilities[second]))
    names, counts = np.unique(types[first], return_counts=True)
    kinds = ", ".join(f"{n} {kind}" for kind, n in zip(names, counts, strict=True))
    elsewhere = int(np.sum((gaps > 3) & (gaps != ELPV_REPEAT)))
    print(
        f"\nELPV pairs kept: {len(pairs)} ({kinds}); in ELPV's order {np.sum(gaps <= 3)} are "
        f"1-3 apart (neighbours in a module), {np.sum(gaps == ELPV_REPEAT)} exactly "
        f"{ELPV_REPEAT} apart (a run of cells that recurs there), {elsewhere} "
        f"elsewhere.\n  same label (defect probability) in {agree:.0%} of pairs; by chance "
        f"{np.mean(chance):.0%} (p = {p_value:.4f}, 2,000 shuffles). Pairs with two labels: "
        f"{two_labels}. "
        "The most similar:"
    )
    for pair, gap in list(zip(pairs, gaps, strict=True))[:8]:
        print(
            f"  {pair.first.stem} ~ {pair.second.stem}: similarity {pair.similarity:.4f}, "
            f"{pair.distance} bits, {pair.transform}, {gap} apart"
        )


if __name__ == "__main__":
    main()
