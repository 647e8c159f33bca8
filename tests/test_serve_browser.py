"""The serve page in a real browser: Chromium (Debian's) driven by Playwright.

`digitnet serve` runs as a subprocess with a small model trained on stroke digits
(tests/strokes.py); the test draws digits with mouse, touch and keyboard strokes and checks
the digit shown, the ten bars and their sum, the 28x28 image, that the answer equals
`digitnet predict` on the very PNG the page sent, and that nothing was asked of another host.
Never skipped: .ci/run installs chromium when it is missing.
"""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from tests.conftest import runs_root
from tests.servers import serving
from tests.strokes import DIGIT_STROKES, stroke_digits_dir

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own download is unreachable
MARGIN = 0.18  # of the canvas left around a drawn digit
DRAWN = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
# These overrides train the lesson's MLP on 300 stroke digits in a few seconds.
STROKE_MODEL = ("training.epochs=10", "training.batch_size=32", "training.jit_compile=false",
                "data.validation_size=50", "training.warmup_epochs=0")


@pytest.fixture(scope="module")
def stroke_run(tmp_path_factory) -> Path:
    from digitnet.config import load_config
    from digitnet.training.train import train_and_evaluate

    data = stroke_digits_dir(tmp_path_factory.mktemp("stroke-digits"))
    run_dir = tmp_path_factory.mktemp("stroke-runs") / "strokes"
    run_dir.mkdir()
    with runs_root(run_dir.parent):
        train_and_evaluate(load_config(None, STROKE_MODEL), run_dir, str(data))
    return run_dir


@pytest.fixture(scope="module")
def server(stroke_run):
    with serving(stroke_run) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


