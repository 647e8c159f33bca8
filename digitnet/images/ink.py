"""Finding the ink in a grey image: its polarity, the paper's lighting flattened out, Otsu's
threshold above the paper's noise, ruled lines erased, and the ink's connected pieces.

A stage of preprocessing (see digitnet.images.preprocess); digitnet.images.selection then picks
the pieces that form the digit. No TensorFlow here.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import cv2
import numpy as np

from digitnet.images.resample import resize, shrink, unit_range

BACKGROUND_SIDE = 64  # the paper's lighting is smooth: estimate it on a thumbnail this size
MIN_CONTRAST = 0.12  # weaker ink than this (fraction of paper brightness) is no ink at all
LINE_SPAN = 0.9  # a ruled line crosses at least this fraction of the image
FRAME_BAND = 0.25  # a printed box's line lies in the outer quarter of the image (or crop) ...
FRAME_SPAN = 0.75  # ... spans at least this fraction of the image's side (an MNIST digit: 0.71) ...
FRAME_TILT = 10.0  # ... within this many degrees of horizontal or vertical ...
FRAME_OVERHANG = 0.08  # ... and runs past the digit at both ends by this fraction of its length
RULED_FILL = 0.5  # a ruled line's ink covers this fraction of the image (a faint one breaks up) ...
RULED_SEED = 0.3  # a stretch this long (of the image's short side) may be part of one ...
RULED_THICKNESS = 0.04  # ... in a band of rows at most this fraction of the image deep (2 px)
BIN_CENTRES = (np.arange(256) + 0.5) / 256  # of the 256 bins of otsu_threshold
CLOSE_TAILS = 0.5  # a dark tail this deep (of the light one's) makes the ink's polarity unclear:
NARROWER = 2.0  # ... then dark ink this many times narrower than the light is the writing ...
STROKE_PIECE = 0.05  # ... then pieces this long (of the image's side) are strokes, not specks
SORT_ALL_BELOW = 4096  # fewer values than this are partially sorted without looking for runs


def dark_ink(gray: np.ndarray) -> np.ndarray:
    """The ink's strength in [0, 1] (flatten_background) read the right way round: of `gray`,
    or of its negative when the ink is lighter than the paper (see ink_polarity)."""
    return ink_polarity(gray)[1]


def has_light_ink(gray: np.ndarray) -> bool:
    """Whether the ink is lighter than the paper (white-on-black canvas, chalk on a board):
    see ink_polarity."""
    return ink_polarity(gray)[0]


def ink_polarity(gray: np.ndarray) -> tuple[bool, np.ndarray]:
    """Whether the ink is lighter than the paper, and the ink's strength read that way round
    (flatten_background of `gray`, or of its negative for light ink); each reading is
    flattened once.

    The paper is the majority, so its level is the median; the ink is the tail that lies
    farthest from it. No fixed threshold: dark ink on dark-grey paper is still dark ink. When
    both tails are deep, the narrower writing decides (see below).
    """
    darkest, paper, lightest = percentiles(some_rows(gray), (0.1, 50, 99.9))
    dark, light = paper - darkest, lightest - paper
    if light <= dark:
        return False, flatten_background(gray)
    if dark < CLOSE_TAILS * light:
        return True, flatten_background(1.0 - gray)  # a canvas's white strokes on black
    # Both tails are deep: a broad region lighter than the paper (what lies beyond a
    # photographed sheet's edge, a glare) can outweigh a fine pen's dark hairlines. Pen
    # strokes are narrow: dark ink that is far narrower than the light "ink" is the writing.
    # (Not the other way round: a felt marker's dark strokes are broad.)
    dark_read, light_read = flatten_background(gray), flatten_background(1.0 - gray)
    if NARROWER * ink_width(dark_read) < ink_width(light_read):
        return False, dark_read
    return True, light_read


def ink_width(ink: np.ndarray) -> float:
    """The mean width in pixels of the strongest ink (above half its 99.9th percentile) in
    `ink`, an ink strength (flatten_background's)."""
    count, labels, stats = label_components(ink > 0.5 * percentile(some_rows(ink), 99.9))
    pieces = np.flatnonzero(long_sides(stats) >= STROKE_PIECE * max(ink.shape))
    if pieces.size == 0:
        return math.inf  # grain and specks only: no strokes in this reading
    return stroke_width(pick(labels, count, pieces.tolist()))


def long_sides(stats: np.ndarray) -> np.ndarray:
    """Each component's longer box side from OpenCV's stats; 0 for the background (label 0),
    which is never a piece."""
    sides = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    sides[0] = 0
    return sides


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


def distance_to_zero(mask: np.ndarray) -> np.ndarray:
    """Each pixel's exact Euclidean distance to the nearest False pixel (0 on those)."""
    return cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


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
    """The values at the ranks either side of each percent (indexable by rank), and for each
    percent those ranks and how far between them it lies (np.percentile's linear method)."""
    flat = values.ravel()
    last = flat.size - 1
    spots = []
    for percent in percents:
        position = last * (percent / 100)
        below = int(position)
        spots.append((below, min(below + 1, last), position - below))
    ranks = sorted({rank for below, above, _ in spots for rank in (below, above)})
    return ranked(flat, ranks), spots


def ranked(flat: np.ndarray, ranks: list[int]) -> np.ndarray | dict[int, np.floating]:
    """The values of a flat array at the given ranks of its sorted order: np.partition's.

    An image is mostly paper, and its ink often saturates: ranks in the runs of values equal
    to the minimum or the maximum need no sorting, and the others only a partial sort of the
    values in between (the ink's rim, a small part), a fraction of the whole one's time.
    """
    if flat.size < SORT_ALL_BELOW or not mostly_runs(flat):
        return np.partition(flat, ranks)
    lowest, highest = flat.min(), flat.max()
    if np.isnan(lowest) or np.isnan(highest):
        return np.partition(flat, ranks)  # numpy sorts NaNs last; nothing equals them
    at_lowest = np.count_nonzero(flat == lowest)  # ranks 0 .. at_lowest - 1 hold the minimum
    first_highest = flat.size - np.count_nonzero(flat == highest)  # and those from here on
    found = {}
    inner = []
    for rank in ranks:
        if rank < at_lowest:
            found[rank] = lowest
        elif rank >= first_highest:
            found[rank] = highest
        else:
            inner.append(rank)
    if inner and first_highest - at_lowest > 0.75 * flat.size:
        return np.partition(flat, ranks)  # few values in runs (a photo): sort them all
    if inner:
        between = flat[(flat > lowest) & (flat < highest)]  # ranks at_lowest .. first_highest - 1
        spots = [rank - at_lowest for rank in inner]
        ordered = np.partition(between, spots)
        found.update((rank, ordered[spot]) for rank, spot in zip(inner, spots))
    return found


def mostly_runs(flat: np.ndarray) -> bool:
    """Whether about a quarter of the values or more equal the minimum or the maximum, judged
    from a thousand of them (a photo's grey levels rarely do: then ranked would only add work)."""
    sample = flat[::max(1, flat.size // 1024)]
    lowest, highest = sample.min(), sample.max()
    return np.count_nonzero((sample > lowest) & (sample < highest)) <= 0.75 * sample.size


def median(values: np.ndarray) -> float:
    """np.median(values) of a float32 array, bit for bit: the middle value, or the float32
    mean of the two middle ones."""
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return float(ranked(flat, [half])[half])
    ordered = ranked(flat, [half - 1, half])
    return float((ordered[half - 1] + ordered[half]) / 2)


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1]: how much darker than the local paper each pixel is.

    Dividing by the paper's own brightness removes shadows, uneven lighting and coloured
    paper, and makes faint pencil and bold marker comparable.
    """
    paper = estimate_paper(gray)  # a new float32 array: written over when gray is float32 too
    floor = np.maximum(paper, np.float32(1e-3))
    ink = np.subtract(paper, gray, out=paper) if gray.dtype == np.float32 else paper - gray
    ink /= floor
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
    return Pieces(labels, stats, strong, ink)


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
    """Connected components: labels (0 for none), OpenCV's stats per label, which are ink, and
    the ink strength they were found in."""

    labels: np.ndarray
    stats: np.ndarray
    strong: np.ndarray
    ink: np.ndarray


def some_rows(values: np.ndarray, limit: int = 65536) -> np.ndarray:
    """Every n-th row, about `limit` pixels in all: enough for robust statistics, and quick."""
    return values[::max(1, values.size // limit)]


def pick(labels: np.ndarray, count: int, chosen) -> np.ndarray:
    """The pixels whose label is among `chosen`; label 0, the background, never is.

    `count` is the number of labels, the background's included (as OpenCV counts them).
    """
    if len(chosen) == 1 and chosen[0] != 0:
        return labels == chosen[0]  # the common case: one comparison, quicker than the table
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
    counts = level_counts(values)
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


def level_counts(values: np.ndarray) -> np.ndarray:
    """How many values in [0, 1] fall in each of 256 equal bins (1.0 in the last), as int64:
    np.bincount's counts, from OpenCV's histogram of the bins as bytes in a tenth of its time."""
    scaled = values * np.float32(256)  # exact: a power of two
    np.minimum(scaled, 255, out=scaled)
    bins = scaled.astype(np.uint8)  # truncated: the bin of each value, as astype(intp) gives it
    return cv2.calcHist([bins], [0], None, [256], [0, 256]).ravel().astype(np.int64)


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
    """Erase the lines of ruled or squared paper and of a printed box around the digit (a cell
    cut from a form or a sheet many people filled in), bridging strokes that crossed them.

    Both are long straight runs of ink within FRAME_TILT degrees of level or upright, found by
    line_segments. Ruled paper shows several parallel lines across the image (ruled_lines:
    however faint, broken or small the digit beside them is); a printed box's line lies near
    the edge and runs past the digit at both of its ends (box_lines). A digit's own bar does
    neither: a 7's or a 5's starts or ends where its other strokes do, and a tightly cropped 1
    leaves no digit beside it.
    """
    height, width = mask.shape
    if min(height, width) < 16 or not spans_a_band(mask):
        return mask  # no ink runs across most of the image: the common case
    found = line_segments(mask)
    if not found:
        return mask
    nothing = np.zeros((height, width), bool)
    erased = {True: (nothing, 0), False: (nothing, 0)}  # {horizontal: (pixels, thickness)}
    for horizontal in (True, False):
        family = [line if horizontal else line._replace(start=line.start[::-1],
                                                        end=line.end[::-1])
                  for line in found if line.horizontal == horizontal]
        if family:
            ruled, thickness = ruled_lines(mask if horizontal else mask.T, family)
            if thickness:
                erased[horizontal] = (ruled if horizontal else ruled.T), thickness
    ruled = erased[True][0] | erased[False][0]
    single = [line for line in found if line.frame and not ruled[line.middle[::-1]]]
    if single:
        for horizontal, (boxed, thickness) in box_lines(mask & ~ruled, single).items():
            lines, thickest = erased[horizontal]
            erased[horizontal] = lines | boxed, max(thickest, thickness)
    if not any(thickness for _, thickness in erased.values()):
        return mask
    return bridge(mask, erased)


def ruled_lines(mask: np.ndarray, family: list[FrameLine]) -> tuple[np.ndarray | None, int]:
    """The pixels of ruled paper's lines along the segments of `family` (level ones: for upright
    lines pass the mask and the segments transposed), and the thickest line's thickness; (None,
    0) when fewer than two are found.

    Each segment is followed across the whole image at its own slope (a photographed page's
    lines are not quite parallel): a ruled line is a band at most RULED_THICKNESS of the image
    deep whose ink covers RULED_FILL of the image's width (a faint line breaks into dashes)
    over LINE_SPAN of it. Two such lines must also run past the rest of the ink at an end (a
    tightly cropped 2's base and bar do not); three or more are paper.

    At most height / 4 lines are found (a line of one row, a row of rim either side and one of
    paper between) and 1 / RULED_THICKNESS seeds fail in each pass: stripes, where every row
    would be a line, or hundreds of random strokes cost no more than a page of lines can.
    """
    height, width = mask.shape
    deep = max(2, round(RULED_THICKNESS * height))
    ys, xs = np.nonzero(mask)  # row-major: ys ascending
    erase = np.zeros((height, width), bool)
    spans, slopes = [], []  # the first two lines' columns (first, last); each line's slope
    found = thickest = 0
    lines, misses = max(2, height // 4), round(1 / RULED_THICKNESS)
    for line in longest_first(family):
        if erase[line.middle[::-1]]:
            continue  # a piece of a line already found
        if found >= lines or not misses:
            break
        (x1, y1), (x2, y2) = line.start, line.end
        slope = (y2 - y1) / (x2 - x1)
        band, thickness = ruled_band(ys, xs, slope, y1 - slope * x1, deep, width)
        if band is not None and mostly_new(erase[ys[band], xs[band]]):
            erase[ys[band], xs[band]] = True
            if found < 2:  # only the first two are looked at again
                spans.append((int(xs[band].min()), int(xs[band].max())))
            found += 1
            slopes.append(slope)
            thickest = max(thickest, thickness)
        else:
            misses -= 1
    if found:  # lines the segments missed (crossed by a digit, say): the others' direction
        misses = round(1 / RULED_THICKNESS)
        slope = float(np.median(slopes))
        left = np.flatnonzero(~erase[ys, xs])  # sought among the pixels not yet erased
        rest_ys, rest_xs = ys[left], xs[left]
        rows = np.rint(rest_ys - slope * rest_xs).astype(np.intp)
        start = int(rows.min(initial=0))
        profile = np.bincount(rows - start)
        for row in profile_peaks(profile, 0.5 * RULED_FILL * width).tolist():
            if found >= lines or not misses:
                break
            band, thickness = ruled_band(rest_ys, rest_xs, slope, row + start, deep, width)
            if band is None or not mostly_new(erase[rest_ys[band], rest_xs[band]]):
                misses -= 1
            else:
                erase[rest_ys[band], rest_xs[band]] = True
                if found < 2:
                    spans.append((int(rest_xs[band].min()), int(rest_xs[band].max())))
                found += 1
                thickest = max(thickest, thickness)
    if found < 2:
        return None, 0
    if found == 2:
        (first, last), (other_first, other_last) = spans
        if not runs_past(mask & ~erase, min(first, other_first), max(last, other_last)):
            return None, 0
    return erase, thickest


def ruled_band(ys: np.ndarray, xs: np.ndarray, slope: float, offset: float, deep: int,
               width: int) -> tuple[np.ndarray | None, int]:
    """Which of the ink pixels (ys, xs) form a ruled line near y = offset + slope * x: the
    band of rows around the density peak nearest the seed (the sharpest of its slope refined by
    a pixel's drift either way) where the ink is at least a third as dense, or two thirds where
    that band is deeper than the line is thick (a stroke lying along it), and a pixel of rim
    either side; None when that band is still too deep, or too sparse or too short for a
    ruled line, and its thickness (the median of its columns' pixels)."""
    seek = 2 + deep // 2  # the seed is within this many rows of the line (the next one may be too)
    margin = seek + deep
    ends = (offset, offset + slope * (width - 1))
    low, high = np.searchsorted(ys, [min(ends) - margin - 2, max(ends) + margin + 3])
    near_ys, near_xs = ys[low:high], xs[low:high]
    across = near_ys - slope * near_xs - (offset - margin)
    best = None
    for step in (-2, -1, 0, 1, 2):  # a pixel's drift across the image, either way
        rows = np.rint(across - (step / width) * near_xs).astype(np.intp)
        inside = (rows >= 0) & (rows <= 2 * margin)
        profile = np.bincount(rows[inside], minlength=2 * margin + 1)
        peak = deep + nearest_peak(profile[deep:deep + 2 * seek + 1])
        if best is None or profile[peak] > best[1][best[2]]:
            best = (rows, profile, peak)
    rows, profile, peak = best
    for share in (3, 1.5):  # rows a third as dense as the peak; else two thirds
        first, last = dense_rows(profile, peak, share)
        if last - first + 1 > deep:
            continue  # a thick stroke lying along the line: its rows are not the line's
        on = (rows >= first - 1) & (rows <= last + 1)  # and a pixel of rim either side
        columns = near_xs[on]
        if (columns.size == 0 or np.ptp(columns) + 1 < LINE_SPAN * width
                or np.count_nonzero(np.bincount(columns, minlength=width)) < RULED_FILL * width):
            break
        per_column = np.bincount(columns)  # the line's own thickness: a stroke on it is thicker
        thickness = int(np.median(per_column[per_column > 0]))
        if last - first + 1 <= thickness + 2:
            band = np.zeros(ys.size, bool)
            band[low:high] = on
            return band, thickness
        # deeper than the line is thick: a stroke lying along a stretch of it widened the band
        # (narrow it), or the seed's slope is not the line's (another seed's will be)
    return None, 0


def dense_rows(profile: np.ndarray, peak: int, share: float) -> tuple[int, int]:
    """The first and last rows of the run around `peak` where the profile is at least
    1/share of the peak's."""
    dense = share * profile >= profile[peak]
    first, last = peak, peak
    while first > 0 and dense[first - 1]:
        first -= 1
    while last < len(profile) - 1 and dense[last + 1]:
        last += 1
    return first, last


def mostly_new(erased: np.ndarray) -> bool:
    """Whether under half of a band's pixels (`erased`: which of them are) belong to lines
    already found: one physical line seeded twice (two Hough segments along a tightly cropped
    7's bar, say) is one ruled line, not two."""
    return 2 * np.count_nonzero(erased) < erased.size


def nearest_peak(window: np.ndarray) -> int:
    """The index of the density peak nearest the middle of `window` (a profile of rows around a
    seed): a local maximum at least two thirds as dense as the densest row (not a row of a
    stroke lying along the line), the denser of two equally near. On squared or college-ruled
    paper the next line lies within the window too, and may be denser; the seed's own line is
    the one nearest it."""
    if not window.size or not window.max():
        return len(window) // 2
    padded = np.concatenate(([-1], window, [-1]))
    peaks = np.flatnonzero((window >= padded[:-2]) & (window >= padded[2:])
                           & (3 * window >= 2 * window.max()))
    middle = (len(window) - 1) / 2
    return int(min(peaks.tolist(), key=lambda at: (abs(at - middle), -window[at])))


def profile_peaks(profile: np.ndarray, least: float) -> np.ndarray:
    """The rows of `profile` at least `least` that are local maxima, one per plateau (its first
    row): on a flat profile (stripes, a black block) every row would otherwise be a peak."""
    padded = np.concatenate(([-1], profile, [-1]))
    rising = profile > padded[:-2]  # a plateau's first row
    # a plateau's end: where it steps down (or the profile ends) after rows level with it
    ends = np.flatnonzero(profile != padded[2:])
    next_change = ends[np.minimum(np.searchsorted(ends, np.arange(profile.size)), ends.size - 1)]
    falls = padded[2:][next_change] < profile
    return np.flatnonzero(rising & falls & (profile >= least))


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


def largest_first(chosen: np.ndarray, sizes: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """The labels `chosen` ordered by size, largest first; of equal ones, the top-most, then
    left-most (as largest breaks ties)."""
    return chosen[np.lexsort((stats[chosen, cv2.CC_STAT_LEFT], stats[chosen, cv2.CC_STAT_TOP],
                              -sizes[chosen]))]


def main_piece(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (left, top, width, height) of the largest piece of `mask` (see largest); None
    when the mask holds no ink."""
    _, _, stats = label_components(mask)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0  # the background
    main = largest(areas, stats)
    return tuple(stats[main, :4].tolist()) if main else None


def overhangs(extent: tuple[int, int], low: int, high: int) -> tuple[bool, bool]:
    """Whether a line along `extent` (first, last) runs past a piece spanning low..high (high
    exclusive) before it and after it, by FRAME_OVERHANG of its length (at least 2 px)."""
    first, last = extent
    reach = max(2.0, FRAME_OVERHANG * (last - first))
    return low - first >= reach, last - high >= reach


def runs_past(rest: np.ndarray, first: int, last: int) -> bool:
    """Whether columns first..last run past the largest piece of `rest` at one end by
    FRAME_OVERHANG of their length (at least 2 px); True when nothing is left."""
    piece = main_piece(rest)
    if piece is None:
        return True
    left, _, breadth, _ = piece
    return any(overhangs((first, last), left, left + breadth))


def box_lines(mask: np.ndarray, lines: list[FrameLine]) -> dict[bool, tuple[np.ndarray, int]]:
    """The pixels of a printed box's lines among `lines` (long lines near the image's edge), and
    the thickest one's thickness, for horizontal (True) and vertical lines: those that run past
    the digit (the largest piece left beside them, when it is digit-sized) at both of its ends.
    Hough finds one thick line as several segments; each is drawn once, or its rim would cut
    into the digit where the line touches it (a tightly cropped 7's bar would then run past
    its stem)."""
    height, width = mask.shape
    bands = np.zeros((height, width), np.uint8)
    for line in longest_first(lines):
        (x1, y1), (x2, y2) = line.start, line.end
        if not (bands[y1, x1] and bands[y2, x2]):  # else a piece of a longer line, drawn
            cv2.line(bands, line.start, line.end, 1, line.thickness)  # its rim cuts the digit
    piece = main_piece(mask & ~bands.view(bool))
    if piece is None:
        return {}
    left, top, breadth, tall = piece
    if max(breadth, tall) < 0.2 * min(height, width):
        return {}  # nothing digit-sized beside the lines: the lines are the digit
    found = {True: (np.zeros((height, width), np.uint8), 0),
             False: (np.zeros((height, width), np.uint8), 0)}
    for line in lines:
        low, high = (left, left + breadth) if line.horizontal else (top, top + tall)
        if all(overhangs(line.extent, low, high)):
            erase, thickest = found[line.horizontal]
            cv2.line(erase, line.start, line.end, 1, line.thickness)
            found[line.horizontal] = erase, max(thickest, line.thickness)
    return {horizontal: (erase.view(bool), thickest)
            for horizontal, (erase, thickest) in found.items() if thickest}


def bridge(mask: np.ndarray, erased: dict[bool, tuple[np.ndarray, int]]) -> np.ndarray:
    """The mask without the erased lines' pixels ({horizontal: (pixels, thickness)}), except
    the pen's: where ink runs across a line further than the line is thick (a stroke crossing
    it, or lying along it and thicker than it), or ink on both sides of it closes the gap (a
    stroke crossing at a slant; nothing beyond the image's edge does)."""
    lines = erased[True][0] | erased[False][0]
    kept = mask & ~lines
    restored = kept.copy()
    for horizontal, (pixels, thickness) in erased.items():
        if thickness:
            size = 2 * thickness + 1
            across = np.ones((size, 1) if horizontal else (1, size), np.uint8)
            closed = cv2.morphologyEx(kept.view(np.uint8), cv2.MORPH_CLOSE, across,
                                      borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
            long = (runs_at_least(mask.T, thickness + 1).T if horizontal
                    else runs_at_least(mask, thickness + 1))
            other = erased[not horizontal][0]  # where lines cross, neither is the pen's
            restored |= (closed | long) & pixels & mask & ~other
    return restored


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


class FrameLine(NamedTuple):
    """A straight run of ink: its ends (x, y), whether it is horizontal, its extent along its
    axis (first, last), and the thickness that covers it when it is long enough to be a box's
    line where it lies (else 0; line_thickness is never 0)."""

    start: tuple[int, int]
    end: tuple[int, int]
    horizontal: bool
    extent: tuple[int, int]
    thickness: int

    @property
    def frame(self) -> bool:
        """Whether it is long enough to be a printed box's line where it lies: only those are
        given a thickness."""
        return self.thickness > 0

    @property
    def middle(self) -> tuple[int, int]:
        """The (x, y) pixel halfway along it."""
        return (self.start[0] + self.end[0]) // 2, (self.start[1] + self.end[1]) // 2


def longest_first(lines: list[FrameLine]) -> list[FrameLine]:
    """The lines sorted by their extent along their axis, longest first (of equal ones, in
    their order)."""
    return sorted(lines, key=lambda line: line.extent[0] - line.extent[1])


def spans_a_band(mask: np.ndarray) -> bool:
    """Whether the ink in one of the image's outer bands covers FRAME_SPAN of its side, or the
    whole image's LINE_SPAN: where line_segments could find a line."""
    height, width = mask.shape
    if (np.count_nonzero(mask.any(axis=0)) < FRAME_SPAN * width
            and np.count_nonzero(mask.any(axis=1)) < FRAME_SPAN * height):
        return False  # no band can span more than the whole image does: most digits
    rows, cols = max(1, int(FRAME_BAND * height)), max(1, int(FRAME_BAND * width))
    for band, span, axis in ((mask[:rows], FRAME_SPAN * width, 0),
                             (mask[-rows:], FRAME_SPAN * width, 0),
                             (mask[:, :cols], FRAME_SPAN * height, 1),
                             (mask[:, -cols:], FRAME_SPAN * height, 1),
                             (mask, LINE_SPAN * width, 0), (mask, LINE_SPAN * height, 1)):
        if np.count_nonzero(band.any(axis=axis)) >= span:
            return True
    return False


def line_segments(mask: np.ndarray) -> list[FrameLine]:
    """Every straight segment of ink within FRAME_TILT degrees of level or upright and at least
    RULED_SEED of the image's short side long, anywhere in it (the seeds of ruled_lines).
    Those long enough to be a printed box's line where they lie (FRAME_SPAN of the side in the
    image's outer bands, LINE_SPAN inside them) are marked `frame`, with their thickness."""
    height, width = mask.shape
    short = min(height, width)
    found = cv2.HoughLinesP(np.ascontiguousarray(mask).view(np.uint8), 1, np.pi / 180,
                            threshold=max(8, int(0.3 * short)),
                            minLineLength=max(8, int(RULED_SEED * short)),
                            maxLineGap=max(2, short // 40))
    lines = []
    for x1, y1, x2, y2 in ([] if found is None else found.reshape(-1, 4).tolist()):
        angle = math.degrees(math.atan2(abs(y2 - y1), abs(x2 - x1)))
        horizontal = angle <= FRAME_TILT
        if not horizontal and angle < 90 - FRAME_TILT:
            continue
        along, side, across, depth = ((abs(x2 - x1), width, (y1 + y2) / 2, height) if horizontal
                                      else (abs(y2 - y1), height, (x1 + x2) / 2, width))
        inner = FRAME_BAND * depth < across < (1 - FRAME_BAND) * depth
        frame = along >= (LINE_SPAN if inner else FRAME_SPAN) * side
        extent = (min(x1, x2), max(x1, x2)) if horizontal else (min(y1, y2), max(y1, y2))
        thickness = line_thickness(mask, (x1, y1), (x2, y2), horizontal) if frame else 0
        lines.append(FrameLine((x1, y1), (x2, y2), horizontal, extent, thickness))
    return lines


def line_thickness(mask: np.ndarray, start, end, horizontal: bool) -> int:
    """A pen width covering a straight line of ink: the median run of ink across it, measured at
    a dozen points along it, and a margin for its anti-aliased rim."""
    runs = []
    for t in np.linspace(0.1, 0.9, 12):
        x = int(round(start[0] + t * (end[0] - start[0])))
        y = int(round(start[1] + t * (end[1] - start[1])))
        across = mask[:, x] if horizontal else mask[y]
        at = y if horizontal else x
        if not across[at]:
            continue
        gaps = np.flatnonzero(~across)
        before, after = gaps[gaps < at], gaps[gaps > at]
        low = before[-1] + 1 if before.size else 0
        high = after[0] if after.size else across.size
        runs.append(high - low)
    return int(np.median(runs) * 1.5) + 2 if runs else 3
