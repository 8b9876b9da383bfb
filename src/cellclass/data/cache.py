"""Decoded, resized pixels in a memory-mapped store, keyed by file content and preprocessing.

Decoding a folder of PNG or TIFF files is the slow part of an epoch, so cellclass decodes each
file once per experiment (and, thanks to the on-disk cache, once per machine): every image is
read, its channels picked, resized to the model size and written in its *native* dtype
(uint8 or uint16, never squashed) into one ``(N, S, S, C)`` array on disk. Training then reads
the rows of each batch from that file with `read_rows` (``pread`` through the OS page cache, so
resident memory stays flat however large the store); normalisation to [0, 1] is a per-channel
affine map applied to whole batches (see `normalize_batch`), so no per-image work is done in
Python.

Decoding is also the verification: a corrupt or truncated file is found here, before any
training starts, and reported with every other bad file in one `BadImagesError`.

The store's key is a hash of every file's bytes plus the preprocessing, so renaming a folder
reuses the cache while editing one pixel does not.
The `Preprocessing` settings and decoding of one file live in `cellclass.data.preprocessing`.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cellclass.data.images import ImageReadError, effective_bit_depth
from cellclass.data.normalization import image_percentiles, normalize_batch
from cellclass.data.preprocessing import (
    BadImagesError,
    Preprocessing,
    coerce_to_store,
    decode_file,
    failure_reason,
    first_decodable,
)

__all__ = [
    "RELEASE_BYTES",
    "STORE_VERSION",
    "CacheError",
    "PixelStore",
    "default_cache_dir",
    "file_digests",
    "load_normalized",
    "load_store",
    "read_rows",
    "release_pages",
    "sample_pixels",
]

STORE_VERSION = 1  # bump when the store layout or decoding changes


@dataclass(frozen=True)
class PixelStore:
    pixels: np.ndarray  # (N, S, S, C) uint8/uint16/float32 memmap: resized, not normalised
    low: np.ndarray  # (N, C) float32 per-image low percentile (for "image" normalisation)
    high: np.ndarray  # (N, C) float32 per-image high percentile
    bit_depth: int  # largest effective bit depth among the images
    paths: tuple[Path, ...]  # the decoded files, in store order
    bad: tuple[tuple[Path, str], ...] = ()  # files skipped as unreadable, with the reason

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[-1])


def default_cache_dir() -> Path:
    """``$CELLCLASS_CACHE``, else ``$XDG_CACHE_HOME/cellclass``, else ``~/.cache/cellclass``."""
    if os.environ.get("CELLCLASS_CACHE"):
        return Path(os.environ["CELLCLASS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cellclass"


def load_store(
    paths: Sequence[Path],
    prep: Preprocessing,
    *,
    cache_dir: Path | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    digests: Sequence[bytes] | None = None,
) -> PixelStore:
    """Decode ``paths`` into a pixel store, or open the cached one.

    Parameters
    ----------
    paths : image files, in the order the store keeps them.
    prep : preprocessing; only size, channels and page affect the stored pixels.
    skip_bad : leave unreadable files out (listed in ``store.bad``) instead of raising.
    progress : called with the number of files finished since the last call.
    digests : `file_digests` of ``paths`` when the caller has them already (else computed).

    Raises
    ------
    BadImagesError
        Some files could not be decoded and ``skip_bad`` is False.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no images to load")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _store_key(file_digests(paths) if digests is None else digests, prep)
    folder = cache_dir / key
    if not (folder / "meta.json").is_file():
        _build_store(folder, paths, prep, workers=workers, progress=progress)
    elif progress is not None:
        progress(len(paths))
    try:
        store = _open_store(folder, paths)
    except _DAMAGED as error:  # a truncated or edited cache: it only holds decoded copies
        warnings.warn(
            f"pixel cache {folder} is damaged ({_reason(error)}); decoding the images again",
            stacklevel=2,
        )
        _discard(folder)
        _build_store(folder, paths, prep, workers=workers, progress=None)
        try:
            store = _open_store(folder, paths)
        except _DAMAGED as again:
            raise CacheError(
                f"pixel cache {folder} cannot be read ({_reason(again)}); delete that folder "
                "(it only holds decoded copies of your images) or pass another cache_dir="
            ) from None
    if store.bad and not skip_bad:
        raise BadImagesError(list(store.bad))
    return store


def _store_key(digests: Sequence[bytes], prep: Preprocessing) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([STORE_VERSION, prep.store_key_fields()]).encode())
    for file_digest in digests:
        digest.update(file_digest)
    return digest.hexdigest()


