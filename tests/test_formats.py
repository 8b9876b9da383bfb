"""Tests for microscope formats (issue 18) and ambiguous TIFF axes (issue 17, point 6):
OME-TIFF axes and pixel size, OME-Zarr 0.4/0.5 folders, CZI/ND2/LIF through bioio, the pixel
size in config.json. Every image is a tiny array the test writes itself."""

import json
import sys
import types
import warnings
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from cellclass import results
from cellclass.data.cache import file_digests
from cellclass.data.datasets import folder_pixel_sizes, load_dataset
from cellclass.data.folders import scan_folder
from cellclass.data.images import (
    BIOIO_EXTENSIONS,
    ImageReadError,
    image_meta,
    image_metadata,
    is_image_path,
    read_image,
)
from cellclass.data.preprocessing import Preprocessing
from cellclass.progress import Observer
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE

SIZE = 32


def _pixels(shape, *, seed=0, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 4095, shape).astype(dtype)


def _write_ome_zarr(path, data, axes, *, version="0.4", scale=None, units=None):
    """An NGFF image written by hand: level 0 = ``data``, level 1 = every other y/x pixel.

    0.4: zarr v2 (``.zattrs``, attributes at the top); 0.5: zarr v3 (``zarr.json``, attributes
    under ``ome``).
    """
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    scale = scale or [1.0] * len(axes)
    types_ = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    axis_list = []
    for name in axes:
        axis = {"name": name, "type": types_[name]}
        if units and name in units:
            axis["unit"] = units[name]
        axis_list.append(axis)
    halve = tuple(slice(None, None, 2) if name in "yx" else slice(None) for name in axes)
    datasets = []
    for level, pixels in enumerate((data, data[halve])):
        array = group.create_array(str(level), shape=pixels.shape, dtype=pixels.dtype)
        array[...] = pixels
        factor = [2.0**level if name in "yx" else 1.0 for name in axes]
        level_scale = [s * f for s, f in zip(scale, factor, strict=True)]
        transform = [{"type": "scale", "scale": level_scale}]
        datasets.append({"path": str(level), "coordinateTransformations": transform})
    multiscale = {"name": path.name, "axes": axis_list, "datasets": datasets}
    if version == "0.4":
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    return path


# ----------------------------------------------------------------------------- OME-TIFF


@pytest.mark.parametrize("axes", ["TCZYX", "CZYX"])
def test_ome_tiff_channels_pages_and_pixel_size(tmp_path, axes):
    shape = {"T": 2, "C": 3, "Z": 4, "Y": SIZE, "X": SIZE + 8}
    data = _pixels([shape[a] for a in axes])
    path = tmp_path / "field.ome.tif"
    metadata = {"axes": axes, "PhysicalSizeX": 0.65, "PhysicalSizeXUnit": "µm"}
    metadata |= {"PhysicalSizeY": 650, "PhysicalSizeYUnit": "nm"}  # other unit, same size
    tifffile.imwrite(path, data, ome=True, metadata=metadata)
    stack = data if axes.startswith("T") else data[np.newaxis]  # (T, C, Z, Y, X)
    n_pages = stack.shape[0] * stack.shape[2]
    meta = image_meta(path)
    assert (meta.n_pages, meta.channels, meta.height, meta.width) == (n_pages, 3, SIZE, SIZE + 8)
    for page in (0, n_pages - 1, n_pages // 2 + 1):
        t, z = divmod(page, stack.shape[2])  # pages run over z fastest, then t
        expected = stack[t, :, z].transpose(1, 2, 0)  # (Y, X, C)
        np.testing.assert_array_equal(read_image(path, page=page), expected)
    info = image_metadata(path)
    assert info["format"] == "ome-tiff"
    assert (info["axes"], info["shape"], info["dtype"]) == (axes, data.shape, "uint16")
    assert info["pixel_size_um"] == pytest.approx((0.65, 0.65))


def test_ome_tiff_rgb_samples_are_channels_and_missing_size_is_none(tmp_path):
    data = _pixels((SIZE, SIZE, 3), dtype=np.uint8)
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="rgb")
    np.testing.assert_array_equal(read_image(path), data)
    info = image_metadata(path)
    assert (info["axes"], info["pixel_size_um"]) == ("YXS", None)


