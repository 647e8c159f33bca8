"""Turn users' own images (photos, scans, canvas drawings) into MNIST-style 28x28 inputs.

MNIST digits are white ink on black, size-normalised to fit a 20x20 box keeping their aspect
ratio (anti-aliased from bilevel scans) and placed in a 28x28 field with their centre of mass
at the centre. `to_mnist` rebuilds that recipe from an arbitrary image: it finds the ink
whatever its polarity, lighting or background, keeps the components that form the digit,
redraws them at MNIST's scale and stroke thickness, and centres them by mass.

The stages, a module each in digitnet.images: decode opens the file safely, ink finds the ink,
selection picks the digit's pieces, this module redraws them MNIST's way (resample resizes as
Pillow does, for all of them), and batch runs many files in worker processes for predict.

No TensorFlow in any of them: `digitnet predict` imports them before it needs a model. The
image operations are OpenCV's and numpy's (quick to import, and in C); the results are those
of the scipy.ndimage and Pillow operations they replaced, to float rounding.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
from PIL import Image

from digitnet.images.decode import (
    SVG_SUFFIXES,
    load_image,
    load_image_bytes,
    plain_png_layers,
    read_plain_png,
)
from digitnet.images.ink import (
    dark_ink,
    distance_to_zero,
    pad,
    percentile,
    segment,
    stroke_width,
)
from digitnet.images.resample import WORK_SIDE, resize, shrink, unit_range
from digitnet.images.selection import select_digit

SHAPE_SIDE = 80  # the digit is binarised and re-thickened at 4x MNIST's 20-px box
DIGIT_BOX = 20  # MNIST: the digit's longer side
FIELD = 28  # MNIST: the image side
CENTRE = 14.0  # MNIST's mean centre of mass (row and column, pixel-index coordinates)
STROKE_RANGE = (6.5, 16.5)  # MNIST's 5th-95th percentile stroke width at SHAPE_SIDE scale
CHAMFER_RANGE = (0.98, 1.02)  # OpenCV's 5x5 chamfer / Euclidean distance: 0.9825-1.0192
STROKE_TARGET = 10.0  # MNIST's median stroke width at SHAPE_SIDE scale
SLANT_RANGE = (-0.67, 0.43)  # MNIST's 2.5th-97.5th percentile slant (x per row; < 0 leans right)
UNIFORM_INK_STD = 0.15  # opaque pixels this uniform in colour: the alpha is the drawing
EIGHT_CONNECTED = np.ones((3, 3), np.uint8)  # a structuring element for cv2


def preprocess_file(path) -> np.ndarray:
    """Load one image file and preprocess it for the model: the pipeline's entry for files
    (preprocess_bytes is the same for an image held in memory).

    Args:
      path: the image file.

    Returns:
      The float32 (28, 28) MNIST-style array from to_mnist.

    Raises:
      DigitnetError: the file cannot be read as an image (see load_image).
    """
    name = os.fspath(path)
    pixels = read_plain_png(name)  # a plain grayscale PNG: OpenCV, a third of Pillow's time
    if pixels is not None:
        return gray_to_mnist(layers_to_gray(pixels))
    return to_mnist(load_image(name, draft_side=WORK_SIDE))


def preprocess_bytes(data: bytes, name: str) -> np.ndarray:
    """preprocess_file for an image held in memory (an upload): the same array, same errors.

    Args:
      data: the encoded image file's bytes.
      name: what error messages call it.

    Raises:
      DigitnetError: the bytes are not a usable image (see load_image_bytes).
    """
    layers = plain_png_layers(data) if not name.lower().endswith(SVG_SUFFIXES) else None
    if layers is not None:
        return gray_to_mnist(layers_to_gray(*layers))  # a browser canvas's PNG, say
    return to_mnist(load_image_bytes(data, name, draft_side=WORK_SIDE))


def to_mnist(image: Image.Image) -> np.ndarray:
    """Preprocess one image the way MNIST's digits were: find, crop, scale, thicken, centre.

    Args:
      image: a PIL image in any mode (from load_image); transparency, polarity, lighting,
        size and stroke width are all handled here.

    Returns:
      A float32 array (28, 28) in [0, 1], white ink on black, the digit's longer side 20 px
      and its centre of mass at the centre; all zeros when the image holds no ink.
    """
    return gray_to_mnist(grayscale(image))


def gray_to_mnist(gray: np.ndarray) -> np.ndarray:
    """to_mnist from the image's brightness: floats in [0, 1], at most WORK_SIDE long."""
    ink = dark_ink(gray)
    pieces = segment(ink)
    mask = select_digit(pieces) if pieces else None
    shape = digit_shape(ink, mask) if mask is not None else None
    if shape is None or not shape.any():
        return np.zeros((FIELD, FIELD), np.float32)
    return centre_by_mass(downsample(normalise_stroke(limit_slant(shape))))


