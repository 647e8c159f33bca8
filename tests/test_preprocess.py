"""Preprocessing of users' images: decoding safely, and turning any digit into MNIST's style."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile

from digitnet.errors import DigitnetError
from digitnet.images import batch as imagebatch
from digitnet.images import decode as imagefile
from digitnet.images import ink, preprocess, resample, selection
from digitnet.images.batch import preprocess_files, save_preprocessed
from digitnet.images.decode import MAX_PIXELS, MAX_SIDE, load_image, load_image_bytes
from digitnet.images.preprocess import preprocess_bytes, preprocess_file, to_mnist

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
    a, b = (cv2.GaussianBlur(x, (9, 9), 1.0, borderType=cv2.BORDER_REFLECT) for x in (a, b))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def check_mnist_like(array: np.ndarray) -> None:
    """Shape, range, full-strength strokes, 20-px long side, centre of mass at the centre."""
    assert array.shape == (28, 28) and array.dtype == np.float32
    assert array.min() >= 0 and array.max() == pytest.approx(1.0, abs=0.02)
    rows, cols = np.nonzero(array > 0.05)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)
    row, col = preprocess.centre_of_mass(array)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1


def shifted(values: np.ndarray, down: int, right: int) -> np.ndarray:
    """The array moved by whole pixels, zeros coming in from the edges."""
    moved = np.zeros_like(values)
    height, width = values.shape
    moved[max(down, 0):height + min(down, 0), max(right, 0):width + min(right, 0)] = \
        values[max(-down, 0):height - max(down, 0), max(-right, 0):width - max(right, 0)]
    return moved


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


@pytest.mark.parametrize("touching", [False, True], ids=["apart", "touching"])
def test_a_printed_box_around_the_digit_is_ignored(touching, reference):
    """A cell cut from a form or a sheet many people filled in: the box's lines, slightly
    tilted, along the crop's edges; the digit may touch or cross one of them."""
    image = draw_digit(size=(300, 300), box=(60, 60 if not touching else 40, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.line([(8, 22), (295, 30)], fill=0, width=4)  # the top line, tilted 1.6 degrees
    draw.line([(12, 10), (16, 292)], fill=0, width=4)  # the left line
    draw.line([(5, 280), (299, 276)], fill=0, width=4)  # the bottom line, cut by the crop
    array = to_mnist(image)
    assert similarity(array, reference) > 0.9
    assert similarity(to_mnist(image.rotate(90, fillcolor=255)),
                      to_mnist(draw_digit(box=(60, 60 if not touching else 40, 240, 240)
                                          ).rotate(90, fillcolor=255))) > 0.9


def test_a_neighbours_stroke_cut_by_the_crop_is_ignored(reference):
    """A crop from a sheet of digits: the end of the next digit's stroke at the crop's edge."""
    image = draw_digit(size=(300, 300), box=(70, 50, 250, 250))
    ImageDraw.Draw(image).line([(0, 120), (30, 150), (0, 190)], fill=0, width=12)
    assert similarity(to_mnist(image), reference) > 0.9
    found = []
    for box in ((70, 50, 250, 250), (-60, 50, 120, 250)):  # then the digit itself is cut
        picture = draw_digit(size=(300, 300), box=box)
        ImageDraw.Draw(picture).line([(0, 120), (30, 150), (0, 190)], fill=0, width=12)
        labels, stats, *_ = ink.segment(ink.flatten_background(
            np.asarray(picture, np.float32) / 255))
        sizes = stats[:, cv2.CC_STAT_AREA].astype(float)
        sizes[0] = 0
        found.append(len(selection.neighbours_strokes(stats, labels.shape, sizes,
                                                      int(sizes.argmax()))))
    assert found == [1, 0]  # a cut digit's pieces at the edge may be its own: none dropped


@pytest.mark.parametrize("shade", [180, 150])
@pytest.mark.parametrize("width", [4, 8])
def test_the_shade_beyond_a_photographed_sheet_is_not_the_digit(shade, width, reference):
    """A sheet photographed at an angle: in a corner the frame shows what lies beyond the
    paper, a large region a little darker than it (not reaching the frame's edge, so it does
    not run along it); the pen's digit is far darker and is the one kept."""
    image = draw_digit(size=(300, 300), box=(40, 30, 200, 190), width=width, ink=40)
    ImageDraw.Draw(image).polygon([(120, 294), (294, 110), (294, 294)], fill=shade)
    assert similarity(to_mnist(image), reference) > 0.95


BEYOND_THE_SHEET = {"band": [(0, 262), (0, 300), (300, 300), (300, 275)],
                    "corner": [(0, 180), (0, 300), (90, 300)]}


@pytest.mark.parametrize("where", BEYOND_THE_SHEET)
@pytest.mark.parametrize("width, pen, paper, beyond", [(3, 150, 190, 250), (2, 140, 180, 245)])
def test_a_fine_pen_beside_a_lighter_region_beyond_the_sheet_is_dark_ink(where, width, pen,
                                                                          paper, beyond,
                                                                          reference):
    """A fine pen's hairlines on grey paper, and beyond the photographed sheet's edge something
    lighter than the paper by more than the pen is darker: the writing is the narrow dark
    strokes, not the broad light region (once read as light ink on dark paper)."""
    image = draw_digit(width=width, ink=pen, paper=paper)
    ImageDraw.Draw(image).polygon(BEYOND_THE_SHEET[where], fill=beyond)
    gray = np.asarray(image, np.float32) / 255
    darkest, median, lightest = np.percentile(gray, [0.1, 50, 99.9])
    assert median - darkest < lightest - median  # the light tail is the deeper one
    assert not ink.has_light_ink(gray)
    assert similarity(to_mnist(image), reference) > 0.9


@pytest.mark.parametrize("chalk, board, beyond", [(220, 100, 20), (255, 120, 40)])
def test_chalk_beside_a_darker_region_beyond_the_board_is_light_ink(chalk, board, beyond,
                                                                    reference):
    """Chalk on a board with something darker beyond its edge, nearly as deep a tail as the
    chalk's: the narrow light strokes are still the writing."""
    image = draw_digit(width=8, ink=chalk, paper=board)
    ImageDraw.Draw(image).polygon(BEYOND_THE_SHEET["band"], fill=beyond)
    gray = np.asarray(image, np.float32) / 255
    darkest, median, lightest = np.percentile(gray, [0.1, 50, 99.9])
    assert median - darkest > 0.5 * (lightest - median)  # both tails are deep
    assert ink.has_light_ink(gray)
    assert similarity(to_mnist(image), reference) > 0.95


def test_a_digits_lighter_piece_is_kept():
    """The separate pieces of one digit, written with more and less pressure, are all kept:
    only a piece under half as dark as the digit is left out."""
    bar = [[(0.62, 0.05), (0.1, 0.68), (0.66, 0.68)]]
    stem = [[(0.8, 0.05), (0.8, 0.95)]]
    even = to_mnist(Image.fromarray(np.minimum(np.asarray(draw_digit(strokes=bar)),
                                               np.asarray(draw_digit(strokes=stem)))))
    lighter = to_mnist(Image.fromarray(np.minimum(np.asarray(draw_digit(strokes=bar)),
                                                  np.asarray(draw_digit(strokes=stem, ink=110)))))
    assert similarity(lighter, even) > 0.95
    assert similarity(to_mnist(draw_digit(strokes=bar)), even) < 0.8  # the stem matters


@pytest.mark.parametrize("strokes", [SEVEN, [[(0.1, 0.25), (0.5, 0.05), (0.9, 0.25),
                                               (0.05, 0.95), (0.95, 0.95)]]],
                         ids=["seven", "two"])
def test_a_digits_own_bar_at_the_crop_edge_is_kept(strokes):
    """A tightly cropped 7's bar (or a 2's base) is long, straight and near the edge, but does
    not run past the rest of the digit at both ends; a 1 has nothing beside it: they stay."""
    image = draw_digit(size=(200, 200), box=(6, 6, 194, 194), strokes=strokes, width=10)
    mask = np.asarray(image) < 128
    np.testing.assert_array_equal(ink.remove_lines(mask), mask)
    one = draw_digit(size=(60, 200), box=(25, 5, 35, 195), strokes=[[(0.5, 0), (0.5, 1)]])
    mask = np.asarray(one) < 128
    np.testing.assert_array_equal(ink.remove_lines(mask), mask)


def test_converging_dashed_ruled_lines_beside_a_small_digit_are_erased():
    """A small digit near the frame's edge on a photographed ruled page: the lines (broken into
    dashes, not quite parallel, one crossing the digit) are erased however small the digit
    beside them, and where a line crosses a stroke the pen's pixels stay."""
    digit = np.asarray(draw_digit(size=(400, 400), box=(330, 6, 370, 66), width=5)) < 128
    page = Image.new("L", (400, 400), 0)
    draw = ImageDraw.Draw(page)
    rng = np.random.default_rng(3)
    for left in range(20, 400, 34):
        tilt = 0.06 - 0.05 * left / 400  # 3.4 degrees at the top, 0.6 at the bottom
        for x in range(0, 399, 12):  # dashes 8 to 11 px long
            end = x + int(rng.integers(8, 12))
            draw.line([(x, left + tilt * x), (end, left + tilt * end)], fill=1, width=2)
    mask = digit | (np.asarray(page) > 0)
    kept = ink.remove_lines(mask)
    near = cv2.dilate(digit.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    assert not (kept & ~near).any()
    assert np.count_nonzero(kept & digit) >= 0.97 * np.count_nonzero(digit)


def test_a_stroke_lying_along_a_ruled_line_is_kept():
    """Where the pen's stroke lies on a ruled line (a 2's base written on the line), ink runs
    across the line further than the line is thick: those pixels are the pen's and stay, while
    the line's own pixels beside the digit go."""
    mask = np.zeros((300, 300), bool)
    for row in range(40, 300, 40):
        mask[row:row + 2] = True  # ruled lines 2 px thick, the fifth at rows 200-201
    digit = np.zeros_like(mask)
    digit[100:200, 147:153] = True  # a stem
    digit[192:202, 100:201] = True  # a base 10 px thick whose lowest rows are the line's
    kept = ink.remove_lines(mask | digit)
    np.testing.assert_array_equal(kept, digit)


def test_two_thin_bars_of_a_tightly_cropped_digit_are_not_ruled_lines():
    """A tightly cropped 2 written with a fine pen has a straight bar and base across the whole
    image, thin and parallel like two ruled lines; they do not run past the rest of the digit,
    so they stay."""
    two = [[(0.0, 0.02), (1.0, 0.02), (0.0, 0.98), (1.0, 0.98)]]
    mask = np.asarray(draw_digit(size=(200, 200), box=(2, 2, 198, 198), strokes=two,
                                 width=4)) < 128
    np.testing.assert_array_equal(ink.remove_lines(mask), mask)


def squared_page(gap: int, size: int = 512, horizontal_only: bool = False) -> np.ndarray:
    """A page of thin grey lines `gap` px apart (squared paper, or ruled when horizontal_only)."""
    page = np.full((size, size), 255, np.uint8)
    for at in np.arange(gap / 2, size, gap).round().astype(int).tolist():
        page[at] = 170
        if not horizontal_only:
            page[:, at] = 170
    return page


@pytest.mark.parametrize("gap", [8, 10, 12, 13, 20])
def test_closely_squared_paper_under_a_digit_is_erased(gap):
    """Squared paper whose lines lie closer than a line's search reaches (<= 13 px at 512 px: a
    full page of 5 mm squares) is erased, however thick the stroke lying along a line: the
    digit comes out as it does on blank paper."""
    digit = np.asarray(draw_digit(size=(512, 512), box=(180, 150, 330, 350), width=20))
    plain = to_mnist(Image.fromarray(digit))
    assert similarity(to_mnist(Image.fromarray(np.minimum(digit, squared_page(gap)))),
                      plain) > 0.97


@pytest.mark.parametrize("gap", [12, 13])
@pytest.mark.parametrize("horizontal_only", [True, False], ids=["ruled", "squared"])
def test_a_blank_closely_ruled_page_is_erased_to_nothing(gap, horizontal_only):
    """Each line of college-ruled or squared paper is found, though its neighbours lie within
    the rows searched around it and the second pass sees them already erased."""
    mask = squared_page(gap, horizontal_only=horizontal_only) < 200
    assert not ink.remove_lines(mask).any()


def test_one_slanted_bar_seeded_twice_is_not_two_ruled_lines():
    """A tightly cropped 7 in a fine pen: its slightly slanted 2-px bar holds two Hough
    segments, whose bands share nearly all their pixels; one line is not ruled paper, so the
    bar stays."""
    mask = np.zeros((200, 200), np.uint8)
    cv2.line(mask, (0, 12), (199, 16), 1, 2)  # the bar, slope 0.02
    cv2.line(mask, (197, 16), (90, 199), 1, 2)  # the stem
    mask = mask.view(bool)
    np.testing.assert_array_equal(ink.remove_lines(mask), mask)


def test_a_thick_bar_found_as_several_segments_does_not_cut_its_own_digit():
    """A tightly cropped 7 with a 6-px bar at the top edge of a 100-px crop: Hough finds the bar
    as several long segments, each a box-line candidate drawn thick; drawn over each other they
    cut the stem's top, so that the bar would run past the digit at both ends. It stays."""
    mask = np.zeros((100, 100), np.uint8)
    cv2.line(mask, (0, 11), (99, 11), 1, 6)  # the bar
    cv2.line(mask, (93, 11), (45, 99), 1, 6)  # the stem
    mask = mask.view(bool)
    np.testing.assert_array_equal(ink.remove_lines(mask), mask)


def follow_counting(monkeypatch) -> list[bool]:
    """Record each ink.ruled_band call: whether it found a band."""
    calls = []
    follow = ink.ruled_band

    def counted(*args):
        band, thickness = follow(*args)
        calls.append(band is not None)
        return band, thickness

    monkeypatch.setattr(ink, "ruled_band", counted)
    return calls


@pytest.mark.parametrize("tilt", [0, 80], ids=["level", "tilted"])
def test_stripes_follow_no_more_bands_than_a_page_of_lines_holds(tilt, monkeypatch):
    """Stripes two rows apart, where every other row would be a ruled line: at most height / 4
    lines are found, and a few seeds may fail, so such an image costs no more than a page of
    ruled lines."""
    page = np.zeros((512, 512), np.uint8)
    for row in range(0, 512, 2):
        cv2.line(page, (0, row), (511, row + tilt), 1, 1)
    calls = follow_counting(monkeypatch)
    ink.remove_lines(page.view(bool))
    assert 0 < len(calls) <= 512 // 4 + 2 * round(1 / ink.RULED_THICKNESS)


def test_hundreds_of_random_strokes_follow_a_bounded_number_of_seeds(monkeypatch):
    """Hundreds of long random strokes (no ruled paper) give hundreds of Hough segments near
    level or upright; each pass gives up after 1 / RULED_THICKNESS of them fail."""
    page = np.zeros((512, 512), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(300):
        x1, y1, x2, y2 = rng.integers(0, 512, 4).tolist()
        cv2.line(page, (x1, y1), (x2, y2), 1, 2)
    calls = follow_counting(monkeypatch)
    ink.remove_lines(page.view(bool))
    assert calls.count(False) <= 2 * 2 * round(1 / ink.RULED_THICKNESS)  # 2 directions, 2 passes


def test_a_fine_pens_dashes_beside_a_large_shade_are_the_digit():
    """The shade beyond a photographed sheet's edge may hold far more pixels than a digit
    written in a fine pen's short dashes: the dashes, much darker, are the digit."""
    image = Image.new("L", (300, 300), 235)
    draw = ImageDraw.Draw(image)
    draw.polygon([(8, 120), (8, 292), (140, 292)], fill=200)  # beyond the sheet's edge
    for top in (90, 122, 154):  # a 1 in three dashes
        draw.line([(200, top), (201, top + 22)], fill=60, width=4)
    strength = ink.flatten_background(np.asarray(image, np.float32) / 255)
    rows, cols = np.nonzero(selection.select_digit(ink.segment(strength)))
    assert cols.min() >= 190 and rows.min() >= 80 and rows.max() <= 190
    assert rows.max() - rows.min() > 80  # all three dashes


@pytest.mark.parametrize("lean", [-0.9, 0.8], ids=["right", "left"])
def test_a_steep_slant_is_brought_back_to_mnists_range(lean):
    """Writing slanted further than MNIST's writers slant is sheared back to the edge of their
    range (preprocess.SLANT_RANGE); a slant within it is left alone."""
    strokes = [[(x - lean * (y - 0.5) * 2, y) for x, y in stroke] for stroke in FOUR]
    steep = np.asarray(draw_digit(box=(100, 50, 200, 250), strokes=strokes)) < 128
    measured = preprocess.slant(steep)[0]
    assert not preprocess.SLANT_RANGE[0] <= measured <= preprocess.SLANT_RANGE[1]
    fixed = preprocess.slant(preprocess.limit_slant(steep))[0]
    assert fixed == pytest.approx(min(max(measured, preprocess.SLANT_RANGE[0]),
                                      preprocess.SLANT_RANGE[1]), abs=0.03)
    upright = np.asarray(draw_digit()) < 128
    assert preprocess.limit_slant(upright) is upright


def test_the_dashes_of_a_pen_that_skips_are_one_digit():
    """A fine pen that skips leaves a digit in short dashes with gaps wider than a quarter of
    one dash: all of them are the digit, not only the longest dash."""
    image = Image.new("L", (400, 400), 255)
    draw = ImageDraw.Draw(image)
    for (x0, y0), (x1, y1) in zip(SEVEN[0], SEVEN[0][1:]):
        start, end = np.array([50 + 300 * x0, 50 + 300 * y0]), np.array([50 + 300 * x1,
                                                                        50 + 300 * y1])
        length = float(np.hypot(*(end - start)))
        for at in np.arange(0, length - 10, 40):  # dashes 26 px long, 14 px apart
            a = start + (end - start) * at / length
            b = start + (end - start) * min(at + 26, length) / length
            draw.line([tuple(a), tuple(b)], fill=0, width=4)
    strength = ink.flatten_background(np.asarray(image, np.float32) / 255)
    mask = selection.select_digit(ink.segment(strength))
    rows, cols = np.nonzero(mask)
    assert np.ptp(rows) > 0.9 * 0.87 * 300 and np.ptp(cols) > 0.9 * 0.76 * 300


def test_mnist_like_input_passes_nearly_unchanged():
    """A 28x28 white-on-black digit, 20 px tall, centred by mass, anti-aliased: MNIST's own."""
    digit = draw_digit(size=(112, 112), box=(28, 16, 84, 96), width=10, ink=255, paper=0)
    small = np.asarray(digit.resize((28, 28), Image.Resampling.BOX), np.float32) / 255
    row, col = preprocess.centre_of_mass(small)
    small = shifted(small, round(14 - row), round(14 - col))
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
    # said "not an image file", or (EPS) "truncated or corrupt image (Unable to locate
    # Ghostscript on paths)": Pillow runs Ghostscript on an EPS, where it is installed
    ("photo.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
     "HEIC/HEIF is not supported; export it as JPEG or PNG"),
    ("page.pdf", b"%PDF-1.4\n%%EOF\n", "PDF is not supported; export it as PNG"),
    ("page.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
     "PostScript is not supported; export it as PNG"),
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


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (with a valid header CRC)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


BOMB = f"pixels, above the limit of {MAX_PIXELS} (decompression bomb?)"


@pytest.mark.parametrize("width,height,problem", [
    (30000, 30000, f"= 900000000 {BOMB}"), (10000, 6000, f"= 60000000 {BOMB}"),
    # within MAX_PIXELS, but Pillow keeps a pointer per row: it took 1.7 GB and 12 s (and
    # OpenCV's PNG reader printed libpng's complaint on stderr)
    (1, 49_000_000, f"pixels, a side above the limit of {MAX_SIDE}")])
def test_decompression_bomb_refused_before_decoding(tmp_path, width, height, problem):
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(width, height))
    assert imagefile.read_plain_png(str(path)) is None  # not handed to OpenCV either
    start = time.perf_counter()
    with pytest.raises(DigitnetError) as err:
        preprocess_file(path)
    assert time.perf_counter() - start < 0.5
    assert str(err.value) == f"{path}: image is {width}x{height} {problem}"
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own check is back on


def icon(png: bytes) -> bytes:
    """An ICO file holding one PNG (its directory says 256x256, as for any large icon)."""
    return (struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32,
                                                        len(png), 22) + png)


def test_an_icon_holding_a_bomb_is_refused_before_decoding(tmp_path):
    """Pillow decodes an ICO's image as it opens it, before the size is checked: a 1.5 MB icon
    holding a 20000x20000 PNG took 1.6 GB (and 5 s) before it was refused."""
    path = tmp_path / "icon.ico"
    path.write_bytes(icon(bomb_png(8000, 8000)))
    limit = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    with pytest.raises(DigitnetError) as err:
        preprocess_file(path)
    assert time.perf_counter() - start < 0.5
    assert str(err.value) == (f"{path}: Image size (64000000 pixels) exceeds limit of "
                              f"{MAX_PIXELS} pixels, could be decompression bomb DOS attack.")
    assert limit == Image.MAX_IMAGE_PIXELS  # Pillow's own limit is back as it was
    draw_digit(size=(64, 64), box=(8, 8, 56, 56), width=4).save(tmp_path / "small.ico")
    assert preprocess_file(tmp_path / "small.ico").any()  # an ordinary icon is read


@pytest.fixture
def icon_decodes(monkeypatch):
    """The sizes of the icons Pillow decodes (it does as it opens one)."""
    from PIL import IcoImagePlugin

    decoded = []
    load = IcoImagePlugin.IcoImageFile.load

    def recorded(image):
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(IcoImagePlugin.IcoImageFile, "load", recorded)
    return decoded


def test_an_icons_size_is_read_from_its_headers_without_decoding_it(tmp_path, icon_decodes):
    """The server asks each upload's size on its event loop: an ICO was decoded there (a
    97 KB icon holding a 7000x7000 PNG, 0.4 s), and again in a thread."""
    png = icon(bomb_png(7000, 7000))
    assert imagefile.claimed_pixels(png) == 7000 * 7000
    buffer = io.BytesIO()
    draw_digit(size=(64, 48), box=(8, 8, 40, 40), width=4).save(
        buffer, format="ICO", sizes=[(64, 48), (16, 12)], bitmap_format="bmp")
    assert imagefile.claimed_pixels(buffer.getvalue()) == 64 * 48  # its height counts the mask
    for refused in (8000, 8000), (2, 20_000_000):
        assert imagefile.claimed_pixels(icon(bomb_png(*refused))) == 0
    assert icon_decodes == []
    assert load_image_bytes(buffer.getvalue(), "x.ico").size == (64, 48)


def test_an_icon_holding_a_sliver_is_refused_before_decoding(tmp_path, icon_decodes):
    """A 2x20,000,000 PNG in an ICO was decoded (1 s) before its side was checked."""
    path = tmp_path / "sliver.ico"
    path.write_bytes(icon(bomb_png(2, 20_000_000)))
    with pytest.raises(DigitnetError) as err:
        preprocess_file(path)
    assert str(err.value) == (f"{path}: image is 2x20000000 pixels, a side above the limit of "
                              f"{MAX_SIDE}")
    assert icon_decodes == []


def test_pillows_limit_is_back_after_two_threads_opened_images_at_once(monkeypatch):
    """The server opens images in several threads: one setting Pillow's limit (a global) off
    while another had it off saved None, and restored that, for the process."""
    limit = Image.MAX_IMAGE_PIXELS
    first_inside = threading.Event()
    both_inside = threading.Barrier(2, timeout=0.5)  # never met when one waits for the other
    real_open = Image.open

    def open_in_turn(source, formats=None):
        first = not first_inside.is_set()
        first_inside.set()
        try:
            both_inside.wait()
        except threading.BrokenBarrierError:  # one at a time
            return real_open(source, formats=formats)
        deadline = time.monotonic() + 2
        while not first and Image.MAX_IMAGE_PIXELS is None and time.monotonic() < deadline:
            time.sleep(0.001)  # the second out after the first has restored the limit
        return real_open(source, formats=formats)

    def open_png() -> None:
        with imagefile.open_checked(io.BytesIO(png_bytes(Image.new("L", (8, 8)))), "x"):
            pass

    monkeypatch.setattr(Image, "open", open_in_turn)
    threads = [threading.Thread(target=open_png) for _ in range(2)]
    threads[0].start()
    assert first_inside.wait(5)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert limit == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("raised,problem", [
    (MemoryError(), "not enough memory to decode this image"),
    # found by fuzzing: what Pillow's parsers raise on some damaged AVIF and TIFF files
    (RuntimeError("Failed to decode frame 0: Decoding of color planes failed"),
     "truncated or corrupt image (RuntimeError: Failed to decode frame 0: Decoding of color "
     "planes failed)"),
    (TypeError("'IFDRational' object cannot be interpreted as an integer"),
     "truncated or corrupt image (TypeError: 'IFDRational' object cannot be interpreted as an "
     "integer)")])
def test_whatever_decoding_raises_is_a_one_line_error(tmp_path, monkeypatch, raised, problem):
    path = save(draw_digit(), tmp_path / "d.png")

    def failing(image):
        raise raised

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing)
    with pytest.raises(DigitnetError) as err:
        load_image(path)
    assert str(err.value) == f"{path}: {problem}"


def test_a_float_image_spanning_float32s_range_is_read_without_overflow():
    """-3e38 ink on 3e38 paper: the range's span overflowed float32 (RuntimeWarnings on stderr,
    NaN everywhere, and the digit read as a blank page)."""
    values = np.full((200, 200), 3e38, np.float32)
    values[40:160, 95:105] = -3e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array = to_mnist(Image.fromarray(values, "F"))
    expected = to_mnist(Image.fromarray(np.where(values > 0, 1.0, 0.0).astype(np.float32), "F"))
    np.testing.assert_array_equal(array, expected)
    assert array.any()


def test_a_large_float_image_is_stretched_in_place():
    """A 49-megapixel float image's copy is 196 MB: stretch's arithmetic is in place, so that
    such an image stays under 1 GB (it took 1.25 GB). grayscale held 5.3 copies at once; now
    3.5, of which numpy's reading of the Pillow image is 2."""
    image = Image.fromarray(np.random.default_rng(0).random((1000, 1000), np.float32), "F")
    tracemalloc.start()
    try:
        preprocess.grayscale(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4.3 * image.width * image.height * 4


# ----------------------------------------------------------------- batches and output


def write_batch(folder: Path) -> list[Path]:
    """Two good images around a bad one."""
    good = save(draw_digit(), folder / "a.png")
    bad = folder / "b.png"
    bad.write_text("not an image")
    other = save(draw_digit(strokes=SEVEN, ink=255, paper=0), folder / "c.png")
    return [good, bad, other]


def test_preprocess_files_returns_errors_in_place(tmp_path, reference):
    paths = write_batch(tmp_path)
    results = preprocess_files(paths, workers=1)
    assert [result.path for result in results] == [str(path) for path in paths]
    assert similarity(results[0].image, reference) > 0.99 and results[0].error is None
    assert results[1].image is None and isinstance(results[1].error, DigitnetError)
    assert "b.png: not an image file" in str(results[1].error)
    assert results[2].image.shape == (28, 28) and similarity(results[2].image, reference) < 0.7


@pytest.mark.parametrize("serial_seconds", [0.0, 60.0], ids=["workers", "here-first"])
def test_preprocess_files_in_parallel_keeps_order(tmp_path, monkeypatch, serial_seconds):
    """In worker processes (none done here first) or here while the workers start, the same."""
    paths = write_batch(tmp_path) * 4
    serial = preprocess_files(paths, workers=1)
    monkeypatch.setattr(imagebatch, "PARALLEL_MIN", 2)
    monkeypatch.setattr(imagebatch, "CHUNK_FILES", 5)  # several chunks, the last one short
    monkeypatch.setattr(imagebatch, "SERIAL_SECONDS", serial_seconds)
    monkeypatch.setattr(imagebatch, "_pools", {})  # a new pool, so the serial start applies
    parallel = preprocess_files(paths, workers=2)
    assert len(parallel) == len(serial)
    for one, other in zip(serial, parallel):
        assert one.path == other.path and str(one.error) == str(other.error)
        if one.error is None:
            np.testing.assert_array_equal(one.image, other.image)
    imagebatch.close_pools()


def test_preprocess_stream_is_lazy_and_in_order(tmp_path):
    """A generator of paths is read as the results are taken, and each result names its file."""
    paths = write_batch(tmp_path)
    taken = []

    def given():
        for path in paths:
            taken.append(path)
            yield path

    stream = imagebatch.preprocess_stream(given(), workers=1)
    assert not taken
    first = next(stream)
    assert first.path == str(paths[0]) and first.image.shape == (28, 28)
    assert [item.path for item in stream] == [str(p) for p in paths[1:]]


def test_preprocess_stream_hands_on_results_while_the_input_stalls(tmp_path, monkeypatch):
    """Paths piped in by a program that has not finished: what the workers have done comes out
    without waiting for more input (there were 2 chunks pending, fewer than the queue holds)."""
    paths = write_batch(tmp_path) * 3
    monkeypatch.setattr(imagebatch, "PARALLEL_MIN", 2)
    monkeypatch.setattr(imagebatch, "CHUNK_FILES", 5)
    monkeypatch.setattr(imagebatch, "SERIAL_SECONDS", 0.0)
    monkeypatch.setattr(imagebatch, "_pools", {})
    more = threading.Event()

    def given():
        yield from paths
        more.wait()  # the writer is still there, with nothing to add yet
        yield from paths

    stream = imagebatch.preprocess_stream(given(), workers=2)
    taken: list = []
    reader = threading.Thread(target=lambda: taken.extend(next(stream) for _ in paths))
    reader.start()
    reader.join(timeout=60)
    stalled = reader.is_alive()
    more.set()
    reader.join()
    assert not stalled and [item.path for item in taken] == [str(p) for p in paths]
    assert [item.path for item in stream] == [str(p) for p in paths]
    imagebatch.close_pools()


def test_save_preprocessed_writes_what_the_model_saw(tmp_path, reference):
    path = tmp_path / "seen.png"
    save_preprocessed(reference[..., None], path)
    saved = Image.open(path)
    assert saved.mode == "L" and saved.size == (28, 28)
    assert np.abs(np.asarray(saved) / 255 - reference).max() <= 0.5 / 255 + 1e-6


def test_save_preprocessed_error(tmp_path, reference):
    with pytest.raises(DigitnetError, match="cannot write"):
        save_preprocessed(reference, tmp_path / "no-such-folder" / "seen.png")


def test_does_not_import_tensorflow_or_scipy():
    code = ("import sys, digitnet.images.batch\n"  # and through it every stage
            "sys.exit('tensorflow' in sys.modules or 'scipy' in sys.modules)")
    repo = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo, timeout=60).returncode == 0


@pytest.mark.skipif(not (REALDIGITS / "labels.csv").exists(),
                    reason=f"no realdigits-dev at {REALDIGITS} (set DIGITNET_REALDIGITS_DIR)")
def test_real_images_all_give_a_centred_digit():
    paths = sorted(p for p in REALDIGITS.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    for item in preprocess_files(paths, workers=1):
        assert item.error is None, item.error
        check_mnist_like(item.image)


# ------------------------------------------- fast paths that must match what they replace


@pytest.mark.parametrize("seed", range(3))
def test_resize_matches_pillow(seed):
    """Pillow's BOX (whole source pixels, not areas) and BILINEAR enlarging, as before."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        height, width = (int(n) for n in rng.integers(1, 200, 2))
        target = tuple(int(n) for n in rng.integers(1, 200, 2))
        values = rng.random((height, width)).astype(np.float32)
        box = Image.fromarray(values).resize(target, Image.Resampling.BOX)
        np.testing.assert_allclose(resample.resize(values, target), np.asarray(box), atol=1e-6)
        if target[0] >= width and target[1] >= height:
            smooth = Image.fromarray(values).resize(target, Image.Resampling.BILINEAR)
            np.testing.assert_allclose(resample.resize(values, target, smooth=True),
                                       np.asarray(smooth), atol=1e-6)


def test_percentiles_and_medians_are_numpys_bit_for_bit():
    """The quick versions give exactly numpy's values (and types), so thresholds do not move."""
    rng = np.random.default_rng(3)
    for size in (1, 2, 3, 7, 100, 5000, 5001, 20000):
        paper = np.where(rng.random(size) < 0.9, 1.0, rng.random(size))  # runs at the max
        ink_only = np.where(rng.random(size) < 0.99, 0.0, np.minimum(rng.random(size) * 2, 1))
        for values in (rng.random(size), rng.integers(0, 4, size) / 4, rng.random(size) ** 9,
                       paper, ink_only):
            values = values.astype(np.float32).reshape(1, -1)
            percents = (0.1, 50, 90, 99.9)
            assert ink.percentiles(values, percents) == np.percentile(values, percents).tolist()
            for percent in percents:
                quick, slow = ink.percentile(values, percent), np.percentile(values, percent)
                assert quick == slow and quick.dtype == slow.dtype == np.float32
            assert ink.median(values) == float(np.median(values))


@pytest.mark.parametrize("size", [3, 4, 8, 21])
def test_grey_closing_is_scipys(size):
    """Dilation then erosion by a size x size square, the erosion's window the dilation's
    reflected, edges extended: scipy.ndimage.grey_closing(mode="nearest"), by brute force."""
    values = np.random.default_rng(size).random((30, 37)).astype(np.float32)
    low, high = (size - 1) // 2, size // 2  # the dilation's window reaches back low, on high

    def window(array, reducer, back, ahead):
        padded = np.pad(array, ((back, ahead), (back, ahead)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        return reducer(windows, axis=(2, 3))

    expected = window(window(values, np.max, low, high), np.min, high, low)
    np.testing.assert_array_equal(ink.grey_closing(values, size), expected)


def test_runs_at_least():
    mask = np.random.default_rng(4).random((40, 60)) > 0.2
    expected = np.zeros_like(mask)
    for row in range(mask.shape[0]):
        start = None
        for col in range(mask.shape[1] + 1):
            inked = col < mask.shape[1] and mask[row, col]
            if inked and start is None:
                start = col
            elif not inked and start is not None:
                expected[row, start:col] = col - start >= 7
                start = None
    np.testing.assert_array_equal(ink.runs_at_least(mask, 7), expected)


def test_largest_breaks_ties_by_position():
    """Not by OpenCV's label order, which depends on its algorithm and thread count."""
    stats = np.array([[0, 0, 50, 50, 2000], [30, 10, 5, 5, 9], [5, 10, 5, 5, 9], [1, 2, 3, 3, 4]])
    sizes = stats[:, 4].astype(float)
    sizes[0] = 0
    assert selection.largest(sizes, stats) == 2  # as high as label 1, further left
    assert selection.largest(np.zeros(4), stats) == 0


@pytest.mark.parametrize("width", [1, 3, 6, 9, 12, 20, 45])
def test_quick_stroke_check_agrees_with_the_exact_width(width):
    image = draw_digit(size=(500, 500), box=(50, 50, 450, 450), width=width)
    gray = preprocess.grayscale(image)
    strength = ink.flatten_background(1.0 - gray)
    shape = preprocess.digit_shape(strength, selection.select_digit(ink.segment(strength)))
    exact = preprocess.stroke_width(shape)
    if preprocess.surely_typical(shape):
        assert preprocess.STROKE_RANGE[0] <= exact <= preprocess.STROKE_RANGE[1]
    else:  # only near the range's ends, or out of it
        assert not 7 <= exact <= 16


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return (len(data).to_bytes(4, "big") + kind + data
            + zlib.crc32(kind + data).to_bytes(4, "big"))


def with_chunk(png: bytes, chunk: bytes) -> bytes:
    """The PNG with a chunk inserted right after its header chunk."""
    return png[:33] + chunk + png[33:]


def test_plain_grayscale_png_is_decoded_without_pillow(tmp_path):
    """The fast path gives exactly Pillow's pixels, and so exactly the same input."""
    image = draw_digit(size=(60, 50), box=(10, 5, 50, 45), width=4)
    path = save(image, tmp_path / "plain.png")
    np.testing.assert_array_equal(imagefile.read_plain_png(str(path)), np.asarray(image))
    np.testing.assert_array_equal(preprocess_file(path), to_mnist(load_image(path)))


def png_bytes(image: Image.Image, **options) -> bytes:
    """The image as a PNG file's bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def no_palette_png() -> bytes:
    """An 8x8 palette PNG without its palette (PLTE chunk)."""
    header = struct.pack(">IIBBBBB", 8, 8, 8, 3, 0, 0, 0)  # 8x8, 8-bit palette indices
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 9 * 8)) + png_chunk(b"IEND", b""))


def test_a_palette_png_without_its_palette_is_refused(tmp_path):
    """Pillow decoded it, then failed an assert asked for its colours (a traceback, a 500)."""
    path = tmp_path / "no-palette.png"
    path.write_bytes(no_palette_png())
    with pytest.raises(DigitnetError) as err:
        preprocess_file(path)
    assert str(err.value) == f"{path}: truncated or corrupt image (a palette image without its " \
                             f"palette)"


def split_idat(png: bytes) -> bytes:
    """The PNG with its one IDAT chunk cut in two around another chunk (pHYs)."""
    start = png.index(b"IDAT") - 4
    end = start + 12 + int.from_bytes(png[start:start + 4], "big")
    data = png[start + 8:end - 4]
    return (png[:start] + png_chunk(b"IDAT", data[:9])
            + png_chunk(b"pHYs", struct.pack(">IIB", 1, 1, 0)) + png_chunk(b"IDAT", data[9:])
            + png[end:])


@pytest.mark.parametrize("variant", ["header-twice", "split-idat"])
def test_the_quick_path_leaves_odd_chunks_to_pillow_quietly(tmp_path, capfd, variant):
    """OpenCV's libpng printed "libpng error: IHDR: out of place" or "libpng error: Not enough
    image data" on stderr above the file's answer or its one-line error."""
    plain = png_bytes(draw_digit(size=(60, 50), box=(10, 5, 50, 45), width=4))
    path = tmp_path / f"{variant}.png"
    path.write_bytes(with_chunk(plain, plain[8:33]) if variant == "header-twice"
                     else split_idat(plain))
    assert imagefile.read_plain_png(str(path)) is None
    with contextlib.suppress(DigitnetError):  # Pillow refuses the split IDAT, in one line
        preprocess_file(path)
    assert capfd.readouterr().err == ""


def png_variants(tmp_path: Path) -> dict:
    """PNG files that must not take the fast path, each with the reason in its name."""
    image = draw_digit(size=(60, 50), box=(10, 5, 50, 45), width=4)
    plain = png_bytes(image)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    xmp = b"XML:com.adobe.xmp\x00<x:xmpmeta tiff:Orientation='6'/>"
    variants = {
        "rgb": image.convert("RGB"), "16-bit": Image.fromarray(np.asarray(image, np.uint16) * 200),
        "palette": image.convert("P"), "with-alpha": image.convert("LA"),
        "transparent-grey": with_chunk(plain, png_chunk(b"tRNS", b"\x00\xff")),
        "xmp-orientation": with_chunk(plain, png_chunk(b"tEXt", xmp)),
        "exif-orientation": png_bytes(image, exif=rotated),
        "bad-checksum": plain[:-13] + bytes([plain[-13] ^ 1]) + plain[-12:],  # IDAT's CRC
        "truncated": plain[: len(plain) - 20],
    }
    interlaced = bytearray(plain)
    interlaced[28] = 1  # the header's interlace byte, with its CRC fixed up
    interlaced[29:33] = zlib.crc32(bytes(interlaced[12:29])).to_bytes(4, "big")
    variants["interlaced"] = bytes(interlaced)
    paths = {}
    for name, content in variants.items():
        path = tmp_path / f"{name}.png"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
        paths[name] = path
    return paths


def test_other_pngs_take_pillows_path(tmp_path):
    for name, path in png_variants(tmp_path).items():
        assert imagefile.read_plain_png(str(path)) is None, name
        try:
            expected = to_mnist(load_image(path, draft_side=resample.WORK_SIDE))
        except DigitnetError as err:
            with pytest.raises(DigitnetError) as raised:
                preprocess_file(path)
            assert str(raised.value) == str(err), name
        else:
            np.testing.assert_array_equal(preprocess_file(path), expected, err_msg=name)


def test_colour_pngs_in_memory_take_a_quicker_path_to_the_same_input():
    """Canvas uploads (RGBA, RGB, grey and alpha; opaque or transparent) decoded by OpenCV
    give Pillow's luminance and alpha, and so exactly the input that Pillow's path gives."""
    digit = draw_digit(size=(120, 100), box=(20, 10, 100, 90), width=6)
    mask = digit.point(lambda v: 255 - v)
    images = {
        "rgba-opaque": digit.convert("RGBA"),
        "rgb-tinted": Image.merge("RGB", (digit, digit.point(lambda v: v // 2), digit)),
        "la-transparent": Image.merge("LA", (Image.new("L", digit.size, 0), mask)),
        "rgba-transparent": Image.merge("RGBA", (*digit.convert("RGB").split(), mask)),
    }
    for name, image in images.items():
        data = png_bytes(image)
        luminance, alpha = imagefile.plain_png_layers(data)
        np.testing.assert_array_equal(luminance, np.asarray(image.convert("L")), err_msg=name)
        assert (alpha is None) == (name == "rgb-tinted"), name
        expected = to_mnist(imagefile.load_image_bytes(data, name, resample.WORK_SIDE))
        assert expected.any(), name
        np.testing.assert_array_equal(preprocess_bytes(data, name), expected, name)
    assert imagefile.plain_png_layers(png_bytes(digit.convert("P"))) is None  # a palette


def test_grey_pixels_take_a_quicker_path_to_pillows_luminance():
    """A canvas drawn in greys needs no arithmetic (luma = level); any coloured pixel, even one
    bit off, takes the full formula; both are Pillow's luminance."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        height, width = (int(n) for n in rng.integers(1, 40, 2))
        level = rng.integers(0, 256, (height, width), dtype=np.uint8)
        layers = [level, level, level] + [rng.integers(0, 256, (height, width), np.uint8)] * (
            trial % 2)
        pixels = np.stack(layers, axis=-1)
        if trial % 3 == 0:  # one channel of one pixel a bit off: not grey
            pixels[rng.integers(height), rng.integers(width), rng.integers(3)] ^= np.uint8(
                1 << int(rng.integers(8)))
        elif trial % 3 == 1:
            pixels = rng.integers(0, 256, pixels.shape, dtype=np.uint8)
        grey = bool((pixels[..., 0] == pixels[..., 1]).all()
                    and (pixels[..., 1] == pixels[..., 2]).all())
        assert imagefile.is_grey(pixels) == grey
        rgb = Image.fromarray(np.ascontiguousarray(pixels[..., 2::-1]))  # BGR(A) -> RGB
        np.testing.assert_array_equal(imagefile.pillow_luminance(pixels),
                                      np.asarray(rgb.convert("L")))


def test_otsus_histogram_is_numpys_bincount():
    rng = np.random.default_rng(6)
    for trial in range(100):
        values = rng.random((int(rng.integers(1, 90)), int(rng.integers(1, 90))))
        values = values.astype(np.float32)
        if trial % 2:
            values[values < 0.7] = 0  # mostly paper, as a canvas's ink is
            values[values > 0.95] = 1.0
        values = values[::1 + trial % 3, trial % 2:]  # a view, as segment passes
        expected = np.bincount(np.minimum(values * 256, 255).astype(np.intp).ravel(),
                               minlength=256)
        counts = ink.level_counts(values)
        np.testing.assert_array_equal(counts, expected)
        assert counts.dtype == expected.dtype


def test_picking_one_label_equals_the_table():
    labels = np.random.default_rng(7).integers(0, 6, (50, 60)).astype(np.int32)
    for chosen in ([3], [0], [1, 4], np.array([2])):
        table = np.zeros(6, bool)
        table[chosen] = True
        table[0] = False
        np.testing.assert_array_equal(ink.pick(labels, 6, chosen), table[labels])


def test_a_dark_blob_smaller_than_a_digit_is_not_the_digit_once_faint_shade_is_gone():
    """The largest piece is faint shade, the strongest digit-sized one a thin dark stroke, and a
    small dark blob (shorter than a digit can be) holds more pixels than the stroke: with the
    shade set aside, the digit is the stroke, not the blob."""
    strength = np.zeros((1000, 1000), np.float32)
    strength[100:108, 100:220] = 0.3  # shade: the largest piece, digit-sized, faint
    strength[400:550, 700:702] = 1.0  # the digit: 300 pixels, 150 tall
    strength[800:820, 100:120] = 1.0  # a blob: 400 pixels, 20 (under MIN_DIGIT's 25) across
    count, labels, stats, _ = cv2.connectedComponentsWithStats((strength > 0).view(np.uint8), 8)
    strong = np.arange(count) > 0
    mask = selection.select_digit(ink.Pieces(labels, stats, strong, strength))
    digit = np.zeros(strength.shape, bool)
    digit[400:550, 700:702] = True
    assert mask is not None and np.array_equal(mask, digit)
