"""Choosing the ink's pieces that form the digit: the largest on the page and those near it,
not specks, lines along the image's edge, or what lies beyond the page.

A stage of preprocessing (see digitnet.images.preprocess), after digitnet.images.ink.
No TensorFlow here.
"""

from __future__ import annotations

import cv2
import numpy as np

from digitnet.images.ink import Pieces, edge_strip, largest, largest_first, long_sides, pick

MIN_DIGIT = 0.025  # a digit's long side is at least this fraction of the image's: not a speck
PAGE_DIGIT = 0.1  # ... and at least this when something runs along the image's edge
MIN_PIECE = 0.04  # a component smaller than this fraction of the largest is a speck
NEIGHBOUR = 0.3  # a piece cut by the image's edge, smaller than this fraction of the digit,
# is a neighbouring digit's stroke reaching into the crop (when the digit itself is not cut)
GATHER_REACH = 0.05  # pieces this close to the digit (a fraction of the image's long side) are
# its own, however small its first piece: the dashes of a fine pen that skips or faint pencil
FAINT = 0.5  # a piece whose mean ink is below this fraction of the strongest digit-sized
# piece's is not written ink: the shade beyond a photographed sheet's edge, ruled lines, grain
STRONGEST_OF = 8  # ... of these largest digit-sized pieces (a fine pen's dashes among them)


def select_digit(pieces: Pieces) -> np.ndarray | None:
    """The ink components that form the digit: the largest, and pieces of it nearby.

    Not specks, nor lines hugging the image's edge (a scanner's shadow, the paper's edge),
    nor, unless there is nothing else, what lies beyond the page (a table, a dark frame).
    Returns the digit's mask, or None when no component is big enough to be one.
    """
    labels, stats, strong, ink = pieces
    areas = stats[:, cv2.CC_STAT_AREA]
    sizes = np.where(strong, areas, 0).astype(float)
    sizes[edge_lines(labels, areas, strong)] = 0
    on_page = sizes.copy()
    on_page[surroundings(labels, stats)] = 0
    side = max(labels.shape)
    sides = long_sides(stats)
    digit_sized = sides >= max(3, MIN_DIGIT * side)
    main = largest(on_page, stats)
    if sides[main] < max(3, PAGE_DIGIT * side):
        on_page, main = sizes, largest(sizes, stats)  # then the digit itself runs along the edge
    if not digit_sized[main]:
        return None
    if np.count_nonzero(on_page) > 1:  # more than the digit's one piece
        on_page[faint_pieces(labels, stats, ink, on_page, digit_sized)] = 0
        # the largest digit-sized piece left (the strongest one is never faint): a smaller dark
        # blob holding more pixels than a thin digit is not one
        main = largest(np.where(digit_sized, on_page, 0), stats)
        on_page[neighbours_strokes(stats, labels.shape, on_page, main)] = 0
    return pick(labels, len(stats), gather_pieces(stats, on_page, main, side))


def faint_pieces(labels: np.ndarray, stats: np.ndarray, ink: np.ndarray, sizes: np.ndarray,
                 digit_sized: np.ndarray) -> np.ndarray:
    """Labels of sizeable pieces whose ink is much fainter (FAINT) than the strongest of the
    STRONGEST_OF largest pieces big enough to be a digit and of every sizeable piece that is
    digit-sized: the written digit is the darkest thing on the page, while the shade beyond a
    photographed sheet's edge, a ruled line or the paper's grain is only a little darker than
    the paper, however large (and may dwarf the dashes of a fine pen that skips)."""
    candidates = (sizes >= MIN_PIECE * sizes.max()).nonzero()[0]
    if len(candidates) < 2 and np.count_nonzero(sizes[digit_sized]) < 2:
        return np.zeros(0, np.intp)
    sized = np.flatnonzero(digit_sized & (sizes > 0))
    sized = set(largest_first(sized, sizes, stats)[:STRONGEST_OF].tolist())
    sized |= {label for label in candidates.tolist() if digit_sized[label]}
    levels = {label: mean_ink(labels, stats, ink, label)
              for label in sized | set(candidates.tolist())}
    # the largest piece (the digit's main one, digit-sized) is always among them
    strongest = max(levels[label] for label in sized)
    return np.array([label for label in candidates.tolist() if levels[label] < FAINT * strongest],
                    np.intp)


def mean_ink(labels: np.ndarray, stats: np.ndarray, ink: np.ndarray, label: int) -> float:
    """A piece's mean ink strength over its pixels (read in its box only)."""
    top, left, bottom, right = box(stats, label)
    inside = labels[top:bottom, left:right] == label
    return float(ink[top:bottom, left:right][inside].mean())


def neighbours_strokes(stats: np.ndarray, shape: tuple[int, int], sizes: np.ndarray,
                       main: int) -> np.ndarray:
    """Labels of small pieces cut by the image's edge while the digit is not: the ends of a
    neighbouring digit's strokes in a crop from a sheet or a photo of several digits."""
    height, width = shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    cut = (left == 0) | (top == 0) | (right == width) | (bottom == height)
    if cut[main]:
        return np.zeros(0, np.intp)
    return (cut & (sizes > 0) & (sizes < NEIGHBOUR * sizes[main])).nonzero()[0]


def box(stats: np.ndarray, label: int) -> tuple[int, int, int, int]:
    """A component's box as (top, left, bottom, right), bottom and right exclusive."""
    left, top, width, height = stats[label, :4].tolist()
    return top, left, top + height, left + width


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


def gather_pieces(stats: np.ndarray, sizes: np.ndarray, main: int, side: int) -> list[int]:
    """Grow from the main component, adding sizeable components near the digit so far: within
    a quarter of its size, or GATHER_REACH of the image's long side `side`."""
    candidates = (sizes >= MIN_PIECE * sizes[main]).nonzero()[0].tolist()
    if len(candidates) == 1:
        return candidates  # the common case: nothing but the main component is big enough
    digit = box(stats, main)
    keep = {main}
    added = True
    while added:
        added = False
        reach = max(0.25 * max(digit[2] - digit[0], digit[3] - digit[1]) + 2,
                    GATHER_REACH * side)
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