def file_digests(paths: Sequence[Path], *, workers: int | None = None) -> list[bytes]:
    """A content digest of each file (BLAKE2b of its bytes; of its files' names and bytes for
    a folder image such as OME-Zarr), in the order of ``paths``; an unreadable file gets a
    digest of its path and the error instead.

    What the pixel store is keyed by, and what an experiment's data fingerprint is made of.
    """
    if len(paths) < 2:  # pragma: no mutate (tuning: threads only pay from two files)
        return [_file_digest(Path(path)) for path in paths]
    threads = workers or min(8, os.cpu_count() or 1)  # pragma: no mutate (tuning: any count)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_file_digest, map(Path, paths)))


def _file_digest(path: Path) -> bytes:
    try:
        if path.is_dir():  # an image stored as a folder (OME-Zarr): every file's name and bytes
            digest = hashlib.blake2b()
            for inner in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(inner.relative_to(path).as_posix().encode() + b"\0")
                digest.update(_file_digest(inner))
            return digest.digest()
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "blake2b").digest()
    except OSError as error:
        return f"unreadable:{path}:{error.strerror}".encode()


def _build_store(
    folder: Path, paths: list[Path], prep: Preprocessing, *, workers, progress
) -> None:
    reference = first_decodable(paths, prep)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shape = (len(paths), *reference.shape)
    pixels = np.lib.format.open_memmap(tmp / "pixels.npy", "w+", reference.dtype, shape)
    ok, depths, errors = _decode_all(pixels, paths, prep, reference, workers, progress)
    pixels.flush()
    low, high = _percentiles_in_chunks(pixels, prep)
    meta = {
        "version": STORE_VERSION,
        "paths": [str(p) for p in paths],
        "ok": ok.tolist(),
        "bad": {str(paths[i]): reason for i, reason in sorted(errors.items())},
        "bit_depth": int(depths.max()) if ok.any() else 8,
        "preprocessing": prep.store_key_fields(),
    }
    np.save(tmp / "low.npy", low)
    np.save(tmp / "high.npy", high)
    (tmp / "meta.json").write_text(json.dumps(meta))
    _publish(tmp, folder)


def _decode_all(pixels, paths, prep, reference, workers, progress):
    """Decode every file into its row of ``pixels`` with a thread pool.

    Returns (ok (N,) bool, bit depths (N,) int64, {row: reason} for unreadable files).
    """
    ok = np.zeros(len(paths), dtype=bool)
    depths = np.zeros(len(paths), dtype=np.int64)
    errors: dict[int, str] = {}

    def work(index: int) -> None:
        try:
            image = coerce_to_store(decode_file(paths[index], prep), reference, paths[index])
            pixels[index] = image
            depths[index] = effective_bit_depth(image)
            ok[index] = True
        except (ImageReadError, ValueError, OSError) as error:
            errors[index] = failure_reason(error, paths[index])
        if progress is not None:
            progress(1)

    # rows written between releases of their pages, and threads: any values give the same store
    row_bytes = max(1, pixels[0].nbytes) if len(pixels) else 1  # pragma: no mutate (tuning)
    chunk = max(64, RELEASE_BYTES // row_bytes)  # pragma: no mutate (tuning: memory only)
    threads = workers or os.cpu_count() or 1  # pragma: no mutate (tuning: any count)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(paths), chunk):
            list(pool.map(work, range(start, min(start + chunk, len(paths)))))
            pixels.flush()
            release_pages(pixels)
    return ok, depths, errors


def _percentiles_in_chunks(
    pixels: np.ndarray,
    prep: Preprocessing,
    chunk: int = 256,  # pragma: no mutate (tuning: per-image results, any chunk size)
):
    percentiles = prep.normalization.percentiles
    parts = []
    for start in range(0, len(pixels), chunk):
        block = np.asarray(pixels[start : start + chunk])
        parts.append(image_percentiles(block, percentiles))
        release_pages(pixels, block.nbytes)
    low = np.concatenate([p[0] for p in parts]).astype(np.float32)
    high = np.concatenate([p[1] for p in parts]).astype(np.float32)
    return low, high


def _publish(tmp: Path, folder: Path) -> None:
    """Atomically move a finished store into place (another process may have won the race)."""
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # an identical store already exists


class CacheError(ValueError):
    """A pixel cache folder that cannot be read even after decoding the images again."""


# what a damaged store raises while opening: truncated .npy (ValueError: "mmap length is
# greater than file size"), bad JSON, missing keys or files, a row count that differs
_DAMAGED = (OSError, ValueError, KeyError, IndexError, TypeError)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) < 120 else text[:117] + "..."


