"""`digitnet serve`'s HTTP API through FastAPI's TestClient: answers, errors, limits, batching."""

import asyncio
import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from digitnet.cli import cli
from digitnet.images.batch import preprocessed_pixels
from digitnet.images.preprocess import preprocess_file
from digitnet.inference.predict import DEFAULT_MAX_ENTROPY, DEFAULT_MIN_CONFIDENCE, predict
from digitnet.serving.app import create_app
from digitnet.serving.batcher import MicroBatcher
from digitnet.serving.model import ServedModel, load_served_model
from digitnet.serving.settings import ServeSettings, parse_size
from digitnet.serving.uploads import Upload
from tests.test_preprocess import bomb_png, icon, no_palette_png


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawing(seed: int, size: int = 120, mode: str = "L") -> Image.Image:
    """A few random strokes, as someone drawing on a canvas might make."""
    rng = np.random.default_rng(seed)
    image = Image.new(mode, (size, size), "white")
    points = [tuple(int(v) for v in rng.integers(10, size - 10, 2)) for _ in range(4)]
    ImageDraw.Draw(image).line(points, fill="black", width=max(3, size // 12))
    return image


@pytest.fixture(scope="module")
def served(tiny_run):
    return load_served_model(tiny_run)


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(None, ServeSettings(max_body=200_000), model=served)) as client:
        yield client


def cli_json(paths, model, top_k: int = 3) -> list[dict]:
    """What `digitnet predict --json` prints for these files, less `model` (the server names its
    model at GET /model, not in each answer)."""
    answers = [p.to_json() for p in predict([str(p) for p in paths], model, top_k=top_k)]
    assert {answer.pop("model") for answer in answers} == {str(model / "model-best.tflite")}
    return answers


def test_one_image_body_answers_as_predict_json_plus_ten_probabilities(client, tiny_run,
                                                                       tmp_path):
    path = tmp_path / "drawn.png"
    drawing(1).save(path)
    response = client.post("/predict", content=path.read_bytes(),
                           headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    [expected] = cli_json([path], tiny_run)
    probabilities = answer.pop("probabilities")
    assert answer == {**expected, "file": "request body"}
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4
    assert max(probabilities) == answer["probability"]


def test_multipart_files_answer_in_order_with_per_file_errors(client, tiny_run, tmp_path):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"d{seed}.png")
        drawing(seed, 90 + 40 * seed, "RGB").save(paths[-1])
    (tmp_path / "notes.png").write_text("not an image")
    paths.insert(1, tmp_path / "notes.png")
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    response = client.post("/predict", files=files, params={"top_k": 2})
    assert response.status_code == 200, response.text
    answers = response.json()
    expected = cli_json(paths, tiny_run, top_k=2)
    for answer, want in zip(answers, expected, strict=True):
        answer.pop("probabilities", None)
        assert answer == {**want, "file": want["file"].rsplit("/", 1)[-1],
                          **({"error": want["error"].replace(str(tmp_path) + "/", "")}
                             if "error" in want else {})}
    assert answers[1]["error"] == "notes.png: not an image file (cannot identify image format)"


def test_input_is_the_28x28_image_predict_would_save(client, tmp_path):
    path = tmp_path / "drawn.png"
    drawing(4, 280, "RGBA").save(path)
    response = client.post("/predict", content=path.read_bytes(), params={"input": "true"})
    seen = np.array(response.json()["input"], np.uint8)
    np.testing.assert_array_equal(seen, preprocessed_pixels(preprocess_file(path)))


def test_blank_canvas_is_unknown(client):
    answer = client.post("/predict", content=png_bytes(Image.new("L", (280, 280), 255))).json()
    assert answer["digit"] == "unknown"


@pytest.mark.parametrize("name,data", [
    ("notes.png", b"hello, not an image"),
    ("empty.png", b""),
    ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'),
    ("cut.png", png_bytes(drawing(2))[:70]),
    ("bomb.png", bomb_png(20000, 20000)),
    ("sliver.png", bomb_png(1, 49_000_000)),  # took 6.4 s and 1.7 GB, then answered
    ("icon.ico", icon(bomb_png(8000, 8000))),  # decoded (256 MB) before it was refused
    ("no-palette.png", no_palette_png()),  # a 500 (Pillow's AssertionError)
])
def test_unusable_image_is_422_with_the_cli_message(client, tiny_run, tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    [expected] = cli_json([path], tiny_run)
    message = expected["error"].replace(str(tmp_path) + "/", "")
    response = client.post("/predict", files=[("file", (name, data, "image/png"))])
    assert response.status_code == 422
    assert response.json() == {"error": message}
    assert "\n" not in message
    body = client.post("/predict", content=data)
    assert body.status_code == 422
    assert body.json() == {"error": message.replace(name, "request body", 1)}


def test_body_over_the_limit_is_413_from_content_length(client):
    response = client.post("/predict", content=b"\0" * 200_001)
    assert response.status_code == 413
    assert response.json() == {"error": "request body: 200001 bytes, above this server's limit "
                                        "of 200000 bytes"}


def test_streamed_body_over_the_limit_is_413(client):
    def chunks():  # no Content-Length: the server counts while it reads
        for _ in range(100):
            yield b"\0" * 10_000

    response = client.post("/predict", content=chunks())
    assert response.status_code == 413
    assert "more than 200000 bytes" in response.json()["error"]


def test_multipart_over_the_limit_is_413(client):
    response = client.post("/predict", files=[("file", ("big.png", b"\0" * 300_000))])
    assert response.status_code == 413


@pytest.mark.parametrize("files,message", [
    ({"name": (None, "x")}, "request body: a multipart form without files"),
])
def test_form_without_files_is_422(client, files, message):
    response = client.post("/predict", files=files)
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)


def test_truncated_multipart_is_422(client):
    body = b"--XYZ\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\nabc"
    response = client.post("/predict", content=body,
                           headers={"content-type": "multipart/form-data; boundary=XYZ"})
    assert response.status_code == 422
    assert response.json()["error"].startswith("request body: truncated multipart form")


def test_bad_query_is_a_one_line_422(client):
    response = client.post("/predict", content=b"x", params={"top_k": "11"})
    assert response.status_code == 422
    assert list(response.json()) == ["error"] and "top_k" in response.json()["error"]


def test_unknown_path_is_404_and_wrong_method_is_405_as_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"].startswith("/nope: no such page")
    wrong = client.get("/predict")
    assert wrong.status_code == 405
    assert wrong.json() == {"error": "GET /predict: method not allowed (use POST)"}
    assert client.post("/healthz").status_code == 405


def test_healthz_and_model(client, served, tiny_run):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/model").json()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    import hashlib
    used = tiny_run / "model-best.tflite"
    assert info == {"run": tiny_run.name, "config": "default",
                    "test_accuracy": metrics["test_accuracy"], "model": str(used),
                    "backend": "litert", "sha256": hashlib.sha256(used.read_bytes()).hexdigest(),
                    "version": __import__("digitnet").__version__}


def test_model_served_through_runs_latest_names_the_run_it_points_at(tiny_run, tmp_path):
    """/model's "run" is the run's own name, not "latest": the link moves with every run, so
    "latest" would not say which model answered."""
    from digitnet.inference.modelfile import resolve_model_file
    from digitnet.serving.model import describe

    latest = tmp_path / "latest"
    latest.symlink_to(tiny_run, target_is_directory=True)
    assert describe(resolve_model_file(latest))["run"] == tiny_run.name


def test_page_and_its_assets_come_from_this_server_only(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    everything = page.text + "".join(client.get(f"/static/{name}").text
                                     for name in ("app.js", "style.css"))
    assert "http://" not in everything and "https://" not in everything
    assert client.get("/static/../app.py").status_code == 404


def test_docs_pages_that_load_a_cdn_are_off_and_the_schema_is_served(client):
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/healthz", "/model"} <= set(schema["paths"])


def test_a_request_never_writes_a_file(served, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a request touched the filesystem")

    for name in ("SpooledTemporaryFile", "NamedTemporaryFile", "TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr("builtins.open", refuse)
    noise = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))
    assert len(data) > 1_100_000  # above the 1 MB at which Starlette's forms go to disk
    with TestClient(create_app(None, ServeSettings(), model=served)) as client:
        response = client.post("/predict", files=[("file", ("big.png", data, "image/png"))])
    assert response.status_code == 200, response.text


def test_concurrent_requests_share_model_calls_and_equal_single_answers(served):
    calls = []
    bodies = [png_bytes(drawing(seed, 100 + seed, "RGB")) for seed in range(12)]
    with TestClient(create_app(None, ServeSettings(batching=False), model=served)) as single:
        alone = [single.post("/predict", content=b).json() for b in bodies]
    counted = ServedModel(Counting(served.classifier, calls), served.info, served.source)
    settings = ServeSettings(max_wait_ms=300)
    with TestClient(create_app(None, settings, model=counted)) as client, \
            ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda b: client.post("/predict", content=b).json(), bodies))
    assert together == alone
    assert sum(calls) == 12 and len(calls) < 12, calls


