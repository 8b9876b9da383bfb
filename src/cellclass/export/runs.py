"""Export one trained run for use outside cellclass: TorchScript, ONNX or a bioimage.io package.

Every format holds the same network, `Classifier`: the run's model and its softmax (averaged
over the 8 dihedral transforms when the recipe uses test-time augmentation). It maps
``(B, C, S, S)`` float32 images normalised to [0, 1] to ``(B, K)`` class probabilities in
``class_names`` order; S is the training image size. The normalisation stays outside the
network ("image" mode needs per-image percentiles) and is described with it:

- TorchScript: extra file ``cellclass.json`` (classes, preprocessing, run, seed);
  read it with ``torch.jit.load(path, _extra_files={"cellclass.json": ""})``.
- ONNX (opset 17): the same JSON in the metadata property ``cellclass``.
- bioimage.io (``.zip``, or a folder when ``out`` has another suffix): a model package whose
  input is the *raw* resized image and whose preprocessing normalises it (``scale_linear``
  per channel for "dataset"/"bitdepth", ``scale_range`` over y, x for "image", then ``clip``),
  so BioImage Model Zoo tools need no cellclass. Weights: TorchScript and ONNX.

Each network is loaded back and compared with the PyTorch model (`TOLERANCE`). ONNX, and so
the package, needs ``pip install 'cellclass[export]'``. Nothing existing is overwritten.
This module picks the run and writes the file; the network and its TorchScript and ONNX bytes
are in `cellclass.export.formats`, the bioimage.io package (which builds on them) in
`cellclass.export.bioimageio`.
"""

from __future__ import annotations

import re
from pathlib import Path

from cellclass._files import atomic_write_bytes
from cellclass.export.bioimageio import PackageSettings, package_files, write_package
from cellclass.export.formats import (
    Classifier,
    ExportError,
    onnx_bytes,
    torchscript_bytes,
)
from cellclass.predict import SavedRun, load_runs

__all__ = ["FORMATS", "SUFFIXES", "export_run"]

FORMATS = ("torchscript", "onnx", "bioimageio")
SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "bioimageio": ".bioimageio.zip"}


def export_run(
    run_dir: str | Path,
    *,
    run: int,
    fmt: str,
    out: str | Path | None = None,
    model: str | None = None,
    package: PackageSettings | None = None,
) -> Path:
    """Write run ``run`` of a results folder as a TorchScript file, ONNX file or bioimage.io
    package, check it against the PyTorch model, and return its path.

    Parameters
    ----------
    run_dir : results folder of `cellclass train`.
    run : run number (``models/run-NN.pt``).
    fmt : one of `FORMATS`.
    out : file (or package folder) to write; default ``RUN_DIR/export/run-NN-<model><suffix>``.
    model : the model label, needed when the experiment trained several side by side.
    package : bioimage.io metadata; ignored by the other formats.

    Raises
    ------
    ExportError
        Unknown format, missing run or model, missing optional dependency, failed check.
    FileExistsError
        ``out`` exists already.
    """
    if fmt not in FORMATS:
        raise ExportError(f"fmt={fmt!r}: choose one of {', '.join(FORMATS)}")
    if not Path(run_dir).is_dir():
        raise ExportError(
            f"{run_dir}: no such results folder; give the folder `cellclass train` wrote"
        )
    saved = _pick_run(run_dir, run, model)
    out = Path(out) if out is not None else _default_out(run_dir, saved, fmt)
    if out.exists():
        raise FileExistsError(f"{out}: exists; choose another out= or remove it")
    classifier = Classifier(saved.model, tta=saved.uses_tta)
    if fmt == "torchscript":
        atomic_write_bytes(out, torchscript_bytes(classifier, saved))
    elif fmt == "onnx":
        atomic_write_bytes(out, onnx_bytes(classifier, saved))
    else:
        files = package_files(classifier, saved, run_dir, package or PackageSettings())
        write_package(out, files)
    return out


def _pick_run(run_dir: str | Path, run: int, model: str | None) -> SavedRun:
    runs = load_runs(run_dir, run=run)
    labels = [saved.model_name for saved in runs]
    if model is not None:
        runs = [saved for saved in runs if saved.model_name == model]
        if not runs:
            raise ExportError(f"model={model}: run {run} has only {', '.join(labels)}")
    if len(runs) > 1:
        raise ExportError(f"run {run} has models {', '.join(labels)}; pick one with model=")
    return runs[0]


def _default_out(run_dir: str | Path, saved: SavedRun, fmt: str) -> Path:
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", saved.model_name)
    return Path(run_dir) / "export" / f"run-{saved.run:02d}-{label}{SUFFIXES[fmt]}"
