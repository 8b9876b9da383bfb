"""Synthetic phenotype families for benchmarks, drawn by generators unrelated to the demo's.

The recipes were tuned on the demo data (`cellclass.synthetic.folders`); a recipe that is
really better must also win on data it was not tuned on. Each family here is a two-class
problem, Control vs a phenotype, with cells drawn its own way:

- ``aggregates``: cells filled with a diffuse cytoplasmic signal; in the phenotype a share of
  each cell's signal (``effect`` on average, per cell anywhere from 0 to twice that) collapses
  into a few bright clumps. A cell's total light is unchanged; Control cells clump a little too.
- ``density``: puncta in the cytoplasm; in the phenotype their number per unit of cytoplasm
  is ``1 + effect`` times Control's (0.5: +50 %). Cell load varies between cells and fields.
- ``shape``: stained nuclei, a tenth of them lobed in Control; in the phenotype a further
  ``effect`` share of the nuclei is lobed (three to five deep lobes).

Whatever its class, every field varies in exposure (a log-normal factor), uneven illumination,
the number, size and brightness of its cells, so that no one intensity statistic separates the
classes; ``effect=0`` makes the phenotype a draw of Control's distribution. The defaults leave
a good model clearly between chance and 100 % (see `FAMILIES`).

Light is drawn in photoelectrons and seen through a 12-bit camera (bias, gain, shot and read
noise); `write_family` writes 16-bit TIFFs holding the 12-bit values as
``root/{train,test}/<class>/<class>_<NNNN>.tif``. Cells keep their size in pixels: a larger
field shows more cells.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from cellclass._files import atomic_path, atomic_write_text
from cellclass.synthetic.rendering import MAX_VALUE

__all__ = [
    "FAMILIES",
    "Family",
    "PhenotypeData",
    "draw_field",
    "write_aggregates",
    "write_density",
    "write_family",
    "write_shape",
]

Light = Callable[[tuple[int, int], float, np.random.Generator], np.ndarray]
MIN_SIZE = 16  # smallest field side, pixels

# camera and field, shared by every family (light in photoelectrons, counts in ADU)
_CAMERA_OFFSET = 100.0  # camera bias, ADU
_ADU_PER_ELECTRON = 1.5  # camera gain
_READ_NOISE = 3.0  # Gaussian read noise, ADU
_EXPOSURE_SPREAD = 0.4  # log-sd of the per-field exposure: swamps brightness cues
_TILT = 0.4  # largest illumination change across the field, fraction
_BACKGROUND = 30.0  # autofluorescence outside cells
_SPOT_SIGMA = 1.4  # Gaussian sigma of the point spread function, pixels
_PUNCTUM_SIGMA = 1.8  # Gaussian sigma of a punctum (density family): still a spot at half size


@dataclass(frozen=True)
class Family:
    """One phenotype family: its two classes and how a field of either is drawn."""

    name: str  # the family's (and dataset's) name, a key of FAMILIES
    classes: tuple[str, str]  # (Control, phenotype) class folder names
    description: str  # what the phenotype changes, one line for people
    effect: float  # default effect size: see the module notes for its meaning
    light: Light  # (shape, effect, rng) -> (H, W) float64 photoelectrons


@dataclass(frozen=True)
class PhenotypeData:
    """Where `write_family` put one family's folders."""

    family: str  # the family's name
    train: Path  # root/train, one folder per class
    test: Path  # root/test, the same classes, fields drawn independently of train
    classes: tuple[str, str]  # (Control, phenotype) folder names


@dataclass(frozen=True)
class _Blob:
    """A cell or nucleus: a smooth closed outline around a centre."""

    center: tuple[float, float]  # (y, x) pixels; may lie outside the field
    radius: float  # mean radius, pixels
    aspect: float  # long / short axis ratio, >= 1
    angle: float  # orientation of the long axis, radians
    harmonics: np.ndarray  # (K, 3) float: order, amplitude (fraction of radius), phase


# ---------------------------------------------------------------- geometry


