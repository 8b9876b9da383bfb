"""The bioimage.io model package of one run: rdf.yaml, README.md, both weights, test and
sample tensors and a cover image, written as a ``.zip`` or a folder.

The package's input is the *raw* resized image; its preprocessing in rdf.yaml normalises it as
`cellclass.data.normalize` does (``scale_linear`` per channel for "dataset"/"bitdepth",
``scale_range`` over y, x for "image", then ``clip``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from cellclass import results
from cellclass._files import atomic_write_bytes
from cellclass.data.images import read_image, resize, select_channels, to_display_uint8
from cellclass.data.normalization import Normalization, normalize
from cellclass.data.preprocessing import preprocessing_from_dict
from cellclass.export.formats import (
    ONNX_OPSET,
    Classifier,
    ExportError,
    export_metadata,
    onnx_bytes,
    probabilities,
    torchscript_bytes,
)
from cellclass.predict import SavedRun

FORMAT_VERSION = "0.5.4"  # bioimage.io model format written (newer tools update it)


@dataclass(frozen=True)
class PackageSettings:
    name: str = ""  # bioimage.io name; empty: "cellclass <model> run NN"
    description: str = ""  # one-paragraph summary; empty: the classes and the image size
    authors: tuple[str, ...] = ()  # people who trained the model, credited in rdf.yaml
    license: str = "CC-BY-4.0"  # SPDX licence of the weights (the zoo's usual one)
    sample_image: str | None = None  # raw image for the test tensors and cover; None: synthetic


def package_files(
    classifier: Classifier, saved: SavedRun, run_dir: str | Path, settings: PackageSettings
) -> dict[str, bytes]:
    """Every file of the bioimage.io package by name: rdf.yaml, README.md, both weights
    (each checked on a test batch), test and sample tensors, cover.png."""
    _package_name(saved, settings.name)  # a bad --name fails before the slow part
    prep = preprocessing_from_dict(saved.meta["preprocessing"])
    raw = _test_input(saved, settings.sample_image)  # (1, C, S, S) float32, raw pixel values
    normalized = normalize(raw.transpose(0, 2, 3, 1), prep.normalization)  # (1, S, S, C)
    x = torch.from_numpy(np.ascontiguousarray(normalized.transpose(0, 3, 1, 2)))
    expected = probabilities(classifier, x)  # (1, K)
    files = {
        "weights_torchscript.pt": torchscript_bytes(classifier, saved),
        "weights.onnx": onnx_bytes(classifier, saved),
        "test_input.npy": _npy(raw),
        "test_output.npy": _npy(expected),
        "sample_input.tif": _tiff(raw[0]),
        "sample_output.tif": _tiff(expected),
        "cover.png": _cover(normalized[0]),
        "README.md": _readme(saved, run_dir).encode(),
    }
    rdf = _rdf(saved, prep.normalization, settings, files)
    files["rdf.yaml"] = to_yaml(rdf).encode()
    return files


def _test_input(saved: SavedRun, sample_image: str | None) -> np.ndarray:
    """(1, C, S, S) float32 raw pixels: the sample image as training saw it, or synthetic."""
    prep = preprocessing_from_dict(saved.meta["preprocessing"])
    channels, size = int(saved.meta["in_channels"]), prep.image_size
    if sample_image is None:
        norm = prep.normalization
        low = np.asarray(norm.low or (0.0,) * channels, dtype=np.float32)
        high = np.asarray(norm.high or (255.0,) * channels, dtype=np.float32)
        rng = np.random.default_rng(int(saved.meta.get("seed") or 0))
        image = low + (high - low) * rng.random((size, size, channels), dtype=np.float32)
    else:
        picked = select_channels(read_image(sample_image, page=prep.page), prep.channels)
        image = resize(picked, size)  # (S, S, C) native dtype, as in the pixel store
        if image.shape[2] != channels:
            raise ExportError(
                f"sample_image={sample_image}: has {image.shape[2]} channel(s), the model "
                f"takes {channels}; pick an image of the training kind"
            )
    return np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None])


def package_preprocessing(norm: Normalization) -> list[dict]:
    """bioimage.io preprocessing equal to `cellclass.data.normalize` for ``norm``."""
    steps: list[dict] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if norm.mode == "image":
        low, high = norm.percentiles
        steps.append(
            {
                "id": "scale_range",
                "kwargs": {"axes": ["y", "x"], "min_percentile": low, "max_percentile": high},
            }
        )
    else:
        spans = [h - lo if h > lo else 1.0 for lo, h in zip(norm.low, norm.high, strict=True)]
        gain = [1.0 / span for span in spans]
        offset = [0.0 - lo / span for lo, span in zip(norm.low, spans, strict=True)]  # no -0.0
        steps.append(
            {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": gain, "offset": offset}}
        )
    steps.append({"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}})
    return steps + [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]


def _rdf(
    saved: SavedRun, norm: Normalization, settings: PackageSettings, files: dict[str, bytes]
) -> dict:
    """The model description (rdf.yaml) as a dict, bioimage.io model format 0.5."""
    meta = saved.meta
    size, classes = int(meta["image_size"]), list(meta["class_names"])
    channel_names = [f"channel{i}" for i in range(int(meta["in_channels"]))]
    image_axes = [
        {"type": "batch"},
        {"type": "channel", "channel_names": channel_names},
        {"type": "space", "id": "y", "size": size},
        {"type": "space", "id": "x", "size": size},
    ]
    return {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": _package_name(saved, settings.name),
        "description": settings.description or _description(saved),
        **({"authors": [{"name": name} for name in settings.authors]} if settings.authors else {}),
        "license": settings.license,
        "tags": ["cellclass", "classification", "microscopy", "2d", "pytorch", "onnx"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": [
            {
                "id": "raw",
                "description": f"raw pixels of one {size}x{size} image, resized as in training",
                "axes": image_axes,
                "data": {"type": "float32"},
                "test_tensor": _file("test_input.npy", files),
                "sample_tensor": _file("sample_input.tif", files),
                "preprocessing": package_preprocessing(norm),
            }
        ],
        "outputs": [
            {
                "id": "probabilities",
                "description": "class probabilities (softmax), one channel per class",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": classes}],
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "test_tensor": _file("test_output.npy", files),
                "sample_tensor": _file("sample_output.tif", files),
            }
        ],
        "weights": {
            "torchscript": {
                **_file("weights_torchscript.pt", files),
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "onnx": {
                **_file("weights.onnx", files),
                "opset_version": ONNX_OPSET,
                "parent": "torchscript",
            },
        },
        "config": {"cellclass": export_metadata(saved)},
    }


def _package_name(saved: SavedRun, name: str) -> str:
    """bioimage.io names: 5 to 128 letters, digits, spaces and ``_+-()``."""
    if not name:
        label = re.sub(r"[^A-Za-z0-9_+() -]", "-", saved.model_name)
        return f"cellclass {label} run {saved.run:02d}"[:128]
    if not (5 <= len(name) <= 128 and re.fullmatch(r"[A-Za-z0-9_+() -]+", name)):
        raise ExportError(f"name={name!r}: use 5 to 128 letters, digits, spaces or _+-()")
    return name


def _description(saved: SavedRun) -> str:
    size, classes = saved.meta["image_size"], ", ".join(saved.meta["class_names"])
    return (
        f"Classifies {size}x{size} microscopy images into {classes}. "
        f"Run {saved.run} (seed {saved.meta.get('seed')}) of a cellclass experiment."
    )


def _file(name: str, files: dict[str, bytes]) -> dict:
    return {"source": name, "sha256": hashlib.sha256(files[name]).hexdigest()}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    return buffer.getvalue()


def _tiff(array: np.ndarray) -> bytes:
    """A float32 TIFF of ``array`` as it is: (C, S, S) input or (1, K) output."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.asarray(array, dtype=np.float32), photometric="minisblack")
    return buffer.getvalue()


