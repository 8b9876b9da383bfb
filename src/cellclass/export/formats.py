"""The exported network and its single-file formats, each checked against PyTorch.

`Classifier` wraps a run's model with its softmax (averaged over the 8 dihedral transforms for
recipes with test-time augmentation); `torchscript_bytes` and `onnx_bytes` serialise it with the
`export_metadata` JSON, load it back and compare its outputs with the model (`TOLERANCE`).
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import torch
from torch import nn

import cellclass
from cellclass.predict import SavedRun

TOLERANCE = 1e-4  # largest absolute difference in probability allowed between formats
ONNX_OPSET = 17  # supported by every onnxruntime since 1.11
EXTRA_HINT = "pip install 'cellclass[export]'"


class ExportError(ValueError):
    """The run cannot be exported as asked; the message says what to change."""


class Classifier(nn.Module):
    """A trained model with its softmax: (B, C, S, S) float32 in [0, 1] -> (B, K) float32.

    With ``tta`` the probabilities are averaged over the 8 dihedral transforms, as
    `cellclass predict` does for recipes with test-time augmentation.
    """

    def __init__(self, model: nn.Module, *, tta: bool = False):
        super().__init__()
        self.model = model
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tta:
            return torch.softmax(self.model(x), dim=1)  # (B, K)
        views = [dihedral_view(x, index) for index in range(8)]
        return sum(torch.softmax(self.model(v), dim=1) for v in views) / len(views)  # (B, K)


def dihedral_view(x: torch.Tensor, index: int) -> torch.Tensor:
    """`cellclass.training.augment.dihedral` with flips and transposes only (ONNX has no rot90)."""
    if index >= 4:
        x = x.flip(3)  # mirrored left-right first
    turns = index % 4  # counter-clockwise quarter turns
    if turns == 1:
        return x.flip(3).transpose(2, 3)
    if turns == 2:
        return x.flip(2).flip(3)
    return x.transpose(2, 3).flip(3) if turns == 3 else x


def export_metadata(saved: SavedRun) -> dict:
    """What a user of an exported file needs: classes, input, preprocessing, provenance."""
    meta = saved.meta
    size = int(meta["image_size"])
    return {
        "cellclass_version": cellclass.__version__,
        "run": saved.run,
        "model": saved.model_name,
        "seed": meta.get("seed"),
        "class_names": list(meta["class_names"]),
        "input": f"(batch, {meta['in_channels']}, {size}, {size}) float32 in [0, 1]: pixels "
        "normalised as 'preprocessing' says (cellclass.data.normalize)",
        "output": "(batch, n_classes) float32 class probabilities, in class_names order",
        "preprocessing": meta["preprocessing"],
    }


# ----------------------------------------------------------------------------- checks


def _test_batch(saved: SavedRun, n_images: int = 4) -> torch.Tensor:
    """A fixed random batch, (n_images, C, S, S) float32 in [0, 1]."""
    size = int(saved.meta["image_size"])
    generator = torch.Generator().manual_seed(0)
    shape = (n_images, int(saved.meta["in_channels"]), size, size)
    return torch.rand(shape, generator=generator)


def _check_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    difference = float(np.abs(np.asarray(got) - np.asarray(want)).max())
    if not difference < TOLERANCE:
        raise ExportError(
            f"{what} differs from the PyTorch model by {difference:.2g} (limit {TOLERANCE}); "
            "the export is not faithful, please report this model"
        )


@torch.inference_mode()
def probabilities(classifier: nn.Module, x: torch.Tensor) -> np.ndarray:
    return classifier.eval()(x).numpy()  # (B, K)


# ----------------------------------------------------------------------------- TorchScript


def torchscript_bytes(classifier: Classifier, saved: SavedRun) -> bytes:
    """Traced `Classifier` with ``cellclass.json`` metadata, checked after loading it back."""
    x = _test_batch(saved)
    extra = {"cellclass.json": json.dumps(export_metadata(saved), indent=2)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated, but it is what consumers load
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(classifier.eval(), x[:2], check_trace=False)  # checked below
        torch.jit.save(traced, buffer, _extra_files=extra)
        buffer.seek(0)
        loaded = torch.jit.load(buffer, map_location="cpu")
    _check_close(probabilities(loaded, x), probabilities(classifier, x), "TorchScript output")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- ONNX


def onnx_bytes(classifier: Classifier, saved: SavedRun) -> bytes:
    """`Classifier` as ONNX (dynamic batch) with ``cellclass`` metadata, checked with
    onnxruntime. Uses the TorchScript-based exporter: it needs only onnx, not onnxscript."""
    onnx, onnxruntime = _onnx_modules()
    x = _test_batch(saved)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            classifier.eval(), (x[:2],), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=["input"], output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {"cellclass": json.dumps(export_metadata(saved))})
    proto.doc_string = "cellclass classifier: normalised (B, C, S, S) -> (B, K) probabilities"
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    _check_close(got, probabilities(classifier, x), "ONNX output (onnxruntime)")
    return data


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"ONNX export needs {error.name}: {EXTRA_HINT}") from None
    return onnx, onnxruntime
