"""Merged into `cellclass.report.build` (issue 16); `embedded_figure` is in `cellclass.report.html`.

Only `cellclass.report.study` still imports `embedded_figure` from here: a thin shim until it
imports from `cellclass.report.html`.
"""

from cellclass.report.html import embedded_figure

__all__ = ["embedded_figure"]
