"""Start the scoring page: load the test set, open the store, serve the app over HTTP.

`open_server` returns a started-but-not-yet-serving werkzeug server, so a test can run
``server.serve_forever()`` in a thread and stop it with ``server.shutdown()``; the command
line runs it until Ctrl-C. It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from cellclass.blind.app import create_app
from cellclass.blind.session import ensure_session
from cellclass.blind.store import open_store
from cellclass.blind.testset import load_test

LOOPBACK = "127.0.0.1"  # default address: only this computer can open the page


@dataclass(frozen=True)
class ServeSettings:
    test_dir: str  # the test folder to score (one subfolder per class)
    db: str  # SQLite file of sessions and answers; created if missing, resumed if present
    run_dir: str | None = None  # results folder: show images as its model sees them
    scorer: str | None = None  # score as this scorer only; None: the page asks for a name
    host: str = LOOPBACK  # address to listen on; anything but loopback exposes the images
    port: int = 8000  # TCP port; 0 picks a free one
    seed: int = 0  # seed of each new scorer's random order (mixed with the scorer's name)
    repeats: float = 0.0  # fraction of images shown a second time (self-consistency)
    image_size: int | None = None  # model size without run_dir; None: native size
    cache_dir: str | None = None  # decoded-pixel cache; None: the user cache folder
    skip_bad: bool = False  # leave unreadable images out instead of stopping


class _QuietHandler(WSGIRequestHandler):
    """Logs errors only, not every request (the terminal stays readable while scoring)."""

    def log_request(self, code="-", size="-") -> None:
        if str(code).startswith("5"):
            super().log_request(code, size)


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this computer."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_server(app: Flask, *, host: str = LOOPBACK, port: int = 8000) -> BaseWSGIServer:
    """Bind a threaded werkzeug server to ``host:port``; call ``serve_forever()`` on it.

    Raises
    ------
    ValueError
        The address cannot be bound (port in use, unknown host).
    """
    try:
        return make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    except OSError as error:
        raise ValueError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); choose another --port"
        ) from None


def open_server(settings: ServeSettings) -> tuple[BaseWSGIServer, list[str]]:
    """Load everything and bind the server; returns it with lines to show the user.

    Raises
    ------
    FolderError, BadImagesError, StoreFileError, ConflictError, ValueError
        Bad test folder, unreadable images, an unusable database, a scorer who scored
        another folder in this database, or an address that cannot be bound.
    """
    if not 0.0 <= settings.repeats <= 1.0:
        raise ValueError(f"--repeats must be between 0 and 1 (e.g. 0.1), got {settings.repeats}")
    test = load_test(
        settings.test_dir,
        run_dir=settings.run_dir,
        image_size=settings.image_size,
        cache_dir=settings.cache_dir,
        skip_bad=settings.skip_bad,
    )
    store = open_store(settings.db)
    lines = [
        f"{len(test.paths)} images of {len(test.class_names)} classes "
        f"({', '.join(test.class_names)}) from {test.test_dir}",
        f"shown {test.source}",
    ]
    if settings.scorer is not None:
        session = ensure_session(
            store,
            settings.scorer,
            test_dir=test.test_dir,
            class_names=test.class_names,
            images=test.answer_key,
            seed=settings.seed,
            repeats=settings.repeats,
        )
        progress = store.progress(session.scorer)
        lines.append(f"scorer {session.scorer}: {progress.answered} of {progress.total} answered")
    app = create_app(
        store, test, scorer=settings.scorer, seed=settings.seed, repeats=settings.repeats
    )
    server = start_server(app, host=settings.host, port=settings.port)
    if not is_loopback(settings.host):
        lines.append(
            f"WARNING: listening on {settings.host}: anyone who can reach this computer "
            "over the network can see the images and submit answers"
        )
    lines.append(f"answers are saved to {store.path} as they are given")
    lines.append(
        f"serving on http://{_url_host(settings.host)}:{server.server_port}/ "
        "(Ctrl-C stops the server)"
    )
    return server, lines


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return LOOPBACK if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host
