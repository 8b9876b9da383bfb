"""The scoring page in a real headless Chromium: keyboard scoring, a server restart, results.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``.ci/run``) and the Playwright
Python package; Playwright's own browser download is never used. The page runs under its real
Content-Security-Policy (no eval), so the test waits with locators, not page-side functions.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from cellclass import cli
from cellclass.blind.app import create_app
from cellclass.blind.server import start_server
from cellclass.blind.store import open_store
from cellclass.blind.testset import load_test

from .conftest import CHROMIUM, CHROMIUM_ARGS, import_or_require, require
from .test_blind_store import CLASSES, write_blind_tree

playwright_api = import_or_require(
    "playwright.sync_api", "Playwright (pip install -e '.[test]')", module_level=True
)
require(
    CHROMIUM.is_file(),
    "Debian's chromium (/usr/bin/chromium): apt-get install chromium",
    module_level=True,
)


class _Server:
    """The scoring app served from a thread, so the test can stop and restart it."""

    def __init__(self, db: Path, tree: Path, cache: Path, port: int = 0):
        test = load_test(tree, cache_dir=cache)
        app = create_app(open_store(db), test, seed=2, repeats=0.25)
        self.server = start_server(app, port=port)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _score_one(page, store, n_done: int, *, wrong: bool) -> str:
    """Answer the shown image by keyboard (right or wrong on purpose); returns the answer."""
    page.wait_for_selector(".answer:not([disabled])")
    token = page.get_attribute("#image", "src").removeprefix("/image/").removesuffix(".png")
    truth = store.item(token).true_label
    answer = CLASSES[1 - CLASSES.index(truth)] if wrong else truth
    page.keyboard.press(str(CLASSES.index(answer) + 1))
    _wait_count(page, n_done + 1)
    return answer


def _wait_count(page, n: int) -> None:
    """Wait until the page says ``n / total`` answered."""
    playwright_api.expect(page.locator("#count")).to_have_text(re.compile(rf"^{n} /"))


def test_score_by_keyboard_with_a_restart(tmp_path: Path, capsys):
    tree, db = write_blind_tree(tmp_path / "test"), tmp_path / "scores.sqlite"
    server = _Server(db, tree, tmp_path / "cache")
    store = open_store(db)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.fill("#name", "carol")
        page.keyboard.press("Enter")
        page.wait_for_selector("#scoring:not([hidden])")
        total = int(page.text_content("#count").split("/")[1])
        assert total == 20  # 16 images + 25 % repeats
        for n in range(7):
            _score_one(page, store, n, wrong=n % 4 == 0)  # first showings 0 and 4 wrong
        page.wait_for_selector(".answer:not([disabled])")
        eighth = page.get_attribute("#image", "src")
        _score_one(page, store, 7, wrong=True)
        page.keyboard.press("Backspace")  # undo the 8th answer: the same image comes back
        _wait_count(page, 7)
        assert page.get_attribute("#image", "src") == eighth
        _score_one(page, store, 7, wrong=False)

        server.stop()  # the server goes away mid-way ...
        page.wait_for_selector(".answer:not([disabled])")
        page.keyboard.press("1")
        playwright_api.expect(page.locator("#message")).to_contain_text("reach")
        server = _Server(db, tree, tmp_path / "cache", port=server.port)  # ... and comes back
        page.reload()
        _wait_count(page, 8)
        for n in range(8, total):
            _score_one(page, store, n, wrong=False)
        page.wait_for_selector("#finish:not([hidden])")
        assert "all 20 images" in page.text_content("#finish")
        browser.close()
    server.stop()

    records = store.answer_records("carol")
    assert [r.item.position for r in records] == list(range(20))
    first = [r for r in records if not r.item.is_repeat]
    assert sum(r.answer != r.item.true_label for r in first) == 2
    assert all(isinstance(r.response_ms, int) and r.response_ms >= 0 for r in records)
    assert cli.main(["blind", "results", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "carol" in out and "20/20" in out and "87.5%" in out  # 14 of 16 right


def test_personal_link_resumes_in_another_browser_and_a_name_is_never_taken_over(tmp_path):
    server = _Server(tmp_path / "scores.sqlite", write_blind_tree(tmp_path / "test"), tmp_path)
    base = f"http://127.0.0.1:{server.port}/"
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        violations = []  # the page must work under its own Content-Security-Policy
        page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m))
        page.goto(base)
        page.fill("#name", "dora")
        page.keyboard.press("Enter")
        store = open_store(tmp_path / "scores.sqlite")
        for n in range(2):
            _score_one(page, store, n, wrong=False)
        link = page.text_content("#link")
        assert re.fullmatch(rf"{re.escape(base)}#key=[\w-]{{20,}}", link)

        elsewhere = browser.new_context().new_page()  # another browser: no cookie
        elsewhere.goto(base)
        expect(elsewhere.locator("#login")).to_be_visible()
        elsewhere.fill("#name", "dora")  # the name alone gives nothing
        elsewhere.keyboard.press("Enter")
        expect(elsewhere.locator("#message")).to_contain_text("already has a session")
        expect(elsewhere.locator("#scoring")).to_be_hidden()
        elsewhere.goto(link)
        _wait_count(elsewhere, 2)
        assert elsewhere.url == base  # the key left the address bar
        assert violations == []
        browser.close()
    server.stop()


def test_zoom_smoothing_and_contrast_are_one_setting_for_every_image(tmp_path):
    """Issue 20: 32-px images were blown up and blurry with no zoom or contrast control. The
    scorer picks a zoom (fit, 1x, 2x, 4x), nearest or smooth pixels and a contrast stretch;
    the choice holds for every following image and survives a reload of the tab."""
    server = _Server(tmp_path / "scores.sqlite", write_blind_tree(tmp_path / "test"), tmp_path)
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        violations = []
        page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m))
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.fill("#name", "erin")
        page.keyboard.press("Enter")
        page.wait_for_selector(".answer:not([disabled])")
        image = page.locator("#image")
        assert image.evaluate("img => img.naturalWidth") == 32  # the model's pixels
        fit = int(re.search(r"width: (\d+)px", image.get_attribute("style")).group(1))
        assert fit > 64 and fit % 32 == 0  # default: the largest whole zoom that fits
        assert image.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"

        page.select_option("#zoom", "2")
        page.select_option("#smoothing", "smooth")
        page.check("#stretch")
        expect(image).to_have_attribute("src", re.compile(r"\?contrast=stretch$"))
        for n in range(1, 3):  # number keys still answer; the next image keeps the setting
            page.keyboard.press("1")
            _wait_count(page, n)
            page.wait_for_selector(".answer:not([disabled])")
            expect(image).to_have_attribute("src", re.compile(r"\?contrast=stretch$"))
            expect(image).to_have_attribute("style", re.compile(r"width: 64px; height: 64px"))
            assert image.evaluate("img => getComputedStyle(img).imageRendering") == "auto"

        page.reload()
        _wait_count(page, 2)
        page.wait_for_selector(".answer:not([disabled])")
        assert page.input_value("#zoom") == "2" and page.is_checked("#stretch")
        expect(image).to_have_attribute("style", re.compile(r"width: 64px"))
        page.select_option("#zoom", "4")
        expect(image).to_have_attribute("style", re.compile(r"width: 128px; height: 128px"))
        assert violations == []
        browser.close()
    server.stop()