class Counting:
    """A classifier that records the size of each call it answers."""

    def __init__(self, classifier, calls: list):
        self.classifier, self.calls = classifier, calls

    def predict(self, images):
        self.calls.append(len(images))
        return self.classifier.predict(images)


def test_the_batcher_answers_requests_that_arrive_together_with_one_call(served):
    calls = []

    def model(images):
        calls.append(len(images))
        return served.predict(images)

    images = [np.random.default_rng(i).random((1 + i % 2, 28, 28), dtype=np.float32)
              for i in range(8)]

    async def main():
        batcher = MicroBatcher(model, max_batch=64, max_wait=1.0)
        batcher.start()

        async def request(array):
            with batcher.expecting():
                await asyncio.sleep(0)  # reading and preprocessing the body
            return await batcher.predict(array)

        results = await asyncio.gather(*(request(a) for a in images))
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert calls == [sum(len(a) for a in images)]
    for array, result in zip(images, results):
        np.testing.assert_allclose(result, served.predict(array), atol=1e-6)


def test_a_lone_request_does_not_wait(served):
    async def main():
        batcher = MicroBatcher(served.predict, max_batch=64, max_wait=5.0)
        batcher.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await batcher.predict(np.zeros((1, 28, 28), np.float32))
        waited = loop.time() - began
        await batcher.stop()
        return waited

    assert asyncio.run(main()) < 1.0  # nothing else was coming: no wait for the 5 s


