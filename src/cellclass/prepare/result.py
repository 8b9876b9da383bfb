"""What one prepare step did (`PrepareResult`) and its summary for a terminal (`format_result`).

`cellclass.prepare.steps` runs the steps and re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PrepareResult", "format_result"]

_FAIR_DROP_GAP = 0.1  # warn when the share of tiles dropped differs more between classes


@dataclass(frozen=True)
class PrepareResult:
    """What one prepare step did."""

    dst: Path  # the output folder
    manifest: Path  # DST/manifest.csv, written or extended
    n_sources: int  # images read from SRC
    written: dict[str, int]  # files written to DST, per class
    dropped: dict[str, int]  # tiles left out as mostly background (min_foreground), per class
    no_output: tuple[Path, ...]  # sources that gave no file (smaller than a tile with "drop")
    skipped: tuple[tuple[Path, str], ...]  # unreadable sources and why (skip_bad)


def format_result(result: PrepareResult) -> str:
    """What a prepare step did, as lines for a terminal."""
    per_class = ", ".join(f"{name} {n}" for name, n in result.written.items())
    lines = [
        f"{sum(result.written.values())} files written to {result.dst} from "
        f"{result.n_sources} images ({per_class})"
    ]
    if any(result.dropped.values()):
        shares = [
            f"{name} {n} ({n / max(1, n + result.written[name]):.0%})"
            for name, n in result.dropped.items()
        ]
        lines.append("tiles dropped as background: " + ", ".join(shares))
        rates = [n / max(1, n + result.written[name]) for name, n in result.dropped.items()]
        if max(rates) - min(rates) > _FAIR_DROP_GAP:
            lines.append(
                "warning: classes lose different shares of tiles, so --min-foreground selects "
                "them differently (a possible confound); lower it or check the fields"
            )
    if result.no_output:
        lines.append(
            f"{len(result.no_output)} image(s) gave no file (smaller than a tile: --edge pad "
            f"keeps them; or all background), e.g. {result.no_output[0]}"
        )
    lines += [f"skipped unreadable image {why}" for _, why in result.skipped]
    return "\n".join([*lines, f"manifest: {result.manifest}"])