def _draw_blobs(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    per_field: float,
    radius: tuple[float, float],
    spacing: float,
) -> list[_Blob]:
    """Random blobs for a field of ``shape`` (H, W): Poisson(``per_field`` per 256 x 256
    pixels) of them, at least one; centres at least ``spacing`` times the two radii apart."""
    n_blobs = max(1, rng.poisson(per_field * shape[0] * shape[1] / 256**2))
    blobs: list[_Blob] = []
    for _ in range(20 * n_blobs):
        center = rng.uniform(-0.1, 1.1, 2) * shape  # blobs may be cut by the field edges
        size = rng.uniform(*radius)
        if any(np.hypot(*(center - b.center)) < spacing * (size + b.radius) for b in blobs):
            continue
        orders = np.arange(2, 5)
        amplitude = rng.normal(0, 0.05, 3) / np.sqrt(orders - 1)
        wobble = np.stack([orders, amplitude, rng.uniform(0, 2 * np.pi, 3)], axis=1)
        angle = rng.uniform(0, np.pi)
        aspect = rng.uniform(1.0, 1.6)
        blobs.append(_Blob((float(center[0]), float(center[1])), size, aspect, angle, wobble))
        if len(blobs) == n_blobs:
            break
    return blobs


def _box(blob: _Blob, shape: tuple[int, int], reach: float) -> tuple[slice, slice] | None:
    """Pixels within ``reach`` radii of the blob's centre, clipped to the field; None if
    none."""
    half = blob.radius * reach * np.sqrt(blob.aspect) + 3
    y0, x0 = (max(0, int(c - half)) for c in blob.center)
    y1, x1 = (min(n, int(c + half) + 2) for n, c in zip(shape, blob.center, strict=True))
    return (slice(y0, y1), slice(x0, x1)) if y1 > y0 and x1 > x0 else None


def _mask(blob: _Blob, box: tuple[slice, slice], scale: float = 1.0, edge: float = 1.5):
    """Soft mask of the blob (its outline times ``scale``) on ``box`` -> (h, w) float in
    [0, 1]; the edge ramps over ``edge`` pixels."""
    y = np.arange(box[0].start, box[0].stop)[:, None] - blob.center[0]
    x = np.arange(box[1].start, box[1].stop)[None, :] - blob.center[1]
    cos, sin = np.cos(blob.angle), np.sin(blob.angle)
    along = (x * cos + y * sin) / np.sqrt(blob.aspect)  # stretched frame: the outline is round
    across = (y * cos - x * sin) * np.sqrt(blob.aspect)
    rho, theta = np.hypot(along, across), np.arctan2(across, along)
    outline = np.ones_like(theta)
    for order, amplitude, phase in blob.harmonics:
        outline += amplitude * np.cos(order * theta + phase)
    depth = blob.radius * scale * outline - rho  # pixels inside the outline (about)
    return np.clip(depth / edge + 0.5, 0.0, 1.0)


