"""Turning report content into HTML, for the report of one folder and of a study: the
``percent`` filter, figures embedded as base64 data URIs (`embedded_figure`) and rendering
``templates/report.html.j2`` (`render_report`)."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import jinja2
from PIL import Image

__all__ = ["embedded_figure", "percent", "render_report"]


def percent(value) -> str:
    """Jinja filter: 0.9612 -> "96.1 %"; NaN or None -> "–"."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.1f} %"


PHOTO_QUALITY = 85  # JPEG quality of embedded image grids: labels stay sharp, 4-5x smaller


def embedded_figure(
    path: Path, title: str, caption: str, file: str | None = None, *, photo: bool = False
) -> dict:
    """A figure entry for the template, with the PNG embedded as a base64 data URI.

    file : where the PNG lies, relative to the results folder (default ``figures/<name>``).
    photo : a grid of microscopy images (preview, prediction panels): embedded as JPEG
        (`PHOTO_QUALITY`), since noisy images barely compress as PNG; the PNG file stays.
    """
    data, kind = path.read_bytes(), "png"
    if photo:
        with Image.open(path) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=PHOTO_QUALITY)
        data, kind = buffer.getvalue(), "jpeg"
    encoded = base64.b64encode(data).decode("ascii")
    return {
        "title": title,
        "caption": caption,
        "file": file or f"figures/{path.name}",
        "src": f"data:image/{kind};base64,{encoded}",
    }


def render_report(context: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cellclass.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["percent"] = percent
    return environment.get_template("report.html.j2").render(context)
