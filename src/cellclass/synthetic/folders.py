"""Synthetic fluorescence fields: the built-in demo data.

A field is a (size, size) uint16 image holding 12-bit values (0..4095): a few irregular cells
(diffuse cytoplasm, a darker nucleus, many punctate vesicles) on a dim background, seen through
uneven illumination, a per-field exposure that varies a lot, and a camera (shot + read noise).
A `Phenotype` changes only the vesicles, by an amount scaled by ``strength`` in [0, 1]:

- ``Control``: normal vesicles.
- ``Snap29`` (easy): part of the vesicle cargo gathers into a few large, bright perinuclear
  aggregates.
- ``Snf7`` (hard): the same cargo is spread over more, dimmer vesicles, some in tiny clusters.
  Total brightness is unchanged, so only texture tells it from Control.

Each image comes from its own generator keyed by (seed, stream, class, source), so image k is
the same whatever the number of images written, and images can be made in any order.
Drawing one field (`Phenotype`, `Session`, `MAX_VALUE`) lives in
`cellclass.synthetic.rendering`.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from cellclass._files import atomic_path, atomic_write_text
from cellclass.synthetic.rendering import MAX_VALUE, Phenotype, Session, render_field

__all__ = [
    "FORMATS",
    "PHENOTYPES",
    "DEMO_DATASETS",
    "DEMO_SESSIONS",
    "DemoData",
    "DemoDataset",
    "make_field",
    "write_class_folders",
    "write_demo",
]

FORMATS = ("tif", "png")  # file formats that write_class_folders can write


PHENOTYPES: dict[str, Phenotype] = {
    "Control": Phenotype("Control", "normal punctate vesicles"),
    "Snap29": Phenotype(
        "Snap29", "easy: a few large, bright perinuclear aggregates", aggregates=0.5
    ),
    "Snf7": Phenotype(
        "Snf7",
        "hard: more, dimmer vesicles, some in tiny clusters; same total brightness",
        crowding=0.6,
        clustering=0.2,
    ),
}
_CLASS_IDS = {name: index for index, name in enumerate(PHENOTYPES)}  # seed key; never reorder


def make_field(
    phenotype: Phenotype, *, size: int = 256, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Draw one synthetic fluorescence field.

    Parameters
    ----------
    phenotype : Phenotype
        The class to draw, e.g. ``PHENOTYPES["Snf7"]``.
    size : int
        Side of the square field, pixels (>= 8). Cells keep their size in pixels.
    rng : numpy.random.Generator
        Source of all randomness. Cells, exposure and camera noise use streams the phenotype
        does not touch, so equal generators give the same cells for every phenotype.
    strength : float
        Phenotype strength in [0, 1]; 0 draws Control.

    Returns
    -------
    (size, size) ndarray, uint16
        12-bit values in 0..4095.
    """
    if not isinstance(phenotype, Phenotype):
        raise TypeError(
            f"phenotype must be a Phenotype such as PHENOTYPES['Snf7'], got {phenotype!r}"
        )
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    return render_field((size, size), phenotype, strength, rng)


def _write_image(path: Path, image: np.ndarray, fmt: str) -> None:
    """Write a (H, W) uint16 field as 16-bit TIFF or 8-bit PNG, atomically (temp + rename)."""
    with atomic_path(path, suffix=f".{fmt}") as temporary:
        if fmt == "tif":
            tifffile.imwrite(temporary, image, photometric="minisblack")
        else:  # fixed scale, not stretched per image: brightness stays comparable
            scaled = np.clip(np.rint(image * (255 / MAX_VALUE)), 0, 255).astype(np.uint8)
            Image.fromarray(scaled).save(temporary, format="PNG")