def _sample(weight: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn with density proportional to ``weight`` (h, w) -> (n, 2) float
    (y, x) in the box's pixel coordinates."""
    if n == 0 or weight.sum() <= 0:
        return np.zeros((0, 2))
    flat = rng.choice(weight.size, n, p=(weight / weight.sum()).ravel())
    pixels = np.stack(np.unravel_index(flat, weight.shape), axis=1)
    return pixels + rng.uniform(-0.5, 0.5, (n, 2))


def _offset(points: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Box coordinates (N, 2) -> field coordinates (N, 2)."""
    return points + np.array([box[0].start, box[1].start])


def _spots(shape: tuple[int, int], points: list, masses: list, sigma: float) -> np.ndarray:
    """Point ``masses`` at ``points`` (lists of (N, 2) and (N,) arrays) blurred by a Gaussian
    of ``sigma`` pixels -> (H, W) float64."""
    image = np.zeros(shape)
    if not points:
        return image
    where, mass = np.rint(np.concatenate(points)).astype(np.int64), np.concatenate(masses)
    inside = (where >= 0).all(1) & (where[:, 0] < shape[0]) & (where[:, 1] < shape[1])
    np.add.at(image, (where[inside, 0], where[inside, 1]), mass[inside])
    return ndimage.gaussian_filter(image, sigma, mode="constant")


def _texture(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random texture of grain ``sigma`` pixels -> (H, W) float64, mean 0, sd 1."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return (noise - noise.mean()) / max(noise.std(), 1e-12)


# ---------------------------------------------------------------- the three families


def _aggregates_light(shape: tuple[int, int], effect: float, rng: np.random.Generator):
    """Diffuse cytoplasm, part of which collapses into clumps -> (H, W) float64 light."""
    texture = 1.0 + 0.15 * _texture(shape, 3.0, rng)
    diffuse, points, masses = np.zeros(shape), [], []
    for cell in _draw_blobs(shape, rng, per_field=5.0, radius=(26.0, 42.0), spacing=0.7):
        box = _box(cell, shape, 1.4)
        if box is None:
            continue
        weight = _mask(cell, box, edge=3.0) * (1.0 - 0.8 * _mask(cell, box, rng.uniform(0.3, 0.45)))
        if weight.sum() <= 0:  # the cell lies just outside the field
            continue
        signal = 150.0 * rng.lognormal(0, 0.35) * weight * texture[box]
        share = rng.beta(2.0, 20.0) + effect * rng.uniform(0.0, 2.0)  # natural + phenotype
        share = min(share, 0.9)
        diffuse[box] += (1.0 - share) * signal
        n_clumps = 1 + rng.poisson(1.0)
        centers = _offset(_sample(weight, n_clumps, rng), box)
        cargo = share * signal.sum() * rng.dirichlet(np.ones(n_clumps))
        spreads = rng.uniform(1.0, 3.0, n_clumps)  # clump radii, pixels
        for center, mass, spread in zip(centers, cargo, spreads, strict=True):
            points.append(center + spread * rng.normal(size=(16, 2)))  # an irregular clump
            masses.append(np.full(16, mass / 16))
    return _BACKGROUND + diffuse + _spots(shape, points, masses, _SPOT_SIGMA)


def _density_light(shape: tuple[int, int], effect: float, rng: np.random.Generator):
    """Dim cytoplasm holding puncta, ``1 + effect`` times as dense -> (H, W) float64 light."""
    texture = 1.0 + 0.15 * _texture(shape, 3.0, rng)
    field_load = rng.lognormal(0, 0.08)  # fields differ a little in load
    spot_mass = 250.0 * 2 * np.pi * _PUNCTUM_SIGMA**2 * rng.lognormal(0, 0.3)  # peak ~250
    diffuse, points, masses = np.zeros(shape), [], []
    for cell in _draw_blobs(shape, rng, per_field=5.0, radius=(26.0, 42.0), spacing=0.7):
        box = _box(cell, shape, 1.4)
        if box is None:
            continue
        weight = _mask(cell, box, edge=3.0) * (1.0 - 0.9 * _mask(cell, box, rng.uniform(0.3, 0.45)))
        diffuse[box] += 120.0 * rng.lognormal(0, 0.35) * weight * texture[box]
        load = field_load * rng.lognormal(0, 0.15) * (1.0 + effect)
        n_spots = rng.poisson(0.006 * load * weight.sum())  # ~18 spots in an average cell
        points.append(_offset(_sample(weight, n_spots, rng), box))
        masses.append(spot_mass * rng.lognormal(0, 0.35, n_spots))
    return _BACKGROUND + diffuse + _spots(shape, points, masses, _PUNCTUM_SIGMA)


def _shape_light(shape: tuple[int, int], effect: float, rng: np.random.Generator):
    """Stained nuclei, a tenth (plus ``effect``) of them lobed -> (H, W) float64 light."""
    chromatin = 1.0 + 0.2 * _texture(shape, 1.5, rng)
    light = np.zeros(shape)
    for nucleus in _draw_blobs(shape, rng, per_field=9.0, radius=(13.0, 20.0), spacing=1.15):
        if rng.random() < 0.1 + effect:  # lobed: one deep harmonic of order 3 to 5
            lobes = [rng.integers(3, 6), rng.uniform(0.18, 0.28), rng.uniform(0, 2 * np.pi)]
            nucleus = _Blob(
                nucleus.center,
                nucleus.radius,
                min(nucleus.aspect, 1.2),  # lobes show best on a roundish outline
                nucleus.angle,
                np.vstack([nucleus.harmonics[:1] * [1.0, 0.5, 1.0], lobes]),
            )
        box = _box(nucleus, shape, 1.5)
        if box is not None:
            level = 600.0 * rng.lognormal(0, 0.3)
            light[box] += level * _mask(nucleus, box) * chromatin[box]
    return _BACKGROUND + light


# Default effects, chosen by test accuracy at 128-pixel inputs (fields written at 256 px, 150
# training and 50 test images per class, 2 runs of the strong recipe / the feature baseline):
# aggregates 0.08: 69.0 / 72.0 %, 0.15: 88.0 / 83.5 %, so 0.12; density 0.4: 61.0 / 64.5 %,
# 0.5 (and puncta of sigma 1.8 instead of 1.4 px): 71.0 / 69.5 %; shape 0.3: 63.5 / 62.0 %,
# 0.5: 82.5 / 76.0 %. The reference recipe stayed at chance on density and shape.
FAMILIES: dict[str, Family] = {  # order is part of the seed key: never reorder
    "aggregates": Family(
        "aggregates",
        ("Control", "Aggregates"),
        "part of the diffuse cytoplasmic signal collapses into a few bright clumps",
        effect=0.12,
        light=_aggregates_light,
    ),
    "density": Family(
        "density",
        ("Control", "Dense"),
        "puncta per unit of cytoplasm rise by `effect` (0.5: +50 %)",
        effect=0.5,
        light=_density_light,
    ),
    "shape": Family(
        "shape",
        ("Control", "Lobed"),
        "a larger share of the nuclei is lobed (Control: 10 %, phenotype: 10 % + effect)",
        effect=0.5,
        light=_shape_light,
    ),
}
_FAMILY_IDS = {name: index for index, name in enumerate(FAMILIES)}


# ---------------------------------------------------------------- camera and files


def _illumination(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Uneven illumination: a tilt and an off-centre fall-off -> (H, W) float64 around 1."""
    y = np.linspace(-1, 1, shape[0])[:, None]
    x = np.linspace(-1, 1, shape[1])[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    tilt = 1.0 + rng.uniform(0, _TILT) / 2 * (x * np.cos(angle) + y * np.sin(angle))
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    return tilt * (1.0 - rng.uniform(0, 0.25) * ((x - cx) ** 2 + (y - cy) ** 2) / 2)


def _camera(light: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Expected photoelectrons (H, W) -> (H, W) uint16 12-bit counts, with this field's
    exposure, illumination, shot and read noise."""
    exposure = np.clip(rng.lognormal(0, _EXPOSURE_SPREAD), 0.35, 2.5)
    light = light * _illumination(light.shape, rng) * exposure
    counts = _CAMERA_OFFSET + _ADU_PER_ELECTRON * rng.poisson(light)
    counts = counts + rng.normal(0, _READ_NOISE, light.shape)
    return np.clip(np.rint(counts), 0, MAX_VALUE).astype(np.uint16)


def _family(family: str | Family) -> Family:
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def draw_field(
    family: str | Family,
    phenotype: bool,
    *,
    size: int = 256,
    rng: np.random.Generator,
    effect: float | None = None,
) -> np.ndarray:
    """Draw one field of a family's Control or phenotype class.

    Parameters
    ----------
    family : str or Family
        A key of `FAMILIES` ("aggregates", "density", "shape") or a `Family`.
    phenotype : bool
        True: the phenotype class; False: Control (drawn with effect 0).
    size : int
        Side of the square field, pixels (>= 16).
    rng : numpy.random.Generator
        Source of all randomness.
    effect : float or None
        Effect size >= 0 (see the module notes); None: the family's default.

    Returns
    -------
    (size, size) ndarray, uint16
        12-bit values in 0..4095.
    """
    chosen = _family(family)
    effect = chosen.effect if effect is None else effect
    if not effect >= 0:
        raise ValueError(f"effect must be 0 or more, got {effect}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    scene_rng, camera_rng = map(np.random.default_rng, rng.integers(0, 2**63, 2))
    light = chosen.light((size, size), effect if phenotype else 0.0, scene_rng)
    return _camera(light, camera_rng)


def write_family(
    family: str | Family,
    root: str | os.PathLike,
    *,
    n_train: int = 150,
    n_test: int = 50,
    size: int = 256,
    seed: int = 0,
    effect: float | None = None,
) -> PhenotypeData:
    """Write one family as ``root/{train,test}/<class>/<class>_<NNNN>.tif`` and README.txt.

    Parameters
    ----------
    family : str or Family
        A key of `FAMILIES` or a `Family`.
    root : str or path-like
        A new or empty folder.
    n_train, n_test : int
        Images per class in the training and in the test folder (>= 1).
    size : int
        Side of each square field, pixels (>= 16).
    seed : int
        Image k of a class comes from ``default_rng([seed, family, split, class, k])``: the
        same seed writes the same files, whatever the counts; test fields never repeat training
        fields.
    effect : float or None
        Effect size >= 0; None: the family's default.

    Returns
    -------
    PhenotypeData
        The folders written.
    """
    chosen, root = _family(family), Path(root)
    effect = chosen.effect if effect is None else effect
    if min(n_train, n_test) < 1 or seed < 0 or size < MIN_SIZE or not effect >= 0:
        raise ValueError(
            f"need n_train, n_test >= 1, seed >= 0, size >= {MIN_SIZE} and effect >= 0; got "
            f"{n_train}, {n_test}, {seed}, {size} and {effect}"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; choose a new folder")
    family_id = _FAMILY_IDS.get(chosen.name, len(FAMILIES))
    jobs = [
        (root / split / name / f"{name}_{k:04d}.tif", [seed, family_id, s, c, k], c == 1)
        for s, (split, n) in enumerate((("train", n_train), ("test", n_test)))
        for c, name in enumerate(chosen.classes)
        for k in range(n)
    ]
    for split in ("train", "test"):
        for name in chosen.classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)

    def write(job: tuple[Path, list[int], bool]) -> None:
        path, key, phenotype = job
        rng = np.random.default_rng(key)
        image = draw_field(chosen, phenotype, size=size, rng=rng, effect=effect)
        with atomic_path(path, suffix=".tif") as temporary:
            tifffile.imwrite(temporary, image, photometric="minisblack")

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # numpy frees the GIL
        list(pool.map(write, jobs))
    atomic_write_text(
        root / "README.txt",
        f"cellclass SYNTHETIC phenotype family {chosen.name!r} (not real microscopy):\n"
        f"{chosen.classes[0]} vs {chosen.classes[1]}: {chosen.description}; effect {effect}.\n"
        f"{size} x {size} pixels, 16-bit TIFF holding 12-bit values; {n_train} training and "
        f"{n_test} test images per class.\nMade by cellclass.synthetic.phenotypes.write_family"
        f"({chosen.name!r}, seed={seed}).\n",
    )
    return PhenotypeData(chosen.name, root / "train", root / "test", chosen.classes)


def write_aggregates(root: str | os.PathLike, **options) -> PhenotypeData:
    """Write the ``aggregates`` family: Control vs Aggregates (diffuse signal collapsing into
    clumps). ``options`` as `write_family` (n_train, n_test, size, seed, effect)."""
    return write_family("aggregates", root, **options)


def write_density(root: str | os.PathLike, **options) -> PhenotypeData:
    """Write the ``density`` family: Control vs Dense (more puncta per unit of cytoplasm).
    ``options`` as `write_family` (n_train, n_test, size, seed, effect)."""
    return write_family("density", root, **options)


def write_shape(root: str | os.PathLike, **options) -> PhenotypeData:
    """Write the ``shape`` family: Control vs Lobed (more lobed nuclei). ``options`` as
    `write_family` (n_train, n_test, size, seed, effect)."""
    return write_family("shape", root, **options)
