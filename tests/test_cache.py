import sys

import numpy as np
import pytest

from cellclass.data import cache
from cellclass.data.cache import PixelStore, read_rows, release_pages

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")


def _rss_file_mb() -> float:
    """Resident file-backed memory of this process, MB (RssFile in /proc/self/status)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("RssFile:"))
    return int(line.split()[1]) / 1024


def _memmap(tmp_path, n_rows=64, row_shape=(256, 256, 16)):
    path = tmp_path / "pixels.npy"
    writer = np.lib.format.open_memmap(path, "w+", np.uint8, (n_rows, *row_shape))
    writer[:] = np.arange(n_rows, dtype=np.uint8)[:, None, None, None]
    writer.flush()
    del writer
    return np.load(path, mmap_mode="r")  # 64 MB by default


@linux_only
def test_release_drops_read_pages_from_resident_memory(tmp_path):
    pixels = _memmap(tmp_path)
    before = _rss_file_mb()
    assert int(pixels.sum(dtype=np.int64)) > 0  # touches every page
    touched = _rss_file_mb()
    assert touched - before > 40  # the 64 MB now count as this process's memory
    release_pages(pixels)
    assert touched - _rss_file_mb() > 40
    assert pixels[5, 0, 0, 0] == 5  # and can still be read


@linux_only
def test_reading_rows_keeps_resident_memory_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "RELEASE_BYTES", 8 * 2**20)
    pixels = _memmap(tmp_path)
    store = PixelStore(pixels, np.zeros((64, 16)), np.ones((64, 16)), 8, ())
    before = _rss_file_mb()
    peak = 0.0
    for start in range(0, 64, 4):
        rows = np.arange(start, start + 4)
        batch = read_rows(store, rows)
        np.testing.assert_array_equal(batch[:, 0, 0, 0], rows)  # the right rows, copied
        peak = max(peak, _rss_file_mb() - before)
    assert peak < 24  # 64 MB read, never more than ~8 MB + one batch resident


@linux_only
def test_the_brightness_confound_check_reads_the_cache_without_mapping_it(tmp_path, monkeypatch):
    """Training's per-image means (check_confounds) once indexed the memory map image by image:
    the whole cache file became this process's memory (2.7 GB for 10,000 images)."""
    from cellclass.training.experiment import _image_means

    monkeypatch.setattr(cache, "RELEASE_BYTES", 8 * 2**20)
    pixels = _memmap(tmp_path)
    store = PixelStore(pixels, np.zeros((64, 16)), np.ones((64, 16)), 8, ())
    before = _rss_file_mb()
    means = _image_means(store, chunk=5)  # 12 chunks of 5 and one of 4
    assert _rss_file_mb() - before < 24  # 64 MB read
    np.testing.assert_array_equal(means, np.arange(64, dtype=np.float64))


def test_release_ignores_in_memory_arrays():
    array = np.ones((4, 8, 8, 1), np.uint8)
    release_pages(array)
    release_pages(array, 10)
    store = PixelStore(array, np.zeros((4, 1)), np.ones((4, 1)), 8, ())
    np.testing.assert_array_equal(read_rows(store, np.array([3, 1])), array[[3, 1]])


def test_rows_of_a_file_backed_store_are_read_exactly_and_not_mapped(tmp_path):
    pixels = _memmap(tmp_path)  # np.load: the data start after the .npy header
    assert cache._mapped_file(pixels) is not None
    store = PixelStore(pixels, np.zeros((64, 16)), np.ones((64, 16)), 8, ())
    rows = np.array([63, 0, 17, 17, 5])
    np.testing.assert_array_equal(read_rows(store, rows)[:, 0, 0, 0], rows)
    view = PixelStore(pixels[10:20], np.zeros((10, 16)), np.ones((10, 16)), 8, ())
    np.testing.assert_array_equal(read_rows(view, np.array([0, 9]))[:, 5, 5, 5], [10, 19])
    if sys.platform == "linux":
        release_pages(pixels)
        before = _rss_file_mb()
        for start in range(0, 64, 8):
            read_rows(store, np.arange(start, start + 8))
        assert _rss_file_mb() - before < 16  # 64 MB read, nothing of it mapped


