"""Turn users' own images (photos, scans, canvas drawings) into MNIST-style 28x28 inputs.

MNIST digits are white ink on black, size-normalised to fit a 20x20 box keeping their aspect
ratio (anti-aliased from bilevel scans) and placed in a 28x28 field with their centre of mass
at the centre. `to_mnist` rebuilds that recipe from an arbitrary image: it finds the ink
whatever its polarity, lighting or background, keeps the components that form the digit,
redraws them at MNIST's scale and stroke thickness, and centres them by mass.

No TensorFlow here: `digitnet predict` imports this module before it needs a model.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitnet.errors import DigitnetError

MAX_PIXELS = 50_000_000  # larger images are refused before any pixel is decoded
WORK_SIDE = 512  # heavy steps run on a copy whose long side is at most this
BACKGROUND_SIDE = 64  # the paper's lighting is smooth: estimate it on a thumbnail this size
SHAPE_SIDE = 80  # the digit is binarised and re-thickened at 4x MNIST's 20-px box
DIGIT_BOX = 20  # MNIST: the digit's longer side
FIELD = 28  # MNIST: the image side
CENTRE = 14.0  # MNIST's mean centre of mass (row and column, pixel-index coordinates)
STROKE_RANGE = (6.5, 16.5)  # MNIST's 5th-95th percentile stroke width at SHAPE_SIDE scale
STROKE_TARGET = 10.0  # MNIST's median stroke width at SHAPE_SIDE scale
UNIFORM_INK_STD = 0.15  # opaque pixels this uniform in colour: the alpha is the drawing
MIN_CONTRAST = 0.12  # weaker ink than this (fraction of paper brightness) is no ink at all
LINE_SPAN = 0.9  # a ruled line crosses at least this fraction of the image
MIN_DIGIT = 0.025  # a digit's long side is at least this fraction of the image's: not a speck
PAGE_DIGIT = 0.1  # ... and at least this when something runs along the image's edge
MIN_PIECE = 0.04  # a component smaller than this fraction of the largest is a speck
PARALLEL_MIN = 64  # fewer files than this are preprocessed in this process
CHUNKS_PER_WORKER = 4  # a batch is split into this many chunks per worker: balanced loads
SVG_SUFFIXES = (".svg", ".svgz")
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
    gray = grayscale(image)
    if has_light_ink(gray):
        gray = 1.0 - gray
    ink = flatten_background(gray)
    mask = select_digit(segment(ink))
    shape = digit_shape(ink, mask) if mask.any() else mask
    if not shape.any():
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
    """Resize a float array to (width, height): area-averaging down, and up either bilinear
    (`smooth`) or by repeating pixels (as an area average would)."""
    values = np.asarray(values, np.float32)
    if size[0] <= values.shape[1] and size[1] <= values.shape[0]:
        method = cv2.INTER_AREA
    else:  # INTER_AREA would enlarge bilinearly; pixel-centre-exact nearest instead
        method = cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST_EXACT
    return cv2.resize(values, size, interpolation=method)


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


def percentiles(values: np.ndarray, percents: tuple[float, ...]) -> np.ndarray:
    """np.percentile's default (linear) percentiles, by partial sorting: several times faster.

    np.percentile spends tens of microseconds on checks and dispatch, more than the sort
    itself for the small images that batches of MNIST-like files are made of.
    """
    flat = values.ravel()
    positions = np.asarray(percents, np.float64) / 100 * (flat.size - 1)
    low = positions.astype(np.intp)
    high = np.minimum(low + 1, flat.size - 1)
    ordered = np.partition(flat, np.union1d(low, high))
    below, above = ordered[low].astype(np.float64), ordered[high].astype(np.float64)
    return below + (above - below) * (positions - low)


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1]: how much darker than the local paper each pixel is.

    Dividing by the paper's own brightness removes shadows, uneven lighting and coloured
    paper, and makes faint pencil and bold marker comparable.
    """
    paper = estimate_paper(gray)
    ink = (paper - gray) / np.maximum(paper, np.float32(1e-3))
    return np.clip(ink, 0.0, 1.0, out=ink).astype(np.float32, copy=False)


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
    square = np.ones((size, size), np.uint8)
    dilated = cv2.dilate(values, square, anchor=((size - 1) // 2,) * 2,
                         borderType=cv2.BORDER_REPLICATE)
    return cv2.erode(dilated, square, anchor=(size // 2,) * 2, borderType=cv2.BORDER_REPLICATE)


def segment(ink: np.ndarray) -> np.ndarray:
    """The ink pixels: Otsu's threshold with hysteresis, above the paper's noise, no lines.

    The threshold ignores the image's edge strip, where a scanner's shadow or the paper's edge
    can be darker than the whole digit. Pixels above half the threshold are kept when
    connected to ones above it, so that faint pencil and thin anti-aliased strokes stay whole.
    """
    interior = some_rows(ink[edge_strip(ink.shape)])
    if interior.size == 0 or percentiles(interior, (99.9,))[0] < MIN_CONTRAST:
        return np.zeros(ink.shape, bool)
    otsu = otsu_threshold(interior)
    threshold = max(otsu, noise_floor(interior, otsu), MIN_CONTRAST)
    weak = remove_lines(ink > threshold / 2)
    count, labels = cv2.connectedComponents(weak.view(np.uint8), connectivity=8,
                                            ltype=cv2.CV_32S)
    return pick(labels, count, labels[ink > threshold])


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
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * BIN_CENTRES)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    return float(np.argmax(np.nan_to_num(between[:-1], nan=-1.0)) + 1) / 256


def noise_floor(ink: np.ndarray, otsu: float) -> float:
    """A level the paper's grain and JPEG noise rarely reach: the paper's median + 6 sigmas.

    Sigma comes from differences between neighbouring pixels, which flat paper and solid ink
    alike leave near zero, so it holds however much of the image the ink covers.
    """
    steps = np.abs(np.diff(ink, axis=1))
    sigma = 1.4826 * float(percentiles(steps, (50,))[0]) / math.sqrt(2) if steps.size else math.nan
    paper = ink[ink <= otsu]
    return (float(percentiles(paper, (50,))[0]) if paper.size else 0.0) + 6 * sigma


def remove_lines(mask: np.ndarray) -> np.ndarray:
    """Erase ruled or grid lines (horizontal and vertical), bridging strokes that crossed them."""
    return remove_row_lines(remove_row_lines(mask.T).T)


def remove_row_lines(mask: np.ndarray) -> np.ndarray:
    """Erase horizontal lines when there are several: long, thin, parallel runs of ink.

    Ruled lines run from edge to edge and ruled paper shows two or more of them, while a
    digit's bars (a 7's, a 4's) stop short of the edges or come alone.
    """
    height, width = mask.shape
    if mask.sum(axis=1).max(initial=0) < LINE_SPAN * width:
        return mask  # no row holds enough ink for a line: the common case, checked cheaply
    long_runs = np.ascontiguousarray(runs_at_least(mask, LINE_SPAN * width), np.uint8)
    count, lines, stats, _ = cv2.connectedComponentsWithStats(long_runs, connectivity=8,
                                                              ltype=cv2.CV_32S)
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


def select_digit(mask: np.ndarray) -> np.ndarray:
    """The components that form the digit: the largest, and pieces of it nearby.

    Not specks, nor lines hugging the image's edge (a scanner's shadow, the paper's edge),
    nor, unless there is nothing else, what lies beyond the page (a table, a dark frame).
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    boxes = component_boxes(stats)
    sizes = stats[:, cv2.CC_STAT_AREA].astype(float)
    sizes[0] = 0
    sizes[edge_lines(labels, count)] = 0
    on_page = sizes.copy()
    on_page[surroundings(labels, count, stats)] = 0
    main = largest(on_page, boxes)
    if not big_enough(boxes[main], main, mask.shape, PAGE_DIGIT):
        on_page, main = sizes, largest(sizes, boxes)  # then the digit itself runs along the edge
    if not big_enough(boxes[main], main, mask.shape, MIN_DIGIT):
        return np.zeros_like(mask)
    return pick(labels, count, gather_pieces(boxes, on_page, main))


def component_boxes(stats: np.ndarray) -> np.ndarray:
    """Each component's box as (top, left, bottom, right), bottom and right exclusive."""
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    return np.stack([top, left, bottom, right], axis=1)


def largest(sizes: np.ndarray, boxes: np.ndarray) -> int:
    """The label of the largest component; of equal ones, the top-most, then left-most.

    Ties are broken by position, not by label: OpenCV numbers components in an order that
    depends on its algorithm and thread count.
    """
    if sizes.max() <= 0:
        return 0  # nothing left: the background
    best = np.flatnonzero(sizes == sizes.max())
    if len(best) == 1:
        return int(best[0])
    return int(best[np.lexsort((boxes[best, 1], boxes[best, 0]))[0]])


def edge_lines(labels: np.ndarray, count: int) -> np.ndarray:
    """Labels of components lying entirely in the strip along the image's edge."""
    inside = np.bincount(labels[edge_strip(labels.shape)].ravel(), minlength=count)
    return np.flatnonzero(inside[1:] == 0) + 1


def surroundings(labels: np.ndarray, count: int, stats: np.ndarray) -> np.ndarray:
    """Labels of components running along the image's edge for half their extent or more.

    Ink on the page meets the edge, if at all, where a stroke crosses it; a table or frame
    around the page reaches in from beyond and follows the edge.
    """
    heights, widths = stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_WIDTH]
    along = np.zeros(count, bool)
    for edge, extent in ((labels[0], widths), (labels[-1], widths),
                         (labels[:, 0], heights), (labels[:, -1], heights)):
        along |= np.bincount(edge, minlength=count) >= 0.5 * extent
    along[0] = False
    return np.flatnonzero(along)


def big_enough(box, label: int, shape: tuple[int, int], fraction: float) -> bool:
    """Whether a component's long side is at least `fraction` of the image's (and 3 px)."""
    if label == 0:
        return False
    top, left, bottom, right = box
    return max(bottom - top, right - left) >= max(3, fraction * max(shape))


def gather_pieces(boxes: np.ndarray, sizes: np.ndarray, main: int) -> list[int]:
    """Grow from the main component, adding sizeable components near the digit so far."""
    candidates = [int(i) for i in np.flatnonzero(sizes >= MIN_PIECE * sizes[main])]
    if candidates == [main]:
        return candidates  # the common case: nothing else is big enough to be a piece
    digit = tuple(int(edge) for edge in boxes[main])
    keep = {main}
    added = True
    while added:
        added = False
        reach = 0.25 * max(digit[2] - digit[0], digit[3] - digit[1]) + 2
        for label in candidates:
            box = tuple(int(edge) for edge in boxes[label])
            if label not in keep and box_gap(digit, box) <= reach:
                keep.add(label)
                digit = box_union(digit, box)
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
    crop = np.clip(crop / np.float32(percentiles(crop[inside], (90,))[0]), 0.0, 1.0)
    height, width = crop.shape
    scale = SHAPE_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return resize(crop, size, smooth=True) > 0.5 * min(1.0, scale)


def stroke_width(shape: np.ndarray) -> float:
    """Mean stroke width in pixels: a stroke w wide has a mean inner distance of about w/4."""
    inner = distance_to_zero(np.pad(shape, 1))
    return 4 * float(inner[inner > 0].mean(dtype=np.float64)) - 2


def distance_to_zero(mask: np.ndarray) -> np.ndarray:
    """Each pixel's exact Euclidean distance to the nearest False pixel (0 on those)."""
    return cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def normalise_stroke(shape: np.ndarray) -> np.ndarray:
    """Thicken hairlines and thin out bold marker toward MNIST's typical stroke width."""
    width = stroke_width(shape)
    if STROKE_RANGE[0] <= width <= STROKE_RANGE[1]:
        return shape
    radius = (STROKE_TARGET - width) / 2
    padded = np.pad(shape, math.ceil(abs(radius)) + 1)
    if radius > 0:
        return distance_to_zero(~padded) <= radius
    # thinning never removes more than a quarter of the stroke, so thin parts survive
    return distance_to_zero(padded) > min(-radius, width / 4)


def downsample(shape: np.ndarray) -> np.ndarray:
    """Area-average the bilevel digit to a DIGIT_BOX box, anti-aliased as MNIST's were."""
    rows, cols = bounding_box(shape)
    crop = shape[rows, cols].astype(np.float32)
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.clip(resize(crop, size), 0.0, 1.0)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place the digit in the 28x28 field with its centre of mass at MNIST's centre."""
    height, width = digit.shape
    moments = cv2.moments(digit)
    row, col = moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]
    top = int(np.clip(round(CENTRE - row), 0, FIELD - height))
    left = int(np.clip(round(CENTRE - col), 0, FIELD - width))
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top:top + height, left:left + width] = digit
    return field


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
    return to_mnist(load_image(path, draft_side=WORK_SIDE))


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
    paths = [str(p) for p in paths]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < PARALLEL_MIN:
        return [preprocess_or_error(p) for p in paths]
    size = -(-len(paths) // (CHUNKS_PER_WORKER * workers))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    results: list = []
    for arrays, errors in worker_pool(workers).map(preprocess_chunk, chunks):
        results.extend(errors.get(i, array) for i, array in enumerate(arrays))
    return results


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


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool kept for the next batch, so predict pays the start-up only once.

    Workers come from a fork server, not a fork of this process: the caller may have loaded
    TensorFlow, whose threads make forking unsafe. The server imports this module once, before
    it forks, so that no worker spends its first tenth of a second importing it again.
    """
    if workers not in _pools:
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
        else:
            context = multiprocessing.get_context("spawn")
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=context,
                                              initializer=start_worker)
    return _pools[workers]


def start_worker() -> None:
    """Set up a worker process: one OpenCV thread, as the pool already keeps every CPU busy."""
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