def test_keras_model_without_export_is_served_by_keras(tiny_run, tmp_path):
    alone = tmp_path / "model.keras"
    alone.write_bytes((tiny_run / "model-best.keras").read_bytes())
    served = load_served_model(alone)
    assert served.info["backend"] == "keras" and served.info["run"] is None
    with TestClient(create_app(None, ServeSettings(), model=served)) as client:
        answer = client.post("/predict", content=png_bytes(drawing(3))).json()
    assert len(answer["probabilities"]) == 10


@pytest.mark.parametrize("text,size", [("10MB", 10_000_000), ("512KiB", 524_288),
                                       ("1000", 1000), ("1.5 mb", 1_500_000)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_serve_command_errors_are_one_line(runs_dir, tmp_path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'nothing'}: no such run directory or model file\n"
    bad = CliRunner().invoke(cli, ["serve", "--max-body", "lots"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1
    assert "expected a size such as 10MB" in bad.output


def test_default_min_confidence_is_predicts():
    assert ServeSettings().min_confidence == DEFAULT_MIN_CONFIDENCE
    assert ServeSettings().max_entropy == DEFAULT_MAX_ENTROPY


def test_max_entropy_setting_decides_unknown_as_predict_does(served, tiny_run, tmp_path):
    path = tmp_path / "drawn.png"
    drawing(3).save(path)
    for settings in (ServeSettings(min_confidence=0, max_entropy=0),
                     ServeSettings(min_confidence=0, max_entropy=2.31)):
        with TestClient(create_app(None, settings, model=served)) as client:
            answer = client.post("/predict", content=path.read_bytes()).json()
        [expected] = [p.to_json() for p in predict([str(path)], tiny_run, min_confidence=0,
                                                   max_entropy=settings.max_entropy)]
        assert answer["digit"] == expected["digit"]
        assert answer["digit"] == ("unknown" if settings.max_entropy == 0
                                   else int(np.argmax(answer["probabilities"])))


@pytest.mark.parametrize(("values", "message"), [
    ({"max_body": 0}, "max_body: expected an integer >= 1, received 0"),
    ({"max_files": 2.5}, "max_files: expected an integer >= 1, received 2.5"),
    ({"max_batch": True}, "max_batch: expected an integer >= 1, received True"),
    ({"min_confidence": 1.5}, "min_confidence: expected a probability in [0, 1], received 1.5"),
    ({"min_confidence": float("nan")},
     "min_confidence: expected a probability in [0, 1], received nan"),
    ({"max_entropy": -0.1}, "max_entropy: expected a number of nats >= 0, received -0.1"),
    ({"max_entropy": float("nan")}, "max_entropy: expected a number of nats >= 0, received nan"),
    ({"batching": "yes"}, "batching: expected true or false, received 'yes'"),
    ({"max_wait_ms": -1}, "max_wait_ms: expected a number >= 0, received -1"),
    ({"body_timeout": float("inf")}, "body_timeout: expected a number > 0, received inf"),
])
def test_serve_settings_check_themselves_when_made(values, message):
    """As the run config's sections do: settings built in Python (a worker, a test) are checked."""
    from digitnet.config import ConfigError

    with pytest.raises(ConfigError) as error:
        ServeSettings(**values)
    assert str(error.value) == message
    assert ServeSettings(**{key: 1 for key in values if key != "batching"}).max_body >= 1


def most_at_once(served, monkeypatch, body: bytes, requests: int = 12) -> int:
    """How many of `requests` concurrent requests posting `body` were preprocessed at once."""
    import threading
    import time

    from digitnet.serving.routers import api

    running, most, lock = [0], [0], threading.Lock()
    preprocess = api.preprocess_uploads

    def counted(uploads):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
        try:
            return preprocess(uploads)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(api, "preprocess_uploads", counted)
    with TestClient(create_app(None, model=served)) as client, \
            ThreadPoolExecutor(requests) as pool:
        statuses = list(pool.map(lambda _: client.post("/predict", content=body).status_code,
                                 range(requests)))
    assert statuses == [200] * requests
    return most[0]


def test_no_more_uploads_are_preprocessed_at_once_than_there_are_cpus(served, monkeypatch):
    """Preprocessing holds the GIL: requests beyond a thread per CPU wait their turn instead of
    taking turns at the GIL (which cost more CPU than the work itself)."""
    from digitnet.backend import available_cpus

    body = png_bytes(drawing(1, 400))  # above INLINE_PIXELS: preprocessed in a thread
    assert 1 <= most_at_once(served, monkeypatch, body) <= available_cpus()


def test_large_images_are_preprocessed_one_at_a_time(served, monkeypatch):
    """One 49-megapixel image takes up to 1 GB: six 200 KB uploads of them, two at once, took
    the server to 1.8 GB (a core each, as for small images, would take 1 GB each)."""
    from digitnet.serving.routers import api

    monkeypatch.setattr(api, "LARGE_PIXELS", 300 * 300)
    buffer = io.BytesIO()
    drawing(1, 400, "RGB").save(buffer, format="TIFF")  # not a PNG: its size read by Pillow
    assert most_at_once(served, monkeypatch, buffer.getvalue()) == 1
    assert api.claimed_largest([Upload("a.png", png_bytes(drawing(1, 299))),
                                Upload("notes.png", b"not an image")]) == 299 * 299


def test_a_form_of_too_many_pixels_in_all_is_413_before_any_is_decoded(client):
    """64 files of 7000x7000 (a 4 MB form) took 40 s of the server's CPU."""
    files = [("file", (f"{i}.png", bomb_png(7000, 7000), "image/png")) for i in range(5)]
    response = client.post("/predict", files=files)
    assert (response.status_code, response.json()) == (413, {
        "error": "request body: images of 245000000 pixels in all, above this server's limit "
                 "of 200000000 a request (send them in several)"})
    assert client.post("/predict", files=files[:4]).status_code == 422  # each refused alone


def test_small_pngs_are_preprocessed_on_the_event_loop_and_others_in_a_thread(served,
                                                                            monkeypatch):
    """A canvas-size PNG costs less to preprocess than a hand-off to a thread and back; larger
    images, and formats whose size the server does not read from the header, go to a thread."""
    from digitnet.serving.routers import api

    on_loop = []
    preprocess = api.preprocess_uploads

    def recorded(uploads):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread has no event loop
            on_loop.append(False)
        return preprocess(uploads)

    monkeypatch.setattr(api, "preprocess_uploads", recorded)
    canvas = png_bytes(drawing(1, 280))  # the page's canvas: 78,400 pixels
    buffer = io.BytesIO()
    drawing(1, 280).save(buffer, format="JPEG")
    with TestClient(create_app(None, model=served)) as client:
        for body in (canvas, png_bytes(drawing(1, 400)), buffer.getvalue()):
            assert client.post("/predict", content=body).status_code == 200
        two = [("file", (f"{i}.png", canvas, "image/png")) for i in range(2)]  # 156,800 in all
        assert client.post("/predict", files=two).status_code == 200
    assert on_loop == [True, False, False, False]
    assert 280 * 280 <= api.INLINE_PIXELS < 2 * 280 * 280


class Where:
    """A classifier that records whether each call ran on the event loop's thread."""

    def __init__(self, classifier, calls: list):
        self.classifier, self.calls = classifier, calls

    def predict(self, images):
        try:
            asyncio.get_running_loop()
            self.calls.append("event loop")
        except RuntimeError:
            self.calls.append("thread")
        return self.classifier.predict(images)


@pytest.mark.parametrize("batching", [True, False])
def test_a_quick_model_is_called_on_the_event_loop_and_a_slow_one_in_a_thread(served,
                                                                               batching):
    """A LiteRT call (tens of microseconds) costs less than a hand-off to a thread and back;
    Keras's take milliseconds and would hold up the reading of other requests."""
    body = png_bytes(drawing(2))
    for backend, place in (("litert", "event loop"), ("onnx", "event loop"),
                           ("keras", "thread"), ("saved-model", "thread")):
        calls = []
        model = ServedModel(Where(served.classifier, calls), {**served.info, "backend": backend},
                            served.source)
        with TestClient(create_app(None, ServeSettings(batching=batching),
                                   model=model)) as client:
            assert client.post("/predict", content=body).status_code == 200
        assert calls == [place], backend