def _discard(folder: Path) -> None:
    """Move a damaged store aside and delete it (a reader holding its map keeps its copy)."""
    trash = folder.with_name(f"{folder.name}.damaged-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _open_store(folder: Path, paths: list[Path]) -> PixelStore:
    meta = json.loads((folder / "meta.json").read_text())
    pixels = np.load(folder / "pixels.npy", mmap_mode="r")
    low, high = np.load(folder / "low.npy"), np.load(folder / "high.npy")
    ok = np.array(meta["ok"], dtype=bool)
    if not len(ok) == len(paths) == len(pixels) == len(low) == len(high):
        raise ValueError(f"{len(pixels)} stored images for {len(paths)} files")
    bad = tuple((paths[i], meta["bad"][str(meta["paths"][i])]) for i in np.flatnonzero(~ok))
    if not ok.all():
        keep = np.flatnonzero(ok)
        pixels, low, high = pixels[keep], low[keep], high[keep]  # copies only the good images
    kept = tuple(p for p, good in zip(paths, ok, strict=True) if good)
    return PixelStore(pixels, low, high, int(meta["bit_depth"]), kept, bad)


# Bytes of a memmapped store written (while decoding) or read through the map (stores that
# `read_rows` cannot pread) before its pages are dropped from this process's resident set.
# They stay in the OS page cache, so touching them again costs a page fault, not a disk read.
RELEASE_BYTES = 256 * 2**20  # pragma: no mutate (tuning: memory only)
_touched: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # mmap -> bytes since release


def release_pages(array: np.ndarray, nbytes: int | None = None) -> None:
    """Count ``nbytes`` read from (or written to) a memmapped array; once `RELEASE_BYTES` have
    accumulated, or at once when ``nbytes`` is None, drop its pages from the resident set.

    Written pages must be flushed first (``array.flush()``); arrays that are not memmaps
    (in-memory stores, Ray object-store copies) are left alone.
    """
    handle = getattr(array, "_mmap", None)
    if handle is None or not hasattr(handle, "madvise"):
        return
    total = _touched.get(handle, 0) + (nbytes or 0)  # pragma: no mutate (tuning: memory only)
    if nbytes is not None and total < RELEASE_BYTES:  # pragma: no mutate (tuning: memory only)
        _touched[handle] = total
        return
    _touched[handle] = 0  # pragma: no mutate (tuning: memory only)
    try:
        handle.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # closed or unsupported: only resident memory is at stake
        pass


def read_rows(store: PixelStore, rows: np.ndarray) -> np.ndarray:
    """Copy rows of ``store.pixels`` ((B, S, S, C), native dtype) without growing the
    process's resident memory.

    Rows of a store opened from its file are read with ``os.pread`` (through the OS page cache,
    so still fast) instead of through the memory map: touching a mapped page can map a whole
    large folio of the file (MBs), and one epoch would then count most of the cache file as
    this process's memory. Other arrays (in memory, Ray object-store copies) are indexed.
    """
    pixels = store.pixels
    source = _mapped_file(pixels) if hasattr(os, "preadv") else None  # no preadv on Windows
    if source is None:
        out = np.asarray(pixels[rows])
        release_pages(pixels, out.nbytes)
        return out
    path, offset = source
    row_bytes = pixels.strides[0]
    out = np.empty((len(rows), *pixels.shape[1:]), dtype=pixels.dtype)
    with open(path, "rb", buffering=0) as handle:  # pragma: no mutate (tuning: any buffer)
        for i, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            view = memoryview(out[i]).cast("B")
            if os.preadv(handle.fileno(), [view], offset + row * row_bytes) != row_bytes:
                raise OSError(f"{path}: pixel cache file is shorter than expected; delete it")
    return out


def _mapped_file(pixels: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset of row 0) when ``pixels`` is a whole C-ordered memmap of a file."""
    handle = getattr(pixels, "_mmap", None)
    filename = getattr(pixels, "filename", None)
    if handle is None or filename is None or not pixels.flags.c_contiguous or not len(pixels):
        return None
    mapped_from = pixels.offset - pixels.offset % mmap.ALLOCATIONGRANULARITY  # file offset
    base = np.frombuffer(handle, dtype=np.uint8)  # the whole mapping
    into = pixels.ctypes.data - base.ctypes.data  # where row 0 lies in the mapping
    if into < 0 or into + pixels.nbytes > len(base):  # pragma: no mutate (same pixels either way)
        return None
    return str(filename), int(mapped_from + into)


def sample_pixels(store: PixelStore, *, max_images: int = 256) -> np.ndarray:
    """Evenly spaced images of the store, (M, S, S, C), to fit a dataset normalisation."""
    step = max(1, len(store.pixels) // max_images)
    return read_rows(store, np.arange(0, len(store.pixels), step)[:max_images])


def load_normalized(
    paths: Sequence[Path], prep: Preprocessing, *, cache_dir: Path | None = None
) -> np.ndarray:
    """Images exactly as the model sees them: (N, S, S, C) float32 in [0, 1]."""
    store = load_store(paths, prep, cache_dir=cache_dir, skip_bad=False)
    pixels = torch.from_numpy(np.array(store.pixels)).permute(0, 3, 1, 2)  # writable copy
    x = normalize_batch(
        pixels,
        prep.normalization,
        low=torch.from_numpy(store.low),
        high=torch.from_numpy(store.high),
    )
    return x.permute(0, 2, 3, 1).numpy()
