"""How long operations report progress: an `Observer` with no-op methods.

Library code calls these methods; the command line subclasses `Observer` with progress bars,
a notebook can subclass it with widgets or leave it silent.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable


class Observer:
    """Receives progress from loading and training; every method is optional."""

    def message(self, text: str) -> None:
        """A one-line note or warning for the user."""

    def decoding(self, name: str, total: int) -> Callable[[int], None] | None:
        """Decoding of a folder starts; return a callback taking counts of finished files."""
        return None

    def run_started(self, name: str, n_images: int) -> None:
        """A run starts (``name`` like "run 2/12"); it will train on ``n_images`` images in all."""

    def batch(self, n_images: int) -> None:
        """A training batch of ``n_images`` finished."""

    def epoch_finished(self, run: int, records: list) -> None:
        """An epoch finished; ``records`` are its `cellclass.training.train.EpochRecord` rows."""

    def run_finished(self, run: int, rows: list[dict]) -> None:
        """A run was written to the results folder; ``rows`` are its runs.csv rows."""


class WarningObserver(Observer):
    """Silent progress, but every "warning: ..." message raised as a Python `UserWarning`:
    what notebooks use, so leakage, missing classes and skipped images are never lost."""

    def message(self, text: str) -> None:
        if text.lower().startswith("warning:"):
            warnings.warn(text.split(":", 1)[1].strip(), UserWarning, stacklevel=3)
