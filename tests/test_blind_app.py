"""The scoring web app: blinding, images as the model sees them, HTTP refusals, results."""

from __future__ import annotations

import io
import json
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cellclass import cli, results
from cellclass.blind.app import KEY_COOKIE, KEY_HEADER, create_app, host_is_allowed
from cellclass.blind.scoring import ANSWER_COLUMNS, answer_rows, scorer_summary
from cellclass.blind.server import ServeSettings, is_loopback, open_server
from cellclass.blind.store import Session, open_store
from cellclass.blind.testset import load_test, render_png
from cellclass.data.cache import load_normalized
from cellclass.data.images import to_display_uint8
from cellclass.data.normalization import Normalization
from cellclass.data.preprocessing import Preprocessing, preprocessing_to_dict

from .test_blind_store import CLASSES, dump, write_blind_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_blind_tree(tmp_path / "secret-study-folder")


@pytest.fixture
def test_set(tree: Path, tmp_path: Path):
    return load_test(tree, cache_dir=tmp_path / "cache")


@pytest.fixture
def store(tmp_path: Path):
    return open_store(tmp_path / "scores.sqlite")


def secrets_of(tree: Path) -> list[str]:
    """Text that must never reach the browser: file stems, names, folders, paths."""
    files = sorted(tree.resolve().glob("*/*.png"))
    names = [p.stem for p in files] + [p.name for p in files] + [str(p) for p in files]
    return names + [str(tree.resolve()), tree.name, "specimen"]


def assert_blind(text: str, tree: Path, *, labels_too: bool) -> None:
    for secret in secrets_of(tree) + (list(CLASSES) if labels_too else []):
        assert secret not in text, f"{secret!r} reached the browser"


def start(client, scorer: str = "alice") -> dict:
    """Start ``scorer``'s session in the test client (which keeps the key's cookie)."""
    response = client.post("/api/start", json={"scorer": scorer})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def png_text_chunks(data: bytes) -> list[bytes]:
    """Types of the PNG's chunks that can carry text (tEXt, zTXt, iTXt, eXIf)."""
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append(kind)
        offset += 12 + length
    return [kind for kind in chunks if kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf")]


# ---------------------------------------------------------------- blinding
def test_page_shows_class_buttons_and_nothing_of_the_key(store, test_set, tree: Path):
    client = create_app(store, test_set).test_client()
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for key, name in enumerate(CLASSES, start=1):
        assert f'data-answer="{name}"' in html and f"<kbd>{key}</kbd>" in html
    assert_blind(html, tree, labels_too=False)  # class names are the buttons, by design
    for asset in ("score.js", "score.css"):
        text = client.get(f"/static/{asset}").get_data(as_text=True)
        assert_blind(text, tree, labels_too=True)


def test_no_api_response_names_a_file_folder_or_label(store, test_set, tree: Path):
    client = create_app(store, test_set, repeats=0.25).test_client()
    responses = [client.post("/api/start", json={"scorer": "alice"})]
    state = responses[0].get_json()
    while not state["done"]:
        responses.append(client.get(state["image"]))
        token = state["token"]
        item = store.item(token)
        wrong = CLASSES[1 - CLASSES.index(item.true_label)]
        responses.append(client.post("/api/answer", json={"token": token, "answer": wrong}))
        responses.append(client.post("/api/answer", json={"token": token, "answer": wrong}))  # 409
        state = responses[-2].get_json()
    responses.append(client.post("/api/undo", json={}))
    responses.append(client.post("/api/answer", json={"token": "bogus", "answer": "x"}))
    responses.append(client.get("/image/bogus.png"))
    responses.append(client.post("/api/start", json={"scorer": ""}))
    responses.append(client.post("/api/start", json={"scorer": "alice"}))  # taken: 403
    responses.append(create_app(store, test_set).test_client().get("/api/next"))  # no key: 403
    assert {r.status_code for r in responses} == {200, 400, 403, 404, 409}
    for response in responses:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        assert_blind(headers, tree, labels_too=True)
        if response.mimetype == "image/png":
            assert png_text_chunks(response.data) == []
        else:
            assert_blind(response.get_data(as_text=True), tree, labels_too=True)


# ---------------------------------------------------------------- images
def test_images_are_the_model_input_at_its_size(store, test_set, tree: Path, tmp_path: Path):
    """Issue 20: images came upscaled to 384 px and the browser smoothed them; now the page
    gets the model's pixels and zooms them itself (nearest or smooth, the scorer's choice)."""
    client = create_app(store, test_set).test_client()
    state = start(client)
    response = client.get(state["image"])
    assert response.status_code == 200 and response.mimetype == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.data)))
    assert shown.shape == (32, 32, 3)  # the model's 32 px, nothing interpolated
    path = store.item(state["token"]).path
    prep = Preprocessing(image_size=32, normalization=Normalization("image"))
    model_input = load_normalized([Path(path)], prep, cache_dir=tmp_path / "cache")[0]
    np.testing.assert_array_equal(shown, to_display_uint8(model_input))
    assert client.get(state["image"] + "?contrast=sharpen").status_code == 400


