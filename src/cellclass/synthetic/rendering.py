"""How one synthetic field is drawn (`cellclass.synthetic.folders` builds the demo data on it).

A `Phenotype` (what a class changes), the look shared by every field (`_Look`), the cells
and their vesicles, the light they give, uneven illumination and the camera (`render_field`).
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MAX_VALUE", "Phenotype", "Session", "render_field"]

MAX_VALUE = 4095  # 12-bit camera: largest pixel value


@dataclass(frozen=True)
class Phenotype:
    """How a class differs from Control; every effect is scaled by ``strength``."""

    name: str  # class (folder) name
    description: str  # one line for people, written into the demo README
    aggregates: float = 0.0  # share of vesicles gathered into big perinuclear aggregates
    crowding: float = 0.0  # vesicles are (1 + crowding) times as many, each as much dimmer
    clustering: float = 0.0  # share of vesicles moved next to another one (tiny groups)


@dataclass(frozen=True)
class Session:
    """An imaging session: the exposure and background its fields share.

    Classes imaged in different sessions (another day, dish or medium) differ for a reason
    that has nothing to do with biology: a batch effect, or confound, which a network fed raw
    intensities can learn instead of the phenotype.
    """

    exposure: float = 1.0  # the session's exposure, relative to the default look
    spread: float | None = None  # log-sd of the exposure between its fields; None: the default
    background: float = 0.0  # extra autofluorescence (medium, dish) everywhere, photoelectrons


@dataclass(frozen=True)
class _Look:
    """What every field looks like, whatever the phenotype (light in photoelectrons)."""

    cells_per_field: float = 6.0  # mean number of cells per 256 x 256 pixels
    cell_radius: tuple[float, float] = (32.0, 52.0)  # range of mean cell radii, pixels
    cell_aspect: tuple[float, float] = (1.0, 1.7)  # range of long / short axis ratios
    wobble: float = 0.06  # outline irregularity (harmonics 2..6), fraction of the radius
    nucleus: tuple[float, float] = (0.32, 0.45)  # nucleus radius range, fraction of cell radius
    nucleus_dimming: float = 0.7  # the nucleus is this much darker than the cytoplasm
    cytoplasm: float = 160.0  # median cytoplasm level
    cell_spread: float = 0.3  # log-sd of the expression level between cells
    granularity: float = 0.12  # amplitude of the smooth cytoplasm texture
    vesicle_density: float = 0.02  # vesicles per pixel of cytoplasm
    vesicle_spread: float = 0.35  # log-sd of the vesicle load between cells
    grain_spread: tuple[float, float] = (0.25, 0.15)  # log-sd (field, cell): natural "more, dimmer"
    clustering: tuple[float, float] = (2.0, 6.0)  # Beta(a, b): natural share in tiny groups
    vesicle_peak: float = 220.0  # median vesicle peak above the cytoplasm
    vesicle_sigma: float = 1.3  # Gaussian sigma of the PSF (a small vesicle), pixels
    cluster_spread: float = 1.3  # distance of a clustered vesicle to its partner, pixels
    background: float = 20.0  # autofluorescence outside cells
    exposure_spread: float = 0.4  # log-sd of the per-field exposure: swamps brightness cues
    tilt: float = 0.35  # largest illumination change across the field, fraction
    camera_offset: float = 100.0  # camera bias, ADU
    adu_per_electron: float = 1.8  # camera conversion gain
    read_noise: float = 3.0  # Gaussian read noise, ADU


_LOOK = _Look()
_PAD = 12  # spots are rendered on a canvas this much larger on every side (no FFT wrap)


@dataclass(frozen=True)
class _Cell:
    """One cell's geometry and brightness."""

    center: tuple[float, float]  # (y, x) pixels; may lie outside the field
    radius: float  # mean radius, pixels
    aspect: float  # long / short axis ratio, >= 1
    angle: float  # orientation of the long axis, radians
    wobble: np.ndarray = field(repr=False)  # (5, 2) float: amplitude, phase of harmonics 2..6
    nucleus: float  # nucleus radius, fraction of the cell radius
    level: float  # cytoplasm brightness, photoelectrons
    load: float  # vesicle cargo of this cell relative to an average cell
    grain: float  # cargo is split into this many times more vesicles, each dimmer
    clustering: float  # share of vesicles sitting in tiny groups


