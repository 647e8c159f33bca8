"""Preprocessing of users' images: decoding safely, and turning any digit into MNIST's style."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digitnet import preprocess
from digitnet.errors import DigitnetError
from digitnet.preprocess import (
    MAX_PIXELS,
    load_image,
    preprocess_file,
    preprocess_files,
    save_preprocessed,
    to_mnist,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALDIGITS = Path(os.environ.get("DIGITNET_REALDIGITS_DIR", SHARED / "data/realdigits-dev"))
FOUR = [[(0.62, 0.05), (0.1, 0.68), (0.9, 0.68)], [(0.62, 0.05), (0.62, 0.95)]]  # strokes, 0..1
SEVEN = [[(0.12, 0.08), (0.88, 0.08), (0.4, 0.95)]]


def draw_digit(size=(300, 300), box=(50, 50, 250, 250), strokes=FOUR, width=12, ink=0,
               paper=255) -> Image.Image:
    """A grayscale digit drawn with lines `width` px wide inside `box` of a `size` canvas."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    for stroke in strokes:
        points = [(left + x * (right - left), top + y * (bottom - top)) for x, y in stroke]
        draw.line(points, fill=ink, width=width, joint="curve")
    return image


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The plain black-on-white four, preprocessed: what every variant below should match."""
    return to_mnist(draw_digit())


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two images, slightly blurred so that sub-pixel shifts barely count."""
    a, b = ndimage.gaussian_filter(a, 1.0), ndimage.gaussian_filter(b, 1.0)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def check_mnist_like(array: np.ndarray) -> None:
    """Shape, range, full-strength strokes, 20-px long side, centre of mass at the centre."""
    assert array.shape == (28, 28) and array.dtype == np.float32
    assert array.min() >= 0 and array.max() == pytest.approx(1.0, abs=0.02)
    rows, cols = np.nonzero(array > 0.05)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)
    row, col = ndimage.center_of_mass(array)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1


def save(image: Image.Image, path: Path, **options) -> Path:
    """Save an image and return its path."""
    image.save(path, **options)
    return path


def shadowed(image: Image.Image) -> Image.Image:
    """A coloured photo of the page: cream paper, blue ink, a shadow darkening one side."""
    gray = np.asarray(image, np.float32) / 255
    paper, ink = np.array([235, 225, 200]), np.array([30, 40, 140])
    rgb = gray[..., None] * paper + (1 - gray[..., None]) * ink
    shade = np.linspace(1.0, 0.5, gray.shape[1])[None, :, None]
    return Image.fromarray(np.clip(rgb * shade, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------ styles of image


def test_clean_digit_is_mnist_like(reference):
    check_mnist_like(reference)


def test_photo_with_shadow_and_jpeg_noise(tmp_path, reference):
    path = save(shadowed(draw_digit(size=(400, 300), box=(110, 40, 310, 240))),
                tmp_path / "photo.jpg", quality=80)
    array = preprocess_file(path)
    check_mnist_like(array)
    assert similarity(array, reference) > 0.85


def test_white_on_black(reference):
    array = to_mnist(draw_digit(ink=255, paper=0))
    check_mnist_like(array)
    assert similarity(array, reference) > 0.95


def test_dark_ink_on_dark_grey_paper(reference):
    assert similarity(to_mnist(draw_digit(ink=10, paper=70)), reference) > 0.95


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 30)])
@pytest.mark.parametrize("hidden", [(0, 0, 0), (255, 255, 255)])
def test_drawing_on_transparent_canvas(colour, hidden, reference):
    """Ink of any colour on a transparent canvas whose hidden colour is black or white."""
    alpha = np.asarray(draw_digit(ink=255, paper=0))
    rgba = np.empty(alpha.shape + (4,), np.uint8)
    rgba[...] = (*hidden, 0)
    rgba[alpha > 0] = (*colour, 255)
    rgba[..., 3] = alpha
    array = to_mnist(Image.fromarray(rgba))
    check_mnist_like(array)
    assert similarity(array, reference) > 0.95


def test_photo_with_transparent_margin(reference):
    """A page with transparent corners is composited over its own paper, not read as alpha."""
    image = draw_digit().convert("RGBA")
    ImageDraw.Draw(image).rectangle((0, 0, 40, 40), fill=(0, 0, 0, 0))
    assert similarity(to_mnist(image), reference) > 0.95