def grayscale(image: Image.Image) -> np.ndarray:
    """Brightness in [0, 1] at most WORK_SIDE long, transparency resolved per image."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return shrink(stretch(np.asarray(image.convert("F"), np.float32)))
    if not image.has_transparency_data:
        return layers_to_gray(np.asarray(as_mode(image, "L")))
    pixels = np.asarray(as_mode(image, "LA"))
    return layers_to_gray(pixels[..., 0], pixels[..., 1])


def layers_to_gray(lum: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """grayscale() of an 8-bit image given as its luminance and alpha (None: no transparency).

    The arithmetic is in place: a 49-megapixel image's float copies are 196 MB each."""
    lum = lum.astype(np.float32)
    lum /= 255.0
    if alpha is None or alpha.min() == 255:
        return shrink(lum)  # an opaque alpha: lum * 1.0, and composite would return it as is
    alpha = alpha.astype(np.float32)
    alpha /= 255.0
    # premultiplied, so that shrinking does not bleed the colour of transparent pixels in
    lum *= alpha
    return composite(shrink(lum), shrink(alpha))


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image.convert(mode)`, through RGB(A) for modes Pillow cannot convert directly."""
    if image.mode == mode:
        return image  # convert() would copy it
    try:
        return image.convert(mode)
    except ValueError:
        return image.convert("RGBA" if "A" in mode else "RGB").convert(mode)


def stretch(values: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth image's own finite range onto [0, 1]; a flat one becomes zeros.
    Infinities go to the range's ends, NaN to 0; no float32 arithmetic overflows."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    low = float(values.min(initial=np.inf, where=finite))
    high = float(values.max(initial=-np.inf, where=finite))
    if low == high:
        return np.zeros_like(values)
    if high - low > float(np.finfo(np.float32).max):  # a float TIFF of -3e38..3e38: halved
        values, low, high = values / 2, low / 2, high / 2  # (exactly) the span fits float32
    stretched = values - low
    stretched /= high - low
    np.clip(stretched, 0.0, 1.0, out=stretched)
    return np.nan_to_num(stretched, copy=False, nan=0.0)


def composite(premultiplied: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten a transparent image: its alpha if that is the drawing, else over its paper.

    Canvas drawings are uniform ink on a transparent background whose hidden colour may be
    black or white, so the alpha is the drawing; a photo with transparent margins is not.
    """
    if alpha.min() > 0.98:
        return premultiplied
    opaque = alpha > 0.5
    if not opaque.any():
        return alpha
    colours = premultiplied[opaque] / alpha[opaque]
    if colours.std() < UNIFORM_INK_STD:
        return alpha
    return premultiplied + (1.0 - alpha) * float(np.median(colours))


def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of the smallest box holding a (non-empty) mask's pixels."""
    left, top, width, height = cv2.boundingRect(mask.view(np.uint8))
    return slice(top, top + height), slice(left, left + width)


def digit_shape(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The digit as a bilevel image whose long side is SHAPE_SIDE, as NIST's scans were.

    The cropped ink (with its anti-aliased rim) is scaled to its stroke level and resampled;
    when shrinking, a pixel is ink if it holds about half a source pixel of ink, so that thin
    strokes survive.
    """
    rows, cols = bounding_box(mask)
    inside = mask[rows, cols]
    rim = cv2.dilate(inside.view(np.uint8), EIGHT_CONNECTED).view(bool)
    crop = np.where(rim, ink[rows, cols], np.float32(0))
    crop = unit_range(crop / percentile(crop[inside], 90))
    height, width = crop.shape
    scale = SHAPE_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return resize(crop, size, smooth=True) > 0.5 * min(1.0, scale)


def slant(shape: np.ndarray) -> tuple[float, float]:
    """The digit's slant, as MNIST deskewing measures it: the ink's row-column covariance over
    its row variance (columns per row; below 0 the top leans right), and its mean row."""
    moments = cv2.moments(shape.view(np.uint8), binaryImage=True)
    mean_row = moments["m01"] / moments["m00"]
    if moments["mu02"] == 0:
        return 0.0, mean_row
    return moments["mu11"] / moments["mu02"], mean_row


def limit_slant(shape: np.ndarray) -> np.ndarray:
    """Shear a digit slanted further than MNIST's writers ever slant (SLANT_RANGE) back to the
    edge of that range; a digit within it is left as it is.

    Steeply slanted handwriting is common (and a model trained on MNIST reads it badly), but
    MNIST's own slants are what the model knows, so only the excess is removed.
    """
    measured, mean_row = slant(shape)
    excess = measured - min(max(measured, SLANT_RANGE[0]), SLANT_RANGE[1])
    if excess == 0:
        return shape
    height, width = shape.shape
    # column' = column - excess * (row - mean_row), moved right so that nothing falls off
    ends = [-excess * (row - mean_row) for row in (0, height - 1)]
    offset = -min(ends)
    size = (width + math.ceil(max(ends) + offset) + 1, height)
    matrix = np.float32([[1, -excess, excess * mean_row + offset], [0, 1, 0]])
    sheared = cv2.warpAffine(shape.view(np.uint8) * np.uint8(255), matrix, size,
                             flags=cv2.INTER_LINEAR, borderValue=0)
    return sheared > 127


def surely_typical(shape: np.ndarray) -> bool:
    """Whether the stroke width is within STROKE_RANGE by a margin, measured quickly.

    A 5x5 chamfer distance (a quarter of the exact transform's time) lies within 0.9825 and
    1.0192 times the Euclidean one, and so does its mean; only widths near the range's ends
    need the exact transform, which then decides as before.
    """
    inner = cv2.distanceTransform(pad(shape, 1).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    mean = float(inner.sum(dtype=np.float64)) / np.count_nonzero(inner)
    low, high = mean / CHAMFER_RANGE[1], mean / CHAMFER_RANGE[0]  # bounds of the exact mean
    return STROKE_RANGE[0] <= 4 * low - 2 and 4 * high - 2 <= STROKE_RANGE[1]


def exact(distances: np.ndarray) -> np.ndarray:
    """OpenCV's float32 distances as float64 square roots of whole numbers, as scipy's EDT
    gives them: so that comparisons and means come out exactly as they did with scipy."""
    return np.sqrt(np.rint(np.square(distances, dtype=np.float64)))


def normalise_stroke(shape: np.ndarray) -> np.ndarray:
    """Thicken hairlines and thin out bold marker toward MNIST's typical stroke width."""
    if surely_typical(shape):
        return shape
    width = stroke_width(shape)
    if STROKE_RANGE[0] <= width <= STROKE_RANGE[1]:
        return shape
    radius = (STROKE_TARGET - width) / 2
    padded = pad(shape, math.ceil(abs(radius)) + 1)
    if radius > 0:
        return exact(distance_to_zero(~padded)) <= radius
    # thinning never removes more than a quarter of the stroke, so thin parts survive
    return exact(distance_to_zero(padded)) > min(-radius, width / 4)


def downsample(shape: np.ndarray) -> np.ndarray:
    """Area-average the bilevel digit to a DIGIT_BOX box, anti-aliased as MNIST's were."""
    rows, cols = bounding_box(shape)
    crop = shape[rows, cols].astype(np.float32)
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return unit_range(resize(crop, size))


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place the digit in the 28x28 field with its centre of mass at MNIST's centre."""
    height, width = digit.shape
    row, col = centre_of_mass(digit)
    top = min(max(round(CENTRE - row), 0), FIELD - height)
    left = min(max(round(CENTRE - col), 0), FIELD - width)
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top:top + height, left:left + width] = digit
    return field


def centre_of_mass(values: np.ndarray) -> tuple[float, float]:
    """(row, column) of the mass centre in index coordinates, with scipy's arithmetic, so that
    a centre at exactly half a pixel rounds the same way."""
    total = values.sum()
    rows = np.arange(values.shape[0], dtype=np.float64)[:, None]
    cols = np.arange(values.shape[1], dtype=np.float64)
    return float((values * rows).sum() / total), float((values * cols).sum() / total)
