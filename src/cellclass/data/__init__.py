"""Images in, pixels out (layer 1): reading and writing one file (`images`), raw values ->
[0, 1] in numpy and torch (`normalization`), what is done to each file before it is stored
(`preprocessing`), class folders (`folders`), the decoded-pixel store (`cache`) and loaded
datasets (`datasets`).
"""

from cellclass.data.cache import CacheError, PixelStore, default_cache_dir, load_store
from cellclass.data.datasets import Dataset, load_dataset
from cellclass.data.folders import (
    MANIFEST_NAME,
    FolderError,
    FolderIndex,
    grouped_split,
    scan_folder,
)
from cellclass.data.images import (
    IMAGE_EXTENSIONS,
    ImageMeta,
    ImageReadError,
    image_meta,
    image_metadata,
    is_image_path,
    parse_channels,
    read_image,
    resize,
    select_channels,
    write_image,
)
from cellclass.data.normalization import (
    NORMALIZATION_MODES,
    Normalization,
    fit_normalization,
    normalize,
    normalize_batch,
)
from cellclass.data.preprocessing import BadImagesError, Preprocessing

__all__ = [
    "BadImagesError",
    "CacheError",
    "Dataset",
    "FolderError",
    "FolderIndex",
    "IMAGE_EXTENSIONS",
    "ImageMeta",
    "ImageReadError",
    "MANIFEST_NAME",
    "NORMALIZATION_MODES",
    "Normalization",
    "PixelStore",
    "Preprocessing",
    "default_cache_dir",
    "fit_normalization",
    "grouped_split",
    "image_meta",
    "image_metadata",
    "is_image_path",
    "load_dataset",
    "load_store",
    "normalize",
    "normalize_batch",
    "parse_channels",
    "read_image",
    "resize",
    "scan_folder",
    "select_channels",
    "write_image",
]