def test_contrast_stretch_is_one_mapping_for_every_image(store, tree: Path, tmp_path: Path):
    """Issue 20: an optional contrast stretch, the same for every image: the 0.5 and 99.5
    percentiles of all the test set's pixels (per channel) become black and white."""
    dim = Normalization("dataset", low=(0.0,), high=(1000.0,))  # 8-bit images look dark
    config = {"class_names": list(CLASSES)}
    config["preprocessing"] = preprocessing_to_dict(Preprocessing(image_size=16, normalization=dim))
    results.write_json(tmp_path / "run" / "config.json", config)
    test_set = load_test(tree, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    client = create_app(store, test_set).test_client()
    state = start(client)
    plain, stretched = [], []
    for _ in range(3):
        get = lambda url: np.asarray(Image.open(io.BytesIO(client.get(url).data)))  # noqa: E731
        plain.append(get(state["image"]).astype(float))
        stretched.append(get(state["image"] + "?contrast=stretch").astype(float))
        body = {"token": state["token"], "answer": CLASSES[0]}
        state = client.post("/api/answer", json=body).get_json()
    everything = test_set.pixels.reshape(-1, 3).astype(float)  # all images, both classes
    low = np.percentile(everything, 0.5, axis=0, method="inverted_cdf")
    high = np.percentile(everything, 99.5, axis=0, method="inverted_cdf")
    for before, after in zip(plain, stretched, strict=True):
        expected = np.clip(np.rint((before - low) * 255 / (high - low)), 0, 255)
        np.testing.assert_allclose(after, expected, atol=1)
    assert high.max() < 128 and np.mean(stretched) > 2 * np.mean(plain)  # it does something
    page = client.get("/").get_data(as_text=True)
    for control in ('id="zoom"', 'value="fit"', 'value="4"', 'value="smooth"', 'id="stretch"'):
        assert control in page


def test_a_run_folder_fixes_size_classes_and_normalisation(tree: Path, tmp_path: Path):
    norm = Normalization("dataset", low=(20.0,), high=(150.0,))
    prep = Preprocessing(image_size=16, normalization=norm)
    config = {"class_names": [*CLASSES, "Unseen"], "preprocessing": preprocessing_to_dict(prep)}
    results.write_json(tmp_path / "run" / "config.json", config)
    test = load_test(tree, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    assert "16 px, dataset" in test.source
    # issue 20: a button only for the classes of this folder; "Unseen" has none here
    assert test.class_names == CLASSES and test.absent_classes == ("Unseen",)
    page = create_app(open_store(tmp_path / "s.sqlite"), test).test_client().get("/")
    assert "Unseen" not in page.get_data(as_text=True)
    settings = ServeSettings(
        str(tree), str(tmp_path / "s.sqlite"), run_dir=str(tmp_path / "run"), port=0,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    server, lines = open_server(settings)
    server.server_close()
    assert any(line.startswith("no button for Unseen") for line in lines)
    expected = load_normalized([Path(p) for p in test.paths], prep, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(test.pixels, [to_display_uint8(x) for x in expected])
    with pytest.raises(ValueError, match="image_size cannot be combined with run_dir"):
        load_test(tree, run_dir=tmp_path / "run", image_size=32)


def test_render_png_checks_its_input():
    with pytest.raises(ValueError, match=r"needs \(H, W, 3\) uint8"):
        render_png(np.zeros((8, 8), dtype=np.uint8))
    for height, width in ((500, 400), (8, 6)):
        png = render_png(np.zeros((height, width, 3), dtype=np.uint8))
        assert Image.open(io.BytesIO(png)).size == (width, height)  # the page zooms


# ---------------------------------------------------------------- refusals over HTTP
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("unknown token", 404),
        ("unknown class", 400),
        ("repeated", 409),
        ("not json", 400),
        ("bad time", 400),
        ("undo without key", 403),
        ("bad scorer", 400),
        ("taken scorer", 403),
    ],
)
def test_bad_requests_get_4xx_and_change_nothing(store, test_set, kind: str, status: int):
    app = create_app(store, test_set)
    client = app.test_client()
    first = start(client)
    client.post("/api/answer", json={"token": first["token"], "answer": "WildType"})
    current = client.get("/api/next").get_json()["token"]
    if kind == "undo without key":
        client = app.test_client()
    requests = {
        "unknown token": ("/api/answer", {"token": "x" * 22, "answer": "WildType"}),
        "unknown class": ("/api/answer", {"token": current, "answer": "Mitochondria"}),
        "repeated": ("/api/answer", {"token": first["token"], "answer": "Knockdown"}),
        "not json": ("/api/answer", None),
        "bad time": ("/api/answer", {"token": current, "answer": "WildType", "response_ms": -1}),
        "undo without key": ("/api/undo", {}),
        "bad scorer": ("/api/start", {"scorer": ""}),
        "taken scorer": ("/api/start", {"scorer": "alice"}),
    }
    url, body = requests[kind]
    before = dump(store.path)
    if body is None:
        response = client.post(url, data="token=1", content_type="text/plain")
    else:
        response = client.post(url, json=body)
    assert response.status_code == status
    assert response.get_json()["error"] and "key" not in response.get_json()
    assert KEY_COOKIE not in response.headers.get("Set-Cookie", "")
    assert dump(store.path) == before


def test_a_fixed_scorer_server_serves_only_that_scorer(store, test_set, tree: Path):
    bob_app = create_app(store, test_set, scorer="bob")
    bob = bob_app.test_client()
    state = start(bob, "bob")
    assert state["scorer"] == "bob" and bob.get("/api/next").status_code == 200
    assert bob.post("/api/start", json={"scorer": "eve"}).status_code == 400
    open_app = create_app(store, test_set).test_client()
    alice = start(open_app, "alice")
    before = dump(store.path)
    response = bob.post("/api/answer", json={"token": alice["token"], "answer": "WildType"})
    assert response.status_code == 404 and bob.get(alice["image"]).status_code == 404
    as_alice = bob_app.test_client().get("/api/next", headers={KEY_HEADER: alice["key"]})
    assert as_alice.status_code == 403  # alice's key is no use on bob's server
    assert dump(store.path) == before
    assert 'data-scorer="bob"' in bob.get("/").get_data(as_text=True)


def test_a_database_of_another_folder_is_refused_by_the_page(store, test_set, tmp_path: Path):
    other = load_test(write_blind_tree(tmp_path / "other", seed=7), cache_dir=tmp_path / "cache")
    key = start(create_app(store, other).test_client())["key"]
    client = create_app(store, test_set).test_client()
    response = client.get("/api/next", headers={KEY_HEADER: key})
    assert response.status_code == 409
    assert str(tmp_path) not in response.get_data(as_text=True)


# ---------------------------------------------------------------- access and hardening
def test_only_the_scorers_key_reads_answers_or_undoes(store, test_set):
    app = create_app(store, test_set)
    alice = app.test_client()
    state = start(alice)
    alice.post("/api/answer", json={"token": state["token"], "answer": "WildType"})
    current = alice.get("/api/next").get_json()
    before = dump(store.path)
    for headers in ({}, {KEY_HEADER: "x" * 22}, {KEY_HEADER: ""}):
        other = app.test_client()  # another process or browser: no cookie
        calls = [
            other.get("/api/next?scorer=alice", headers=headers),
            other.get(current["image"], headers=headers),
            other.post("/api/answer", json={"token": current["token"], "answer": "WildType"}),
            other.post("/api/undo", json={"scorer": "alice"}, headers=headers),
            other.post("/api/resume", json={"key": "x" * 22}),
        ]
        assert [r.status_code for r in calls] == [403] * 5
        assert all(state["token"] not in r.get_data(as_text=True) for r in calls)
    assert dump(store.path) == before
    assert [s.scorer for s in store.sessions()] == ["alice"]  # GET /api/next created nobody
    script = app.test_client().get("/api/next", headers={KEY_HEADER: state["key"]})
    assert script.get_json()["token"] == current["token"]
    link = app.test_client()  # the personal link: /#key=... posted by the page
    assert link.post("/api/resume", json={"key": state["key"]}).status_code == 200
    assert link.get("/api/next").get_json()["token"] == current["token"]


def test_the_key_cookie_is_http_only_and_same_site(store, test_set):
    response = create_app(store, test_set).test_client().post("/api/start", json={"scorer": "a"})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{KEY_COOKIE}={response.get_json()['key']};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie


@pytest.mark.parametrize(
    ("bound", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "localhost:8000", True),
        ("127.0.0.1", "evil.example:8000", False),  # DNS rebinding: a name resolving to us
        ("127.0.0.1", "127.0.0.1.evil.example", False),
        ("127.0.0.1", "192.168.1.7:8000", False),
        ("::1", "[::1]:8000", True),
        ("0.0.0.0", "192.168.1.7:8000", True),
        ("0.0.0.0", "[fe80::1]:8000", True),
        ("0.0.0.0", "evil.example:8000", False),
        ("192.168.1.7", "192.168.1.7:8000", True),
        ("192.168.1.7", "localhost:8000", False),
        ("127.0.0.1", "[bad", False),
    ],
)
def test_host_header_must_name_the_bound_address(bound: str, host: str, allowed: bool):
    assert host_is_allowed(host, bound) is allowed


def test_foreign_hosts_origins_methods_and_big_bodies_are_refused(store, test_set):
    app = create_app(store, test_set)
    client = app.test_client()
    state = start(client)
    before = dump(store.path)
    answer = {"token": state["token"], "answer": "WildType"}
    refused = {
        "foreign host": client.get("/", headers={"Host": "rebound.example:8000"}),
        "foreign host api": client.post("/api/answer", json=answer, headers={"Host": "x.example"}),
        "other origin": client.post("/api/answer", json=answer, headers={"Origin": "http://x.io"}),
        "null origin": client.post("/api/undo", json={}, headers={"Origin": "null"}),
        "form post": client.post("/api/answer", data=answer),  # what another site's form sends
        "GET answer": client.get("/api/answer"),
        "GET start": client.get("/api/start?scorer=mallory"),
        "GET undo": client.get("/api/undo"),
        "huge body": client.post(
            "/api/answer", data=b"{" + b" " * 70_000 + b"}", content_type="application/json"
        ),
    }
    statuses = {kind: response.status_code for kind, response in refused.items()}
    assert statuses == {
        "foreign host": 403,
        "foreign host api": 403,
        "other origin": 403,
        "null origin": 403,
        "form post": 400,
        "GET answer": 405,
        "GET start": 405,
        "GET undo": 405,
        "huge body": 413,
    }
    assert all(r.get_json()["error"] for r in refused.values())
    assert dump(store.path) == before
    own = client.post("/api/answer", json=answer, headers={"Origin": "http://localhost"})
    assert own.status_code == 200  # the page's own requests


def test_no_page_can_frame_the_scoring_page(store, test_set):
    client = create_app(store, test_set).test_client()
    for response in (client.get("/"), client.get("/api/next"), client.get("/static/score.js")):
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# ---------------------------------------------------------------- server start
def test_open_server_binds_loopback_and_warns_for_other_hosts(tree: Path, tmp_path: Path):
    db, cache = str(tmp_path / "scores.sqlite"), str(tmp_path / "cache")
    server, lines = open_server(ServeSettings(str(tree), db, port=0, cache_dir=cache))
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert not any("WARNING" in line for line in lines)
        assert any("per-image percentile" in line for line in lines)
    finally:
        server.server_close()
    server, lines = open_server(
        ServeSettings(str(tree), db, host="0.0.0.0", port=0, cache_dir=cache)
    )
    try:
        assert any(line.startswith("WARNING: listening on 0.0.0.0") for line in lines)
    finally:
        server.server_close()
    assert is_loopback("localhost") and is_loopback("::1") and not is_loopback("example.org")
    with pytest.raises(ValueError, match="repeats=.*: give a share between 0 and 1"):
        open_server(ServeSettings(str(tree), db, repeats=2.0))


# ---------------------------------------------------------------- results
def test_scorer_summary_known_values():
    session = Session("ann", "/t", ("A", "B"), 0, 0.5, "2024-01-01T00:00:00")
    rows = [
        {"path": "1", "true": "A", "answer": "A", "correct": 1, "is_repeat": 0, "response_ms": 100},
        {"path": "2", "true": "A", "answer": "B", "correct": 0, "is_repeat": 0, "response_ms": 300},
        {"path": "3", "true": "B", "answer": "B", "correct": 1, "is_repeat": 0, "response_ms": 200},
        {"path": "4", "true": "B", "answer": "B", "correct": 1, "is_repeat": 0, "response_ms": ""},
        {"path": "1", "true": "A", "answer": "A", "correct": 1, "is_repeat": 1, "response_ms": 50},
        {"path": "2", "true": "A", "answer": "A", "correct": 1, "is_repeat": 1, "response_ms": 60},
    ]
    summary = scorer_summary(session, 8, rows)
    assert (summary["n_images"], summary["n_correct"], summary["accuracy"]) == (4, 3, 0.75)
    assert summary["ci_low"] == pytest.approx(0.3006, abs=1e-4)  # Wilson 3/4, by hand
    assert summary["ci_high"] == pytest.approx(0.9544, abs=1e-4)
    assert summary["per_class"]["A"] == {"n": 2, "n_correct": 1, "accuracy": 0.5}
    assert summary["confusion"] == [[1, 1], [0, 2]]
    assert summary["self_consistency"] == {"n_pairs": 2, "n_same": 1, "rate": 0.5}
    assert summary["median_response_ms"] == 100 and summary["answered"] == 6


def test_blind_results_command(store, test_set, tmp_path: Path, capsys):
    client = create_app(store, test_set).test_client()
    state = start(client)
    for _ in range(4):
        item = store.item(state["token"])
        body = {"token": state["token"], "answer": item.true_label, "response_ms": 900}
        state = client.post("/api/answer", json=body).get_json()
    csv = tmp_path / "answers.csv"
    assert cli.main(["blind", "results", "--db", str(store.path), "-o", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "4/16" in out and "100.0%" in out and "51.0%–100.0%" in out
    rows = results.read_table(csv)
    assert list(rows[0]) == ANSWER_COLUMNS and len(rows) == 4
    assert rows == [{**r, "response_ms": 900} for r in answer_rows(store)]
    assert {r["correct"] for r in rows} == {1} and {r["is_repeat"] for r in rows} == {0}
    assert cli.main(["blind", "results", "--db", str(store.path), "-o", str(csv)]) == 2
    assert cli.main(["blind", "results", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no such scores database" in capsys.readouterr().err
    with sqlite3.connect(store.path) as connection:  # the CSV export wrote nothing to the db
        assert connection.execute("SELECT count(*) FROM answers").fetchone()[0] == 4
    assert json.loads(json.dumps(rows))  # plain values only
