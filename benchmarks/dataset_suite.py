"""The datasets of `bench_datasets.py`, each written as train/test class folders at run time.

Nothing is downloaded: real images come from installed packages (ELPV from the
``elpv-dataset`` package, extra ``bench``; textures and faces from scikit-image's bundled
data), synthetic ones from cellclass's generators (the demo's, and the phenotype families of
`cellclass.synthetic.phenotypes`, which share nothing with the demo's renderer).

Real microscopy: no installed package (nor any found in the package index's descriptions)
ships a labelled set of microscopy images in its wheel; scikit-image bundles single images
(``cell.png``, ``ihc.png``) and fetches its other microscopy data from the network at run
time, so the suite has none.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from cellclass.data.images import write_image
from cellclass.inspection import SplitSettings, split_folder
from cellclass.synthetic.folders import DEMO_DATASETS, write_class_folders
from cellclass.synthetic.phenotypes import write_family

SPLIT_SEED = 0  # seed of every random train/test split and of every generator
TILE = 64  # texture tile side, pixels (8 x 8 tiles per 512-pixel image)


@dataclass(frozen=True)
class Folders:
    """A dataset's training folder and its one test folder, one subfolder per class."""

    train: Path
    test: Path


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the suite."""

    kind: str  # "real" or "synthetic"
    build: Callable[[Path, bool], Folders]  # (empty folder, quick) -> the folders written
    published: str  # the published accuracy on it, "" where none
    about: str  # what the images are, one line


def _write_split(root: Path, images: np.ndarray, labels: list[str], test: np.ndarray) -> Folders:
    """Write (N, H, W) uint8 ``images`` as ``root/{train,test}/<label>/<label>_<NNNN>.png``;
    ``test`` is an (N,) bool mask of the test images."""
    for k, (image, label, is_test) in enumerate(zip(images, labels, test, strict=True)):
        folder = root / ("test" if is_test else "train") / label
        folder.mkdir(parents=True, exist_ok=True)
        write_image(folder / f"{label}_{k:04d}.png", image)
    return Folders(root / "train", root / "test")


def _stratified_test(labels: list[str], test_size: float = 0.25) -> np.ndarray:
    """(N,) bool: a stratified random ``test_size`` share of the images, seeded."""
    index = np.arange(len(labels))
    _, test = train_test_split(index, test_size=test_size, stratify=labels, random_state=SPLIT_SEED)
    return np.isin(index, test)


def build_elpv(root: Path, quick: bool) -> Folders:
    """ELPV solar cells (300 x 300, 8-bit): defect probability 0 -> functional, 1 ->
    defective (0.33 and 0.67 left out); split 75/25 by ``cellclass prepare split``, which keeps
    twins on one side. Quick: 300 images.

    ELPV holds the same cell more than once (`bench_leakage.py`: neighbouring cells of one
    module that match to the pixel, a run of cells that recurs 542 places later); a plain
    random split puts about 8 % of the test cells' twins in training, which cellclass's
    leakage check reports. `split_folder` joins the images of every near-duplicate pair into
    one group and puts whole groups on one side, stratified by class."""
    from elpv_dataset.utils import load_dataset  # optional: pip install cellclass[bench]

    images, probabilities, _ = load_dataset()
    keep = np.flatnonzero((probabilities == 0) | (probabilities == 1))
    if quick:
        rng = np.random.default_rng(SPLIT_SEED)
        keep = np.sort(rng.choice(keep, 300, replace=False))
    for k in keep:
        label = "defective" if probabilities[k] == 1 else "functional"
        (root / "all" / label).mkdir(parents=True, exist_ok=True)
        write_image(root / "all" / label / f"{label}_{k:04d}.png", images[k])
    settings = SplitSettings(test_fraction=0.25, seed=SPLIT_SEED)
    split = split_folder(root / "all", root / "split", settings)
    shutil.rmtree(root / "all")
    return Folders(split.train, split.test)


def build_faces(root: Path, quick: bool) -> Folders:
    """scikit-image's LFW subset: 100 faces and 100 non-faces, 25 x 25; stratified 75/25."""
    from skimage import data

    images = np.rint(data.lfw_subset() * 255).astype(np.uint8)  # (200, 25, 25) in [0, 1]
    labels = ["face"] * 100 + ["nonface"] * 100  # the first 100 are faces
    return _write_split(root, images, labels, _stratified_test(labels))