def _check_request(counts: dict[str, int], fmt: str, numbers: dict[str, float]) -> None:
    """Raise ValueError for unknown classes or formats, or numbers out of range."""
    unknown = sorted(set(counts) - set(PHENOTYPES))
    if unknown:
        raise ValueError(f"unknown classes {unknown}; known classes are {list(PHENOTYPES)}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    lowest = {"count": 0, "seed": 0, "stream": 0, "size": 8, "fields_per_source": 1}
    for name, value in {**numbers, **{"count": min(counts.values(), default=0)}}.items():
        if value < lowest.get(name, 0) or (name == "strength" and value > 1):
            raise ValueError(f"{name} is out of range: {value}")


def write_class_folders(
    root: str | os.PathLike,
    counts: dict[str, int],
    *,
    size: int = 256,
    seed: int = 0,
    fmt: str = "tif",
    strength: float = 1.0,
    fields_per_source: int = 1,
    stream: int = 0,
    sessions: dict[str, Session | tuple[Session, ...]] | None = None,
) -> list[Path]:
    """Write synthetic fields as ``root/<class>/<class>_<NNNN>.<fmt>``, one folder per class.

    Parameters
    ----------
    root : str or path-like
        Folder to write into, created if missing. Existing target files are an error.
    counts : dict of str to int
        Images per class, e.g. ``{"Control": 40, "Snf7": 40}``; keys from `PHENOTYPES`.
    size : int
        Side of each square field, pixels.
    seed, stream : int
        Image k of a class comes from ``default_rng([seed, stream, class_id, source])``, with
        class_id its position in `PHENOTYPES` and ``source = k // fields_per_source``, so it
        does not depend on how many images are written.
        Another ``stream`` gives independent fields for the same seed.
    fmt : {"tif", "png"}
        "tif": uint16 holding the 12-bit data. "png": uint8, the 12-bit data times the fixed
        factor 255/4095, clipped (no per-image stretch).
    strength : float
        Phenotype strength in [0, 1].
    fields_per_source : int
        Consecutive images are tiles cut side by side from one wider field (shared cells,
        exposure, illumination), like tiles of one microscope field. 1: all independent.
    sessions : dict of str to Session or tuple of Session, optional
        The imaging session of each class's fields; with a tuple, each source field is imaged
        in one of them at random (its own generator, so the cells do not change). A class not
        named: the default look. Classes imaged in different sessions differ for a reason that
        is not biology: a confound.

    Returns
    -------
    list of Path
        The files written, class by class, in index order.
    """
    root = Path(root)
    numbers = {"size": size, "seed": seed, "stream": stream, "strength": strength}
    _check_request(counts, fmt, {**numbers, "fields_per_source": fields_per_source})
    paths = {c: [root / c / f"{c}_{k:04d}.{fmt}" for k in range(n)] for c, n in counts.items()}
    existing = [path for names in paths.values() for path in names if path.exists()]
    if existing:
        raise FileExistsError(
            f"{len(existing)} target file(s) already exist, e.g. {existing[0]}; "
            "remove them or write to an empty folder"
        )

    def write_source(job: tuple[str, int]) -> None:
        name, first = job
        source = first // fields_per_source
        rng = np.random.default_rng([seed, stream, _CLASS_IDS[name], source])
        session = (sessions or {}).get(name)
        if isinstance(session, tuple):  # a separate generator: the field itself is unchanged
            pick = np.random.default_rng([seed, stream, _CLASS_IDS[name], source, 1])
            session = session[pick.integers(len(session))]
        strip = render_field(
            (size, size * fields_per_source), PHENOTYPES[name], strength, rng, session=session
        )
        for tile, path in enumerate(paths[name][first : first + fields_per_source]):
            _write_image(path, strip[:, tile * size : (tile + 1) * size], fmt)

    for name in paths:
        (root / name).mkdir(parents=True, exist_ok=True)
    jobs = [(c, first) for c, n in counts.items() for first in range(0, n, fields_per_source)]
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # numpy frees the GIL
        list(pool.map(write_source, jobs))
    return [path for names in paths.values() for path in names]


@dataclass(frozen=True)
class DemoDataset:
    """One of the study's datasets: a two-class training folder and its test folder."""

    train: Path  # Control and one phenotype, one folder per class
    test: Path  # the same two classes, fields drawn independently of train


@dataclass(frozen=True)
class DemoData:
    """Where `write_demo` put the demo data."""

    root: Path  # the demo folder, holding README.txt
    datasets: dict[str, DemoDataset]  # "snap29" (easy) and "snf7" (hard)


DEMO_DATASETS = {"snap29": "Snap29", "snf7": "Snf7"}  # dataset -> phenotype vs Control

# The hard dataset's training fields were imaged in two sessions, one per class (another day,
# dish or exposure: it happens); its test fields come from both sessions at random, whatever
# their class. A network fed raw intensities learns the session: it fits its training images
# and stays near chance on the test, the study's memorisation. Measured with the demo's
# settings (3 runs each): reference training accuracy 94-99 %, test 52-55 %; the strong
# recipe, which standardises each image, 59-64 %.
DEMO_SESSIONS = {
    "snf7": (Session(exposure=0.65, spread=0.1), Session(exposure=1.5, spread=0.1)),
}

_README = """\
cellclass demo data: SYNTHETIC fluorescence fields of cells, not real microscopy.
{size} x {size} pixels, {fmt} (TIFF: 12-bit values in uint16; PNG: those times 255/4095).
As in the 2019 study, two datasets, each its own binary experiment:
  snap29/train, snap29/test: Control vs Snap29 (easy)
  snf7/train,   snf7/test:   Control vs Snf7 (hard)
Each train/ folder has {n_train} images per class, each test/ folder {n_test}, every folder
drawn from its own seed stream (no test field repeats a training field).
snf7/train's Control fields were imaged in one session and its Snf7 fields in another, with
2.3x the exposure (a confound, as happens when classes are imaged on different days);
snf7/test's fields come from both sessions at random, whatever their class. A network that
learns the exposure instead of the vesicles fits its training images and fails the test.
Made by cellclass.synthetic.folders.write_demo(seed={seed}). Classes:
{phenotypes}"""


def write_demo(
    root: str | os.PathLike,
    *,
    n_train: int = 80,
    n_test: int = 40,
    size: int = 256,
    seed: int = 0,
    fmt: str = "tif",
) -> DemoData:
    """Write the demo data: the study's two datasets, each a two-class train and test folder.

    Writes ``snap29/{train,test}/{Control,Snap29}/`` and ``snf7/{train,test}/{Control,Snf7}/``
    (each folder from its own seed stream, so no field repeats) and, last, ``README.txt``.
    The hard dataset carries a session confound (`DEMO_SESSIONS`): its training classes were
    imaged at two exposures, its test fields at either.

    Parameters
    ----------
    root : str or path-like
        A new or empty folder.
    n_train, n_test : int
        Images per class in each training folder and in each test folder.
    size : int
        Side of each square field, pixels.
    seed : int
        Seed of everything; the same seed writes the same files.
    fmt : {"tif", "png"}
        File format, see `write_class_folders`.

    Returns
    -------
    DemoData
        The folders written.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; choose a new folder")
    _check_request({"Control": n_train, "Snf7": n_test}, fmt, {"size": size, "seed": seed})
    options = {"size": size, "seed": seed, "fmt": fmt}
    datasets = {}
    for number, (name, phenotype) in enumerate(DEMO_DATASETS.items()):
        dataset = DemoDataset(root / name / "train", root / name / "test")
        control_session, phenotype_session = DEMO_SESSIONS.get(name, (None, None))
        sessions = [  # training: one session per class; test: either, at random
            {"Control": control_session, phenotype: phenotype_session},
            {c: (control_session, phenotype_session) for c in ("Control", phenotype)},
        ]
        for stream, (folder, n) in enumerate(((dataset.train, n_train), (dataset.test, n_test))):
            counts = {"Control": n, phenotype: n}
            confound = sessions[stream] if name in DEMO_SESSIONS else None
            write_class_folders(
                folder, counts, stream=2 * number + stream, sessions=confound, **options
            )
        datasets[name] = dataset
    phenotypes = "".join(f"  {p.name:8s} {p.description}\n" for p in PHENOTYPES.values())
    text = _README.format(phenotypes=phenotypes, n_train=n_train, n_test=n_test, **options)
    atomic_write_text(root / "README.txt", text)
    return DemoData(root=root, datasets=datasets)