def test_ome_tiff_with_only_x_size_has_square_pixels(tmp_path):
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, _pixels((SIZE, SIZE)), ome=True, metadata={"PhysicalSizeX": 0.2})
    assert image_metadata(path)["pixel_size_um"] == pytest.approx((0.2, 0.2))


def test_imagej_tiff_pixel_size_from_resolution_and_unit(tmp_path):
    path = tmp_path / "fiji.tif"
    data = _pixels((2, SIZE, SIZE))
    # resolution is pixels per unit, (x, y): 0.25 um wide, 0.5 um high
    tifffile.imwrite(
        path, data, imagej=True, resolution=(4.0, 2.0), metadata={"axes": "CYX", "unit": "um"}
    )
    info = image_metadata(path)
    assert info["format"] == "imagej-tiff"
    assert info["pixel_size_um"] == pytest.approx((0.5, 0.25))
    assert image_metadata(_plain_tiff(tmp_path))["pixel_size_um"] is None


def _plain_tiff(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _pixels((SIZE, SIZE)), resolution=(300, 300))  # dpi: not physical
    return path


def test_png_metadata_has_axes_and_no_pixel_size(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_pixels((SIZE, SIZE + 2, 3), dtype=np.uint8)).save(path)
    info = image_metadata(path)
    assert info == {
        "format": "png",
        "axes": "YXS",
        "shape": (SIZE, SIZE + 2, 3),
        "dtype": "uint8",
        "pixel_size_um": None,
    }


# ----------------------------------------------------------------------------- ambiguous TIFF axes


