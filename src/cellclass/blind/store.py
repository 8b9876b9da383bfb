"""The SQLite store of blinded scoring sessions: each scorer's image order and answers.

One file holds every scorer of one test set. It runs in WAL mode and every call opens its
own short-lived connection, so several scorers (threads of the web server) can write at the
same time; every answer is committed before the call returns, so killing the server loses
nothing. Undo never deletes: it marks the answer undone, keeping a full audit trail.

Tables::

    sessions  scorer, test_dir, class_names (JSON), seed, repeats, created, key
    items     token, scorer, position, path, true_label, is_repeat   (the answer key)
    answers   id, scorer, token, answer, answered_at, response_ms, undone_at

The answer key (``items.path``, ``items.true_label``) stays on the server: the web app only
ever sends tokens, class names and counts, and the errors raised here never name a file.
Each session has a random ``key`` (its scorer's password, made when the session starts): the
web app serves a scorer only to a browser that shows it. A schema-1 file (before keys) is
upgraded in place when opened, each session getting a new key.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

SCHEMA_VERSION = 2  # PRAGMA user_version of a cellclass scores database (1: without keys)
MAX_RESPONSE_MS = 24 * 3600 * 1000  # a response time above one day is a client bug
_SCHEMA = """
CREATE TABLE sessions (
    scorer TEXT PRIMARY KEY,
    test_dir TEXT NOT NULL,
    class_names TEXT NOT NULL,
    seed INTEGER,
    repeats REAL NOT NULL,
    created TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE
);
CREATE TABLE items (
    token TEXT PRIMARY KEY,
    scorer TEXT NOT NULL REFERENCES sessions(scorer),
    position INTEGER NOT NULL,
    path TEXT NOT NULL,
    true_label TEXT NOT NULL,
    is_repeat INTEGER NOT NULL,
    UNIQUE (scorer, position)
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    scorer TEXT NOT NULL REFERENCES sessions(scorer),
    token TEXT NOT NULL REFERENCES items(token),
    answer TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    response_ms INTEGER,
    undone_at TEXT
);
CREATE UNIQUE INDEX one_standing_answer ON answers(token) WHERE undone_at IS NULL;
CREATE INDEX answers_by_scorer ON answers(scorer);
"""


class StoreFileError(ValueError):
    """The database file cannot be used as a scores database; the message says why."""


class BlindError(ValueError):
    """A scoring request the store refuses; the message never names a file or a label."""


class NotFoundError(BlindError):
    """An unknown token or scorer (HTTP 404)."""


class InvalidAnswerError(BlindError):
    """A malformed answer: a class that does not exist, a bad response time (HTTP 400)."""


class ConflictError(BlindError):
    """A request that clashes with what is stored: a repeated submit, nothing to undo (HTTP 409)."""


class AccessError(BlindError):
    """A request without the key of the scorer it acts for (HTTP 403)."""


@dataclass(frozen=True)
class Session:
    scorer: str  # who scores; one order and one set of answers per scorer
    test_dir: str  # resolved test folder the images come from
    class_names: tuple[str, ...]  # the answer buttons, in class-map order
    seed: int | None  # explicit seed of the order (session.scorer_rng); None: secret random
    repeats: float  # fraction of images shown a second time
    created: str  # when the session started, ISO 8601 UTC
    key: str = ""  # the scorer's secret, made by the store when the session starts


@dataclass(frozen=True)
class Item:
    token: str  # opaque random id of one showing; the only handle the browser gets
    scorer: str  # whose order this showing belongs to
    position: int  # 0-based place in the scorer's order
    path: str  # image file (answer key: server only)
    true_label: str  # true class name (answer key: server only)
    is_repeat: bool  # second showing of an image, for self-consistency


@dataclass(frozen=True)
class Progress:
    scorer: str  # whose progress
    total: int  # showings in the scorer's order (images + repeats)
    answered: int  # showings with a standing (not undone) answer
    current: Item | None  # first unanswered showing; None when the scorer has finished


@dataclass(frozen=True)
class AnswerRecord:
    item: Item  # the showing that was answered
    answer: str  # the class name the scorer chose
    answered_at: str  # ISO 8601 UTC
    response_ms: int | None  # time from image shown to answer, measured by the browser


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def new_token() -> str:
    """An unguessable URL-safe token (128 random bits) naming one showing or a session key."""
    return secrets.token_urlsafe(16)


def open_store(path: str | Path, *, create: bool = True) -> ScoreStore:
    """Open a scores database in WAL mode, creating it when ``create`` is True.

    Raises
    ------
    FileNotFoundError
        ``create`` is False and the file does not exist.
    StoreFileError
        The file exists but is not a cellclass scores database, or its folder is missing.
    """
    path = Path(path).expanduser().resolve()
    if not create and not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such scores database (made by `cellclass blind serve`)"
        )
    if not path.parent.is_dir():
        raise StoreFileError(f"db={path}: folder {path.parent} does not exist")
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as connection:
            _ensure_schema(connection, path)
    except sqlite3.DatabaseError as error:
        raise StoreFileError(f"db={path}: not a cellclass scores database ({error})") from None
    return ScoreStore(path)


def _ensure_schema(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute("BEGIN IMMEDIATE")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version == 0 and tables == 0:
        for statement in _SCHEMA.split(";")[:-1]:  # executescript would commit early
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif version == 1:
        _add_keys(connection)
    elif version != SCHEMA_VERSION:
        connection.execute("ROLLBACK")
        raise StoreFileError(
            f"db={path}: not a cellclass scores database (schema version {version}); "
            "choose a new file name"
        )
    if connection.in_transaction:
        connection.execute("COMMIT")
    connection.execute("PRAGMA journal_mode = WAL")


def _add_keys(connection: sqlite3.Connection) -> None:
    """Upgrade a schema-1 database: sessions get a key, and seed may be NULL (secret order)."""
    sessions = _SCHEMA[_SCHEMA.index("CREATE TABLE sessions") : _SCHEMA.index(";")]
    connection.execute(sessions.replace("TABLE sessions", "TABLE sessions_v2"))
    rows = connection.execute("SELECT * FROM sessions").fetchall()
    connection.executemany(
        "INSERT INTO sessions_v2 VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*row, new_token()) for row in rows],
    )
    connection.execute("DROP TABLE sessions")  # foreign keys are off on this connection
    connection.execute("ALTER TABLE sessions_v2 RENAME TO sessions")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _item(row: sqlite3.Row) -> Item:
    return Item(
        row["token"],
        row["scorer"],
        row["position"],
        row["path"],
        row["true_label"],
        bool(row["is_repeat"]),
    )


def _session(row: sqlite3.Row) -> Session:
    return Session(
        row["scorer"],
        row["test_dir"],
        tuple(json.loads(row["class_names"])),
        row["seed"],
        row["repeats"],
        row["created"],
        row["key"],
    )


class ScoreStore:
    """Sessions, orders and answers in one SQLite file; every method is one transaction.

    Build it with `open_store`, which creates the tables. Methods open their own connection,
    so one instance can be shared by the threads of a web server.
    """

    def __init__(self, path: Path):
        self.path = Path(path)  # the SQLite file

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction: committed on success, rolled back on error."""
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = FULL")  # durable as soon as committed
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    # ------------------------------------------------------------------ sessions
    def open_session(
        self, session: Session, showings: Sequence[tuple[str, str, bool]]
    ) -> tuple[Session, bool]:
        """Start ``session`` with its order, or return the stored one if the scorer exists.

        Parameters
        ----------
        session : Session
            Its ``key`` is ignored: a new session gets a fresh random key.
        showings : sequence of (path, true_label, is_repeat)
            The scorer's order; each showing gets a fresh token. Ignored when the scorer
            already has a session (their stored order is kept).

        Returns
        -------
        (Session, bool)
            The scorer's session (with its key) and whether it was created by this call.
        """
        with self._connect(write=True) as connection:
            stored = connection.execute(
                "SELECT * FROM sessions WHERE scorer = ?", (session.scorer,)
            ).fetchone()
            if stored is not None:
                return _session(stored), False
            session = replace(session, key=new_token())
            connection.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.scorer,
                    session.test_dir,
                    json.dumps(list(session.class_names)),
                    session.seed,
                    session.repeats,
                    session.created,
                    session.key,
                ),
            )
            connection.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (new_token(), session.scorer, position, path, label, int(repeat))
                    for position, (path, label, repeat) in enumerate(showings)
                ],
            )
        return session, True

    def sessions(self) -> list[Session]:
        """Every scorer's session, by scorer name."""
        with self._connect() as connection:
            rows = connection.execute("SELECT * FROM sessions ORDER BY scorer").fetchall()
        return [_session(row) for row in rows]

    def scorer_with_key(self, key: str) -> str:
        """The scorer whose session ``key`` is; raises `AccessError` for any other string."""
        with self._connect() as connection:
            row = connection.execute(
                "SELECT scorer FROM sessions WHERE key = ?", (str(key),)
            ).fetchone()
        if row is None:
            raise AccessError("no scoring session with this key")
        return row[0]

    def items(self, scorer: str) -> list[Item]:
        """The scorer's showings in order (empty for an unknown scorer)."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT * FROM items WHERE scorer = ? ORDER BY position", (scorer,)
            ).fetchall()
        return [_item(row) for row in rows]

    def item(self, token: str) -> Item:
        """The showing named by ``token``; raises `NotFoundError` for an unknown token."""
        with self._connect() as connection:
            return _item(_item_row(connection, token))

    # ------------------------------------------------------------------ answering
    def progress(self, scorer: str) -> Progress:
        """How far ``scorer`` is; raises `NotFoundError` when they have no session."""
        with self._connect() as connection:
            return _progress(connection, scorer)

    def record_answer(self, token: str, answer: str, *, response_ms: int | None = None) -> Progress:
        """Store the answer to the scorer's current showing and return their new progress.

        Raises
        ------
        NotFoundError
            Unknown token.
        InvalidAnswerError
            ``answer`` is not one of the session's class names, or a bad ``response_ms``.
        ConflictError
            The showing was already answered, or it is not the scorer's current one.
        """
        with self._connect(write=True) as connection:
            item = _item(_item_row(connection, token))
            session = _session(
                connection.execute(
                    "SELECT * FROM sessions WHERE scorer = ?", (item.scorer,)
                ).fetchone()
            )
            _check_answer(answer, session.class_names, response_ms)
            current = _progress(connection, item.scorer).current
            if current is None or current.position > item.position:
                raise ConflictError(
                    "this image was already answered; ask /api/next for the next one"
                )
            if current.token != token:
                raise ConflictError("this is not the current image; ask /api/next for it")
            connection.execute(
                "INSERT INTO answers (scorer, token, answer, answered_at, response_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (item.scorer, token, answer, _now(), response_ms),
            )
            return _progress(connection, item.scorer)

    def undo_last(self, scorer: str) -> Progress:
        """Mark the scorer's latest standing answer undone; its image becomes current again.

        Raises
        ------
        NotFoundError
            Unknown scorer.
        ConflictError
            The scorer has no answer to undo.
        """
        with self._connect(write=True) as connection:
            _progress(connection, scorer)  # raises for an unknown scorer
            last = connection.execute(
                "SELECT a.id FROM answers a JOIN items i ON i.token = a.token "
                "WHERE a.scorer = ? AND a.undone_at IS NULL ORDER BY i.position DESC LIMIT 1",
                (scorer,),
            ).fetchone()
            if last is None:
                raise ConflictError("nothing to undo")
            connection.execute("UPDATE answers SET undone_at = ? WHERE id = ?", (_now(), last[0]))
            return _progress(connection, scorer)

    def answer_records(self, scorer: str | None = None) -> list[AnswerRecord]:
        """Standing (not undone) answers, by scorer then position; all scorers by default."""
        query = (
            "SELECT i.*, a.answer, a.answered_at, a.response_ms FROM answers a "
            "JOIN items i ON i.token = a.token WHERE a.undone_at IS NULL"
            + (" AND a.scorer = ?" if scorer is not None else "")
            + " ORDER BY i.scorer, i.position"
        )
        with self._connect() as connection:
            rows = connection.execute(query, () if scorer is None else (scorer,)).fetchall()
        return [
            AnswerRecord(_item(row), row["answer"], row["answered_at"], row["response_ms"])
            for row in rows
        ]


def _item_row(connection: sqlite3.Connection, token: str) -> sqlite3.Row:
    row = connection.execute("SELECT * FROM items WHERE token = ?", (str(token),)).fetchone()
    if row is None:
        raise NotFoundError("unknown image token; reload the page")
    return row


def _progress(connection: sqlite3.Connection, scorer: str) -> Progress:
    total = connection.execute("SELECT count(*) FROM items WHERE scorer = ?", (scorer,)).fetchone()
    if total[0] == 0:
        raise NotFoundError(f"no scoring session for scorer {scorer!r}")
    answered = connection.execute(
        "SELECT count(*) FROM answers WHERE scorer = ? AND undone_at IS NULL", (scorer,)
    ).fetchone()
    current = connection.execute(
        "SELECT i.* FROM items i LEFT JOIN answers a ON a.token = i.token AND a.undone_at IS NULL "
        "WHERE i.scorer = ? AND a.id IS NULL ORDER BY i.position LIMIT 1",
        (scorer,),
    ).fetchone()
    return Progress(scorer, total[0], answered[0], None if current is None else _item(current))


def _check_answer(answer: str, class_names: tuple[str, ...], response_ms: int | None) -> None:
    if answer not in class_names:
        raise InvalidAnswerError(
            f"unknown class {str(answer)[:40]!r}; answer one of {', '.join(class_names)}"
        )
    if response_ms is None:
        return
    if isinstance(response_ms, bool) or not isinstance(response_ms, int):
        raise InvalidAnswerError(f"response_ms must be an integer, got {response_ms!r}"[:100])
    if not 0 <= response_ms <= MAX_RESPONSE_MS:
        raise InvalidAnswerError(f"response_ms must be 0 to {MAX_RESPONSE_MS}, got {response_ms}")
