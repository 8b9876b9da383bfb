"""Tests for cellclass.data.images: decoding, metadata, channels, resizing, writing,
normalisation."""

import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cellclass.data import images
from cellclass.data.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    effective_bit_depth,
    image_meta,
    parse_channels,
    read_image,
    resize,
    select_channels,
    to_display_uint8,
    write_image,
)
from cellclass.data.normalization import (
    Normalization,
    fit_normalization,
    image_percentiles,
    normalize,
)

SIZE = 32


def _random_image(dtype, n_channels, *, seed=0, high=None):
    """(SIZE, SIZE, n_channels) pixels spanning most of the dtype's range."""
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE, n_channels)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape, dtype=np.float32)
    top = high if high is not None else np.iinfo(dtype).max
    return rng.integers(0, top, shape, endpoint=True).astype(dtype)


def _png_16bit_rgb(path, pixels):
    """Write a 16-bit RGB PNG by hand (Pillow cannot)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


# ----------------------------------------------------------------------------- round trips

ROUND_TRIPS = [
    ("png", "uint8", 1),
    ("png", "uint8", 3),
    ("png", "uint8", 4),
    ("png", "uint16", 1),
] + [("tif", dtype, c) for dtype in ("uint8", "uint16", "float32") for c in (1, 2, 3, 5)]


@pytest.mark.parametrize(("suffix", "dtype", "n_channels"), ROUND_TRIPS)
def test_write_then_read_is_exact(tmp_path, suffix, dtype, n_channels):
    pixels = _random_image(dtype, n_channels)
    path = tmp_path / f"image.{suffix}"
    write_image(path, pixels)
    decoded = read_image(path)
    assert decoded.dtype == np.dtype(dtype)
    assert decoded.shape == (SIZE, SIZE, n_channels)
    np.testing.assert_array_equal(decoded, pixels)
    assert decoded.flags.c_contiguous and decoded.flags.writeable


def test_write_accepts_2d_and_reads_back_one_channel(tmp_path):
    pixels = _random_image("uint8", 1)[:, :, 0]
    write_image(tmp_path / "gray.png", pixels)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png")[:, :, 0], pixels)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_12_bit_data_keeps_values_and_is_detected(tmp_path, suffix):
    pixels = _random_image("uint16", 1, high=4095)
    pixels[0, 0, 0] = 4095
    path = tmp_path / f"camera.{suffix}"
    write_image(path, pixels)
    decoded = read_image(path)
    np.testing.assert_array_equal(decoded, pixels)  # no /255 or /16 squashing
    meta = image_meta(path)
    assert (meta.height, meta.width, meta.channels) == (SIZE, SIZE, 1)
    assert (meta.dtype, meta.bit_depth, meta.n_pages) == ("uint16", 12, 1)
    assert meta.path == path


@pytest.mark.parametrize(
    ("pixels", "bits"),
    [
        (np.array([0, 255], np.uint8), 8),
        (np.array([0, 1000], np.uint16), 10),
        (np.array([0, 4095], np.uint16), 12),
        (np.array([0, 4096], np.uint16), 14),
        (np.array([0, 65535], np.uint16), 16),
        (np.array([0.0, 0.5], np.float32), 32),
        (np.array([True, False]), 8),
    ],
)
def test_effective_bit_depth(pixels, bits):
    assert effective_bit_depth(pixels) == bits


def test_image_extensions_are_lower_case_with_dot():
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} == IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------- pages and channels


def test_multi_page_tiff_selects_page(tmp_path):
    stack = np.stack([np.full((SIZE, SIZE), 10 * page, np.uint16) for page in range(5)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    assert read_image(path)[0, 0, 0] == 0
    np.testing.assert_array_equal(read_image(path, page=1)[:, :, 0], stack[1])
    assert image_meta(path, page=4).n_pages == 5
    with pytest.raises(ImageReadError, match=r"stack\.tif: page 5 is out of range.*5 page"):
        read_image(path, page=5)


def test_tiff_with_z_axis_metadata_has_pages(tmp_path):
    stack = np.stack([np.full((SIZE, SIZE), page + 1, np.uint8) for page in range(3)])
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", metadata={"axes": "ZYX"})
    assert image_meta(path).n_pages == 3
    assert read_image(path, page=2).shape == (SIZE, SIZE, 1)
    assert read_image(path, page=2)[0, 0, 0] == 3


def test_pages_written_one_by_one_are_pages(tmp_path):
    path = tmp_path / "appended.tif"
    with tifffile.TiffWriter(path) as writer:
        for page in range(3):
            writer.write(np.full((SIZE, SIZE), page + 7, np.uint8))
    assert image_meta(path).n_pages == 3
    assert read_image(path, page=2)[0, 0, 0] == 9


@pytest.mark.parametrize("flavour", ["imagej", "ome"])
def test_hyperstack_channels_are_channels_not_pages(tmp_path, flavour):
    data = np.random.default_rng(1).integers(0, 4095, (4, 3, SIZE, SIZE)).astype(np.uint16)
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(path, data, **{flavour: True}, metadata={"axes": "ZCYX"})
    meta = image_meta(path)
    assert (meta.n_pages, meta.channels) == (4, 3)
    np.testing.assert_array_equal(read_image(path, page=2), data[2].transpose(1, 2, 0))


@pytest.mark.parametrize(
    "options",
    [
        {"imagej": True, "metadata": {"axes": "CYX"}},  # ImageJ composite
        {"photometric": "minisblack"},  # plain stack, no axis metadata
        {"photometric": "rgb", "planarconfig": "separate"},  # planar RGB
    ],
    ids=["imagej", "plain", "planar"],
)
def test_channels_first_tiff_reads_channels_last(tmp_path, options):
    data = np.random.default_rng(2).integers(0, 255, (3, SIZE, SIZE)).astype(np.uint8)
    path = tmp_path / "chw.tif"
    tifffile.imwrite(path, data, **options)
    decoded = read_image(path)
    assert decoded.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(decoded, data.transpose(1, 2, 0))
    assert image_meta(path).n_pages == 1


def test_jpeg_reads_as_uint8_rgb(tmp_path):
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[:, :, 0] = 200  # flat red survives JPEG compression almost exactly
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)
    decoded = read_image(tmp_path / "photo.jpg")
    assert decoded.dtype == np.uint8 and decoded.shape == (SIZE, SIZE, 3)
    assert abs(int(decoded[:, :, 0].mean()) - 200) <= 2 and decoded[:, :, 2].max() <= 5


def test_palette_png_reads_as_rgb(tmp_path):
    palette = Image.new("P", (SIZE, SIZE), color=1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    decoded = read_image(tmp_path / "palette.png")
    assert decoded.shape == (SIZE, SIZE, 3)
    assert decoded[5, 5].tolist() == [10, 20, 30]


def test_bilevel_png_reads_as_0_255(tmp_path):
    Image.new("1", (SIZE, SIZE), color=1).save(tmp_path / "mask.png")
    decoded = read_image(tmp_path / "mask.png")
    assert decoded.dtype == np.uint8 and decoded.max() == 255


@pytest.mark.parametrize(
    ("stored", "expected_dtype"),
    [
        (np.array([[0, 70000]], np.int32), np.float32),
        (np.array([[0, 4095]], np.int32), np.uint16),
        (np.array([[-5, 100]], np.int16), np.float32),
        (np.array([[0.25, 1.5]], np.float64), np.float32),
    ],
)
def test_other_dtypes_are_converted_without_loss(tmp_path, stored, expected_dtype):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, stored)
    decoded = read_image(path)
    assert decoded.dtype == expected_dtype
    np.testing.assert_array_equal(decoded[:, :, 0], stored.astype(expected_dtype))


# ----------------------------------------------------------------------------- broken files


def _truncated_png(path):
    write_image(path, _random_image("uint8", 3))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncated_tiff(path):
    write_image(path, _random_image("uint16", 1))
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("cut.png", _truncated_png),
        ("cut.tif", _truncated_tiff),
        ("garbage.png", lambda path: path.write_bytes(b"this is not an image" * 10)),
        ("garbage.tif", lambda path: path.write_bytes(b"II*\x00" + b"\xff" * 60)),
        ("empty.png", lambda path: path.write_bytes(b"")),
        ("missing.tif", lambda path: None),
        ("rgb16.png", lambda path: _png_16bit_rgb(path, np.zeros((4, 4, 3), np.uint16))),
    ],
)
def test_unreadable_file_raises_image_read_error_naming_it(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
        image_meta(path)


# ----------------------------------------------------------------------------- channels, resize


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("1", (1,)), ("0,0,0", (0, 0, 0)), ("2,1,0", (2, 1, 0)), (" 2, 1 ", (2, 1))],
)
def test_parse_channels(spec, expected):
    assert parse_channels(spec) == expected


@pytest.mark.parametrize("spec", ["", "a", "-1", "1,,2", "1.5", "0;1", "²"])
def test_parse_channels_rejects_bad_spec_quoting_it(spec):
    with pytest.raises(ValueError, match=r"'2,1,0'") as caught:
        parse_channels(spec)
    assert repr(spec) in str(caught.value)


def test_select_channels_reorders_repeats_and_passes_none():
    pixels = np.arange(2 * 2 * 3).reshape(2, 2, 3)
    assert select_channels(pixels, None) is pixels
    np.testing.assert_array_equal(select_channels(pixels, (2, 1, 0)), pixels[:, :, ::-1])
    gray = pixels[:, :, :1]
    assert select_channels(gray, (0, 0, 0)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"channel 3 .* 3 channel"):
        select_channels(pixels, (0, 3))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("size", [16, (8, 24), 48])
def test_resize_shape_dtype_and_constant_values(dtype, size):
    pixels = np.full((SIZE, SIZE, 2), 200, dtype=dtype)
    resized = resize(pixels, size)
    height, width = (size, size) if isinstance(size, int) else size
    assert resized.shape == (height, width, 2) and resized.dtype == np.dtype(dtype)
    np.testing.assert_allclose(resized, 200, rtol=1e-6)  # flat stays flat
    if dtype != "float32":
        np.testing.assert_array_equal(resized, 200)  # integers: rounded, not truncated to 199


def test_resize_rounds_integers_and_is_a_no_op_at_target_size():
    pixels = np.array([[[0], [3]]], np.uint8)  # mean 1.5: rounding gives 2, truncating 1
    assert resize(pixels, (1, 1))[0, 0, 0] == 2
    same = np.zeros((SIZE, SIZE, 1), np.uint16)
    assert resize(same, SIZE) is same


def test_resize_antialiases_when_shrinking():
    noise = np.random.default_rng(3).random((64, 64, 1), dtype=np.float32)
    shrunk = resize(noise, 16)  # each output pixel averages a 4x4 block: spread shrinks ~4x
    assert shrunk.std() < noise.std() / 2.5
    assert abs(shrunk.mean() - noise.mean()) < 0.01


def test_resize_rejects_bad_size():
    with pytest.raises(ValueError, match="positive"):
        resize(np.zeros((4, 4, 1), np.uint8), 0)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("name", "pixels", "match"),
    [
        ("a.png", np.zeros((4, 4, 1), np.float32), r"\.tif"),
        ("a.png", np.zeros((4, 4, 2), np.uint8), r"\.tif"),
        ("a.png", np.zeros((4, 4, 3), np.uint16), r"\.tif"),
        ("a.tif", np.zeros((4, 4, 1), np.float64), "float64"),
        ("a.jpg", np.zeros((4, 4, 3), np.uint8), r"\.jpg"),
    ],
)
def test_write_image_rejects_what_it_cannot_keep(tmp_path, name, pixels, match):
    with pytest.raises(ValueError, match=match):
        write_image(tmp_path / name, pixels)
    assert list(tmp_path.iterdir()) == []


def test_write_image_replaces_atomically_and_cleans_up_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "image.tif"
    write_image(path, np.ones((4, 4, 1), np.uint8))
    write_image(path, np.full((4, 4, 1), 2, np.uint8))  # overwrite works
    assert read_image(path)[0, 0, 0] == 2

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(images.tifffile, "imwrite", fail)
    with pytest.raises(OSError, match="disk full"):
        write_image(path, np.full((4, 4, 1), 3, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["image.tif"]  # no temporary left
    assert read_image(path)[0, 0, 0] == 2  # old content intact


# ----------------------------------------------------------------------------- normalisation


def _dim_and_bright():
    """Two 12-bit images of one pattern, the second 8x brighter: (2, H, W, 1) uint16."""
    pattern = np.random.default_rng(4).integers(50, 500, (SIZE, SIZE, 1))
    return np.stack([pattern, pattern * 8]).astype(np.uint16)


def test_dataset_mode_keeps_brightness_difference():
    pair = _dim_and_bright()
    norm = fit_normalization("dataset", pair, bit_depth=12)
    dim, bright = normalize(pair, norm)
    assert bright.mean() > 3 * dim.mean()


def test_image_mode_removes_brightness_difference():
    pair = _dim_and_bright()
    norm = fit_normalization("image", pair, bit_depth=12)
    assert norm.low == () and norm.high == ()
    dim, bright = normalize(pair, norm)
    np.testing.assert_allclose(dim, bright, atol=1e-6)
    assert dim.min() == 0.0 and dim.max() == 1.0


def test_bitdepth_mode_maps_full_12_bit_range():
    norm = fit_normalization("bitdepth", np.zeros((1, 2, 2, 2), np.uint16), bit_depth=12)
    assert norm.low == (0.0, 0.0) and norm.high == (4095.0, 4095.0)
    pixels = np.repeat(np.array([[[0], [4095]], [[2048], [5000]]], np.uint16), 2, axis=2)
    out = normalize(pixels, norm)  # (2, 2, 2)
    assert out[0, 0, 0] == 0.0 and out[0, 1, 0] == 1.0 and out[1, 1, 1] == 1.0
    assert abs(out[1, 0, 0] - 0.5) < 1e-3


@pytest.mark.parametrize("mode", ["dataset", "image", "bitdepth"])
def test_constant_channel_does_not_divide_by_zero(mode):
    flat = np.full((2, 8, 8, 1), 7, np.uint16)
    norm = fit_normalization(mode, flat, bit_depth=12)
    out = normalize(flat, norm)
    assert np.isfinite(out).all()
    if mode == "dataset":
        assert norm.high[0] > norm.low[0]


@pytest.mark.parametrize("mode", ["dataset", "image", "bitdepth"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_normalize_output_is_float32_in_unit_range(mode, dtype):
    batch = np.stack([_random_image(dtype, 3, seed=seed) for seed in range(3)])
    bits = effective_bit_depth(batch)
    norm = fit_normalization(mode, batch[:2], bit_depth=bits)
    for pixels in (batch, batch[2]):  # (N, H, W, C) and one (H, W, C) image
        out = normalize(pixels, norm)
        assert out.dtype == np.float32 and out.shape == pixels.shape
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_dataset_mode_uses_percentiles_over_all_images():
    batch = np.stack([np.full((4, 4, 1), 10, np.uint16), np.full((4, 4, 1), 1000, np.uint16)])
    norm = fit_normalization("dataset", batch, bit_depth=10, percentiles=(0, 100))
    assert norm.low == (10.0,) and norm.high == (1000.0,)


def test_image_percentiles_are_per_image_per_channel():
    batch = np.stack([_random_image("uint16", 2, seed=seed) for seed in range(3)])
    low, high = image_percentiles(batch, (1, 99))
    assert low.shape == high.shape == (3, 2) and low.dtype == np.float32
    expected = np.percentile(batch[1, :, :, 0], 99)
    assert high[1, 0] == pytest.approx(expected, rel=1e-6)


def test_normalize_uses_given_low_high():
    pixels = np.full((1, 2, 2, 1), 150, np.uint16)
    out = normalize(pixels, Normalization("image"), low=[[100.0]], high=[[200.0]])
    np.testing.assert_allclose(out, 0.5)


def test_normalization_errors_are_specific():
    with pytest.raises(ValueError, match="dataset, image, bitdepth"):
        fit_normalization("zscore", np.zeros((1, 2, 2, 1)), bit_depth=8)
    norm = Normalization("dataset", low=(0.0, 0.0), high=(1.0, 1.0))
    with pytest.raises(ValueError, match="1 channel"):
        normalize(np.zeros((2, 2, 1)), norm)
    with pytest.raises(ValueError, match="fit_normalization"):
        normalize(np.zeros((2, 2, 1)), Normalization("dataset"))


# ----------------------------------------------------------------------------- display


def test_to_display_uint8_maps_channels_to_rgb():
    ones = np.ones((2, 2, 1), np.float32)
    np.testing.assert_array_equal(to_display_uint8(ones * 0.5), np.full((2, 2, 3), 128))
    two = to_display_uint8(np.concatenate([ones, ones * 0.2], axis=2))
    assert two[0, 0].tolist() == [255, 51, 0]
    four = to_display_uint8(np.concatenate([ones * 0.0, ones, ones, ones], axis=2) * 2.0)
    assert four.dtype == np.uint8 and four[0, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize("mode", ["dataset", "image", "bitdepth"])
def test_numpy_and_torch_normalisation_give_the_same_numbers(mode):
    """One map, two array libraries: export (numpy) and training (torch) must agree, also
    on a constant image whose percentile range is empty."""
    import torch

    from cellclass.data.normalization import image_percentiles, normalize_batch

    rng = np.random.default_rng(4)
    batch = rng.integers(0, 4096, size=(3, 8, 8, 2)).astype(np.uint16)
    batch[1] = 700  # constant image: low == high
    norm = fit_normalization(mode, batch, bit_depth=12)
    low, high = image_percentiles(batch, norm.percentiles)
    expected = (
        normalize(batch, norm, low=low, high=high) if mode == "image" else normalize(batch, norm)
    )
    got = normalize_batch(
        torch.from_numpy(batch.astype(np.int32)).permute(0, 3, 1, 2),
        norm,
        low=torch.from_numpy(low),
        high=torch.from_numpy(high),
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    floats = torch.from_numpy(batch.astype(np.float32)).permute(0, 3, 1, 2)
    kept = floats.clone()
    normalize_batch(floats, norm, low=torch.from_numpy(low), high=torch.from_numpy(high))
    assert torch.equal(floats, kept)  # float pixels are not normalised in place


# ------------------------------------------------ normalisation at its edges (issue 21)
def test_fitting_needs_pixels_and_takes_one_pixel():
    from cellclass.data.normalization import fit_normalization

    for bad in (np.zeros((0, 4, 4, 1)), np.zeros((4, 4, 1))):
        with pytest.raises(ValueError, match="needs \\(N, H, W, C\\) pixels"):
            fit_normalization("dataset", bad, bit_depth=8)
    one = fit_normalization("dataset", np.full((1, 1, 1, 1), 7.0), bit_depth=8)
    assert one.low == (7.0,) and one.high == (8.0,)  # a constant image: a range of one


@pytest.mark.parametrize(("bits", "top"), [(1, 1.0), (12, 4095.0), (16, 65535.0), (32, 1.0)])
def test_bit_depth_ranges_run_from_zero_to_the_largest_value(bits, top):
    from cellclass.data.normalization import fit_normalization

    norm = fit_normalization("bitdepth", np.zeros((1, 2, 2, 2)), bit_depth=bits)
    assert norm.low == (0.0, 0.0) and norm.high == (top, top)


@pytest.mark.parametrize("bits", [0, 17, 31, 33])
def test_other_bit_depths_are_refused(bits):
    from cellclass.data.normalization import fit_normalization

    with pytest.raises(ValueError, match=f"got {bits}"):
        fit_normalization("bitdepth", np.zeros((1, 2, 2, 1)), bit_depth=bits)


def test_dataset_ranges_are_per_channel_percentiles():
    from cellclass.data.normalization import fit_normalization

    sample = np.stack([np.arange(100.0), 10 * np.arange(100.0)], axis=-1).reshape(1, 10, 10, 2)
    norm = fit_normalization("dataset", sample, bit_depth=16, percentiles=(10, 90))
    assert norm.low == pytest.approx((9.9, 99.0)) and norm.high == pytest.approx((89.1, 891.0))


def test_given_ranges_are_one_per_image_or_one_for_all():
    from cellclass.data.normalization import Normalization, normalize, normalize_batch

    images = np.arange(3 * 2 * 2 * 1, dtype=np.float32).reshape(3, 2, 2, 1)
    norm = Normalization("image")
    shared = normalize(images, norm, low=np.zeros((1, 1)), high=np.full((1, 1), 11.0))
    np.testing.assert_allclose(shared, images / 11.0)
    each = normalize(images, norm, low=images.min((1, 2)), high=images.max((1, 2)))
    np.testing.assert_allclose(each[:, 0, 0, 0], 0.0)
    np.testing.assert_allclose(each[:, 1, 1, 0], 1.0)
    with pytest.raises(ValueError, match="range has shape \\(2, 1\\)"):
        normalize(images, norm, low=np.zeros((2, 1)), high=np.ones((2, 1)))
    with pytest.raises(ValueError, match="range has shape"):
        normalize(images, norm, low=np.zeros((3, 2)), high=np.ones((3, 2)))  # 2 channels
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match="needs per-image low and high"):
        normalize_batch(pixels, norm, low=torch.zeros(3, 1))