@pytest.mark.parametrize("mode,suffix", [("P", ".png"), ("LA", ".png"), ("I;16", ".png"),
                                         ("CMYK", ".jpg"), ("1", ".png"), ("RGB", ".bmp"),
                                         ("F", ".tif")])
def test_image_modes(mode, suffix, tmp_path, reference):
    image = draw_digit()
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, np.uint16) * 200)
    else:
        image = image.convert(mode)
    path = save(image, tmp_path / f"digit{suffix}")
    assert load_image(path).mode == Image.open(path).mode  # returned in its own mode
    assert similarity(preprocess_file(path), reference) > 0.95


def test_small_digit_in_corner_of_wide_canvas(reference):
    image = draw_digit(size=(1600, 500), box=(40, 30, 110, 100), width=5)
    array = to_mnist(image)
    check_mnist_like(array)
    assert similarity(array, reference) > 0.9


def test_exif_orientation_is_applied(tmp_path, reference):
    stored = draw_digit().rotate(90, expand=True)  # the camera stored it sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = save(stored, tmp_path / "phone.jpg", exif=exif, quality=90)
    assert similarity(preprocess_file(path), reference) > 0.95


def test_animated_gif_uses_first_frame(tmp_path, reference):
    frames = [draw_digit(), draw_digit(strokes=SEVEN)]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 2
    assert similarity(preprocess_file(path), reference) > 0.95


@pytest.mark.parametrize("width", [1, 3, 45])
def test_stroke_width_is_normalised(width, reference):
    """Hairlines and bold marker both end up about as thick as MNIST's strokes."""
    array = to_mnist(draw_digit(size=(500, 500), box=(50, 50, 450, 450), width=width))
    check_mnist_like(array)
    assert 0.7 < array.sum() / reference.sum() < 1.4


