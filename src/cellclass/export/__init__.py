"""Export one trained run (layer 5): the exported network and its single-file formats,
TorchScript and ONNX, each checked against PyTorch (`formats`), the bioimage.io package built
on them (`bioimageio`), and `export_run`, which picks the run and writes the file (`runs`).
"""

from cellclass.export.bioimageio import (
    FORMAT_VERSION,
    PackageSettings,
    package_files,
    package_preprocessing,
    write_package,
)
from cellclass.export.formats import (
    EXTRA_HINT,
    ONNX_OPSET,
    TOLERANCE,
    Classifier,
    ExportError,
    dihedral_view,
    export_metadata,
    onnx_bytes,
    torchscript_bytes,
)
from cellclass.export.runs import FORMATS, SUFFIXES, export_run

__all__ = [
    "Classifier",
    "EXTRA_HINT",
    "ExportError",
    "FORMATS",
    "FORMAT_VERSION",
    "ONNX_OPSET",
    "PackageSettings",
    "SUFFIXES",
    "TOLERANCE",
    "dihedral_view",
    "export_metadata",
    "export_run",
    "onnx_bytes",
    "package_files",
    "package_preprocessing",
    "torchscript_bytes",
    "write_package",
]