def _read_warnings(path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(path, **kwargs)
    return image, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_plain_channels_first_stack_is_channels_and_warns_once_per_folder(tmp_path):
    data = _pixels((3, 64, 64), dtype=np.uint8)
    first, second = tmp_path / "a" / "one.tif", tmp_path / "a" / "two.tif"
    first.parent.mkdir()
    for path in (first, second):
        tifffile.imwrite(path, data, photometric="minisblack")
    image, messages = _read_warnings(first)
    np.testing.assert_array_equal(image, data.transpose(1, 2, 0))
    assert len(messages) == 1 and "\n" not in messages[0]
    assert str(first) in messages[0] and "3 channels" in messages[0]
    assert "channels=(K,)" in messages[0]  # how to override: pick one channel as the page
    assert _read_warnings(second)[1] == []  # same folder: said once
    other = tmp_path / "b" / "three.tif"
    other.parent.mkdir()
    tifffile.imwrite(other, data, photometric="minisblack")
    assert len(_read_warnings(other)[1]) == 1  # another folder: said again


def test_plain_channels_last_array_is_one_image_with_channels(tmp_path):
    data = _pixels((64, 48, 4), dtype=np.uint8)
    path = tmp_path / "hwc.tif"
    tifffile.imwrite(path, data, photometric="minisblack")  # stored as 64 pages of 48 x 4
    image, messages = _read_warnings(path)
    np.testing.assert_array_equal(image, data)
    assert image_meta(path).n_pages == 1
    assert len(messages) == 1 and "4 channels (channels last)" in messages[0]


def test_plain_small_stack_is_pages_and_says_so(tmp_path):
    data = _pixels((5, SIZE, SIZE), dtype=np.uint8)  # 32 <= 8 * 5: too small to be channels
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    image, messages = _read_warnings(path, page=3)
    np.testing.assert_array_equal(image[:, :, 0], data[3])
    assert len(messages) == 1 and "5 pages" in messages[0] and "stack.tif" in messages[0]


@pytest.mark.parametrize(
    "shape, options",
    [
        ((20, 64, 64), {"photometric": "minisblack"}),  # many planes: a stack, no doubt
        ((3, 64, 64), {"imagej": True, "metadata": {"axes": "ZYX"}}),  # axes recorded
        ((3, 64, 64), {"ome": True, "metadata": {"axes": "CYX"}}),
        ((64, 64, 3), {"photometric": "rgb"}),  # TIFF samples are channels
    ],
    ids=["long-stack", "imagej", "ome", "rgb"],
)
def test_tiffs_that_leave_no_doubt_do_not_warn(tmp_path, shape, options):
    path = tmp_path / "sure.tif"
    tifffile.imwrite(path, _pixels(shape, dtype=np.uint8), **options)
    assert _read_warnings(path)[1] == []


# ----------------------------------------------------------------------------- OME-Zarr


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_reads_level_0_pages_channels_and_pixel_size(tmp_path, version):
    data = _pixels((2, 3, 4, SIZE, SIZE + 4))  # t, c, z, y, x
    units = {"y": "micrometer", "x": "nanometer"}
    scale = [1.0, 1.0, 2.0, 0.325, 325.0]
    path = _write_ome_zarr(
        tmp_path / "field.ome.zarr", data, "tczyx", version=version, scale=scale, units=units
    )
    marker = ".zattrs" if version == "0.4" else "zarr.json"
    assert (path / marker).is_file()
    assert is_image_path(path)
    meta = image_meta(path)
    assert (meta.n_pages, meta.channels, meta.height, meta.width) == (8, 3, SIZE, SIZE + 4)
    for page in (0, 5, 7):
        t, z = divmod(page, 4)
        np.testing.assert_array_equal(read_image(path, page=page), data[t, :, z].transpose(1, 2, 0))
    info = image_metadata(path)
    assert (info["format"], info["axes"], info["shape"]) == ("ome-zarr", "QCQYX", data.shape)
    assert info["pixel_size_um"] == pytest.approx((0.325, 0.325))


def test_ome_zarr_yx_only_and_without_unit(tmp_path):
    data = _pixels((SIZE, SIZE), dtype=np.uint8)
    path = _write_ome_zarr(tmp_path / "plain.ome.zarr", data, "yx", scale=[0.5, 0.5])
    np.testing.assert_array_equal(read_image(path)[:, :, 0], data)
    assert image_metadata(path)["pixel_size_um"] is None  # a scale without a unit is no size


def test_zarr_folder_without_ngff_metadata_is_a_clear_error(tmp_path):
    group = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    group.create_array("0", shape=(4, 4), dtype="uint8")
    with pytest.raises(ImageReadError, match=r"bare\.zarr: .*multiscales"):
        read_image(tmp_path / "bare.zarr")


def test_multi_scene_ome_tiff_reads_the_first_scene_and_says_so(tmp_path):
    path = tmp_path / "slide.ome.tif"
    first, second = _pixels((2, SIZE, SIZE), seed=1), _pixels((3, SIZE, SIZE + 4), seed=2)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(first, metadata={"axes": "CYX"})
        tif.write(second, metadata={"axes": "CYX"})
    with pytest.warns(UserWarning, match=r"slide\.ome\.tif: holds 2 scenes .*first only"):
        image = read_image(path)
    np.testing.assert_array_equal(image, first.transpose(1, 2, 0))


def test_bioformats2raw_zarr_of_two_images_reads_the_first_and_says_so(tmp_path):
    path = tmp_path / "slide.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    first = _pixels((SIZE, SIZE), seed=3)
    _write_ome_zarr(path / "0", first, "yx")
    _write_ome_zarr(path / "1", _pixels((SIZE, SIZE), seed=4), "yx")
    with pytest.warns(UserWarning, match=r"slide\.ome\.zarr: holds 2 scenes"):
        np.testing.assert_array_equal(read_image(path)[..., 0], first)


@pytest.mark.parametrize("kind", ["plate", "well"])
def test_ome_zarr_hcs_plate_is_a_one_line_error(tmp_path, kind):
    path = tmp_path / "screen.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.attrs[kind] = {"version": "0.4", "wells": [{"path": "A/1"}]}
    assert f"an OME-Zarr HCS {kind}, not one image" in _one_line_error(path)


def test_ome_zarr_digest_follows_its_chunks(tmp_path):
    data = _pixels((SIZE, SIZE), dtype=np.uint8)
    path = _write_ome_zarr(tmp_path / "a.ome.zarr", data, "yx")
    before = file_digests([path])
    assert before == file_digests([path]) and not before[0].startswith(b"unreadable")
    zarr.open_array(str(path / "0"), mode="r+")[0, 0] = data[0, 0] ^ 1
    assert file_digests([path]) != before  # an edited image is decoded again, not cached


# ----------------------------------------------------------------------------- folders


def test_class_folder_mixing_tiff_and_ome_zarr_scans_every_image(tmp_path):
    root = tmp_path / "train"
    for name, n_tiff, n_zarr in (("Control", 2, 1), ("Treated", 1, 2)):
        for i in range(n_tiff):
            (root / name).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / name / f"t{i}.ome.tif", _pixels((SIZE, SIZE)), ome=True)
        for i in range(n_zarr):
            _write_ome_zarr(root / name / f"z{i}.ome.zarr", _pixels((SIZE, SIZE)), "yx")
    (root / "Treated" / "sub").mkdir()  # an ordinary subfolder is still walked
    tifffile.imwrite(root / "Treated" / "sub" / "deep.tif", _pixels((SIZE, SIZE)))
    _write_ome_zarr(root / "loose.ome.zarr", _pixels((SIZE, SIZE)), "yx")  # not a class
    index = scan_folder(root)
    assert index.class_names == ("Control", "Treated")
    assert index.class_counts() == {"Control": 3, "Treated": 4}
    names = sorted(p.name for p in index.paths)
    assert names == sorted(
        ["t0.ome.tif", "t1.ome.tif", "z0.ome.zarr", "t0.ome.tif", "z0.ome.zarr", "z1.ome.zarr"]
        + ["deep.tif"]
    )
    assert [p.name for p in index.non_images] == ["loose.ome.zarr"]  # no chunk file listed


