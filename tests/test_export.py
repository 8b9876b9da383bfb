"""Export of one trained run: each format loaded back and compared with the PyTorch model."""

import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from cellclass.cli import EXPORT_FORMATS, main
from cellclass.data.normalization import Normalization, normalize
from cellclass.data.preprocessing import preprocessing_from_dict
from cellclass.export import runs as export
from cellclass.export.bioimageio import PackageSettings, package_preprocessing, to_yaml
from cellclass.export.formats import Classifier, ExportError, dihedral_view
from cellclass.export.runs import export_run
from cellclass.predict import SavedRun, load_runs
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.augment import dihedral, tta_probabilities
from cellclass.training.recipes import REFERENCE

from .conftest import IN_CI, import_or_require, make_class_tree, require


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_ONNX = _importable("onnx") and _importable("onnxruntime")
needs_onnx = pytest.mark.skipif(  # under CI (which installs them) missing ones fail
    not HAS_ONNX and not IN_CI, reason="pip install 'cellclass[export]'"
)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A results folder with one run of the reference model on 32x32 grayscale images."""
    root = tmp_path_factory.mktemp("export")
    train = make_class_tree(root / "train", {"Control": 8, "Treated": 8})
    test = make_class_tree(root / "t1", {"Control": 3, "Treated": 3}, seed=9)
    settings = ExperimentSettings(
        train_dir=str(train), out=str(root / "out"), tests=(("t1", str(test)),), runs=1,
        seed=3, image_size=32, cache_dir=str(root / "cache"),
        recipes=(replace(REFERENCE, epochs=1, batch_size=8),),
    )  # fmt: skip
    return run_experiment(settings)


@pytest.fixture(scope="module")
def saved(run_dir):
    return load_runs(run_dir, run=0)[0]


@pytest.fixture(scope="module")
def package(run_dir):
    require(HAS_ONNX, "onnx and onnxruntime (pip install 'cellclass[export]')")
    path = export_run(run_dir, run=0, fmt="bioimageio")
    with zipfile.ZipFile(path) as archive:
        return path, {name: archive.read(name) for name in archive.namelist()}


def _batch(n_images: int, seed: int = 1) -> torch.Tensor:
    return torch.rand((n_images, 1, 32, 32), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def _reference(saved: SavedRun, x: torch.Tensor) -> np.ndarray:
    return torch.softmax(saved.model(x), dim=1).numpy()  # (B, K)


def _apply(steps: list[dict], raw: np.ndarray) -> np.ndarray:
    """bioimage.io preprocessing as the spec defines it, on (1, C, H, W) raw pixels."""
    x = raw.astype(np.float32)
    for step in steps:
        kwargs = step.get("kwargs", {})
        if step["id"] == "scale_linear":
            gain, offset = (np.reshape(kwargs[k], (1, -1, 1, 1)) for k in ("gain", "offset"))
            x = x * gain + offset
        elif step["id"] == "scale_range":
            bounds = [kwargs["min_percentile"], kwargs["max_percentile"]]
            low, high = np.percentile(x, bounds, axis=(2, 3), keepdims=True)
            x = (x - low) / (high - low + kwargs.get("eps", 1e-6))
        elif step["id"] == "clip":
            x = np.clip(x, kwargs["min"], kwargs["max"])
        else:
            assert step["id"] == "ensure_dtype"
            x = x.astype(kwargs["dtype"])
    return x


def test_torchscript_file_matches_pytorch_and_carries_metadata(run_dir, saved):
    path = export_run(run_dir, run=0, fmt="torchscript")
    assert path == run_dir / "export" / "run-00-reference.torchscript.pt"
    extra = {"cellclass.json": ""}
    loaded = torch.jit.load(path, _extra_files=extra)
    x = _batch(3)  # another batch size than the one traced
    with torch.inference_mode():
        got = loaded(x).numpy()
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, _reference(saved, x), atol=1e-5)
    meta = json.loads(extra["cellclass.json"])
    assert meta["class_names"] == ["Control", "Treated"]
    assert meta["preprocessing"]["normalization"]["mode"] == "bitdepth"  # the reference recipe
    assert (meta["run"], meta["seed"]) == (0, 3)


@needs_onnx
def test_onnx_file_matches_pytorch_in_onnxruntime(run_dir, saved, tmp_path):
    import onnx
    import onnxruntime

    path = export_run(run_dir, run=0, fmt="onnx", out=tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _batch(5)
    (got,) = session.run(None, {"input": x.numpy()})
    assert np.abs(got - _reference(saved, x)).max() < 1e-4
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(props["cellclass"])["class_names"] == ["Control", "Treated"]


@needs_onnx
def test_bioimageio_package_test_tensors_match_every_weights_format(package, saved):
    import onnxruntime

    _, files = package
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy"} <= set(files)
    raw = np.load(io.BytesIO(files["test_input.npy"]))  # (1, C, S, S) raw pixels
    expected = np.load(io.BytesIO(files["test_output.npy"]))  # (1, K)
    assert raw.shape == (1, 1, 32, 32) and expected.shape == (1, 2)
    norm = preprocessing_from_dict(saved.meta["preprocessing"]).normalization
    x = torch.from_numpy(normalize(raw.transpose(0, 2, 3, 1), norm).transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(expected, _reference(saved, x), atol=1e-5)
    scripted = torch.jit.load(io.BytesIO(files["weights_torchscript.pt"]))
    np.testing.assert_allclose(scripted(x).detach().numpy(), expected, atol=1e-5)
    session = onnxruntime.InferenceSession(files["weights.onnx"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4)
    assert (
        "## Validation" in files["README.md"].decode()
        and "| t1 | 6 |" in files["README.md"].decode()
    )


@pytest.mark.parametrize(
    "norm",
    [
        Normalization("dataset", (10.0, 0.0), (200.0, 4095.0)),
        Normalization("bitdepth", (0.0, 0.0), (255.0, 255.0)),
        Normalization("image", percentiles=(2.0, 98.0)),
    ],
)
def test_package_preprocessing_is_cellclass_normalisation(norm):
    raw = np.random.default_rng(0).integers(0, 4096, (1, 2, 16, 16)).astype(np.float32)
    want = normalize(raw.transpose(0, 2, 3, 1), norm).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(_apply(package_preprocessing(norm), raw), want, atol=1e-5)


def test_dihedral_views_equal_the_training_transforms():
    x = torch.rand(2, 3, 6, 6)
    for index in range(8):
        assert torch.equal(dihedral_view(x, index), dihedral(x, index))


def test_tta_classifier_averages_like_predict(saved):
    x = _batch(2)
    with torch.inference_mode():
        got = Classifier(saved.model, tta=True)(x)
        want = tta_probabilities(saved.model, x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@needs_onnx
def test_package_folder_with_sample_image(run_dir, tmp_path):
    image = run_dir.parent / "train" / "Treated" / "Treated_000.png"
    settings = PackageSettings(name="my model", authors=("Ada Lovelace",), sample_image=str(image))
    out = export_run(run_dir, run=0, fmt="bioimageio", out=tmp_path / "pkg", package=settings)
    assert out.is_dir() and (out / "rdf.yaml").is_file()
    raw = np.load(out / "test_input.npy")
    from PIL import Image

    np.testing.assert_array_equal(raw[0, 0], np.asarray(Image.open(image), dtype=np.float32))
    rdf = (out / "rdf.yaml").read_text()
    assert 'name: "my model"' in rdf and '- name: "Ada Lovelace"' in rdf
    for name in ("weights_torchscript.pt", "weights.onnx", "test_output.npy"):
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() in rdf


def test_bioimageio_package_passes_the_spec_validator(package, saved):
    spec = import_or_require("bioimageio.spec", "bioimageio.spec (pip install 'cellclass[export]')")
    ruyaml = import_or_require("ruyaml", "ruyaml (comes with bioimageio.spec)")
    path, files = package
    with spec.ValidationContext(perform_io_checks=True):
        description = spec.load_description(path)
    summary = description.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    rdf = ruyaml.YAML(typ="safe").load(files["rdf.yaml"].decode())
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["Control", "Treated"]
    raw = np.load(io.BytesIO(files["test_input.npy"]))
    x = torch.from_numpy(_apply(rdf["inputs"][0]["preprocessing"], raw))
    expected = np.load(io.BytesIO(files["test_output.npy"]))
    np.testing.assert_allclose(_reference(saved, x), expected, atol=1e-5)


def test_yaml_round_trip():
    ruyaml = import_or_require("ruyaml", "ruyaml (comes with bioimageio.spec)")
    data = {
        "a": [1, 2.5, 1e-06, -0.0, True, None, 'quote " and: colon'],
        "b": {"c": [], "d": {}, "e": [{"f": "x", "g": [[1, 2], [3]]}]},
    }
    assert ruyaml.YAML(typ="safe").load(to_yaml(data)) == data


def test_existing_output_is_never_overwritten(run_dir, tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="model.pt: exists"):
        export_run(run_dir, run=0, fmt="torchscript", out=out)
    assert out.read_bytes() == b"mine"


def test_missing_onnxruntime_says_what_to_install(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"cellclass\[export\]"):
        export_run(run_dir, run=0, fmt="onnx", out=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_several_models_in_one_run_need_model(saved, tmp_path, monkeypatch):
    twins = [replace(saved, model_name="badger"), replace(saved, model_name="strong")]
    monkeypatch.setattr(export, "load_runs", lambda *args, **kwargs: twins)
    with pytest.raises(ExportError, match="pick one with model="):
        export_run(tmp_path, run=0, fmt="torchscript")
    with pytest.raises(ExportError, match="model=other: run 0 has only badger, strong"):
        export_run(tmp_path, run=0, fmt="torchscript", model="other")
    out = export_run(tmp_path, run=0, fmt="torchscript", model="strong")
    assert out.name == "run-00-strong.torchscript.pt"


def test_package_name_follows_the_bioimageio_rule(run_dir, tmp_path):
    bad = PackageSettings(name="my/model")
    with pytest.raises(ExportError, match="name='my/model'"):
        export_run(run_dir, run=0, fmt="bioimageio", out=tmp_path / "p.zip", package=bad)
    assert not (tmp_path / "p.zip").exists()


def test_unknown_format_in_the_library(run_dir):
    with pytest.raises(ExportError, match="fmt='keras'"):
        export_run(run_dir, run=0, fmt="keras")


def test_cli_exports_and_reports_the_path(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    argv = ["export", str(run_dir), "--run", "0", "--format", "torchscript", "--out", str(out)]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out and out.is_file()
    assert EXPORT_FORMATS == export.FORMATS


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run", "7", "--format", "torchscript"], "no run 7"),
        (["--run", "0", "--format", "torchscript", "--out", "{run_dir}/config.json"], "exists"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(run_dir, capsys, argv, message):
    argv = [a.format(run_dir=run_dir) for a in argv]
    assert main(["export", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("cellclass: error:") and err.count("\n") == 1


def test_cli_missing_run_dir(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--run", "0", "--format", "onnx"]) == 2
    assert "nope: no such results folder" in capsys.readouterr().err


def test_cli_bad_format_is_a_usage_error(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--run", "0", "--format", "keras"])
    assert exit_info.value.code == 2
    assert "argument --format: invalid choice: 'keras'" in capsys.readouterr().err
