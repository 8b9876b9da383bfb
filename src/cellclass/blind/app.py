"""The blinded scoring web page: a Flask app over a `ScoreStore` and a `BlindTest`.

Routes (all JSON except the page and the images)::

    GET  /                    the page: one button per class, nothing else about the images
    GET  /api/next?scorer=S   progress and the current image's token (starts a new scorer)
    POST /api/answer          {"token", "answer", "response_ms"} -> progress after the answer
    POST /api/undo            {"scorer"} -> progress after undoing the last answer
    GET  /image/<token>.png   the image of one showing, as the model sees it, upscaled

Blinding: the browser only ever receives class names (the buttons), random tokens and counts.
File names, folders and true labels stay on the server, also in error messages. Refused
requests get 400 (malformed), 404 (unknown token or scorer) or 409 (already answered,
nothing to undo) and change nothing.
"""

from __future__ import annotations

import threading

from flask import Flask, Response, jsonify, render_template, request

from cellclass.blind.session import check_scorer, ensure_session
from cellclass.blind.store import (
    BlindError,
    ConflictError,
    InvalidAnswerError,
    NotFoundError,
    Progress,
    ScoreStore,
)
from cellclass.blind.testset import BlindTest, render_png

_STATUS = {NotFoundError: 404, ConflictError: 409, InvalidAnswerError: 400}


def create_app(
    store: ScoreStore,
    test: BlindTest,
    *,
    scorer: str | None = None,
    seed: int = 0,
    repeats: float = 0.0,
) -> Flask:
    """The scoring app for one test set.

    Parameters
    ----------
    store : ScoreStore
        Where sessions and answers go.
    test : BlindTest
        The images and their answer key.
    scorer : str, optional
        Score as this scorer only; by default the page asks each scorer for their name.
    seed, repeats
        Order of new scorers (see `cellclass.blind.session.ensure_session`).
    """
    app = Flask(__name__)
    fixed = check_scorer(scorer) if scorer is not None else None
    sessions = _Sessions(store, test, seed=seed, repeats=repeats)
    _add_page_routes(app, test, sessions, fixed)
    _add_api_routes(app, store, sessions, fixed)
    _add_handlers(app)
    return app


def _add_page_routes(app: Flask, test: BlindTest, sessions: _Sessions, fixed: str | None) -> None:
    @app.get("/")
    def page():
        return render_template("score.html", class_names=test.class_names, scorer=fixed or "")

    @app.get("/image/<token>.png")
    def image(token: str):
        item = sessions.item(token, fixed)
        png = render_png(test.pixels[test.row_of[item.path]])
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(png, mimetype="image/png", headers=headers)


def _add_api_routes(app: Flask, store: ScoreStore, sessions: _Sessions, fixed: str | None) -> None:
    @app.get("/api/next")
    def next_image():
        name = sessions.verified(_scorer(fixed, request.args.get("scorer")), create=True)
        return _progress_json(store.progress(name))

    @app.post("/api/answer")
    def answer():
        body = _json_body()
        item = sessions.item(str(body.get("token", "")), fixed)
        progress = store.record_answer(
            item.token, body.get("answer"), response_ms=body.get("response_ms")
        )
        return _progress_json(progress)

    @app.post("/api/undo")
    def undo():
        name = sessions.verified(_scorer(fixed, _json_body().get("scorer")), create=False)
        return _progress_json(store.undo_last(name))


def _add_handlers(app: Flask) -> None:
    @app.errorhandler(BlindError)
    def refused(error: BlindError):
        return jsonify(error=str(error)), _STATUS.get(type(error), 400)

    @app.after_request
    def no_leaks(response: Response) -> Response:
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


class _Sessions:
    """Checks that scorers and tokens belong to this app's test set (once per scorer)."""

    def __init__(self, store: ScoreStore, test: BlindTest, *, seed: int, repeats: float):
        self.store, self.test, self.seed, self.repeats = store, test, seed, repeats
        self.checked: set[str] = set()  # scorers whose stored session matches the test set
        self.lock = threading.Lock()

    def verified(self, scorer: str, *, create: bool) -> str:
        """The scorer's name once their session is known to match the test set."""
        with self.lock:
            if scorer in self.checked:
                return scorer
        if not create:
            self.store.progress(scorer)  # raises NotFoundError for a scorer with no session
        ensure_session(
            self.store,
            scorer,
            test_dir=self.test.test_dir,
            class_names=self.test.class_names,
            images=self.test.answer_key,
            seed=self.seed,
            repeats=self.repeats,
        )
        with self.lock:
            self.checked.add(scorer)
        return scorer

    def item(self, token: str, fixed: str | None):
        """The showing of ``token``, if it belongs to this app's test set (and scorer)."""
        item = self.store.item(token)
        if item.path not in self.test.row_of or (fixed is not None and item.scorer != fixed):
            raise NotFoundError("unknown image token; reload the page")
        self.verified(item.scorer, create=False)
        return item


def _scorer(fixed: str | None, asked) -> str:
    if fixed is None:
        return check_scorer(asked)
    if asked not in (None, "", fixed):
        raise InvalidAnswerError(f"this server scores only as {fixed!r}")
    return fixed


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidAnswerError("send a JSON object with Content-Type: application/json")
    return body


def _progress_json(progress: Progress) -> Response:
    current = progress.current
    return jsonify(
        scorer=progress.scorer,
        total=progress.total,
        answered=progress.answered,
        done=current is None,
        token=None if current is None else current.token,
        image=None if current is None else f"/image/{current.token}.png",
    )
