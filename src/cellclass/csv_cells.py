"""Text cells of CSV files, written so that a spreadsheet never runs them as formulas.

Excel, LibreOffice and Google Sheets treat a cell starting with ``=``, ``+``, ``-`` or ``@``
(and, in some versions, a tab or carriage return) as a formula, and a formula can fetch data
from the web or start programs (CSV or formula injection). Class names, file names and model
labels come from other people's folders, so a text cell starting with one of these characters
is written with a leading ``'``, which spreadsheets show as plain text (OWASP's advice).
Numbers such as ``-0.5`` are never changed.

The prefix is undone when cellclass reads its own tables back, so every text survives the
round trip unchanged: a text that itself starts with ``'`` followed by one of these
characters (or a second ``'``) gets the prefix too, and reading removes exactly one.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # first characters spreadsheets evaluate
QUOTE = "'"  # the prefix: spreadsheets show the rest of the cell as text


def escape_cell(text: str) -> str:
    """``text`` as a CSV cell: a leading ``'`` when a spreadsheet would run it as a formula."""
    if _needs_prefix(text) and not _is_number(text):
        return QUOTE + text
    return text


def unescape_cell(text: str) -> str:
    """The text `escape_cell` was given: its ``'`` prefix, if it added one, removed."""
    if text.startswith(QUOTE) and _needs_prefix(text[1:]):
        return text[1:]
    return text


def unescape_row(row: dict) -> dict:
    """A row of ``csv.DictReader`` with `unescape_cell` applied to each text value."""
    return {key: unescape_cell(v) if isinstance(v, str) else v for key, v in row.items()}


def _needs_prefix(text: str) -> bool:
    if text.startswith(FORMULA_STARTS):
        return True
    return text.startswith(QUOTE) and text[1:2] in (*FORMULA_STARTS, QUOTE)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
