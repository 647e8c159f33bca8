"""bench/synthetic.py's generated handwriting: each style draws what a real pen would."""

import cv2
import numpy as np

from bench import synthetic
from bench.synthetic import fine_pen_mask, pen_mask, thinned, varied_digits
from tests.strokes import stroke_digits


def pressed(images: np.ndarray) -> np.ndarray:
    """Stroke digits written as MNIST's writers did: the ink's peak varies along the stroke
    (0.75-1 of full brightness), as a pen's pressure does."""
    rows, columns = np.mgrid[0:28, 0:28] / 27
    pressure = 0.875 + 0.125 * np.cos(9 * rows + 7 * columns)
    return np.round(images * pressure).astype(np.uint8)


def pieces(mask: np.ndarray) -> int:
    """How many pieces a drawn mask is in (those over 2% of its ink; 8-connected)."""
    ink = (mask > 0.5).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] > 0.02 * ink.sum()).sum())


def stroke_width(mask: np.ndarray) -> float:
    """The mean width of a mask's strokes in pixels: its ink over the length of its centre line."""
    return float(mask.sum() / max(1, thinned(mask > 0.5).sum()))


# MNIST-like digits: strokes of uneven pressure, as MNIST's writers' (a pen that draws only
# where the ink is near its peak breaks them into dashes)
DIGITS = pressed(stroke_digits(10, 3)[0])


def drawn(style: str, monkeypatch) -> list[np.ndarray]:
    """DIGITS in one of the varied styles, as the ink's mask on the page (no paper, no camera)."""
    monkeypatch.setattr(synthetic, "ink_on_paper", lambda rng, mask: mask)
    monkeypatch.setattr(synthetic, "camera", lambda rng, image: image)
    rng = np.random.default_rng(0)
    return [synthetic.varied_digit(digit, rng, style, digit) for digit in DIGITS]


def test_the_fine_pen_style_draws_a_thin_continuous_line_as_often_as_a_marker(monkeypatch):
    fine, marker = drawn("thin_pen", monkeypatch), drawn("marker", monkeypatch)
    assert sum(pieces(mask) == 1 for mask in fine) >= sum(pieces(mask) == 1 for mask in marker)
    assert sum(pieces(mask) == 1 for mask in fine) >= 9
    for mask in fine:  # a hairline: at most 4% of the digit's height wide (MNIST: about 12%)
        height = np.ptp(np.nonzero(mask > 0.5)[0]) + 1
        assert stroke_width(mask) <= 0.04 * height


def test_a_fine_pen_is_thin_at_any_size_and_as_wide_as_asked():
    for side, width in ((100, 1.0), (160, 2.0), (220, 4.0)):
        widths = [stroke_width(fine_pen_mask(digit, side, width)) for digit in DIGITS]
        mnist_stroke = [stroke_width(pen_mask(digit, side, 0.0, core=0.5)) for digit in DIGITS]
        assert np.median(widths) < min(mnist_stroke) / 2, (widths, mnist_stroke)
        assert abs(np.median(widths) - width) < 1.0, widths


def test_thinning_keeps_a_ring_one_closed_line():
    rows, columns = np.mgrid[0:60, 0:60]
    radius = np.hypot(rows - 30, columns - 30)
    line = thinned((radius > 15) & (radius < 22))
    assert 0 < line.sum() < (radius < 22).sum() / 5
    assert pieces(line.astype(float)) == 1
    inside = cv2.floodFill(line.astype(np.uint8), None, (30, 30), 1)[1]
    assert inside[0, 0] == 0  # the loop stays closed: filling its inside does not reach outside


def test_the_varied_sets_take_the_styles_in_turn_and_are_reproducible():
    images = np.repeat(DIGITS, 2, axis=0)
    labels = np.arange(20) % 10
    first = varied_digits(images, labels, 12, seed=0)
    again = varied_digits(images, labels, 12, seed=0)
    assert [style for _, _, style in first] == 2 * list(synthetic.VARIED_STYLES)
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for (a, _, _), (b, _, _) in zip(first, again))
