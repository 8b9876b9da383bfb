"""The blinded-scoring store: orders, answers, undo, refusals, concurrency, a killed server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from cellclass.blind.server import ServeSettings, open_server
from cellclass.blind.session import MIN_GAP, draw_order, ensure_session, scorer_rng
from cellclass.blind.store import (
    ConflictError,
    InvalidAnswerError,
    NotFoundError,
    StoreFileError,
    open_store,
)

from .conftest import write_png

CLASSES = ("Knockdown", "WildType")  # class folders; file names never contain them


def write_blind_tree(root: Path, *, n_per_class: int = 8, size: int = 32, seed: int = 0) -> Path:
    """A tiny test folder: ``root/<class>/specimen-<random hex>.png`` (stems unlike classes)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        for _ in range(n_per_class):
            image = rng.integers(0, 80, size=(size, size), dtype=np.uint8)
            image[label * size // 2 : (label + 1) * size // 2] += 120  # a visible class cue
            write_png(root / name / f"specimen-{rng.integers(16**10):010x}.png", image)
    return root


def answer_key(root: Path) -> list[tuple[str, str]]:
    """(absolute path, class) of every image, as `BlindTest.answer_key` gives it."""
    return [(str(p.resolve()), p.parent.name) for p in sorted(root.resolve().glob("*/*.png"))]


def dump(db: Path) -> list[str]:
    """The whole database as SQL text, to show that a refused request changed nothing."""
    with sqlite3.connect(db) as connection:
        return list(connection.iterdump())


def start(store, root: Path, scorer: str = "alice", **options):
    return ensure_session(
        store,
        scorer,
        test_dir=str(root.resolve()),
        class_names=CLASSES,
        images=answer_key(root),
        **options,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_blind_tree(tmp_path / "test")


# ---------------------------------------------------------------- the database file
def test_open_store_is_wal_and_refuses_foreign_files(tmp_path: Path):
    store = open_store(tmp_path / "scores.sqlite")
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    open_store(store.path)  # reopening an existing store is fine
    (tmp_path / "notes.txt").write_text("not a database at all, just some text\n" * 20)
    with pytest.raises(StoreFileError, match="not a cellclass scores database"):
        open_store(tmp_path / "notes.txt")
    with sqlite3.connect(tmp_path / "other.sqlite") as connection:
        connection.execute("CREATE TABLE things (x)")
    with pytest.raises(StoreFileError, match="choose a new file name"):
        open_store(tmp_path / "other.sqlite")
    with pytest.raises(FileNotFoundError, match="no such scores database"):
        open_store(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(StoreFileError, match="does not exist"):
        open_store(tmp_path / "no" / "folder.sqlite")


# ---------------------------------------------------------------- orders
@pytest.mark.parametrize("repeats", [0.0, 0.1, 0.5, 1.0])
def test_draw_order_shows_every_image_once_plus_later_repeats(repeats: float):
    order = draw_order(20, repeats=repeats, rng=np.random.default_rng(1))
    firsts = [image for image, repeat in order if not repeat]
    seconds = [image for image, repeat in order if repeat]
    assert sorted(firsts) == list(range(20))
    assert len(seconds) == round(repeats * 20) and len(set(seconds)) == len(seconds)
    for image in seconds:
        first, again = order.index((image, False)), order.index((image, True))
        assert again > first
        assert (
            again - first > MIN_GAP or again == len(order) - 1 or first >= len(order) - MIN_GAP - 2
        )
    assert order == draw_order(20, repeats=repeats, rng=np.random.default_rng(1))


def test_draw_order_rejects_bad_input():
    with pytest.raises(ValueError, match="repeats must be a fraction"):
        draw_order(5, repeats=1.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_images must be a positive int"):
        draw_order(0, repeats=0.1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        scorer_rng(-1, "alice")


def test_order_is_fixed_per_scorer_and_resumed(tmp_path: Path, tree: Path):
    store = open_store(tmp_path / "scores.sqlite")
    start(store, tree, "alice", seed=3, repeats=0.25)
    alice = [(i.path, i.is_repeat) for i in store.items("alice")]
    assert len(alice) == 16 + 4 and sum(repeat for _, repeat in alice) == 4
    start(store, tree, "bob", seed=3, repeats=0.25)
    assert [(i.path, i.is_repeat) for i in store.items("bob")] != alice
    reopened = open_store(store.path)
    session = start(reopened, tree, "alice", seed=99, repeats=0.0)  # stored order wins
    assert (session.seed, session.repeats) == (3, 0.25)
    assert [(i.path, i.is_repeat) for i in reopened.items("alice")] == alice
    other = open_store(tmp_path / "other.sqlite")  # same seed and name: same order
    start(other, tree, "alice", seed=3, repeats=0.25)
    assert [(i.path, i.is_repeat) for i in other.items("alice")] == alice
    tokens = [i.token for i in store.items("alice") + store.items("bob")]
    assert len(set(tokens)) == len(tokens) and min(map(len, tokens)) >= 20


def test_default_orders_are_secret_and_only_a_seed_reproduces_them(tmp_path: Path, tree: Path):
    orders = []
    for name in ("first.sqlite", "second.sqlite"):  # two stores made identically
        store = open_store(tmp_path / name)
        session = start(store, tree, "alice", repeats=0.25)
        assert session.seed is None and len(session.key) >= 20
        orders.append([(i.path, i.is_repeat) for i in store.items("alice")])
    assert orders[0] != orders[1]
    images = answer_key(tree)
    for seed in range(10):  # not the seed-and-name recipe of any small seed
        recipe = draw_order(len(images), repeats=0.25, rng=scorer_rng(seed, "alice"))
        assert [(images[i][0], repeat) for i, repeat in recipe] not in orders
    seeded = []
    for name in ("third.sqlite", "fourth.sqlite"):
        store = open_store(tmp_path / name)
        assert start(store, tree, "alice", seed=11, repeats=0.25).seed == 11
        seeded.append([(i.path, i.is_repeat) for i in store.items("alice")])
    assert seeded[0] == seeded[1]  # an explicit seed reproduces the order


def test_a_scorer_of_another_folder_is_refused(tmp_path: Path, tree: Path):
    store = open_store(tmp_path / "scores.sqlite")
    start(store, tree, "alice")
    other = write_blind_tree(tmp_path / "other", seed=5)
    with pytest.raises(ConflictError, match="different set of images") as error:
        start(store, other, "alice")
    assert str(tmp_path) not in str(error.value)  # the message may reach the browser
    with pytest.raises(InvalidAnswerError, match="scorer name"):
        start(store, tree, "   ")


_SCHEMA_1 = """
CREATE TABLE sessions (scorer TEXT PRIMARY KEY, test_dir TEXT NOT NULL, class_names TEXT NOT NULL,
    seed INTEGER NOT NULL, repeats REAL NOT NULL, created TEXT NOT NULL);
CREATE TABLE items (token TEXT PRIMARY KEY, scorer TEXT NOT NULL REFERENCES sessions(scorer),
    position INTEGER NOT NULL, path TEXT NOT NULL, true_label TEXT NOT NULL,
    is_repeat INTEGER NOT NULL, UNIQUE (scorer, position));
CREATE TABLE answers (id INTEGER PRIMARY KEY, scorer TEXT NOT NULL REFERENCES sessions(scorer),
    token TEXT NOT NULL REFERENCES items(token), answer TEXT NOT NULL, answered_at TEXT NOT NULL,
    response_ms INTEGER, undone_at TEXT);
INSERT INTO sessions VALUES ('alice', '/t', '["Knockdown", "WildType"]', 3, 0.0, '2025-01-01');
INSERT INTO items VALUES ('tok-a', 'alice', 0, '/t/WildType/a.png', 'WildType', 0);
INSERT INTO items VALUES ('tok-b', 'alice', 1, '/t/Knockdown/b.png', 'Knockdown', 0);
INSERT INTO answers VALUES (1, 'alice', 'tok-a', 'WildType', '2025-01-01', 900, NULL);
PRAGMA user_version = 1;
"""


def test_a_database_from_before_keys_is_upgraded_in_place(tmp_path: Path):
    db = tmp_path / "scores.sqlite"
    with closing(sqlite3.connect(db)) as connection:
        connection.executescript(_SCHEMA_1)
    store = open_store(db)
    (session,) = store.sessions()
    assert (session.scorer, session.seed, session.class_names) == ("alice", 3, CLASSES)
    assert store.scorer_with_key(session.key) == "alice" and len(session.key) >= 20
    progress = store.progress("alice")
    assert (progress.answered, progress.current.token) == (1, "tok-b")
    with closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    assert open_store(db).sessions() == [session]  # upgraded once, keys kept


# ---------------------------------------------------------------- answering
def test_answers_progress_and_undo(tmp_path: Path, tree: Path):
    store = open_store(tmp_path / "scores.sqlite")
    start(store, tree)
    items = store.items("alice")
    progress = store.progress("alice")
    assert (progress.answered, progress.total, progress.current) == (0, 16, items[0])
    progress = store.record_answer(items[0].token, "WildType", response_ms=1234)
    progress = store.record_answer(items[1].token, "Knockdown", response_ms=None)
    assert progress.answered == 2 and progress.current == items[2]
    progress = store.undo_last("alice")
    assert progress.answered == 1 and progress.current == items[1]
    progress = store.record_answer(items[1].token, "WildType", response_ms=10)
    records = store.answer_records("alice")
    assert [(r.item, r.answer, r.response_ms) for r in records] == [
        (items[0], "WildType", 1234),
        (items[1], "WildType", 10),
    ]
    with sqlite3.connect(store.path) as connection:  # undo keeps an audit trail
        undone = connection.execute("SELECT answer FROM answers WHERE undone_at IS NOT NULL")
        assert undone.fetchall() == [("Knockdown",)]
    for item in items[2:]:
        progress = store.record_answer(item.token, item.true_label)
    assert progress.current is None and progress.answered == 16


@pytest.mark.parametrize(
    ("request_kind", "error", "message"),
    [
        ("unknown token", NotFoundError, "unknown image token"),
        ("unknown class", InvalidAnswerError, "unknown class"),
        ("repeated submit", ConflictError, "already answered"),
        ("future token", ConflictError, "not the current image"),
        ("negative time", InvalidAnswerError, "response_ms must be"),
        ("text time", InvalidAnswerError, "response_ms must be an integer"),
        ("undo unknown scorer", NotFoundError, "no scoring session"),
    ],
)
def test_bad_requests_change_nothing(tmp_path: Path, tree: Path, request_kind, error, message):
    store = open_store(tmp_path / "scores.sqlite")
    start(store, tree)
    items = store.items("alice")
    store.record_answer(items[0].token, "WildType", response_ms=5)
    calls = {
        "unknown token": lambda: store.record_answer("no-such-token", "WildType"),
        "unknown class": lambda: store.record_answer(items[1].token, "Mitochondria"),
        "repeated submit": lambda: store.record_answer(items[0].token, "Knockdown"),
        "future token": lambda: store.record_answer(items[5].token, "Knockdown"),
        "negative time": lambda: store.record_answer(items[1].token, "WildType", response_ms=-3),
        "text time": lambda: store.record_answer(items[1].token, "WildType", response_ms="9"),
        "undo unknown scorer": lambda: store.undo_last("mallory"),
    }
    before = dump(store.path)
    with pytest.raises(error, match=message):
        calls[request_kind]()
    assert dump(store.path) == before


def test_nothing_to_undo_changes_nothing(tmp_path: Path, tree: Path):
    store = open_store(tmp_path / "scores.sqlite")
    start(store, tree)
    before = dump(store.path)
    with pytest.raises(ConflictError, match="nothing to undo"):
        store.undo_last("alice")
    assert dump(store.path) == before


# ---------------------------------------------------------------- concurrency
def test_concurrent_scorers_and_racing_submits(tmp_path: Path, tree: Path):
    store = open_store(tmp_path / "scores.sqlite")
    scorers = [f"scorer{k}" for k in range(4)]
    failures: list[BaseException] = []

    def score(name: str) -> None:
        try:
            start(store, tree, name)
            for item in store.items(name):
                store.record_answer(item.token, item.true_label, response_ms=1)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=score, args=(name,)) for name in scorers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for name in scorers:
        assert store.progress(name).answered == 16

    start(store, tree, "racer")
    token = store.items("racer")[0].token
    outcomes: list[str] = []

    def submit() -> None:
        try:
            store.record_answer(token, "WildType")
            outcomes.append("stored")
        except ConflictError:
            outcomes.append("conflict")

    racers = [threading.Thread(target=submit) for _ in range(6)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["stored"]
    assert store.progress("racer").answered == 1


# ---------------------------------------------------------------- a killed server
def _serve(tree: Path, db: Path, cache: Path) -> tuple[subprocess.Popen, str, str]:
    """Run ``cellclass blind serve`` in a subprocess; return it, its base URL and the key."""
    command = [
        sys.executable,
        "-m",
        "cellclass",
        "blind",
        "serve",
        str(tree),
        "--db",
        str(db),
        "--scorer",
        "alice",
        "--port",
        "0",
        "--cache-dir",
        str(cache),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("serving on "):
            return process, *_link(line)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def _link(line: str) -> tuple[str, str]:
    """Base URL and key of the line "serving on http://HOST:PORT/#key=KEY (...)"."""
    base, key = line.split()[2].split("/#key=")
    return base, key


def _call(url: str, key: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Scorer-Key": key}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_answers_survive_a_killed_server(tmp_path: Path, tree: Path):
    db = tmp_path / "scores.sqlite"
    process, url, key = _serve(tree, db, tmp_path / "cache")
    try:
        state = _call(f"{url}/api/next", key)
        for _ in range(5):
            body = {"token": state["token"], "answer": "WildType"}
            state = _call(f"{url}/api/answer", key, body)
        assert state["answered"] == 5
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no shutdown, no flush: like a power cut
        process.wait(timeout=10)
    store = open_store(db, create=False)
    assert [r.answer for r in store.answer_records("alice")] == ["WildType"] * 5
    expected_next = store.items("alice")[5].token
    settings = ServeSettings(str(tree), str(db), scorer="alice", port=0, cache_dir=str(tmp_path))
    server, lines = open_server(settings)  # restarted (in this process, to save a start-up)
    assert "scorer alice: 5 of 16 answered" in lines
    assert _link(lines[-1]) == (f"http://127.0.0.1:{server.server_port}", key)  # same key
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        state = _call(f"http://127.0.0.1:{server.server_port}/api/next", key)
        assert (state["answered"], state["token"]) == (5, expected_next)
    finally:
        server.shutdown()
        server.server_close()
