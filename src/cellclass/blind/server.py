"""Start the scoring page: load the test set, open the store, serve the app over HTTP.

`open_server` returns a started-but-not-yet-serving werkzeug server, so a test can run
``server.serve_forever()`` in a thread and stop it with ``server.shutdown()``; the command
line runs it until Ctrl-C. It listens on 127.0.0.1 unless told otherwise.

The address is bound first, before any image is decoded or the database is created: a busy
port is a one-line error that leaves nothing behind.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from flask import Flask
from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    make_server,
    select_address_family,
)

from cellclass.blind.app import LOOPBACK, WILDCARDS, create_app, is_loopback
from cellclass.blind.session import check_scorer, ensure_session
from cellclass.blind.store import open_store
from cellclass.blind.testset import load_test

__all__ = ["LOOPBACK", "ServeSettings", "is_loopback", "listen", "open_server", "start_server"]


@dataclass(frozen=True)
class ServeSettings:
    test_dir: str  # the test folder to score (one subfolder per class)
    db: str  # SQLite file of sessions and answers; created if missing, resumed if present
    run_dir: str | None = None  # results folder: show images as its model sees them
    scorer: str | None = None  # score as this scorer only; None: the page asks for a name
    host: str = LOOPBACK  # address to listen on; anything but loopback exposes the images
    port: int = 8000  # TCP port; 0 picks a free one
    seed: int | None = None  # None: secret random orders; an int reproduces them (with names)
    repeats: float = 0.0  # fraction of images shown a second time (self-consistency)
    image_size: int | None = None  # model size without run_dir; None: native size
    cache_dir: str | None = None  # decoded-pixel cache; None: the user cache folder
    skip_bad: bool = False  # leave unreadable images out instead of stopping


class _QuietHandler(WSGIRequestHandler):
    """Logs errors only, not every request (the terminal stays readable while scoring)."""

    def log_request(self, code="-", size="-") -> None:
        if str(code).startswith("5"):
            super().log_request(code, size)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening.

    Raises
    ------
    ValueError
        The address cannot be bound (port in use, unknown host).
    """
    family = select_address_family(host, port)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does
        listener.bind(get_sockaddr(host, port, family))
        listener.listen(64)
    except OSError as error:
        listener.close()
        raise ValueError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); choose another port="
        ) from None
    return listener


def start_server(
    app: Flask, *, host: str = LOOPBACK, port: int = 8000, listener: socket.socket | None = None
) -> BaseWSGIServer:
    """A threaded werkzeug server on ``host:port``; call ``serve_forever()`` on it.

    Parameters
    ----------
    listener : socket, optional
        Serve on this socket from `listen` (closed here; the server keeps a copy).

    Raises
    ------
    ValueError
        The address cannot be bound (port in use, unknown host).
    """
    listener = listener or listen(host, port)
    try:
        server = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler, fd=listener.fileno()
        )
    finally:
        listener.close()
    server.server_name, server.server_port = host, server.port  # as server_bind() would set
    return server


def open_server(settings: ServeSettings) -> tuple[BaseWSGIServer, list[str]]:
    """Bind the address, load everything and make the server; returns it with lines to show.

    Nothing is decoded or created before the address is bound.

    Raises
    ------
    FolderError, BadImagesError, StoreFileError, ConflictError, ValueError
        Bad test folder, unreadable images, an unusable database, a scorer who scored
        another folder in this database, a bad option, or an address that cannot be bound.
    """
    _check_settings(settings)
    listener = listen(settings.host, settings.port)
    try:
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
        if test.absent_classes:
            lines.append(
                f"no button for {', '.join(test.absent_classes)}: the model knows "
                f"{'it' if len(test.absent_classes) == 1 else 'them'}, but the test folder "
                "has no such class folder"
            )
        key = None if settings.scorer is None else _fixed_scorer(store, test, settings, lines)
        app = create_app(
            store,
            test,
            scorer=settings.scorer,
            seed=settings.seed,
            repeats=settings.repeats,
            host=settings.host,
        )
        server = start_server(app, host=settings.host, port=settings.port, listener=listener)
    finally:
        listener.close()  # the server holds its own copy
    lines += _closing_lines(settings, store, server.server_port, key)
    return server, lines


def _check_settings(settings: ServeSettings) -> None:
    if not 0.0 <= settings.repeats <= 1.0:
        raise ValueError(f"repeats={settings.repeats}: give a share between 0 and 1 (e.g. 0.1)")
    seed = settings.seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r}: give a whole number, 0 or more")
    if settings.scorer is not None:
        check_scorer(settings.scorer)


def _fixed_scorer(store, test, settings: ServeSettings, lines: list[str]) -> str:
    """Start or resume the one scorer of this server; returns their key."""
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
    return session.key


def _closing_lines(settings: ServeSettings, store, port: int, key: str | None) -> list[str]:
    lines = []
    if not is_loopback(settings.host):
        lines.append(
            f"WARNING: listening on {settings.host}: anyone who can reach this computer "
            "over the network can open the page and start scoring (unencrypted HTTP)"
        )
    if settings.seed is not None:
        lines.append(
            f"orders drawn with seed={settings.seed}: anyone who knows it can compute them"
        )
    lines.append(f"answers are saved to {store.path} as they are given")
    url = f"http://{_url_host(settings.host)}:{port}/"
    if key is None:
        lines.append(f"serving on {url} (each scorer starts with their name; Ctrl-C stops)")
    else:
        lines.append(
            f"serving on {url}#key={key} ({settings.scorer}'s personal link: keep it "
            "private; Ctrl-C stops)"
        )
    return lines


def _url_host(host: str) -> str:
    if host in WILDCARDS:
        return LOOPBACK if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host
