"""The blinded scoring web page: a Flask app over a `ScoreStore` and a `BlindTest`.

Routes (all JSON except the page and the images)::

    GET  /                    the page: one button per class, nothing else about the images
    POST /api/start           {"scorer"} -> a new scorer's session: progress and their key
    POST /api/resume          {"key"} -> progress of the key's scorer (their personal link)
    GET  /api/next            progress and the current image's token (creates nothing)
    POST /api/answer          {"token", "answer", "response_ms"} -> progress after the answer
    POST /api/undo            {} -> progress after undoing the last answer
    GET  /image/<token>.png   the image of one showing, as the model sees it, at that size;
                              ?contrast=stretch: stretched as every image is (see testset)

Access: every call but the page, start and resume acts for the scorer whose session key the
request holds: the HttpOnly, SameSite=Strict cookie that start and resume set, or an
``X-Scorer-Key`` header (scripts). Keys are random, made by the store when a session starts
and never handed out again by the page, so no other process, browser or web site can read,
answer or undo for a scorer. A scorer's personal link is ``/#key=KEY`` (the fragment never
reaches a server); ``cellclass blind serve --scorer NAME`` prints it.

Hardening: a request whose Host header is not this server's address is refused (a web site
whose domain resolves to 127.0.0.1, DNS rebinding); state changes are POST requests with a JSON
body (which another site's form cannot send) and a POST from another origin is refused;
request bodies are capped at MAX_BODY_BYTES; no page may frame this one (X-Frame-Options, CSP
``frame-ancestors``) and it loads nothing from elsewhere (CSP).

Blinding: the browser only ever receives class names (the buttons), random tokens and counts.
File names, folders and true labels stay on the server, also in error messages. Refused
requests get 400 (malformed), 403 (no or wrong key, foreign host or origin), 404 (unknown
token or scorer), 409 (already answered, nothing to undo) or 413 (too large) and change
nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from cellclass.blind.session import check_scorer, ensure_session
from cellclass.blind.store import (
    AccessError,
    BlindError,
    ConflictError,
    InvalidAnswerError,
    Item,
    NotFoundError,
    Progress,
    ScoreStore,
    Session,
)
from cellclass.blind.testset import BlindTest, render_png

LOOPBACK = "127.0.0.1"  # default address: only this computer can open the page
WILDCARDS = ("0.0.0.0", "::", "")  # addresses meaning "every interface of this computer"
KEY_COOKIE = "cellclass_scorer_key"  # cookie holding the scorer's session key
KEY_HEADER = "X-Scorer-Key"  # the same key, for scripts
KEY_MAX_AGE = 180 * 24 * 3600  # seconds the browser keeps the key: scoring may span months
MAX_BODY_BYTES = 64 * 1024  # an answer is ~100 bytes; anything much larger is not the page
CONTRASTS = frozenset({"", "none", "stretch"})  # ?contrast= of an image: as is, or stretched
_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
_STATUS = {NotFoundError: 404, ConflictError: 409, InvalidAnswerError: 400, AccessError: 403}


def create_app(
    store: ScoreStore,
    test: BlindTest,
    *,
    scorer: str | None = None,
    seed: int | None = None,
    repeats: float = 0.0,
    host: str = LOOPBACK,
) -> Flask:
    """The scoring app for one test set.

    Parameters
    ----------
    store : ScoreStore
        Where sessions and answers go.
    test : BlindTest
        The images and their answer key.
    scorer : str, optional
        Score as this scorer only; by default the page asks each new scorer for their name.
    seed, repeats
        Order of new scorers (see `cellclass.blind.session.ensure_session`); seed None draws
        secret orders.
    host : str
        The address the server listens on: requests naming another host are refused.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    fixed = check_scorer(scorer) if scorer is not None else None
    sessions = _Sessions(store, test, fixed, seed=seed, repeats=repeats)
    _add_guards(app, host)
    _add_page_routes(app, test, sessions)
    _add_api_routes(app, store, sessions)
    _add_handlers(app)
    return app


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this computer."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_is_allowed(host_header: str, bound: str) -> bool:
    """Whether a request's Host header names this server by address, not through a domain
    that someone pointed at it (DNS rebinding).

    Allowed: the bound address itself; on loopback, "localhost" and loopback addresses; on a
    wildcard address (0.0.0.0, ::), any IP address and this computer's own name.
    """
    try:
        name = urlsplit(f"//{host_header}").hostname or ""  # lowercase, no port or brackets
    except ValueError:
        return False
    bound = bound.strip("[]").lower()
    if name == bound:
        return True
    if is_loopback(bound):
        return is_loopback(name)
    if bound in WILDCARDS:
        return name == "localhost" or _is_ip_address(name) or name in _own_names()
    return False


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@functools.cache
def _own_names() -> frozenset[str]:
    return frozenset({socket.gethostname().lower(), socket.getfqdn().lower()})


def _add_guards(app: Flask, host: str) -> None:
    @app.before_request
    def refuse_foreign_requests():
        if not host_is_allowed(request.host, host):
            return jsonify(error="unknown Host: open the address `blind serve` printed"), 403
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.host:
            return jsonify(error="requests from other web pages are refused"), 403
        return None