def test_class_folders_of_zarr_images_only_are_not_taken_for_class_trees(tmp_path):
    root = tmp_path / "train"
    for name in ("Control", "Treated"):
        _write_ome_zarr(root / name / "field.ome.zarr", _pixels((SIZE, SIZE)), "yx")
    assert scan_folder(root).class_counts() == {"Control": 1, "Treated": 1}


def test_vendor_files_are_listed_not_skipped(tmp_path):
    root = tmp_path / "train"
    for name, suffix in (("A", ".czi"), ("B", ".nd2"), ("B", ".lif")):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / f"field{suffix}").write_bytes(b"vendor bytes")
    index = scan_folder(root)
    assert sorted(p.suffix for p in index.paths) == sorted(BIOIO_EXTENSIONS)
    assert index.non_images == ()


# ----------------------------------------------------------------------------- missing extras


def _one_line_error(path):
    with pytest.raises(ImageReadError) as raised:
        read_image(path)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_ome_zarr_without_zarr_says_which_extra(tmp_path, monkeypatch):
    path = _write_ome_zarr(tmp_path / "f.ome.zarr", _pixels((SIZE, SIZE)), "yx")
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr now raises ImportError
    assert "pip install 'cellclass[ome]'" in _one_line_error(path)


@pytest.mark.parametrize("suffix", sorted(BIOIO_EXTENSIONS))
def test_vendor_file_without_bioio_says_which_extra(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"field{suffix}"
    path.write_bytes(b"vendor bytes")
    monkeypatch.setitem(sys.modules, "bioio", None)
    assert "pip install 'cellclass[bioio]'" in _one_line_error(path)
    monkeypatch.setitem(sys.modules, "bioio", types.ModuleType("bioio"))  # core, no plugin
    for plugin in ("bioio_czi", "bioio_nd2", "bioio_lif"):
        monkeypatch.setitem(sys.modules, plugin, None)
    message = _one_line_error(path)
    assert "bioio_" in message and "pip install 'cellclass[bioio]'" in message


class _Unsupported(Exception):
    """bioio_base.exceptions.UnsupportedFileFormatError, raised for corrupt files too."""


class _FakeBioImage:
    """What cellclass uses of `bioio.BioImage`: dims.order, shape, dtype, get_image_data (the
    requested dimensions in the requested order, the others fixed by keyword),
    physical_pixel_sizes (micrometres), scenes."""

    data = _pixels((2, 3, 4, SIZE, SIZE + 2))  # T, C, Z, Y, X
    scenes = ("Image:0",)  # bioio's scene names; the current scene is the first

    def __init__(self, path, reader=None):
        assert reader is not None and reader.__name__ == "Reader"
        if path.read_bytes() == b"junk":
            raise _Unsupported(f"BioImage does not support the image: '{path}'.\n  - junk")
        self.dims = types.SimpleNamespace(order="TCZYX")
        self.shape, self.dtype = self.data.shape, self.data.dtype
        self.physical_pixel_sizes = types.SimpleNamespace(Z=1.0, Y=0.1, X=0.1)

    def get_image_data(self, order, **fixed):
        index = tuple(fixed.get(axis, slice(None)) for axis in "TCZYX")
        kept = [axis for axis in "TCZYX" if axis not in fixed]
        return self.data[index].transpose([kept.index(axis) for axis in order])


def test_vendor_file_read_through_bioio_maps_axes(tmp_path, monkeypatch):
    bioio = types.ModuleType("bioio")
    bioio.BioImage = _FakeBioImage
    plugin = types.ModuleType("bioio_nd2")
    plugin.Reader = type("Reader", (), {})
    exceptions = types.ModuleType("bioio_base.exceptions")
    exceptions.UnsupportedFileFormatError = _Unsupported
    monkeypatch.setitem(sys.modules, "bioio", bioio)
    monkeypatch.setitem(sys.modules, "bioio_nd2", plugin)
    monkeypatch.setitem(sys.modules, "bioio_base", types.ModuleType("bioio_base"))
    monkeypatch.setitem(sys.modules, "bioio_base.exceptions", exceptions)
    path = tmp_path / "field.nd2"
    path.write_bytes(b"vendor bytes")
    data = _FakeBioImage.data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one scene: nothing to say
        assert image_meta(path).n_pages == 8
    np.testing.assert_array_equal(read_image(path, page=6), data[1, :, 2].transpose(1, 2, 0))
    info = image_metadata(path)
    assert (info["format"], info["axes"], info["pixel_size_um"]) == ("nd2", "TCZYX", (0.1, 0.1))
    broken = tmp_path / "broken.nd2"
    broken.write_bytes(b"junk")
    assert "bioio_nd2 cannot read it" in _one_line_error(broken)
    slide = tmp_path / "slides" / "positions.nd2"
    slide.parent.mkdir()
    slide.write_bytes(b"vendor bytes")
    monkeypatch.setattr(_FakeBioImage, "scenes", ("P0", "P1", "P2"))
    with pytest.warns(UserWarning, match=r"positions\.nd2: holds 3 scenes"):
        np.testing.assert_array_equal(read_image(slide, page=6), data[1, :, 2].transpose(1, 2, 0))


# ----------------------------------------------------------------------------- config.json


def _field(label, seed):
    """A 32 x 32 two-channel field whose class shows as a bright quarter."""
    image = _pixels((2, SIZE, SIZE), seed=seed) // 4
    image[:, : SIZE // 2, : SIZE // 2] += 3000 * label
    return image


def _mixed_training_folder(root, pixel_size_x=0.65):
    """Per class two OME-TIFFs (CYX) and one OME-Zarr (cyx), all 0.65 um pixels."""
    for label, name in enumerate(("Control", "Treated")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            metadata = {"axes": "CYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65}
            if i == 1:
                metadata["PhysicalSizeX"] = pixel_size_x
            tifffile.imwrite(
                root / name / f"f{i}.ome.tif", _field(label, i), ome=True, metadata=metadata
            )
        units = {"y": "micrometer", "x": "micrometer"}
        _write_ome_zarr(
            root / name / "f2.ome.zarr", _field(label, 9), "cyx", scale=[1, 0.65, 0.65], units=units
        )
    return root


def _one_run(train, tmp_path, **options) -> ExperimentSettings:
    """One one-epoch reference run on `train`, results in tmp_path/out."""
    return ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "out"),
        runs=1,
        image_size=SIZE,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=1, batch_size=4),),
        val_split=0.34,
        **options,
    )