def build_textures(root: Path, quick: bool) -> Folders:
    """Non-overlapping 64-pixel tiles of scikit-image's brick, grass and gravel (512 x 512):
    the top half's tiles train, the bottom half's test, so no test tile borders a training
    tile except along one line, and train and test see different parts of each picture."""
    from skimage import data

    images, labels, test = [], [], []
    for name in ("brick", "grass", "gravel"):
        picture = getattr(data, name)()
        rows, cols = picture.shape[0] // TILE, picture.shape[1] // TILE
        for row in range(rows):
            for col in range(cols):
                images.append(picture[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE])
                labels.append(name)
                test.append(row >= rows // 2)
    return _write_split(root, np.stack(images), labels, np.array(test))


def _demo_builder(name: str) -> Callable[[Path, bool], Folders]:
    def build(root: Path, quick: bool) -> Folders:
        n_train, n_test = (40, 20) if quick else (150, 50)
        number, phenotype = list(DEMO_DATASETS).index(name), DEMO_DATASETS[name]
        folders = Folders(root / name / "train", root / name / "test")
        for stream, (folder, n) in enumerate(((folders.train, n_train), (folders.test, n_test))):
            counts = {"Control": n, phenotype: n}  # write_demo's streams, without its sessions
            write_class_folders(folder, counts, seed=SPLIT_SEED, stream=2 * number + stream)
        return folders

    build.__doc__ = (
        f"The demo's {name} phenotype pair as write_demo draws it, 256 px, but without the "
        "demo's session confound (DEMO_SESSIONS): the suite asks whether a recipe learns the "
        "phenotype; quick: fewer images."
    )
    return build


def _family_builder(family: str) -> Callable[[Path, bool], Folders]:
    def build(root: Path, quick: bool) -> Folders:
        n_train, n_test = (40, 20) if quick else (150, 50)
        data = write_family(family, root, n_train=n_train, n_test=n_test, seed=SPLIT_SEED)
        return Folders(data.train, data.test)

    build.__doc__ = f"The {family} phenotype family at its default effect, 256 px."
    return build


DATASETS: dict[str, DatasetSpec] = {
    "snf7": DatasetSpec("synthetic", _demo_builder("snf7"), "", "demo, Control vs Snf7 (hard)"),
    "snap29": DatasetSpec(
        "synthetic", _demo_builder("snap29"), "", "demo, Control vs Snap29 (easy)"
    ),
    "textures": DatasetSpec(
        "real", build_textures, "", "scikit-image brick/grass/gravel, 64-px tiles"
    ),
    "aggregates": DatasetSpec(
        "synthetic", _family_builder("aggregates"), "", "diffuse signal collapsing into clumps"
    ),
    "elpv": DatasetSpec(
        "real",
        build_elpv,
        "CNN 88.4 / SVM 82.4 (a)",
        "ELPV solar cells, functional (p=0) vs defective (p=1)",
    ),
    "faces": DatasetSpec("real", build_faces, "", "scikit-image LFW subset, face vs non-face"),
    "density": DatasetSpec(
        "synthetic", _family_builder("density"), "", "more puncta per unit of cytoplasm"
    ),
    "shape": DatasetSpec("synthetic", _family_builder("shape"), "", "more lobed nuclei"),
}

FOOTNOTES = {
    "(a)": "Deitsch et al., 'Automatic classification of defective photovoltaic module cells "
    "in electroluminescence images', Solar Energy 2019: accuracy on their 4-class / "
    "probability labelling of all 2,624 cells, not on this 0-vs-1 subset.",
}