class Page:
    """The page in a fresh context, recording every request it makes and every /predict."""

    def __init__(self, browser, url: str, **context):
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.sent: list[bytes] = []  # bodies POSTed to /predict, in order
        self.page.on("request", self.record)
        # Bodies are taken as each /predict is routed, which holds the request until it is
        # recorded: the "request" event can reach Python after the page has shown the answer.
        self.page.route(lambda address: address.endswith("/predict?input=true"), self.keep_body)
        self.page.goto(url)
        self.page.wait_for_selector("body[data-state=idle]")
        self.canvas = self.page.locator("#canvas").bounding_box()

    def record(self, request) -> None:
        self.requests.append(request.url)

    def keep_body(self, route) -> None:
        if route.request.method == "POST":
            self.sent.append(route.request.post_data_buffer)
        route.continue_()

    def at(self, x: float, y: float) -> tuple[float, float]:
        """Page coordinates of a unit-box point drawn inside the canvas's margins."""
        box = self.canvas
        return (box["x"] + (MARGIN + (1 - 2 * MARGIN) * x) * box["width"],
                box["y"] + (MARGIN + (1 - 2 * MARGIN) * y) * box["height"])

    def draw_with_mouse(self, strokes) -> None:
        mouse = self.page.mouse
        for line in strokes:
            mouse.move(*self.at(*line[0]))
            mouse.down()
            for point in line[1:]:
                mouse.move(*self.at(*point), steps=3)
            mouse.up()

    def tap(self, x: float, y: float) -> None:
        self.page.mouse.click(*self.at(x, y))

    def draw_with_touch(self, strokes) -> None:
        """Touch strokes through the DevTools protocol (Playwright has taps only)."""
        cdp = self.context.new_cdp_session(self.page)
        for line in strokes:
            kinds = ["touchStart"] + ["touchMove"] * (len(line) - 1)
            for kind, point in zip(kinds, line):
                x, y = self.at(*point)
                cdp.send("Input.dispatchTouchEvent",
                         {"type": kind, "touchPoints": [{"x": x, "y": y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    def answer(self) -> dict:
        """What the page shows once its answer for the drawing is in."""
        self.page.wait_for_selector("body[data-state=idle]")
        return self.page.evaluate("""() => ({
            digit: document.getElementById('answer').textContent,
            bars: [...document.querySelectorAll('#bars li')]
                  .map(li => Number(li.dataset.probability)),
            best: [...document.querySelectorAll('#bars li.best')]
                  .map(li => Number(li.dataset.digit)),
            sum: Number(document.getElementById('sum').dataset.sum),
            sumText: document.getElementById('sum').textContent,
            seen: [...document.getElementById('seen').getContext('2d')
                   .getImageData(0, 0, 28, 28).data].filter((_, i) => i % 4 === 0),
        })""")

    def clear(self) -> None:
        self.page.click("#clear")
        assert self.page.text_content("#answer") == "–"


def cli_answers(pngs: list[bytes], run: Path, folder: Path) -> list[dict]:
    """`digitnet predict --json` on the PNGs the page sent."""
    paths = []
    for index, data in enumerate(pngs):
        paths.append(folder / f"sent-{index}.png")
        paths[-1].write_bytes(data)
    result = subprocess.run([sys.executable, "-m", "digitnet", "predict", *map(str, paths),
                             "--model", str(run), "--json", "--top-k", "10"],
                            capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def only_this_server(requests: list[str], url: str) -> list[str]:
    return [r for r in requests if not (r.startswith(url) or r.startswith("data:"))]


def test_drawn_digits_are_read_as_digitnet_predict_reads_the_same_png(browser, server,
                                                                       stroke_run, tmp_path):
    page = Page(browser, server.url, viewport={"width": 1000, "height": 800})
    shown, pngs = [], []
    for digit in DRAWN:
        page.draw_with_mouse(DIGIT_STROKES[digit])
        shown.append(page.answer())
        pngs.append(page.sent[-1])  # the drawing as the page last sent it
        if digit == 7:
            page.page.screenshot(path=str(tmp_path / "serve.png"))
            keep_screenshot(tmp_path / "serve.png")
        page.clear()
    expected = cli_answers(pngs, stroke_run, tmp_path)
    for digit, answer, cli in zip(DRAWN, shown, expected):
        assert answer["digit"] == str(digit) == str(cli["digit"]), (digit, answer["digit"])
        from_cli = {item["digit"]: item["probability"] for item in cli["top_k"]}
        assert answer["bars"] == [from_cli[d] for d in range(10)]
        assert answer["best"] == [digit]
        assert abs(answer["sum"] - 1) < 1e-4 and answer["sumText"] == "1.000"
        assert max(answer["seen"]) == 255 and min(answer["seen"]) == 0  # the 28x28 drawn
    assert len(page.sent) >= len(DRAWN)
    assert only_this_server(page.requests, server.url) == []
    page.context.close()


def test_a_phone_can_draw_with_a_finger_and_read_the_page(browser, server, tmp_path):
    page = Page(browser, server.url, viewport={"width": 375, "height": 740}, has_touch=True,
                is_mobile=True, device_scale_factor=2)
    assert page.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.draw_with_touch(DIGIT_STROKES[4])
    answer = page.answer()
    assert answer["digit"] == "4" and abs(answer["sum"] - 1) < 1e-4
    font = page.page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert font >= 14
    page.page.screenshot(path=str(tmp_path / "serve-phone.png"), full_page=True)
    assert only_this_server(page.requests, server.url) == []
    page.context.close()


def test_the_keyboard_can_draw_clear_and_upload(browser, server, tmp_path):
    page = Page(browser, server.url)
    keyboard = page.page.keyboard
    keyboard.press("Tab")  # the first control is the drawing area
    assert page.page.evaluate("document.activeElement.id") == "canvas"
    for key in ["ArrowUp"] * 7 + ["Space"] + ["ArrowDown"] * 14 + ["Space"]:
        keyboard.press(key)  # a vertical stroke: a one
    assert page.answer()["digit"] == "1"
    keyboard.press("Tab")
    assert page.page.evaluate("document.activeElement.id") == "clear"
    keyboard.press("Enter")
    assert page.page.text_content("#answer") == "–"
    keyboard.press("Tab")
    assert page.page.evaluate("document.activeElement.id") == "file"
    photo = tmp_path / "seven.png"
    photo.write_bytes(page.sent[-1])  # the drawn one, uploaded as a file this time
    page.page.set_input_files("#file", str(photo))
    assert page.answer()["digit"] == "1"
    assert only_this_server(page.requests, server.url) == []
    page.context.close()


def test_an_answer_that_comes_while_a_stroke_is_drawn_leaves_the_page_busy(browser, server):
    """The first stroke's answer came while the second was being drawn: the page said idle
    (its debounce timer was set), and stayed idle while the finished drawing's PNG was made;
    under CI's load a test read the answer to a 4's first stroke as the answer to the 4."""
    page = Page(browser, server.url)
    page.page.clock.install(time=0)
    page.page.reload()
    page.page.wait_for_selector("body[data-state=idle]")
    page.page.clock.pause_at(1000)  # from now on the debounce timer never fires
    held, holding = [], [True]
    page.page.route(lambda address: address.endswith("/predict?input=true"),
                    lambda route: held.append(route) if holding[0] else route.fallback())
    first, second = DIGIT_STROKES[4]
    page.draw_with_mouse([first])
    page.page.wait_for_function("() => document.body.dataset.state === 'busy'")
    for _ in range(500):  # the PNG is made and sent within 10 s
        if held:
            break
        page.page.wait_for_timeout(20)
    assert held
    mouse = page.page.mouse
    mouse.move(*page.at(*second[0]))
    mouse.down()
    mouse.move(*page.at(*second[1]), steps=3)  # the second stroke, not yet ended
    holding[0] = False
    held.pop().fallback()  # the first stroke's request reaches the server
    page.page.wait_for_function("() => document.body.dataset.answers === '1'")
    assert page.page.evaluate("document.body.dataset.state") == "busy"
    mouse.up()
    page.answer()
    assert len(page.sent) == 2 and page.page.evaluate("document.body.dataset.answers") == "2"
    page.context.close()


def test_a_photo_sent_while_a_drawing_is_asked_about_keeps_the_page_busy(browser, server,
                                                                           tmp_path):
    """Two requests out (a drawing's, then a photo's): the drawing's answer, which comes first,
    set the page idle while the photo's was still due (one flag for requests out)."""
    page = Page(browser, server.url)
    held = []
    page.page.route(lambda address: address.endswith("/predict?input=true"),
                    lambda route: held.append(route))
    page.draw_with_mouse(DIGIT_STROKES[7])
    photo = tmp_path / "seven.png"
    for _ in range(500):  # the drawing's request, then the photo's, within 10 s
        if len(held) == 1 and not photo.exists():
            photo.write_bytes(held[0].request.post_data_buffer)
            page.page.set_input_files("#file", str(photo))
        if len(held) == 2:
            break
        page.page.wait_for_timeout(20)
    assert len(held) == 2
    drawing = held.pop(0)
    with page.page.expect_response(lambda response: response.request == drawing.request):
        drawing.fallback()  # the drawing's answer comes first (and is not shown: cleared)
    page.page.wait_for_timeout(300)  # for the page to take it in
    assert page.page.evaluate("document.body.dataset.state") == "busy"
    held.pop(0).fallback()
    assert page.answer()["digit"] == "7"
    page.context.close()


def test_a_tap_leaves_a_dot(browser, server):
    """The canvas prunes a zero-length line: a tap (or the keyboard's pen put down) drew
    nothing, and the page asked the model about a blank canvas."""
    page = Page(browser, server.url)
    page.tap(0.5, 0.5)
    page.answer()
    ink = page.page.evaluate("""() => {
        const canvas = document.getElementById('canvas');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
        return pixels.data.filter((value, i) => i % 4 === 0 && value < 128).length;
    }""")
    assert ink > 100  # a disc of the stroke's width, 18 pixels: about 250 dark pixels
    with Image.open(io.BytesIO(page.sent[-1])) as sent:
        assert sent.convert("L").getextrema()[0] == 0  # and the dot is what was sent
    page.context.close()


def keep_screenshot(path: Path) -> None:
    """Copy the screenshot to $DIGITNET_SCREENSHOT_DIR when set (docs/serve.png comes so)."""
    folder = os.environ.get("DIGITNET_SCREENSHOT_DIR")
    if folder:
        shutil.copyfile(path, Path(folder) / path.name)