def test_pixel_size_lands_in_config_json_after_training(tmp_path):
    train = _mixed_training_folder(tmp_path / "train")
    out = run_experiment(_one_run(train, tmp_path))
    config = results.read_json(out / "config.json")
    assert config["train"]["n_images"] == 6 and config["in_channels"] == 2
    assert config["train"]["pixel_size_um"] == [{"y": 0.65, "x": 0.65, "n_images": 6}]
    json.dumps(config)  # plain JSON


class _Messages(Observer):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def test_different_pixel_sizes_in_one_folder_warn_in_one_line(tmp_path):
    train = _mixed_training_folder(tmp_path / "train", pixel_size_x=0.8)
    observer = _Messages()
    data = load_dataset(
        "train", train, Preprocessing(image_size=SIZE), cache_dir=tmp_path / "c", observer=observer
    )
    assert data.pixel_size_um == [
        {"y": 0.65, "x": 0.65, "n_images": 4},
        {"y": 0.65, "x": 0.8, "n_images": 2},
    ]
    warned = [line for line in observer.lines if line.startswith("warning:")]
    assert len(warned) == 1 and "\n" not in warned[0] and "pixel sizes" in warned[0]
    same = _Messages()
    same_folder = _mixed_training_folder(tmp_path / "same")
    prep = Preprocessing(image_size=SIZE)
    load_dataset("train", same_folder, prep, cache_dir=tmp_path / "c", observer=same)
    assert not any(line.startswith("warning:") for line in same.lines)


