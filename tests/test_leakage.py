"""Leakage check: hash candidates are confirmed pixel by pixel (`inspection.scan`).

The look-alikes here are one object (a smooth random field) drawn with different textures: their
perceptual hashes are close enough for the hash alone to call them copies, their pixels are not.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from cellclass.cli import main
from cellclass.data.folders import scan_folder
from cellclass.inspection.dataset import (
    InspectSettings,
    find_leakage,
    format_report,
    inspect_dataset,
    leakage_message,
)
from cellclass.inspection.scan import MIN_SIMILARITY

SIZE = 64  # image side, pixels
TEXTURE = 0.3  # SD of each image's own texture relative to the shared object's


def _field(rng: np.random.Generator) -> np.ndarray:
    """A smooth random field of unit SD -> (SIZE, SIZE) float64."""
    field = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2.5)
    return field / field.std()


def _look_alike(shared: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The shared object with a texture of its own -> (SIZE, SIZE) uint8."""
    return np.clip(128 + 35 * (shared + TEXTURE * _field(rng)), 0, 255).astype(np.uint8)


def _save(path: Path, image: np.ndarray, *, quality: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if quality is None:
        Image.fromarray(image).save(path)
    else:
        Image.fromarray(image).save(path, "JPEG", quality=quality)
    return path


def _look_alike_folder(root: Path, n: int, seed: int) -> Path:
    """Class folders A and B, each `n` look-alikes of its own object (objects from seed 0)."""
    objects = np.random.default_rng(0)
    shared = {name: _field(objects) for name in ("A", "B")}
    rng = np.random.default_rng(seed)
    for name, field in shared.items():
        for i in range(n):
            _save(root / name / f"{name}{seed}_{i}.png", _look_alike(field, rng))
    return root


def _cropped(image: np.ndarray) -> np.ndarray:
    """3 % of each side cut (2 pixels, top and left) and resized back."""
    cut = round(0.03 * SIZE)
    return np.array(Image.fromarray(image[cut:, cut:]).resize((SIZE, SIZE), Image.BILINEAR))


COPIES = {  # name -> (make the copy, transform reported, saved as JPEG of quality 75)
    "rot90": (lambda x: np.rot90(x, 1), "rot90", False),
    "mirrored": (lambda x: x[:, ::-1], "flipped", False),
    "jpeg": (lambda x: x, "as is", True),
    "brighter": (lambda x: np.clip(x * 0.8 + 40, 0, 255).astype(np.uint8), "as is", False),
    "cropped": (_cropped, "as is", False),
    "all at once": (lambda x: _cropped(np.rot90(x, 3)[:, ::-1]), "rot270+flip", True),
}


def _pairs(train: Path, test: Path, **thresholds):
    index = scan_folder(train)
    return find_leakage(index, [scan_folder(test, class_names=index.class_names)], **thresholds)


@pytest.mark.parametrize("copy", list(COPIES))
def test_true_copies_are_found_and_only_with_their_source(tmp_path, copy):
    train = _look_alike_folder(tmp_path / "train", n=6, seed=1)
    source = train / "A" / "A1_2.png"
    make, transform, as_jpeg = COPIES[copy]
    image = np.ascontiguousarray(make(np.array(Image.open(source))))
    name = "copy.jpg" if as_jpeg else "copy.png"
    planted = _save(tmp_path / "test" / "A" / name, image, quality=75 if as_jpeg else None)
    pairs = _pairs(train, tmp_path / "test")
    assert [(p.first, p.second, p.kind, p.transform) for p in pairs] == [
        (source, planted, "near", transform)
    ]
    assert MIN_SIMILARITY <= pairs[0].similarity <= 1
    assert re.search(r"\(1 near-duplicates .*similarity (0\.99\d|1\.000), ", leakage_message(pairs))


def test_look_alikes_flagged_by_the_hash_alone_are_not_duplicates(tmp_path):
    train = _look_alike_folder(tmp_path / "train", n=6, seed=1)
    test = _look_alike_folder(tmp_path / "test", n=4, seed=2)
    hash_alone = _pairs(train, test, min_similarity=-1.0)
    old_default = [pair for pair in hash_alone if pair.distance <= 32]
    assert len(old_default) >= 8 and {p.kind for p in hash_alone} == {"near"}
    assert max(pair.similarity for pair in hash_alone) < MIN_SIMILARITY - 0.02
    assert _pairs(train, test) == []
    report = inspect_dataset(train, against=[test])
    assert report.leakage == ((),) and report.folder.duplicates == ()
    assert "no leakage" in format_report(report)
    loose = inspect_dataset(train, against=[test], settings=InspectSettings(min_similarity=-1))
    assert len(loose.leakage[0]) == len(hash_alone) and loose.folder.duplicates


def test_strict_training_on_clean_look_alikes_is_not_refused(tmp_path, capsys):
    train = _look_alike_folder(tmp_path / "train", n=6, seed=1)
    test = _look_alike_folder(tmp_path / "test", n=3, seed=2)
    assert _pairs(train, test, min_similarity=-1.0)  # what used to refuse
    argv = ["train", str(train), "--test", f"heldout={test}", "--out", str(tmp_path / "run")]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--runs", "1", "--epochs", "1"]
    argv += ["--batch-size", "4", "--image-size", "32", "--quiet", "--strict"]
    assert main(argv) == 0
    assert "leak" not in capsys.readouterr().err


def test_images_without_contrast_match_only_exact_copies(tmp_path):
    for name, level in (("A/dark", 20), ("A/bright", 200), ("B/bright_copy", 200)):
        _save(tmp_path / "flat" / f"{name}.png", np.full((SIZE, SIZE), level, np.uint8))
    duplicates = inspect_dataset(tmp_path / "flat").folder.duplicates
    assert [(p.first.name, p.second.name, p.kind, p.similarity) for p in duplicates] == [
        ("bright.png", "bright_copy.png", "exact", 1.0)
    ]


@pytest.mark.parametrize("value", [-1.5, 1.01, float("nan")])
def test_similarity_threshold_outside_minus_one_to_one_is_refused(tmp_path, value):
    train = _look_alike_folder(tmp_path / "train", n=1, seed=1)
    with pytest.raises(ValueError, match="min_similarity"):
        inspect_dataset(train, settings=InspectSettings(min_similarity=value))
