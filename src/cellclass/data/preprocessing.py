"""What is done to each file before it is stored: settings, decoding and why it failed.

The `Preprocessing` settings (size, channels, TIFF page, normalisation) and their JSON form;
decoding one file into a store row (`decode_file`: read, pick channels, resize) and making it
match the store's channel count and dtype (`coerce_to_store`); `BadImagesError`, which lists
every file that could not be decoded. `cellclass.data.cache` builds the pixel store from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cellclass.data.images import ImageReadError, read_image, resize, select_channels
from cellclass.data.normalization import Normalization

__all__ = ["BadImagesError", "Preprocessing", "preprocessing_from_dict", "preprocessing_to_dict"]


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = 256  # images are resized to image_size x image_size (the model's input)
    channels: tuple[int, ...] | None = None  # channels picked/mapped after decoding; None keeps all
    page: int = 0  # page of multi-page TIFF files
    normalization: Normalization = field(default_factory=lambda: Normalization("dataset"))

    def store_key_fields(self) -> dict:
        """The fields that change the stored pixels (normalisation is applied later)."""
        return {"image_size": self.image_size, "channels": self.channels, "page": self.page}


def preprocessing_to_dict(prep: Preprocessing) -> dict:
    return asdict(prep)


def preprocessing_from_dict(data: dict) -> Preprocessing:
    """Inverse of `preprocessing_to_dict` (JSON turns tuples into lists)."""
    norm = data["normalization"]
    normalization = Normalization(
        mode=norm["mode"],
        low=tuple(norm.get("low", ())),
        high=tuple(norm.get("high", ())),
        percentiles=tuple(norm.get("percentiles", (0.5, 99.5))),
    )
    channels = data.get("channels")
    return Preprocessing(
        image_size=int(data["image_size"]),
        channels=tuple(channels) if channels is not None else None,
        page=int(data.get("page", 0)),
        normalization=normalization,
    )


class BadImagesError(ValueError):
    """One or more files could not be decoded; ``bad`` lists (path, reason)."""

    def __init__(self, bad: list[tuple[Path, str]]):
        self.bad = bad
        listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        super().__init__(
            f"{len(bad)} unreadable image(s): {listed}{more}. "
            "Fix or remove them, or leave them out with skip_bad_images=True."
        )


def decode_file(path: Path, prep: Preprocessing) -> np.ndarray:
    """One file -> (S, S, C) native-dtype pixels. Raises ImageReadError or ValueError."""
    image = read_image(path, page=prep.page)
    image = select_channels(image, prep.channels)
    return resize(image, prep.image_size)


def first_decodable(paths: list[Path], prep: Preprocessing) -> np.ndarray:
    errors = []
    for path in paths:
        try:
            return decode_file(path, prep)
        except (ImageReadError, ValueError, OSError) as error:
            errors.append((path, failure_reason(error, path)))
            if len(errors) >= 20:
                break
    raise BadImagesError(errors)


def failure_reason(error: Exception, path: Path) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def coerce_to_store(image: np.ndarray, reference: np.ndarray, path: Path) -> np.ndarray:
    """Make ``image`` match the store's channel count and dtype, or explain why it cannot."""
    want = reference.shape[-1]
    have = image.shape[-1]
    if have != want:
        if have == 1:
            image = np.repeat(image, want, axis=-1)  # grayscale in a colour dataset
        elif have == 4 and want == 3:
            image = image[..., :3]  # drop alpha
        elif have == 3 and want == 1 and _is_gray(image):
            image = image[..., :1]  # grey saved as RGB
        else:
            raise ValueError(
                f"has {have} channels while the first image has {want}; "
                "pick channels with channels="
            )
    if image.dtype != reference.dtype:
        raise ValueError(
            f"is {image.dtype} while the first image is {reference.dtype}; "
            "convert the folder to one bit depth"
        )
    return image


def _is_gray(image: np.ndarray) -> bool:
    return bool(
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 0], image[..., 2])
    )