def test_faint_pencil_with_specks_and_edge_line(reference):
    image = draw_digit(ink=185, paper=215, width=6)
    draw = ImageDraw.Draw(image)
    for x, y in [(20, 200), (280, 30), (150, 285)]:
        draw.point((x, y), fill=0)
    draw.line([(0, 296), (299, 296)], fill=0, width=3)  # a scanner's edge shadow
    rng = np.random.default_rng(0)
    noisy = np.asarray(image, np.float32) + rng.normal(0, 3, (300, 300))
    array = to_mnist(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    assert similarity(array, reference) > 0.9


@pytest.mark.parametrize("grid", [False, True], ids=["ruled", "squared"])
def test_ruled_and_squared_paper_lines_are_ignored(grid, reference):
    image = draw_digit(size=(400, 400), box=(100, 100, 300, 300))
    draw = ImageDraw.Draw(image)
    for at in range(30, 400, 80 if not grid else 40):
        draw.line([(0, at), (399, at)], fill=120, width=3)
        if grid:
            draw.line([(at, 0), (at, 399)], fill=120, width=3)
    assert similarity(to_mnist(image), reference) > 0.9


def test_mnist_like_input_passes_nearly_unchanged():
    """A 28x28 white-on-black digit, 20 px tall, centred by mass, anti-aliased: MNIST's own."""
    digit = draw_digit(size=(112, 112), box=(28, 16, 84, 96), width=10, ink=255, paper=0)
    small = np.asarray(digit.resize((28, 28), Image.Resampling.BOX), np.float32) / 255
    row, col = ndimage.center_of_mass(small)
    small = ndimage.shift(small, (round(14 - row), round(14 - col)), order=0)
    output = to_mnist(Image.fromarray((small * 255).astype(np.uint8)))
    assert np.corrcoef(output.ravel(), small.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("image", [
    Image.new("L", (200, 100), 255),
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    Image.fromarray(np.random.default_rng(1).normal(200, 4, (300, 300)).astype(np.uint8)),
    Image.new("I;16", (40, 40), 5),
], ids=["white", "transparent", "noisy-paper", "flat-16-bit"])
def test_blank_image_gives_zeros(image):
    array = to_mnist(image)
    assert array.shape == (28, 28) and not array.any()


@pytest.mark.parametrize("image", [
    Image.new("L", (1, 1)),
    Image.new("L", (3, 300), 255),
    Image.fromarray(np.array([[np.nan, np.inf], [0.0, -np.inf]], np.float32)),
    draw_digit(size=(2000, 8), box=(0, 0, 2000, 8), width=2),
], ids=["1x1", "3x300", "non-finite", "sliver"])
def test_degenerate_images_do_not_crash(image):
    assert to_mnist(image).shape == (28, 28)


def test_large_photo_is_fast(tmp_path, reference):
    image = shadowed(draw_digit(size=(4000, 3000), box=(1500, 1000, 2500, 2000), width=60))
    path = save(image, tmp_path / "big.jpg", quality=90)
    start = time.perf_counter()
    array = preprocess_file(path)
    assert time.perf_counter() - start < 1.0
    assert similarity(array, reference) > 0.9


# -------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(DigitnetError) as err:
        load_image(tmp_path / "x.png")
    assert str(err.value) == f"{tmp_path / 'x.png'}: file not found"


SVG_REFUSED = "SVG is not supported; export it as PNG"


@pytest.mark.parametrize("name,content,message", [
    ("empty.png", b"", "file is empty (0 bytes)"),
    ("photo.png", b"hello, not an image\n", "not an image file (cannot identify image format)"),
    ("d.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", SVG_REFUSED),
    ("d.png", b"<?xml version='1.0'?>\n<svg></svg>", SVG_REFUSED),
])
def test_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DigitnetError) as err:
        load_image(path)
    assert str(err.value) == f"{path}: {message}"


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(DigitnetError, match="is a folder, not an image file"):
        load_image(tmp_path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    noise = np.random.default_rng(2).integers(0, 256, (200, 200, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    path = tmp_path / f"t{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DigitnetError) as err:
        load_image(path)
    assert str(err.value).startswith(f"{path}: truncated or corrupt image (")
    assert "\n" not in str(err.value)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height pixels (with a valid header CRC)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width,height", [(30000, 30000), (10000, 6000)])
def test_decompression_bomb_refused_before_decoding(tmp_path, width, height):
    path = bomb_png(tmp_path / "big.png", width, height)
    start = time.perf_counter()
    with pytest.raises(DigitnetError) as err:
        load_image(path)
    assert time.perf_counter() - start < 0.5
    assert str(err.value) == (f"{path}: image is {width}x{height} = {width * height} pixels, "
                              f"above the limit of {MAX_PIXELS} (decompression bomb?)")
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own check is back on


# ----------------------------------------------------------------- batches and output


def write_batch(folder: Path) -> list[Path]:
    """Two good images around a bad one."""
    good = save(draw_digit(), folder / "a.png")
    bad = folder / "b.png"
    bad.write_text("not an image")
    other = save(draw_digit(strokes=SEVEN, ink=255, paper=0), folder / "c.png")
    return [good, bad, other]


def test_preprocess_files_returns_errors_in_place(tmp_path, reference):
    results = preprocess_files(write_batch(tmp_path), workers=1)
    assert similarity(results[0], reference) > 0.99
    assert isinstance(results[1], DigitnetError) and "b.png: not an image file" in str(results[1])
    assert results[2].shape == (28, 28) and similarity(results[2], reference) < 0.7


def test_preprocess_files_in_parallel_keeps_order(tmp_path, monkeypatch):
    paths = write_batch(tmp_path) * 4
    serial = preprocess_files(paths, workers=1)
    monkeypatch.setattr(preprocess, "PARALLEL_MIN", 2)
    parallel = preprocess_files(paths, workers=2)
    for one, other in zip(serial, parallel):
        if isinstance(one, DigitnetError):
            assert str(one) == str(other)
        else:
            np.testing.assert_array_equal(one, other)


def test_save_preprocessed_writes_what_the_model_saw(tmp_path, reference):
    path = tmp_path / "seen.png"
    save_preprocessed(reference[..., None], path)
    saved = Image.open(path)
    assert saved.mode == "L" and saved.size == (28, 28)
    assert np.abs(np.asarray(saved) / 255 - reference).max() <= 0.5 / 255 + 1e-6


def test_save_preprocessed_error(tmp_path, reference):
    with pytest.raises(DigitnetError, match="cannot write"):
        save_preprocessed(reference, tmp_path / "no-such-folder" / "seen.png")


def test_does_not_import_tensorflow():
    code = "import sys, digitnet.preprocess; sys.exit('tensorflow' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo, timeout=60).returncode == 0


@pytest.mark.skipif(not (REALDIGITS / "labels.csv").exists(),
                    reason=f"no realdigits-dev at {REALDIGITS} (set DIGITNET_REALDIGITS_DIR)")
def test_real_images_all_give_a_centred_digit():
    paths = sorted(p for p in REALDIGITS.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    for array in preprocess_files(paths, workers=1):
        assert not isinstance(array, DigitnetError), array
        check_mnist_like(array)