def _cover(image: np.ndarray) -> bytes:
    """(S, S, C) float32 in [0, 1] -> PNG bytes of the image as the model sees it."""
    buffer = io.BytesIO()
    Image.fromarray(to_display_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _readme(saved: SavedRun, run_dir: str | Path) -> str:
    """README.md: what goes in and out, and this run's test accuracies (Validation)."""
    meta = saved.meta
    size, mode = meta["image_size"], meta["preprocessing"]["normalization"]["mode"]
    tta = ", averaged over 8 dihedral transforms" if meta.get("recipe", {}).get("tta") else ""
    scores = "\n".join(
        f"| {row['dataset']} | {row['n_images']} | {float(row['accuracy']):.1%} |"
        for row in results.read_table(Path(run_dir) / results.RUNS_FILE)
        if row.get("run") == saved.run
        and str(row.get("model")) == saved.model_name
        and not int(row.get("control") or 0)
    )
    return f"""# {saved.model_name}, run {saved.run} (cellclass)

{_description(saved)}

## Input
Raw pixel values of one image with {meta["in_channels"]} channel(s), resized to {size}x{size}
(channels, page and resizing as in `config.cellclass.data.preprocessing` of rdf.yaml). The
preprocessing in rdf.yaml maps them to [0, 1] (cellclass' "{mode}" normalisation) and clips;
the network expects that range.

## Output
Class probabilities (softmax{tta}), one channel per class, in this order:
{", ".join(meta["class_names"])}.

## Validation
Accuracy of this run on the test sets of its experiment (runs.csv):

| test set | images | accuracy |
| --- | --- | --- |
{scores or "| (none recorded) | | |"}

To validate on new labelled images, run `cellclass evaluate` on the results folder, or
compare this package's predictions with your labels. One run can be lucky: look at the
spread over all runs of the experiment before trusting it.
"""


# ----------------------------------------------------------------------------- writing


def write_package(out: Path, files: dict[str, bytes]) -> None:
    """A ``.zip`` written atomically, or a folder built next to ``out`` and renamed."""
    if out.suffix == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        atomic_write_bytes(out, buffer.getvalue())
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a package is meant to be shared
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (strings JSON-quoted, valid YAML)."""
    return "\n".join(_yaml_lines(value, indent)) + "\n"


def _yaml_lines(value, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _is_block(item):
                lines += [f"{pad}{key}:", *_yaml_lines(item, indent + 1)]
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(item)}")
    else:
        for item in value:
            if _is_block(item):
                nested = _yaml_lines(item, indent + 1)
                lines += [f"{pad}- {nested[0].lstrip()}", *nested[1:]]
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


def _is_block(value) -> bool:
    return isinstance(value, dict | list | tuple | range) and len(value) > 0


def _yaml_scalar(value) -> str:
    if isinstance(value, dict | list | tuple | range):
        return "{}" if isinstance(value, dict) else "[]"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        text = repr(float(value))
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return json.dumps(str(value))
