"""Turn users' own images (photos, scans, canvas drawings) into MNIST-style 28x28 inputs.

MNIST digits are white ink on black, size-normalised to fit a 20x20 box keeping their aspect
ratio (anti-aliased from bilevel scans) and placed in a 28x28 field with their centre of mass
at the centre. `to_mnist` rebuilds that recipe from an arbitrary image: it finds the ink
whatever its polarity, lighting or background, keeps the components that form the digit,
redraws them at MNIST's scale and stroke thickness, and centres them by mass.

No TensorFlow here: `digitnet predict` imports this module before it needs a model. The image
operations are OpenCV's and numpy's (quick to import, and in C); the results are those of the
scipy.ndimage and Pillow operations they replaced, to float rounding.
"""

from __future__ import annotations

import atexit
import collections
import functools
import itertools
import math
import multiprocessing
import os
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitnet.errors import DigitnetError

MAX_PIXELS = 50_000_000  # larger images are refused before any pixel is decoded
WORK_SIDE = 512  # heavy steps run on a copy whose long side is at most this
BACKGROUND_SIDE = 64  # the paper's lighting is smooth: estimate it on a thumbnail this size
SMALL_SIDE = 128  # images up to this size are resized by matrix products (see resize)
SHAPE_SIDE = 80  # the digit is binarised and re-thickened at 4x MNIST's 20-px box
DIGIT_BOX = 20  # MNIST: the digit's longer side
FIELD = 28  # MNIST: the image side
CENTRE = 14.0  # MNIST's mean centre of mass (row and column, pixel-index coordinates)
STROKE_RANGE = (6.5, 16.5)  # MNIST's 5th-95th percentile stroke width at SHAPE_SIDE scale
CHAMFER_RANGE = (0.98, 1.02)  # OpenCV's 5x5 chamfer / Euclidean distance: 0.9825-1.0192
STROKE_TARGET = 10.0  # MNIST's median stroke width at SHAPE_SIDE scale
UNIFORM_INK_STD = 0.15  # opaque pixels this uniform in colour: the alpha is the drawing
MIN_CONTRAST = 0.12  # weaker ink than this (fraction of paper brightness) is no ink at all
LINE_SPAN = 0.9  # a ruled line crosses at least this fraction of the image
MIN_DIGIT = 0.025  # a digit's long side is at least this fraction of the image's: not a speck
PAGE_DIGIT = 0.1  # ... and at least this when something runs along the image's edge
MIN_PIECE = 0.04  # a component smaller than this fraction of the largest is a speck
PARALLEL_MIN = 64  # fewer files than this are preprocessed in this process
CHUNK_FILES = 64  # files per task for a worker, at most: enough to amortise the task
CHUNK_SECONDS = 0.03  # ... and about this much work: little left for one worker at the end
QUEUED_CHUNKS = 4  # tasks queued per worker, so that none waits for the caller
SERIAL_SECONDS = 0.2  # work done here while a new pool's fork server starts (about as long)
SVG_SUFFIXES = (".svg", ".svgz")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLAIN_PNG_HEAD = 33  # the signature and the IHDR chunk, which must come first
# chunks that change nothing Pillow makes of a grayscale PNG (tEXt and iTXt may hold XMP
# orientation, iCCP makes libpng print warnings)
PLAIN_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tIME"})
EIGHT_CONNECTED = np.ones((3, 3), np.uint8)  # a structuring element for cv2
BIN_CENTRES = (np.arange(256) + 0.5) / 256  # of the 256 bins of otsu_threshold

_pools: dict[int, ProcessPoolExecutor] = {}


# ---------------------------------------------------------------------------- loading