def _add_page_routes(app: Flask, test: BlindTest, sessions: _Sessions) -> None:
    @app.get("/")
    def page():
        fixed = sessions.fixed or ""
        return render_template("score.html", class_names=test.class_names, scorer=fixed)

    @app.get("/image/<token>.png")
    def image(token: str):
        item = sessions.item(token, sessions.scorer(_key()))
        contrast = request.args.get("contrast", "")
        if contrast not in CONTRASTS:
            raise InvalidAnswerError(f"contrast {contrast!r}: use one of {sorted(CONTRASTS)}")
        stretch = test.stretch_limits if contrast == "stretch" else None
        png = render_png(test.pixels[test.row_of[item.path]], stretch=stretch)
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(png, mimetype="image/png", headers=headers)


def _add_api_routes(app: Flask, store: ScoreStore, sessions: _Sessions) -> None:
    @app.post("/api/start")
    def start():
        session = sessions.start(_json_body().get("scorer"))
        return _with_key(
            _progress_json(store.progress(session.scorer), key=session.key), session.key
        )

    @app.post("/api/resume")
    def resume():
        key = str(_json_body().get("key") or "")
        return _with_key(_progress_json(store.progress(sessions.scorer(key))), key)

    @app.get("/api/next")
    def next_image():
        return _progress_json(store.progress(sessions.scorer(_key())))

    @app.post("/api/answer")
    def answer():
        scorer = sessions.scorer(_key())
        body = _json_body()
        item = sessions.item(str(body.get("token", "")), scorer)
        progress = store.record_answer(
            item.token, body.get("answer"), response_ms=body.get("response_ms")
        )
        return _progress_json(progress)

    @app.post("/api/undo")
    def undo():
        scorer = sessions.scorer(_key())
        _json_body()  # a JSON body: no other web site's form can send one
        return _progress_json(store.undo_last(scorer))


def _add_handlers(app: Flask) -> None:
    @app.errorhandler(BlindError)
    def refused(error: BlindError):
        return jsonify(error=str(error)), _STATUS.get(type(error), 400)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify(error=error.description), error.code

    @app.after_request
    def no_leaks(response: Response) -> Response:
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = _CSP
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


class _Sessions:
    """Who a request acts for: the scorer of its key, once their stored session is known to
    match this app's test set (checked once per scorer)."""

    def __init__(
        self,
        store: ScoreStore,
        test: BlindTest,
        fixed: str | None,
        *,
        seed: int | None,
        repeats: float,
    ):
        self.store, self.test, self.fixed = store, test, fixed
        self.seed, self.repeats = seed, repeats
        self.checked: set[str] = set()  # scorers whose stored session matches the test set
        self.lock = threading.Lock()

    def start(self, name) -> Session:
        """A new scorer's session; a name that has one already is refused."""
        if self.fixed is not None and name not in (None, "", self.fixed):
            raise InvalidAnswerError(f"this server scores only as {self.fixed!r}")
        session = self._ensure(check_scorer(self.fixed or name), resume=False)
        with self.lock:
            self.checked.add(session.scorer)
        return session

    def scorer(self, key: str) -> str:
        """The scorer whose session ``key`` is; raises `AccessError` for a missing or wrong key."""
        if not key:
            where = "the link `cellclass blind serve` printed" if self.fixed else "your name"
            raise AccessError(f"no scoring session in this browser: start with {where}")
        scorer = self.store.scorer_with_key(key)
        if self.fixed is not None and scorer != self.fixed:
            raise AccessError(f"this server scores only as {self.fixed!r}")
        with self.lock:
            if scorer in self.checked:
                return scorer
        self._ensure(scorer, resume=True)  # raises ConflictError for another test set
        with self.lock:
            self.checked.add(scorer)
        return scorer

    def item(self, token: str, scorer: str) -> Item:
        """The showing of ``token``, if it is one of ``scorer``'s on this app's test set."""
        item = self.store.item(token)
        if item.path not in self.test.row_of or item.scorer != scorer:
            raise NotFoundError("unknown image token; reload the page")
        return item

    def _ensure(self, scorer: str, *, resume: bool) -> Session:
        return ensure_session(
            self.store,
            scorer,
            test_dir=self.test.test_dir,
            class_names=self.test.class_names,
            images=self.test.answer_key,
            seed=self.seed,
            repeats=self.repeats,
            resume=resume,
        )


def _key() -> str:
    return request.cookies.get(KEY_COOKIE) or request.headers.get(KEY_HEADER) or ""


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidAnswerError("send a JSON object with Content-Type: application/json")
    return body


def _with_key(response: Response, key: str) -> Response:
    """``response`` setting the cookie that makes the browser act as the scorer of ``key``."""
    response.set_cookie(KEY_COOKIE, key, max_age=KEY_MAX_AGE, httponly=True, samesite="Strict")
    return response


def _progress_json(progress: Progress, *, key: str | None = None) -> Response:
    current = progress.current
    extra = {} if key is None else {"key": key}  # only when a session starts
    return jsonify(
        scorer=progress.scorer,
        total=progress.total,
        answered=progress.answered,
        done=current is None,
        token=None if current is None else current.token,
        image=None if current is None else f"/image/{current.token}.png",
        **extra,
    )