def _wobble(cell: _Cell, z: np.ndarray) -> np.ndarray:
    """Outline deviation (fraction of radius) at directions ``z = exp(i theta)``, any shape."""
    power, total = z * z, np.zeros(z.shape)
    for amplitude, phase in cell.wobble:  # harmonics k = 2, 3, ...: Re(z^k e^(i phase))
        total += amplitude * (power * np.exp(1j * phase)).real
        power = power * z
    return total


def _to_cell(cell: _Cell, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (y, x) -> cell frame: rho in cell radii and direction z = exp(i theta)."""
    w = (x - cell.center[1] + 1j * (y - cell.center[0])) * np.exp(-1j * cell.angle)
    stretch = np.sqrt(cell.aspect)
    w = w.real / stretch + 1j * w.imag * stretch
    rho = np.abs(w)
    return rho / cell.radius, w / np.maximum(rho, 1e-9)


def _from_cell(cell: _Cell, rho: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Cell frame (rho, z) -> pixel points (N, 2) float (y, x); the inverse of `_to_cell`."""
    stretch = np.sqrt(cell.aspect)
    w = rho * cell.radius * (z.real * stretch + 1j * z.imag / stretch) * np.exp(1j * cell.angle)
    return np.stack([cell.center[0] + w.imag, cell.center[1] + w.real], axis=1)


def _draw_cells(shape: tuple[int, int], rng: np.random.Generator) -> list[_Cell]:
    """Random cells for a field of ``shape`` (H, W); at least one, few overlaps."""
    n_cells = max(1, rng.poisson(_LOOK.cells_per_field * shape[0] * shape[1] / 256**2))
    cells: list[_Cell] = []
    field_grain = rng.lognormal(0, _LOOK.grain_spread[0])
    field_clustering = rng.beta(*_LOOK.clustering)
    for _ in range(n_cells * 20):
        center = rng.uniform(-0.1, 1.1, 2) * shape  # cells may be cut by the field edges
        radius = rng.uniform(*_LOOK.cell_radius)
        if any(np.hypot(*(center - c.center)) < 0.65 * (radius + c.radius) for c in cells):
            continue
        amplitude = np.clip(rng.normal(0, _LOOK.wobble, 5) / np.arange(1, 6) ** 0.5, -0.1, 0.1)
        cells.append(
            _Cell(
                center=(float(center[0]), float(center[1])),
                radius=radius,
                aspect=rng.uniform(*_LOOK.cell_aspect),
                angle=rng.uniform(0, np.pi),
                wobble=np.stack([amplitude, rng.uniform(0, 2 * np.pi, 5)], axis=1),
                nucleus=rng.uniform(*_LOOK.nucleus),
                level=_LOOK.cytoplasm * rng.lognormal(0, _LOOK.cell_spread),
                load=rng.lognormal(0, _LOOK.vesicle_spread),
                grain=field_grain * rng.lognormal(0, _LOOK.grain_spread[1]),
                clustering=field_clustering,
            )
        )
        if len(cells) == n_cells:
            break
    return cells


def _paint_cell(image: np.ndarray, cell: _Cell) -> None:
    """Add one cell's cytoplasm and nucleus (photoelectrons) to ``image`` (H, W) float64."""
    reach = cell.radius * np.sqrt(cell.aspect) * 1.35 + 2
    y0, x0 = (max(0, int(c - reach)) for c in cell.center)
    y1, x1 = (min(n, int(c + reach) + 1) for n, c in zip(image.shape, cell.center, strict=True))
    if y1 <= y0 or x1 <= x0:
        return
    rho, z = _to_cell(cell, *np.ogrid[y0:y1, x0:x1])
    wobble = _wobble(cell, z)
    depth = 1.0 - rho / (1.0 + wobble)  # 0 at the edge, 1 at the centre
    body = np.clip(depth * cell.radius / 3 + 0.5, 0.0, 1.0)  # 3-pixel soft edge
    inside = 1.0 - rho / (cell.nucleus * (1.0 + 0.3 * wobble))
    nucleus = np.clip(inside * cell.radius * cell.nucleus / 3 + 0.5, 0.0, 1.0)
    dome = 0.5 + 0.5 * np.sqrt(np.clip(depth, 0.0, 1.0))  # thicker around the nucleus
    image[y0:y1, x0:x1] += cell.level * body * dome * (1.0 - _LOOK.nucleus_dimming * nucleus)


def _place(cell: _Cell, n: int, rng: np.random.Generator, inward: float) -> np.ndarray:
    """``n`` random points in the cytoplasm, more near the nucleus -> (n, 2) float (y, x)."""
    z = np.exp(1j * rng.uniform(0, 2 * np.pi, n))
    wobble = _wobble(cell, z)
    inner, outer = 1.1 * cell.nucleus * (1.0 + 0.3 * wobble), 0.95 * (1.0 + wobble)
    return _from_cell(cell, inner + rng.beta(1.3, 1.3 + inward, n) * (outer - inner), z)


def _clump(
    centers: np.ndarray,
    masses: np.ndarray,
    parts: int,
    spread: float | np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split each spot into ``parts`` points jittered by ``spread`` (pixels, scalar or (N,)).

    (N, 2) centers, (N,) masses -> (N * parts, 2) points, (N * parts,) masses. Blurred by the
    PSF, a clump looks like one bigger, irregular spot.
    """
    jitter = np.repeat(np.broadcast_to(spread, len(centers)), parts)[:, None]
    points = np.repeat(centers, parts, axis=0) + jitter * rng.normal(size=(len(jitter), 2))
    return points, np.repeat(masses / parts, parts)


def _draw_spots(
    cell: _Cell, phenotype: Phenotype, strength: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One cell's vesicles and aggregates -> points (N, 2) float (y, x), masses (N,) float."""
    crowd = cell.grain * (1.0 + phenotype.crowding * strength)
    area = np.pi * cell.radius**2 * (1.0 - cell.nucleus**2)
    n = rng.poisson(_LOOK.vesicle_density * cell.load * area * crowd)
    points = _place(cell, n, rng, inward=1.0)
    big = rng.random(n) < 1 / 3  # resolvably larger vesicles, twice the cargo
    masses = _LOOK.vesicle_peak * 2 * np.pi * _LOOK.vesicle_sigma**2 / crowd
    masses = masses * rng.lognormal(0, 0.4, n) * np.where(big, 2.0, 1.0)
    moved = rng.random(n) < cell.clustering + phenotype.clustering * strength
    if n > 1 and moved.any():  # tiny groups: a moved vesicle sits next to a random partner
        partner = rng.integers(0, n, moved.sum())
        points[moved] = points[partner] + rng.normal(0, _LOOK.cluster_spread, (moved.sum(), 2))
    gathered = rng.random(n) < phenotype.aggregates * strength
    spots = [(points[~gathered & ~big], masses[~gathered & ~big])]
    spots.append(_clump(points[~gathered & big], masses[~gathered & big], 3, 0.8, rng))
    if gathered.any():  # the gathered cargo forms a few irregular perinuclear aggregates
        n_aggregates = 1 + rng.poisson(1.5)
        cargo = masses[gathered].sum() * rng.dirichlet(np.ones(n_aggregates))
        centers, sizes = _place(cell, n_aggregates, rng, 6.0), rng.uniform(1.5, 3.0, n_aggregates)
        spots.append(_clump(centers, cargo, 30, sizes, rng))
    return np.concatenate([p for p, _ in spots]), np.concatenate([m for _, m in spots])


def _splat(shape: tuple[int, int], points: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Spread point ``masses`` (N,) at ``points`` (N, 2) bilinearly -> (H, W) float64."""
    base = np.floor(points).astype(np.int64)
    frac = points - base
    ys, xs, weights = [], [], []
    for dy in (0, 1):
        for dx in (0, 1):
            ys.append(base[:, 0] + dy)
            xs.append(base[:, 1] + dx)
            weights.append(masses * np.abs(1 - dy - frac[:, 0]) * np.abs(1 - dx - frac[:, 1]))
    y, x, weight = np.concatenate(ys), np.concatenate(xs), np.concatenate(weights)
    inside = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
    flat = y[inside] * shape[1] + x[inside]
    return np.bincount(flat, weight[inside], shape[0] * shape[1]).reshape(shape)


def _gaussian_gain(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Fourier gain of a Gaussian blur, laid out like ``np.fft.rfft2`` of a (H, W) array."""
    f2 = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.rfftfreq(shape[1])[None, :] ** 2
    return np.exp(-2 * np.pi**2 * sigma**2 * f2)


def _light(
    shape: tuple[int, int], phenotype: Phenotype, strength: float, rngs: list[np.random.Generator]
) -> np.ndarray:
    """Expected photoelectrons before illumination and exposure -> (H, W) float64."""
    cell_rng, spot_rng = rngs
    cytoplasm = np.zeros(shape)
    spots = []  # (points (N, 2), masses (N,)) per cell, in padded-canvas coordinates
    for cell in _draw_cells(shape, cell_rng):
        _paint_cell(cytoplasm, cell)
        points, masses = _draw_spots(cell, phenotype, strength, spot_rng)
        spots.append((points + _PAD, masses))
    gain = _gaussian_gain(shape, 6.0)  # smooth texture: filtered random spectrum
    white = cell_rng.normal(size=(*gain.shape, 2)) @ np.array([1.0, 1.0j])  # complex noise
    texture = np.fft.irfft2(white * gain, s=shape)
    cytoplasm *= 1.0 + _LOOK.granularity * (texture - texture.mean()) / texture.std()
    padded = (shape[0] + 2 * _PAD, shape[1] + 2 * _PAD)
    points, masses = (np.concatenate(parts) for parts in zip(*spots, strict=True))
    dots = np.fft.rfft2(_splat(padded, points, masses))  # blur = product in Fourier space
    vesicles = np.fft.irfft2(dots * _gaussian_gain(padded, _LOOK.vesicle_sigma), s=padded)
    return _LOOK.background + cytoplasm + np.maximum(vesicles[_PAD:-_PAD, _PAD:-_PAD], 0.0)


def _illumination(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth uneven illumination: a tilt plus vignetting -> (H, W) float64, around 1."""
    half = max(shape) / 2
    y = (np.arange(shape[0])[:, None] - shape[0] / 2) / half
    x = (np.arange(shape[1])[None, :] - shape[1] / 2) / half
    angle = rng.uniform(0, 2 * np.pi)
    tilt = rng.uniform(0, _LOOK.tilt) / 2 * (x * np.cos(angle) + y * np.sin(angle))
    return (1.0 + tilt) * (1.0 - rng.uniform(0, 0.2) * (x**2 + y**2) / 2)


def render_field(
    shape: tuple[int, int],
    phenotype: Phenotype,
    strength: float,
    rng: np.random.Generator,
    *,
    session: Session | None = None,
) -> np.ndarray:
    """One field of ``shape`` (H, W) -> (H, W) uint16 with 12-bit values.

    ``session``: the imaging session's exposure (`Session`); None: the fields of every class
    share one broad exposure distribution (``_LOOK.exposure_spread``)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    session = session or Session()
    # separate streams: cells, exposure and noise do not depend on the phenotype's draws
    cell_rng, spot_rng, camera_rng = map(np.random.default_rng, rng.integers(0, 2**63, 3))
    light = _light(shape, phenotype, strength, [cell_rng, spot_rng]) + session.background
    spread = _LOOK.exposure_spread if session.spread is None else session.spread
    exposure = session.exposure * np.clip(camera_rng.lognormal(0, spread), 0.35, 2.5)
    light *= _illumination(shape, camera_rng) * exposure
    counts = _LOOK.camera_offset + _LOOK.adu_per_electron * camera_rng.poisson(light)
    counts += camera_rng.normal(0, _LOOK.read_noise, shape)
    return np.clip(np.rint(counts), 0, MAX_VALUE).astype(np.uint16)