def load_image(path, draft_side: int | None = None) -> Image.Image:
    """Open an image file safely: checked, decoded in full, upright, first frame only.

    Args:
      path: the image file (str or Path).
      draft_side: if given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, no smaller than
        this on either side: several times faster for phone photos.

    Returns:
      The decoded PIL image in its own mode, with EXIF orientation applied.

    Raises:
      DigitnetError: a one-line message naming the file when it is missing, empty, not an
        image, an SVG, above MAX_PIXELS, truncated or corrupt.
    """
    name = os.fspath(path)  # messages name the file as the user wrote it
    check_file(name)
    try:
        with open_checked(name) as image:
            if draft_side:
                image.draft(image.mode, (draft_side, draft_side))
            image.load()
            return ImageOps.exif_transpose(image)  # a detached copy of the first frame
    except UnidentifiedImageError:
        raise DigitnetError(f"{name}: not an image file (cannot identify image format)") from None
    except Image.DecompressionBombError as err:
        raise DigitnetError(f"{name}: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        raise DigitnetError(f"{name}: truncated or corrupt image ({err})") from None


def check_file(name: str) -> None:
    """Refuse what is not a non-empty, readable, non-SVG file before handing it to Pillow."""
    path = Path(name)
    if not path.exists():
        raise DigitnetError(f"{name}: file not found")
    if path.is_dir():
        raise DigitnetError(f"{name}: is a folder, not an image file")
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError as err:
        raise DigitnetError(f"{name}: cannot read file ({err.strerror})") from None
    if not head:
        raise DigitnetError(f"{name}: file is empty (0 bytes)")
    if path.suffix.lower() in SVG_SUFFIXES or b"<svg" in head.lower():
        raise DigitnetError(f"{name}: SVG is not supported; export it as PNG")


def open_checked(name: str) -> Image.Image:
    """Parse the image's header and refuse it, before decoding, if it claims too many pixels.

    This check, with its clearer message, stands in for Pillow's own decompression-bomb check
    while the header is parsed (nothing large is allocated then); Pillow's is back on after.
    """
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(name)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise DigitnetError(
            f"{name}: image is {width}x{height} = {width * height} pixels, above the limit of "
            f"{MAX_PIXELS} (decompression bomb?)")
    return image


def read_plain_png(name: str) -> np.ndarray | None:
    """The pixels of a plain 8-bit grayscale PNG, decoded by OpenCV in a third of Pillow's time.

    Plain: complete, every chunk's checksum right, not interlaced, and nothing in it that
    Pillow would act on (transparency, EXIF or XMP orientation, text, colour profiles): what
    MNIST-style exports are. Any other file, or any doubt, gives None, and load_image then
    decodes, checks and explains as for every image.
    """
    if name.lower().endswith(SVG_SUFFIXES):
        return None
    try:
        with open(name, "rb") as file:
            data = file.read(PLAIN_PNG_HEAD)
            # the rest only for what may be plain: a JPEG or a colour PNG is left unread
            if not data.startswith(PNG_SIGNATURE) or not plain_png_header(data[16:29]):
                return None
            data += file.read()
    except OSError:
        return None
    if b"<svg" in data[:512].lower():
        return None  # check_file's sniffing, as load_image would do it
    if not plain_png_chunks(memoryview(data)):
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 2 or pixels.dtype != np.uint8:
        return None
    return pixels


def plain_png_chunks(data: memoryview) -> bool:
    """Whether a PNG file's chunks are those of a plain 8-bit grayscale image (see above)."""
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = bytes(data[position + 4:position + 8])
        end = position + 12 + length
        if end > len(data) or kind not in PLAIN_PNG_CHUNKS:
            return False
        if zlib.crc32(data[position + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return False
        if position == len(PNG_SIGNATURE) and not plain_png_header(data[position + 8:end - 4]):
            return False
        if kind == b"IEND":
            return True
        position = end
    return False  # truncated: no IEND


def plain_png_header(header: bytes | memoryview) -> bool:
    """Whether an IHDR chunk's data describes a plain 8-bit grayscale image within MAX_PIXELS."""
    if len(header) != 13:
        return False
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, _, _, interlace = header[8:13]
    return depth == 8 and colour == 0 and not interlace and 0 < width * height <= MAX_PIXELS


# ------------------------------------------------------------------------- to_mnist


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
    if has_light_ink(gray):
        gray = 1.0 - gray
    ink = flatten_background(gray)
    pieces = segment(ink)
    mask = select_digit(pieces) if pieces else None
    shape = digit_shape(ink, mask) if mask is not None else None
    if shape is None or not shape.any():
        return np.zeros((FIELD, FIELD), np.float32)
    return centre_by_mass(downsample(normalise_stroke(shape)))


def grayscale(image: Image.Image) -> np.ndarray:
    """Brightness in [0, 1] at most WORK_SIDE long, transparency resolved per image."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return shrink(stretch(np.asarray(image.convert("F"), np.float32)))
    if not image.has_transparency_data:
        return shrink(np.asarray(as_mode(image, "L"), np.float32) / 255.0)
    lum, alpha = np.moveaxis(np.asarray(as_mode(image, "LA"), np.float32) / 255.0, -1, 0)
    # premultiplied, so that shrinking does not bleed the colour of transparent pixels in
    return composite(shrink(lum * alpha), shrink(alpha))


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image.convert(mode)`, through RGB(A) for modes Pillow cannot convert directly."""
    if image.mode == mode:
        return image  # convert() would copy it
    try:
        return image.convert(mode)
    except ValueError:
        return image.convert("RGBA" if "A" in mode else "RGB").convert(mode)


def stretch(values: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth image's own finite range onto [0, 1]; a flat one becomes zeros."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() == finite.max():
        return np.zeros_like(values)
    low, high = float(finite.min()), float(finite.max())
    return np.nan_to_num(np.clip((values - low) / (high - low), 0.0, 1.0), nan=0.0)


def shrink(values: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Area-average a float image down so that its long side is at most `side`."""
    height, width = values.shape
    scale = side / max(height, width)
    if scale >= 1:
        return values
    return resize(values, (max(1, round(width * scale)), max(1, round(height * scale))))


def resize(values: np.ndarray, size: tuple[int, int], smooth: bool = False) -> np.ndarray:
    """Resize a float array to (width, height) as Pillow does: its BOX filter, or its BILINEAR
    one when `smooth` and enlarging.

    Pillow's BOX averages the source pixels whose centres fall in each output pixel, whole,
    not by area as OpenCV's INTER_AREA does. Small images are resized with Pillow's own
    weights as matrices, without its per-call overhead; large ones by Pillow, except a large
    bilinear enlargement (only ever of the paper's smooth brightness), by OpenCV's, 60 times
    quicker. Either way the sums run in another order than Pillow's: the results may differ
    from its in the last bit of a float32, no more.
    """
    values = np.asarray(values, np.float32)
    height, width = values.shape
    smooth = smooth and size[0] >= width and size[1] >= height
    if max(height, width, *size) <= SMALL_SIDE:
        # two passes, the first stored in float32 as Pillow stores it
        across = (values @ pillow_weights(width, size[0], smooth).T).astype(np.float32)
        return (pillow_weights(height, size[1], smooth) @ across).astype(np.float32)
    if smooth:
        return cv2.resize(values, size, interpolation=cv2.INTER_LINEAR)
    return np.asarray(Image.fromarray(values).resize(size, Image.Resampling.BOX))


@functools.lru_cache(maxsize=4096)
def pillow_weights(source: int, target: int, bilinear: bool) -> np.ndarray:
    """Pillow's resampling weights from `source` to `target` pixels, a (target, source) matrix.

    The arithmetic of Pillow's precompute_coeffs (Resample.c), step for step, so that the
    weights are its very doubles: BOX takes the source pixels whose centres lie in (centre -
    scale / 2, centre + scale / 2], BILINEAR weighs them by a triangle; both are normalised.
    """
    scale = source / target
    widen = max(scale, 1.0)  # the filter widens with the reduction
    support = (1.0 if bilinear else 0.5) * widen
    step = 1.0 / widen
    weights = np.zeros((target, source))
    for index in range(target):
        centre = (index + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), source)
        row = [pillow_filter((pixel - centre + 0.5) * step, bilinear)
               for pixel in range(first, stop)]
        total = 0.0
        for weight in row:
            total += weight
        if total != 0.0:
            weights[index, first:stop] = [weight / total for weight in row]
    weights.flags.writeable = False  # shared by every call through the cache
    return weights


def pillow_filter(offset: float, bilinear: bool) -> float:
    """Pillow's box or bilinear (triangle) filter at an offset in output pixels."""
    if bilinear:
        return max(0.0, 1.0 - abs(offset))
    return 1.0 if -0.5 < offset <= 0.5 else 0.0


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


def has_light_ink(gray: np.ndarray) -> bool:
    """Whether the ink is lighter than the paper (white-on-black canvas, chalk on a board).

    The paper is the majority, so its level is the median; the ink is the tail that lies
    farthest from it. No fixed threshold: dark ink on dark-grey paper is still dark ink.
    """
    darkest, paper, lightest = percentiles(some_rows(gray), (0.1, 50, 99.9))
    return lightest - paper > paper - darkest


def percentiles(values: np.ndarray, percents: tuple[float, ...]) -> list[float]:
    """np.percentile(values, [p, ...]) of a float32 array, bit for bit, in a fraction of its time.

    np.percentile spends tens of microseconds on checks and dispatch, more than the partial
    sort itself on the small images that batches of MNIST-like files are made of. With a list
    of percents it interpolates in float64 from float32 neighbours; so does this.
    """
    ordered, spots = neighbours(values, percents)
    results = []
    for below, above, fraction in spots:
        step = float(ordered[above] - ordered[below])  # a float32 difference, as numpy's
        results.append(float(ordered[above]) - step * (1 - fraction) if fraction >= 0.5
                       else float(ordered[below]) + step * fraction)
    return results


def percentile(values: np.ndarray, percent: float) -> np.floating:
    """np.percentile(values, percent) for a single percent: numpy interpolates in the array's
    own float32 then, and returns a float32, which compares with a Python float as one."""
    ordered, ((below, above, fraction),) = neighbours(values, (percent,))
    step = ordered[above] - ordered[below]
    if fraction >= 0.5:
        return ordered[above] - step * (1 - fraction)
    return ordered[below] + step * fraction


def neighbours(values: np.ndarray, percents) -> tuple[np.ndarray, list[tuple]]:
    """The values partially sorted, and for each percent the ranks either side of it and how
    far between them it lies (np.percentile's linear method)."""
    flat = values.ravel()
    last = flat.size - 1
    spots = []
    for percent in percents:
        position = last * (percent / 100)
        below = int(position)
        spots.append((below, min(below + 1, last), position - below))
    ranks = sorted({rank for below, above, _ in spots for rank in (below, above)})
    return np.partition(flat, ranks), spots


def median(values: np.ndarray) -> float:
    """np.median(values) of a float32 array, bit for bit: the middle value, or the float32
    mean of the two middle ones."""
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return float(np.partition(flat, half)[half])
    ordered = np.partition(flat, [half - 1, half])
    return float((ordered[half - 1] + ordered[half]) / 2)


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1]: how much darker than the local paper each pixel is.

    Dividing by the paper's own brightness removes shadows, uneven lighting and coloured
    paper, and makes faint pencil and bold marker comparable.
    """
    paper = estimate_paper(gray)
    ink = (paper - gray) / np.maximum(paper, np.float32(1e-3))
    return unit_range(ink.astype(np.float32, copy=False))


def estimate_paper(gray: np.ndarray) -> np.ndarray:
    """The paper's brightness under the ink: a grey closing of a thumbnail, scaled back up.

    The closing is a third of the image wide, so it removes any stroke narrower than that,
    even in a tightly cropped digit; lighting varies slowly enough to survive it.
    """
    thumb = np.asarray(shrink(gray, BACKGROUND_SIDE), np.float32)
    paper = grey_closing(thumb, max(3, max(thumb.shape) // 3))
    paper = cv2.blur(paper, (3, 3), borderType=cv2.BORDER_REPLICATE)
    if paper.shape == gray.shape:
        return paper
    return resize(paper, (gray.shape[1], gray.shape[0]), smooth=True)


def grey_closing(values: np.ndarray, size: int) -> np.ndarray:
    """A grey closing by a size x size square, edges extended (scipy's mode="nearest").

    The erosion's window is the dilation's reflected, which matters for an even size.
    """
    square = square_kernel(size)
    dilated = cv2.dilate(values, square, anchor=((size - 1) // 2,) * 2,
                         borderType=cv2.BORDER_REPLICATE)
    return cv2.erode(dilated, square, anchor=(size // 2,) * 2, borderType=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=64)
def square_kernel(size: int) -> np.ndarray:
    """A size x size structuring element of ones, made once."""
    return np.ones((size, size), np.uint8)


def segment(ink: np.ndarray) -> Pieces | None:
    """The ink's pieces: Otsu's threshold with hysteresis, above the paper's noise, no lines.

    The threshold ignores the image's edge strip, where a scanner's shadow or the paper's edge
    can be darker than the whole digit. Pixels above half the threshold are kept when
    connected to ones above it, so that faint pencil and thin anti-aliased strokes stay whole.

    Returns:
      The connected components of the pixels above half the threshold, those reaching above
      it marked `strong` (the ink); None when the image holds no ink at all.
    """
    interior = some_rows(ink[edge_strip(ink.shape)])
    if interior.size == 0 or percentile(interior, 99.9) < MIN_CONTRAST:
        return None
    otsu = otsu_threshold(interior)
    threshold = max(otsu, noise_floor(interior, otsu), MIN_CONTRAST)
    weak = remove_lines(ink > threshold / 2)
    count, labels, stats = label_components(weak)
    strong = np.zeros(count, bool)
    strong[labels[ink > threshold]] = True
    strong[0] = False  # a strong pixel on an erased line
    return Pieces(labels, stats, strong)


def label_components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Label a mask's 8-connected components: their count (the background's label 0 included),
    the labels, and OpenCV's stats per label (box and area).

    BBDT computes the stats three times quicker than OpenCV's default algorithm; the labels'
    order differs between algorithms, so nothing here depends on it.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        np.ascontiguousarray(mask).view(np.uint8), 8, cv2.CV_32S, cv2.CCL_BBDT)
    return count, labels, stats


class Pieces(NamedTuple):
    """Connected components: labels (0 for none), OpenCV's stats per label, which are ink."""

    labels: np.ndarray
    stats: np.ndarray
    strong: np.ndarray


def some_rows(values: np.ndarray, limit: int = 65536) -> np.ndarray:
    """Every n-th row, about `limit` pixels in all: enough for robust statistics, and quick."""
    return values[::max(1, values.size // limit)]


def pick(labels: np.ndarray, count: int, chosen) -> np.ndarray:
    """The pixels whose label is among `chosen`; label 0, the background, never is.

    `count` is the number of labels, the background's included (as OpenCV counts them).
    """
    table = np.zeros(count, bool)
    table[chosen] = True
    table[0] = False
    return table[labels]


def edge_strip(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The image without a strip along its edge 4% of its shorter side wide."""
    height, width = shape
    strip = max(2, round(0.04 * min(height, width)))
    return slice(strip, height - strip), slice(strip, width - strip)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1]: the split maximising between-class variance."""
    bins = np.minimum(values * 256, 255).astype(np.intp)
    counts = np.bincount(bins.ravel(), minlength=256)
    filled = counts.nonzero()[0]
    # splits below the first filled bin or from the last one leave a class empty
    first, last = int(filled[0]), int(filled[-1])
    if first == last:
        return 1 / 256
    weight = counts.cumsum()
    mass = (counts * BIN_CENTRES).cumsum()
    total, total_mass = weight[-1], mass[-1]
    weight, mass = weight[first:last], mass[first:last]
    mean_low = mass / weight
    mean_high = (total_mass - mass) / (total - weight)
    between = weight * (total - weight) * (mean_low - mean_high) ** 2
    return float(between.argmax() + first + 1) / 256


def noise_floor(ink: np.ndarray, otsu: float) -> float:
    """A level the paper's grain and JPEG noise rarely reach: the paper's median + 6 sigmas.

    Sigma comes from differences between neighbouring pixels, which flat paper and solid ink
    alike leave near zero, so it holds however much of the image the ink covers.
    """
    sigma = math.nan  # then the other terms decide (as a median of nothing did before)
    if ink.shape[1] > 1:
        steps = cv2.absdiff(ink[:, 1:], ink[:, :-1])  # np.abs(np.diff(ink)), in one call
        sigma = 1.4826 * median(steps) / math.sqrt(2)
    paper = ink[ink <= otsu]
    return (median(paper) if paper.size else 0.0) + 6 * sigma


def remove_lines(mask: np.ndarray) -> np.ndarray:
    """Erase ruled or grid lines (horizontal and vertical), bridging strokes that crossed them."""
    height, width = mask.shape
    if longest_line(mask, 0) >= LINE_SPAN * height:  # a column holds enough ink for a line
        mask = remove_row_lines(mask.T).T
    if longest_line(mask, 1) >= LINE_SPAN * width:
        mask = remove_row_lines(mask)
    return mask


def longest_line(mask: np.ndarray, axis: int) -> int:
    """The most ink pixels in one column (axis 0) or row (axis 1): a quick test for lines."""
    ink = np.ascontiguousarray(mask).view(np.uint8)
    return int(cv2.reduce(ink, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).max())


def remove_row_lines(mask: np.ndarray) -> np.ndarray:
    """Erase horizontal lines when there are several: long, thin, parallel runs of ink.

    Ruled lines run from edge to edge and ruled paper shows two or more of them, while a
    digit's bars (a 7's, a 4's) stop short of the edges or come alone.
    """
    height, width = mask.shape
    if mask.sum(axis=1).max(initial=0) < LINE_SPAN * width:
        return mask  # no row holds enough ink for a line: the common case, checked cheaply
    long_runs = np.ascontiguousarray(runs_at_least(mask, LINE_SPAN * width), np.uint8)
    count, lines, stats = label_components(long_runs)
    thickness = max(2, round(0.04 * height))
    thin = np.flatnonzero(stats[1:, cv2.CC_STAT_HEIGHT] <= thickness) + 1
    if len(thin) < 2:
        return mask
    line = pick(lines, count, thin)
    rest = mask & ~line
    # where a stroke crosses a line, ink above and below it closes the gap (nothing beyond
    # the image's edge does: scipy's binary_closing, border 0)
    column = np.ones((2 * thickness + 1, 1), np.uint8)
    closed = cv2.morphologyEx(np.ascontiguousarray(rest, np.uint8), cv2.MORPH_CLOSE, column,
                              borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return rest | (closed.astype(bool) & line)


def runs_at_least(mask: np.ndarray, length: float) -> np.ndarray:
    """The pixels of horizontal runs of ink at least `length` long."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)  # +1 where a run starts, -1 just past its end
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]  # row-major order: the i-th end closes the i-th start
    long = ends - starts >= length
    edges = np.zeros((height, width + 1), np.int8)
    edges[rows[long], starts[long]] = 1
    edges[rows[long], ends[long]] = -1
    return np.cumsum(edges, axis=1, dtype=np.int8)[:, :width] > 0


def select_digit(pieces: Pieces) -> np.ndarray | None:
    """The ink components that form the digit: the largest, and pieces of it nearby.

    Not specks, nor lines hugging the image's edge (a scanner's shadow, the paper's edge),
    nor, unless there is nothing else, what lies beyond the page (a table, a dark frame).
    Returns the digit's mask, or None when no component is big enough to be one.
    """
    labels, stats, strong = pieces
    areas = stats[:, cv2.CC_STAT_AREA]
    sizes = np.where(strong, areas, 0).astype(float)
    sizes[edge_lines(labels, areas, strong)] = 0
    on_page = sizes.copy()
    on_page[surroundings(labels, stats)] = 0
    main = largest(on_page, stats)
    if not big_enough(stats, main, labels.shape, PAGE_DIGIT):
        on_page, main = sizes, largest(sizes, stats)  # then the digit itself runs along the edge
    if not big_enough(stats, main, labels.shape, MIN_DIGIT):
        return None
    return pick(labels, len(stats), gather_pieces(stats, on_page, main))


def box(stats: np.ndarray, label: int) -> tuple[int, int, int, int]:
    """A component's box as (top, left, bottom, right), bottom and right exclusive."""
    left, top, width, height = stats[label, :4].tolist()
    return top, left, top + height, left + width


def largest(sizes: np.ndarray, stats: np.ndarray) -> int:
    """The label of the largest component; of equal ones, the top-most, then left-most.

    Ties are broken by position, not by label: OpenCV numbers components in an order that
    depends on its algorithm and thread count.
    """
    biggest = sizes.max()
    if biggest <= 0:
        return 0  # nothing left: the background
    best = (sizes == biggest).nonzero()[0]
    if len(best) == 1:
        return int(best[0])
    order = np.lexsort((stats[best, cv2.CC_STAT_LEFT], stats[best, cv2.CC_STAT_TOP]))
    return int(best[order[0]])


def edge_lines(labels: np.ndarray, areas: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Labels of ink components lying entirely in the strip along the image's edge."""
    rows, cols = edge_strip(labels.shape)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return strong.nonzero()[0]  # the strip is the whole image
    bands = (labels[:rows.start], labels[rows.stop:], labels[rows, :cols.start],
             labels[rows, cols.stop:])  # the strip's pixels, each once: fewer than inside it
    in_strip = sum(np.bincount(band.ravel(), minlength=len(strong)) for band in bands)
    return ((in_strip == areas) & strong).nonzero()[0]


def surroundings(labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Labels of components running along the image's edge for half their extent or more.

    Ink on the page meets the edge, if at all, where a stroke crosses it; a table or frame
    around the page reaches in from beyond and follows the edge.
    """
    edges = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
    if not any(edge.any() for edge in edges):
        return np.zeros(0, np.intp)  # nothing touches the edge: the common case
    heights, widths = stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_WIDTH]
    along = np.zeros(len(stats), bool)
    for edge, extent in zip(edges, (widths, widths, heights, heights)):
        along |= np.bincount(edge, minlength=len(stats)) >= 0.5 * extent
    along[0] = False
    return along.nonzero()[0]


def big_enough(stats: np.ndarray, label: int, shape: tuple[int, int], fraction: float) -> bool:
    """Whether a component's long side is at least `fraction` of the image's (and 3 px)."""
    if label == 0:
        return False
    long_side = max(stats[label, cv2.CC_STAT_WIDTH], stats[label, cv2.CC_STAT_HEIGHT])
    return long_side >= max(3, fraction * max(shape))


def gather_pieces(stats: np.ndarray, sizes: np.ndarray, main: int) -> list[int]:
    """Grow from the main component, adding sizeable components near the digit so far."""
    candidates = (sizes >= MIN_PIECE * sizes[main]).nonzero()[0].tolist()
    if len(candidates) == 1:
        return candidates  # the common case: nothing but the main component is big enough
    digit = box(stats, main)
    keep = {main}
    added = True
    while added:
        added = False
        reach = 0.25 * max(digit[2] - digit[0], digit[3] - digit[1]) + 2
        for label in candidates:
            other = box(stats, label)
            if label not in keep and box_gap(digit, other) <= reach:
                keep.add(label)
                digit = box_union(digit, other)
                added = True
    return sorted(keep)


def box_gap(a: tuple, b: tuple) -> int:
    """Pixels between two boxes along the wider axis gap; 0 when they touch or overlap."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3], 0)


def box_union(a: tuple, b: tuple) -> tuple[int, int, int, int]:
    """The smallest box holding both boxes."""
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


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


def stroke_width(shape: np.ndarray) -> float:
    """Mean stroke width in pixels: a stroke w wide has a mean inner distance of about w/4."""
    inner = distance_to_zero(pad(shape, 1))
    return 4 * float(inner.sum(dtype=np.float64)) / np.count_nonzero(inner) - 2


def pad(mask: np.ndarray, width: int) -> np.ndarray:
    """A bool mask with `width` False pixels around it (np.pad's result, a tenth of its time)."""
    height, breadth = mask.shape
    padded = np.zeros((height + 2 * width, breadth + 2 * width), bool)
    padded[width:width + height, width:width + breadth] = mask
    return padded


def unit_range(values: np.ndarray) -> np.ndarray:
    """Clip a new float array to [0, 1] in place (np.clip's result, without its overhead)."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)


def distance_to_zero(mask: np.ndarray) -> np.ndarray:
    """Each pixel's exact Euclidean distance to the nearest False pixel (0 on those)."""
    return cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


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


# ------------------------------------------------------------------------ files


def preprocess_file(path) -> np.ndarray:
    """Load one image file and preprocess it for the model.

    Args:
      path: the image file.

    Returns:
      The float32 (28, 28) MNIST-style array from to_mnist.

    Raises:
      DigitnetError: the file cannot be read as an image (see load_image).
    """
    name = os.fspath(path)
    pixels = read_plain_png(name)
    if pixels is not None:  # what grayscale() makes of the same pixels, without Pillow
        return gray_to_mnist(shrink(pixels.astype(np.float32) / 255.0))
    return to_mnist(load_image(name, draft_side=WORK_SIDE))


def preprocess_or_error(path) -> np.ndarray | DigitnetError:
    """preprocess_file, returning a user-input error instead of raising it."""
    try:
        return preprocess_file(path)
    except DigitnetError as err:
        return err


def preprocess_files(paths, workers: int | None = None) -> list:
    """Preprocess many image files, in parallel processes when there are many.

    Args:
      paths: image files.
      workers: processes to use; None for one per CPU. Fewer than PARALLEL_MIN files are
        done in this process, where starting workers would cost more than it saves.

    Returns:
      One item per path, in order: the (28, 28) array, or the DigitnetError explaining why
      that file could not be used (returned, not raised, so one bad file spoils nothing).
    """
    return [result for _, result in preprocess_stream(paths, workers)]


def preprocess_stream(paths: Iterable, workers: int | None = None) -> Iterator[tuple]:
    """Preprocess image files as they come, any number of them, keeping the workers busy.

    Args:
      paths: image files, read lazily (a generator over a folder tree, say).
      workers: as for preprocess_files.

    Yields:
      (path as str, array or DigitnetError) for each path, in order. Up to QUEUED_CHUNKS
      chunks per worker are in flight, so the workers go on while the caller uses the
      results, and memory stays bounded however many files there are.
    """
    paths = (str(path) for path in paths)
    head = list(itertools.islice(paths, PARALLEL_MIN))
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(head) < PARALLEL_MIN:
        for path in itertools.chain(head, paths):
            yield path, preprocess_or_error(path)
        return
    started = workers in _pools
    pool = worker_pool(workers)  # a new pool's fork server starts in the background
    rest = itertools.chain(head, paths)
    size = CHUNK_FILES
    if not started:
        # meanwhile, work here: a batch of small files is often done before the workers
        # would have been ready (and then they never are needed)
        began = time.perf_counter()
        done = 0
        for path in rest:
            if time.perf_counter() - began >= SERIAL_SECONDS:
                rest = itertools.chain([path], rest)
                break
            yield path, preprocess_or_error(path)
            done += 1
        # chunks of about CHUNK_SECONDS at the pace seen here: MNIST-size files go many to a
        # task, photos few, so that neither worker is left with a long last chunk
        pace = (time.perf_counter() - began) / max(done, 1)
        size = max(1, min(CHUNK_FILES, round(CHUNK_SECONDS / pace)))
    pending: collections.deque = collections.deque()
    for chunk in chunks(rest, size):
        pending.append((chunk, pool.submit(preprocess_chunk, chunk)))
        if len(pending) > QUEUED_CHUNKS * workers:
            yield from unpack(*pending.popleft())
    while pending:
        yield from unpack(*pending.popleft())


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last one shorter)."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def preprocess_chunk(paths: list[str]) -> tuple[np.ndarray, dict[int, DigitnetError]]:
    """preprocess_or_error over many files, packed for the trip back from a worker process.

    One (N, 28, 28) array and the errors by position pickle far quicker than N arrays.
    """
    arrays = np.zeros((len(paths), FIELD, FIELD), np.float32)
    errors = {}
    for index, path in enumerate(paths):
        result = preprocess_or_error(path)
        if isinstance(result, DigitnetError):
            errors[index] = result
        else:
            arrays[index] = result
    return arrays, errors


def unpack(paths: list[str], future) -> Iterator[tuple]:
    """(path, array or error) for each file of a chunk, once its worker has finished it."""
    arrays, errors = future.result()
    for index, path in enumerate(paths):
        yield path, errors.get(index, arrays[index])


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the next batch, so predict pays the start-up only once.

    Workers come from a fork server, not a fork of this process: the caller may have loaded
    TensorFlow, whose threads make forking unsafe. The server imports this module once, before
    it forks, so that no worker spends its first tenth of a second importing it again; it is
    started here, and imports while the caller goes on (the workers start at the first task).
    """
    if workers not in _pools:
        # The server starts as `python -c ...`, which would put the current folder first on
        # sys.path: a digitnet.py (or an old checkout) there must not replace this package.
        os.environ.setdefault("PYTHONSAFEPATH", "1")
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["__main__", __name__])
            from multiprocessing import forkserver

            forkserver.ensure_running()
        else:
            context = multiprocessing.get_context("spawn")
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=context,
                                              initializer=start_worker)
    return _pools[workers]


def start_worker() -> None:
    """Set up a worker process: one OpenCV thread, as the pool already keeps every CPU busy.

    The caller's process keeps OpenCV's default, a thread per CPU: one photo at a time is a
    tenth quicker with them (MNIST-size images are too small to be split at all).
    """
    cv2.setNumThreads(1)


@atexit.register
def close_pools() -> None:
    """Stop the kept worker processes when the program ends."""
    for pool in _pools.values():
        pool.shutdown(cancel_futures=True)
    _pools.clear()


def save_preprocessed(array: np.ndarray, path) -> None:
    """Write a preprocessed digit as the 8-bit grayscale 28x28 PNG that the model saw.

    Args:
      array: the (28, 28) or (28, 28, 1) float array in [0, 1] from to_mnist.
      path: the PNG file to write.

    Raises:
      DigitnetError: the file cannot be written.
    """
    pixels = np.round(np.clip(np.squeeze(np.asarray(array, np.float32)), 0, 1) * 255)
    try:
        Image.fromarray(pixels.astype(np.uint8)).save(path, format="PNG")
    except OSError as err:
        raise DigitnetError(f"{path}: cannot write the preprocessed image ({err})") from None
