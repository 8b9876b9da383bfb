"""Argument types and option groups shared by several ``cellclass`` commands.

Each type turns one command-line string into a value or raises
`argparse.ArgumentTypeError`, so argparse prints a one-line usage error.
"""

from __future__ import annotations

import argparse

from cellclass import choices


def channels(text: str) -> tuple[int, ...]:
    from cellclass.data.images import parse_channels

    try:
        return parse_channels(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text}")
    return value


def add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("loading images")
    group.add_argument(
        "--image-size",
        type=positive(int),
        default=choices.IMAGE_SIZE,
        help=f"model input size (default {choices.IMAGE_SIZE})",
    )
    group.add_argument(
        "--channels",
        type=channels,
        default=None,
        help="pick or map channels, 0-based: '1', '0,1,2', '0,0,0' (default: all)",
    )
    group.add_argument(
        "--page", type=int, default=choices.PAGE, help="page of multi-page TIFFs (default 0)"
    )
    group.add_argument(
        "--normalize",
        choices=choices.NORMALIZATION_MODES,
        default=None,
        help="pixel scaling for every recipe (default: each recipe's own; the reference "
        "divides by the bit-depth maximum as the study did, strong uses dataset). "
        "dataset: training-set percentiles (keeps brightness differences); "
        "image: per-image percentiles; bitdepth: divide by the bit-depth maximum",
    )
    group.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave unreadable images out (listed) instead of stopping",
    )
    group.add_argument(
        "--cache-dir", default=None, help="decoded-pixel cache (default ~/.cache/cellclass)"
    )