def test_folder_without_recorded_sizes_records_none(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _pixels((SIZE, SIZE)))
    assert folder_pixel_sizes([tmp_path / "a.tif"]) is None
    metadata = {"PhysicalSizeX": 1.5}
    tifffile.imwrite(tmp_path / "b.ome.tif", _pixels((SIZE, SIZE)), ome=True, metadata=metadata)
    assert folder_pixel_sizes([tmp_path / "a.tif", tmp_path / "b.ome.tif"]) == [
        {"y": 1.5, "x": 1.5, "n_images": 1},
        {"y": None, "x": None, "n_images": 1},
    ]


def test_predict_finds_ome_zarr_and_vendor_images_and_does_not_walk_into_them(tmp_path):
    from cellclass.predict import collect_images

    folder = tmp_path / "new"
    _write_ome_zarr(folder / "a.ome.zarr", _pixels((SIZE, SIZE)), "yx")
    (folder / "deeper").mkdir()
    (folder / "deeper" / "b.czi").write_bytes(b"vendor bytes")
    tifffile.imwrite(folder / "c.tif", _pixels((SIZE, SIZE)))
    (folder / "notes.txt").write_text("not an image")
    (folder / "loop").symlink_to(folder)  # a link back into the tree is not followed
    images, skipped = collect_images([folder])
    assert [p.name for p in images] == ["a.ome.zarr", "c.tif", "b.czi"]
    assert [p.name for p in skipped] == ["notes.txt"]  # no zarr chunk or metadata file
    named, _ = collect_images([folder / "a.ome.zarr", folder / "deeper" / "b.czi"])
    assert [p.name for p in named] == ["a.ome.zarr", "b.czi"]


def _tiff_folder(root, pixel_size):
    """Two OME-TIFFs (CYX) per class, all with `pixel_size` um pixels."""
    for label, name in enumerate(("Control", "Treated")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            metadata = {"axes": "CYX", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
            tifffile.imwrite(
                root / name / f"t{i}.ome.tif", _field(label, 5 + i), ome=True, metadata=metadata
            )
    return root


def test_a_test_folder_at_another_pixel_size_warns_in_train_and_evaluate(tmp_path):
    from cellclass.predict import evaluate_folder

    train = _mixed_training_folder(tmp_path / "train")  # 0.65 um
    zoomed, alike = _tiff_folder(tmp_path / "x2", 1.3), _tiff_folder(tmp_path / "alike", 0.66)
    observer = _Messages()
    settings = _one_run(train, tmp_path, tests=(("zoomed", str(zoomed)), ("alike", str(alike))))
    out = run_experiment(settings, observer=observer)
    warned = [line for line in observer.lines if "not micrometres" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: zoomed:")
    assert "1.3 x 1.3 um" in warned[0] and "0.65 x 0.65 um" in warned[0]
    later = _Messages()
    evaluate_folder(out, "later", zoomed, cache_dir=str(tmp_path / "cache"), observer=later)
    assert [line for line in later.lines if "not micrometres" in line] == [
        warned[0].replace("zoomed", "later")
    ]
    plain = _Messages()  # TIFFs that record no pixel size: nothing to compare
    for label, name in enumerate(("Control", "Treated")):
        (tmp_path / "plain" / name).mkdir(parents=True)
        tifffile.imwrite(
            tmp_path / "plain" / name / "p.tif", _field(label, 7), metadata={"axes": "CYX"}
        )
    evaluate_folder(
        out, "plain", tmp_path / "plain", cache_dir=str(tmp_path / "cache"), observer=plain
    )
    assert not any("not micrometres" in line for line in plain.lines)