def _images(tmp_path, n=3):
    from PIL import Image

    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((16, 16), 40 * i + 10, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_a_damaged_pixel_cache_is_rebuilt_with_a_warning_naming_it(tmp_path):
    from cellclass.data.preprocessing import Preprocessing

    paths, prep, where = _images(tmp_path), Preprocessing(image_size=16), tmp_path / "cache"
    expected = np.array(cache.load_store(paths, prep, cache_dir=where).pixels)
    (stored,) = where.iterdir()
    (stored / "pixels.npy").write_bytes((stored / "pixels.npy").read_bytes()[:200])  # truncated
    with pytest.warns(UserWarning, match=f"pixel cache {stored} is damaged"):
        again = cache.load_store(paths, prep, cache_dir=where)
    np.testing.assert_array_equal(np.array(again.pixels), expected)
    assert [p.name for p in where.iterdir()] == [stored.name]  # rebuilt in place, nothing left


def test_a_cache_that_stays_unreadable_is_a_one_line_error_saying_what_to_delete(
    tmp_path, monkeypatch
):
    from cellclass.data.preprocessing import Preprocessing

    paths, prep, where = _images(tmp_path), Preprocessing(image_size=16), tmp_path / "cache"
    cache.load_store(paths, prep, cache_dir=where)
    (stored,) = where.iterdir()
    (stored / "meta.json").write_text("{")  # and every rebuild comes out unreadable too
    monkeypatch.setattr(cache, "_build_store", lambda folder, *a, **k: None)
    with pytest.warns(UserWarning), pytest.raises(cache.CacheError) as error:
        cache.load_store(paths, prep, cache_dir=where)
    assert str(stored) in str(error.value) and "delete that folder" in str(error.value)
    assert "\n" not in str(error.value)


def _pngs(folder, n, size=16, seed=0):
    from .conftest import write_png

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        write_png(path, rng.integers(0, 40 + 20 * i, (size, size), dtype=np.uint8))
        paths.append(path)
    return paths


def test_a_new_store_counts_every_file_and_keeps_each_images_own_percentiles(tmp_path):
    from cellclass.data.normalization import Normalization, image_percentiles
    from cellclass.data.preprocessing import Preprocessing

    paths = _pngs(tmp_path / "img", 5)
    prep = Preprocessing(image_size=16, normalization=Normalization(mode="image"))
    done = []
    store = cache.load_store(paths, prep, cache_dir=tmp_path / "c", progress=done.append)
    assert sum(done) == 5
    low, high = image_percentiles(np.asarray(store.pixels), prep.normalization.percentiles)
    np.testing.assert_array_equal(store.low, low)
    np.testing.assert_array_equal(store.high, high)
    assert np.all(store.low < store.high)


def test_a_folder_image_digest_follows_its_files_names_and_bytes(tmp_path):
    folder = tmp_path / "image.ome.zarr"
    (folder / "0").mkdir(parents=True)
    (folder / "0" / "a").write_bytes(b"123")
    first = cache.file_digests([folder])[0]
    (folder / "0" / "a").rename(folder / "0" / "b")  # same bytes, another name
    assert cache.file_digests([folder])[0] != first


@pytest.mark.parametrize(("n", "rows"), [(600, list(range(0, 512, 2))), (5, [0, 1, 2, 3, 4])])
def test_normalisation_is_fitted_on_at_most_256_evenly_spaced_images(n, rows):
    pixels = np.arange(n, dtype=np.uint16).reshape(n, 1, 1, 1)
    store = PixelStore(pixels, np.zeros((n, 1)), np.ones((n, 1)), 16, ())
    assert cache.sample_pixels(store).ravel().tolist() == rows


def test_images_as_the_model_sees_them_refuse_an_unreadable_file(tmp_path):
    from cellclass.data.preprocessing import BadImagesError, Preprocessing

    paths = _pngs(tmp_path / "img", 2)
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadImagesError, match="bad.png"):
        cache.load_normalized(
            [*paths, tmp_path / "img" / "bad.png"],
            Preprocessing(image_size=16),
            cache_dir=tmp_path / "c",
        )


def test_a_store_refuses_unreadable_files_unless_told_to_skip_them(tmp_path):
    from cellclass.data.preprocessing import BadImagesError, Preprocessing

    paths = [*_pngs(tmp_path / "img", 2), tmp_path / "img" / "bad.png"]
    paths[-1].write_bytes(b"not a png")
    prep = Preprocessing(image_size=16)
    with pytest.raises(BadImagesError, match="bad.png"):
        cache.load_store(paths, prep, cache_dir=tmp_path / "c")
    store = cache.load_store(paths, prep, cache_dir=tmp_path / "c", skip_bad=True)
    assert store.paths == tuple(paths[:2]) and store.bad[0][0] == paths[-1]
