"""One scorer's session: the order in which they see the test images, started or resumed.

Each scorer gets their own random order, drawn once when their session starts and then kept
in the database, so closing the browser or restarting the server never reshuffles it.
The order is drawn from the operating system's secret randomness (`secrets`), so nobody can
compute it from the package, a seed and the scorer's name and read the labels off it. Only
an explicit seed (``--seed``) makes an order reproducible, and then computable by anyone who
knows the seed.
A fraction of the images (``repeats``) is shown a second time, later in the order and, where
the order allows, at least MIN_GAP images after the first showing: the repeats measure how
consistent the scorer is with themselves.
"""

from __future__ import annotations

import datetime as dt
import secrets
import zlib
from collections.abc import Sequence

import numpy as np

from cellclass.blind.store import (
    AccessError,
    ConflictError,
    InvalidAnswerError,
    ScoreStore,
    Session,
)

MIN_GAP = 3  # other images shown between an image and its repeat, where the order allows it
MAX_SCORER_LENGTH = 64  # characters of a scorer name


def scorer_rng(seed: int | None, scorer: str) -> np.random.Generator:
    """The generator of one scorer's order.

    Parameters
    ----------
    seed : int or None
        None (the default everywhere): 128 bits from `secrets`, so the order cannot be
        computed by anyone. An int (``--seed``) reproduces an order: the same seed and name
        give the same order, which anyone with the seed and the package can compute.
    scorer : str
        The scorer's name; different names give different orders for the same seed.
    """
    if seed is None:
        return np.random.default_rng(secrets.randbits(128))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(scorer.encode("utf-8"))])


def draw_order(
    n_images: int, *, repeats: float, rng: np.random.Generator
) -> list[tuple[int, bool]]:
    """A random showing order of ``n_images`` images plus repeats.

    Parameters
    ----------
    n_images : int
        Number of distinct images, >= 1.
    repeats : float
        Fraction in [0, 1] of the images shown a second time (rounded to a whole number).
    rng : numpy.random.Generator

    Returns
    -------
    list of (int, bool)
        One ``(image index, is_repeat)`` per showing; every index appears once with
        ``is_repeat=False`` and, for repeated images, once more later with ``is_repeat=True``.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int | np.integer) or n_images < 1:
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    if not 0.0 <= repeats <= 1.0:
        raise ValueError(f"repeats must be a fraction between 0 and 1 (e.g. 0.1), got {repeats}")
    order: list[tuple[int, bool]] = [(int(i), False) for i in rng.permutation(n_images)]
    n_repeats = int(round(repeats * n_images))
    repeated = rng.choice(n_images, size=n_repeats, replace=False)
    for image in repeated:
        first = order.index((int(image), False))
        earliest = min(first + 1 + MIN_GAP, len(order))  # slot index where the copy may go
        slot = int(rng.integers(earliest, len(order) + 1))
        order.insert(slot, (int(image), True))
    return order


def check_scorer(name: str) -> str:
    """Return the scorer name stripped; raise `InvalidAnswerError` when it cannot be one."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidAnswerError("give a scorer name (e.g. your initials)")
    name = name.strip()
    if len(name) > MAX_SCORER_LENGTH or not name.isprintable():
        raise InvalidAnswerError(
            f"a scorer name must be printable and at most {MAX_SCORER_LENGTH} characters"
        )
    return name


def ensure_session(
    store: ScoreStore,
    scorer: str,
    *,
    test_dir: str,
    class_names: Sequence[str],
    images: Sequence[tuple[str, str]],
    seed: int | None = None,
    repeats: float = 0.0,
    resume: bool = True,
) -> Session:
    """Start the scorer's session on these images, or resume the stored one.

    Parameters
    ----------
    store : ScoreStore
    scorer : str
    test_dir : str
        The resolved test folder; a stored session must come from the same folder.
    class_names : sequence of str
        The answer buttons.
    images : sequence of (path, true_label)
        The answer key, one entry per image.
    seed, repeats
        Draw a new order with `scorer_rng(seed, scorer)` and `draw_order`; seed None (the
        default) draws a secret order.
    resume : bool
        False: only start a new session; a scorer who has one already is refused (the web
        page's start form, which must never hand out an existing session's key).

    Returns
    -------
    Session
        As stored, with the scorer's secret ``key``.

    Raises
    ------
    ConflictError
        The scorer already scores another folder or another set of images in this database.
    AccessError
        ``resume`` is False and the scorer already has a session.
    """
    scorer = check_scorer(scorer)
    order = draw_order(len(images), repeats=repeats, rng=scorer_rng(seed, scorer))
    showings = [(*images[index], repeat) for index, repeat in order]
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    seed = None if seed is None else int(seed)
    wanted = Session(scorer, str(test_dir), tuple(class_names), seed, float(repeats), created)
    stored, created = store.open_session(wanted, showings)
    if created:
        return stored
    if not resume:
        raise AccessError(
            f"scorer {scorer!r} already has a session in this database: open your personal "
            "link to continue, or choose another name"
        )
    stored_paths = {item.path for item in store.items(scorer)}
    same_images = stored_paths == {path for path, _ in images}
    if stored.test_dir != wanted.test_dir or not same_images:
        raise ConflictError(
            f"scorer {scorer!r} scored a different set of images in this database; "
            "choose another scorer name or another database"
        )
    if stored.class_names != wanted.class_names:
        raise ConflictError(f"scorer {scorer!r} scored with other class names in this database")
    return stored
