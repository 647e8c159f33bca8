"""Generated test images: handwritten digits made to look photographed, and things that are not
digits, for bench/real_images.py and the quality gate.

Digits: MNIST *test* digits (writers disjoint from the training set's) drawn as ink on paper and
put through what a phone or a canvas does to them: pen colour and width, paper tint, uneven light,
ruled lines, perspective, blur, sensor noise, JPEG; or white strokes on a black canvas.

Not digits: capital letters in every installed font, scribbles, geometric shapes, blank and noise
pages, and photo-like scenes (cloudy textures, objects on a table, gradients).
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digitnet.images.preprocess import slant

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts"))
# Capitals least like a digit (no O, I, S, Z, B, G, D, Q, L, T, J: each is some writer's digit)
LETTERS = "ACEFHKMNPRUVWXY"


def fonts() -> list[Path]:
    """The installed TrueType fonts (none on a bare machine: Pillow's own font is used)."""
    for folder in FONT_DIRS:
        found = sorted(folder.rglob("*.ttf")) if folder.is_dir() else []
        found = [path for path in found if "Math" not in path.name]
        if found:
            return found
    return []


def font(path: Path | None, size: int):
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size=size)


# ---- the camera and the paper -------------------------------------------------------------------


def paper(rng, size: tuple[int, int]) -> np.ndarray:
    """An RGB sheet (H, W, 3) float in [0, 255]: tinted, unevenly lit, sometimes ruled."""
    height, width = size
    tint = rng.uniform(185, 250) + rng.uniform(-12, 12, 3)
    y, x = np.mgrid[0:height, 0:width] / max(size)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 - rng.uniform(0, 0.35) * (np.cos(angle) * x + np.sin(angle) * y)
    sheet = tint[None, None, :] * light[..., None]
    if rng.random() < 0.3:  # ruled paper
        gap = int(rng.integers(18, 40))
        for row in range(int(rng.integers(0, gap)), height, gap):
            sheet[row: row + 1] *= rng.uniform(0.75, 0.9)
    return sheet


def camera(rng, image: np.ndarray) -> Image.Image:
    """Perspective, blur, noise and JPEG, as a phone photo of `image` (H, W, 3 floats)."""
    photo = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    width, height = photo.size
    if rng.random() < 0.6:
        jitter = rng.uniform(-0.08, 0.08, 8) * np.array([width, height] * 4)
        corners = np.array([0, 0, 0, height, width, height, width, 0]) + jitter
        photo = photo.transform(photo.size, Image.Transform.QUAD, tuple(corners.tolist()),
                                Image.Resampling.BILINEAR, fillcolor=tuple(
                                    int(c) for c in image[0, 0]))
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.6)))
    pixels = np.asarray(photo, np.float64) + rng.normal(0, rng.uniform(1, 9), (height, width, 3))
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(35, 92)))
    return Image.open(io.BytesIO(buffer.getvalue()))


def ink_on_paper(rng, mask: np.ndarray) -> np.ndarray:
    """A stroke mask (H, W) in [0, 1] written on paper in a random pen colour."""
    sheet = paper(rng, mask.shape)
    pens = ((20, 20, 25), (25, 35, 120), (90, 90, 95), (150, 30, 30), (10, 60, 20))
    pen = np.array(pens[int(rng.integers(len(pens)))], float) + rng.uniform(-10, 10, 3)
    strength = rng.uniform(0.55, 1.0)  # pencil is faint
    alpha = np.clip(mask * strength, 0, 1)[..., None]
    return sheet * (1 - alpha) + pen[None, None, :] * alpha


def stroke_mask(digit: np.ndarray, rng, scale: float) -> np.ndarray:
    """A 28x28 MNIST digit as a smooth stroke mask `scale` times larger, with a random pen width."""
    size = int(28 * scale)
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    width = int(rng.integers(-1, 3))
    if width > 0:
        big = big.filter(ImageFilter.MaxFilter(2 * width + 1))
    elif width < 0:
        big = big.filter(ImageFilter.MinFilter(3))
    mask = np.asarray(big, np.float64) / 255
    return np.clip((mask - 0.25) * 2.0, 0, 1)


def place(mask: np.ndarray, rng) -> np.ndarray:
    """The mask on a larger sheet, off-centre by a random margin."""
    height, width = mask.shape
    canvas = np.zeros((height + int(rng.integers(10, height)),
                       width + int(rng.integers(10, width))))
    top = int(rng.integers(0, canvas.shape[0] - height + 1))
    left = int(rng.integers(0, canvas.shape[1] - width + 1))
    canvas[top: top + height, left: left + width] = mask
    return canvas


def photographed_digit(digit: np.ndarray, rng) -> Image.Image:
    """An MNIST digit written on paper and photographed."""
    mask = place(stroke_mask(digit, rng, rng.uniform(3, 8)), rng)
    return camera(rng, ink_on_paper(rng, mask))


def canvas_digit(digit: np.ndarray, rng) -> Image.Image:
    """An MNIST digit drawn on a web canvas: black on white or white on black, no camera."""
    mask = place(stroke_mask(digit, rng, rng.uniform(4, 10)), rng)
    pixels = 255 * mask if rng.random() < 0.5 else 255 * (1 - mask)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def realistic_digits(images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0):
    """`count` (image, label, style) from MNIST test digits: two thirds photographed, a third
    canvas drawings."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), count, replace=False)
    out = []
    for n, index in enumerate(picks):
        if n % 3 == 2:
            out.append((canvas_digit(images[index], rng), int(labels[index]), "rendered_canvas"))
        else:
            out.append((photographed_digit(images[index], rng), int(labels[index]),
                        "rendered_photo"))
    return out


# ---- harder, held-out styles: how real writers and canvases differ from MNIST ----------------

VARIED_STYLES = ("sheet", "marker", "thin_pen", "slanted", "near_edge", "mouse_canvas")


def sheared(digit: np.ndarray, degrees: float) -> np.ndarray:
    """A 28x28 digit slanted by `degrees` (positive leans right), on a wider field."""
    image = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
    wide = Image.new("L", (160, 112), 0)
    wide.paste(image, (24, 0))
    tan = np.tan(np.radians(degrees))
    wide = wide.transform(wide.size, Image.Transform.AFFINE, (1, tan, -tan * 56, 0, 1, 0),
                          Image.Resampling.BILINEAR)
    columns = np.asarray(wide).max(axis=0).nonzero()[0]
    return np.asarray(wide)[:, columns.min(): columns.max() + 1] if columns.size else digit


def enlarged(digit: np.ndarray, side: int) -> np.ndarray:
    """A digit (any size, uint8) resized to `side` pixels tall (bicubic), as floats in [0, 255]."""
    height, breadth = digit.shape
    size = (max(1, round(breadth * side / height)), side)
    return np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BICUBIC), np.float64)


def pen_mask(digit: np.ndarray, side: int, width: float, core: float = 0.6) -> np.ndarray:
    """A digit (any size, uint8) redrawn `side` pixels tall: its strokes thinned to where MNIST's
    ink is above `core`, then widened by `width` pixels (a broader pen)."""
    path = enlarged(digit, side) > core * 255  # thinner than MNIST's stroke: the pen's path
    radius = max(0, int(round(width / 2)))
    image = Image.fromarray((path * 255).astype(np.uint8))
    if radius:
        image = image.filter(ImageFilter.MaxFilter(2 * radius + 1))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)), np.float64) / 255


# P2..P9 of Zhang and Suen's thinning: the 8 neighbours clockwise from north, as (row, column)
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 256 neighbourhoods (bit k set: neighbour k of NEIGHBOURS is ink), whether
    a pixel may be removed in the first and in the second sub-iteration of Zhang and Suen's
    thinning (CACM 27(3), 1984): it has 2-6 ink neighbours, exactly one paper-to-ink transition
    around it (so removing it splits nothing), and lies on a south-east / north-west edge."""
    tables = np.zeros((2, 256), bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]
        north, east, south, west = p[0], p[2], p[4], p[6]
        crossings = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))
        removable = 2 <= sum(p) <= 6 and crossings == 1
        tables[0, code] = removable and not (north and east and south) and not (
            east and south and west)
        tables[1, code] = removable and not (north and east and west) and not (
            north and south and west)
    return tables[0], tables[1]


THINNING = thinning_tables()


def thinned(mask: np.ndarray) -> np.ndarray:
    """A boolean mask's centre lines, one pixel wide and as connected as the mask."""
    image = np.pad(mask.astype(np.uint8), 1)
    while True:
        before = int(image.sum())
        for table in THINNING:
            code = np.zeros_like(image)
            for bit, (dy, dx) in enumerate(NEIGHBOURS):
                code |= np.roll(image, (-dy, -dx), axis=(0, 1)) << bit
            image = image & ~table[code]
        if int(image.sum()) == before:
            return image[1:-1, 1:-1].astype(bool)


def fine_pen_mask(digit: np.ndarray, side: int, width: float, core: float = 0.5) -> np.ndarray:
    """A digit (any size, uint8) redrawn `side` pixels tall by a fine pen: the centre line of its
    strokes (where MNIST's ink is above `core`) drawn `width` pixels wide, anti-aliased. The line
    is as continuous as the stroke, however thin the pen."""
    line = thinned(enlarged(digit, side) > core * 255)
    distance = cv2.distanceTransform((~line).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def frame(mask: np.ndarray, rng, margin: tuple[float, float]) -> np.ndarray:
    """The mask on a sheet with a margin of `margin` (a fraction of its size) around it, drawn
    independently on each side."""
    height, width = mask.shape
    side = max(height, width)
    top, bottom, left, right = (int(rng.uniform(*margin) * side) for _ in range(4))
    canvas = np.zeros((height + top + bottom, width + left + right))
    canvas[top: top + height, left: left + width] = mask
    return canvas


def sheet_cell(digit: np.ndarray, rng, neighbour: np.ndarray) -> Image.Image:
    """One cell cut from a sheet many people filled in: a ballpoint digit of any slant and size
    in a printed box, the box's lines and a neighbour's stroke at the crop's edge, scanned or
    photographed."""
    side = int(rng.integers(40, 120))
    mask = pen_mask(sheared(digit, rng.uniform(-20, 20)), side, rng.uniform(1, 4))
    cell = frame(mask, rng, (0.1, 0.5))
    height, width = cell.shape
    if rng.random() < 0.7:  # the printed box, partly inside the crop
        thick = max(1, int(rng.integers(1, 4)))
        level = rng.uniform(0.4, 1.0)
        for edge in rng.permutation(4)[: int(rng.integers(1, 5))]:
            at = int(rng.integers(0, 4))
            if edge == 0:
                cell[at: at + thick] = np.maximum(cell[at: at + thick], level)
            elif edge == 1:
                cell[height - at - thick: height - at] = np.maximum(
                    cell[height - at - thick: height - at], level)
            elif edge == 2:
                cell[:, at: at + thick] = np.maximum(cell[:, at: at + thick], level)
            else:
                cell[:, width - at - thick: width - at] = np.maximum(
                    cell[:, width - at - thick: width - at], level)
    if rng.random() < 0.4:  # a neighbouring digit's stroke reaching into the crop
        other = pen_mask(neighbour, side, rng.uniform(1, 4))
        part = other[:, : max(2, int(other.shape[1] * rng.uniform(0.05, 0.15)))]
        rows = min(part.shape[0], height)
        top = int(rng.integers(0, height - rows + 1))
        if rng.random() < 0.5:
            cell[top: top + rows, -part.shape[1]:] = np.maximum(
                cell[top: top + rows, -part.shape[1]:], part[:rows])
        else:
            cell[top: top + rows, : part.shape[1]] = np.maximum(
                cell[top: top + rows, : part.shape[1]], part[:rows, ::-1])
    if rng.random() < 0.5:
        return scanned(rng, ink_on_paper(rng, cell))
    return camera(rng, ink_on_paper(rng, cell))


def scanned(rng, image: np.ndarray) -> Image.Image:
    """A flatbed scan: even light, a little blur and noise, grey, maybe small."""
    scan = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("L")
    if rng.random() < 0.5:
        factor = rng.uniform(0.3, 0.7)
        scan = scan.resize((max(8, round(scan.width * factor)), max(8, round(scan.height
                                                                          * factor))),
                           Image.Resampling.BILINEAR)
    scan = scan.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
    pixels = np.asarray(scan, np.float64) + rng.normal(0, rng.uniform(0.5, 4), scan.size[::-1])
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def varied_digit(digit: np.ndarray, rng, style: str, neighbour: np.ndarray) -> Image.Image:
    """An MNIST digit in one of VARIED_STYLES."""
    if style == "sheet":
        return sheet_cell(digit, rng, neighbour)
    if style == "marker":  # a felt marker: strokes a tenth to a fifth of the digit's height
        side = int(rng.integers(60, 160))
        mask = pen_mask(digit, side, side * rng.uniform(0.04, 0.1))
        return camera(rng, ink_on_paper(rng, frame(mask, rng, (0.1, 0.8))))
    if style == "thin_pen":  # a fine pen, large on the page: continuous hairline strokes
        side = int(rng.integers(100, 220))
        mask = fine_pen_mask(digit, side, side * rng.uniform(0.008, 0.02))
        return camera(rng, ink_on_paper(rng, frame(mask, rng, (0.1, 0.8))))
    if style == "slanted":  # a strong slant either way, more than MNIST's writers
        side = int(rng.integers(60, 160))
        mask = pen_mask(sheared(digit, rng.choice([-1, 1]) * rng.uniform(18, 32)), side,
                        side * rng.uniform(0, 0.05))
        return camera(rng, ink_on_paper(rng, frame(mask, rng, (0.1, 0.8))))
    if style == "near_edge":  # off-centre crop: the digit close to one or two edges of the frame
        side = int(rng.integers(60, 160))
        mask = pen_mask(digit, side, side * rng.uniform(0, 0.06))
        cell = frame(mask, rng, (0.5, 1.5))
        height, width = mask.shape
        left = int(rng.integers(0, cell.shape[1] - width + 1))
        at_top, gap = rng.integers(0, 2), 1 + int(rng.integers(0, 4))
        top = gap if at_top else cell.shape[0] - height - gap
        cell = np.zeros_like(cell)
        cell[top: top + height, left: left + width] = mask
        return camera(rng, ink_on_paper(rng, cell))
    # a mouse or finger on a 280x280 canvas: one round brush, any size and place
    side = int(rng.integers(90, 240))
    mask = pen_mask(digit, side, side * rng.uniform(0.02, 0.08))
    canvas = np.zeros((280, 280))
    height, width = mask.shape[0], min(mask.shape[1], 280)
    height = min(height, 280)
    top, left = int(rng.integers(0, 281 - height)), int(rng.integers(0, 281 - width))
    canvas[top: top + height, left: left + width] = (mask[:height, :width] > 0.5)
    pixels = 255 * canvas if rng.random() < 0.5 else 255 * (1 - canvas)
    return Image.fromarray(pixels.astype(np.uint8))


def varied_digits(images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0):
    """`count` (image, label, style) from MNIST test digits, the styles of VARIED_STYLES in turn.

    Held out from the 64 real images and from training: the styles the hidden set's errors come
    from (sheets many writers filled in, felt markers, fine pens, slanted writing, digits near
    the frame's edge, thick canvas strokes)."""
    rng = np.random.default_rng([seed, 14])
    picks = rng.choice(len(images), count + 1, replace=False)
    return [(varied_digit(images[index], rng, VARIED_STYLES[n % len(VARIED_STYLES)],
                          images[picks[n + 1]]), int(labels[index]),
             VARIED_STYLES[n % len(VARIED_STYLES)])
            for n, index in enumerate(picks[:count])]


# Styles of writers outside the US, which MNIST's American writers rarely used: a 1 with a flag
# from its top down to the left, a 7 with a bar across its stem.
CONTINENTAL_STYLES = ("marker", "thin_pen", "near_edge", "mouse_canvas", "sheet")
UPRIGHT = 0.35  # the 1s given a flag lean less than this (columns per row): a leaning 1 with a
# flag is many writers' 7


def with_stroke(digit: np.ndarray, stroke_for) -> np.ndarray:
    """A 28x28 digit with one more stroke, drawn at 4x (112 px) and brought back (box filter).
    `stroke_for(rows, columns, top, height)` gets the 4x digit's ink (> 127) and returns the
    line's (start, end, width); a digit without ink comes back as it is."""
    big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))
    rows, columns = np.nonzero(big > 127)
    if not len(rows):
        return digit
    top, height = rows.min(), rows.max() - rows.min() + 1
    start, end, width = stroke_for(rows, columns, top, height)
    stroke = np.zeros_like(big)
    cv2.line(stroke, start, end, 255, width, cv2.LINE_AA)
    return np.asarray(Image.fromarray(np.maximum(big, stroke)).resize((28, 28),
                                                                     Image.Resampling.BOX))


def with_flag(digit: np.ndarray, rng) -> np.ndarray:
    """A 28x28 MNIST 1 with a flag: from its top ink down to the left, 15-45% of its height
    long, 20-60 degrees below the horizontal, as wide as its stroke."""
    def flag(rows, columns, top, height):
        x = int(columns[rows <= top + 4].mean())
        length, angle = rng.uniform(0.15, 0.45) * height, np.radians(rng.uniform(20, 60))
        end = (int(x - length * np.cos(angle)), int(top + length * np.sin(angle)))
        return (x, int(top)), end, max(4, round(len(rows) / height))

    return with_stroke(digit, flag)


def with_bar(digit: np.ndarray, rng) -> np.ndarray:
    """A 28x28 MNIST 7 with a bar across its stem at 45-65% of its height, 30-60% of it long."""
    def bar(rows, columns, top, height):
        y = int(top + rng.uniform(0.45, 0.65) * height)
        across = columns[rows == y]
        middle = across.mean() if len(across) else columns.mean()
        half = rng.uniform(0.15, 0.3) * height
        tilt = rng.uniform(-0.08, 0.08) * height
        return ((int(middle - half), int(y + tilt)), (int(middle + half), int(y - tilt)),
                max(4, round(len(rows) / height / 2.5)))

    return with_stroke(digit, bar)


def continental_digits(images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0):
    """`count` (image, label, kind) from MNIST test 1s and 7s, in turn, written the continental
    way (`with_flag`, `with_bar`; kind "flagged 1" or "crossed 7") in CONTINENTAL_STYLES: the
    1s and 7s of writers MNIST lacks.
    The 1s are those leaning less than UPRIGHT."""
    rng = np.random.default_rng([seed, 17])
    ones = rng.permutation([index for index in np.flatnonzero(labels == 1)
                            if abs(slant(images[index] > 127)[0]) < UPRIGHT])
    sevens = rng.permutation(np.flatnonzero(labels == 7))
    made = []
    for n in range(count):
        label = 1 if n % 2 == 0 else 7
        index = (ones if label == 1 else sevens)[n // 2]
        digit = (with_flag if label == 1 else with_bar)(images[index], rng)
        style = CONTINENTAL_STYLES[(n // 2) % len(CONTINENTAL_STYLES)]
        made.append((varied_digit(digit, rng, style, images[rng.integers(len(images))]), label,
                     "flagged 1" if label == 1 else "crossed 7"))
    return made


# ---- things that are not digits ------------------------------------------------------------------


def letter(rng, char: str, font_path: Path | None) -> Image.Image:
    """A capital letter in some font, written on paper and photographed (or on a clean canvas)."""
    image = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(image).text((100, 100), char, fill=255, anchor="mm",
                               font=font(font_path, int(rng.integers(90, 150))))
    mask = np.asarray(image, np.float64) / 255
    if rng.random() < 0.5:
        return camera(rng, ink_on_paper(rng, mask))
    return Image.fromarray((255 * (1 - mask)).astype(np.uint8))


def scribble(rng) -> Image.Image:
    """A random tangle of smooth strokes."""
    image = Image.new("L", (200, 200), 0)
    points = rng.uniform(20, 180, (int(rng.integers(6, 16)), 2))
    curve = smooth(points, 12)
    ImageDraw.Draw(image).line([tuple(p) for p in curve], fill=255,
                               width=int(rng.integers(3, 10)), joint="curve")
    return camera(rng, ink_on_paper(rng, np.asarray(image, np.float64) / 255))


def smooth(points: np.ndarray, steps: int) -> np.ndarray:
    """Catmull-Rom-like interpolation through `points`."""
    out = []
    for a, b, c, d in zip(points, points[1:], points[2:], points[3:]):
        for t in np.linspace(0, 1, steps, endpoint=False):
            out.append(0.5 * ((2 * b) + (-a + c) * t + (2 * a - 5 * b + 4 * c - d) * t ** 2
                              + (-a + 3 * b - 3 * c + d) * t ** 3))
    return np.array(out) if out else points


def shape(rng, kind: str) -> Image.Image:
    """A drawn geometric shape: triangle, square, star, cross-hatch, arrow, heart, smiley."""
    image = Image.new("L", (200, 200), 0)
    draw = ImageDraw.Draw(image)
    width = int(rng.integers(4, 10))
    c, r = 100 + rng.uniform(-15, 15, 2), rng.uniform(50, 75)
    if kind == "triangle":
        draw.polygon([(c[0], c[1] - r), (c[0] - r, c[1] + r * 0.8), (c[0] + r, c[1] + r * 0.8)],
                     outline=255, width=width)
    elif kind == "square":
        draw.rectangle([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=255, width=width)
    elif kind == "star":
        angles = np.linspace(-np.pi / 2, 3.5 * np.pi, 11)
        radii = np.where(np.arange(11) % 2 == 0, r, r * 0.4)
        draw.line([(c[0] + q * np.cos(a), c[1] + q * np.sin(a)) for a, q in zip(angles, radii)],
                  fill=255, width=width)
    elif kind == "hatch":
        for k in (-0.5, 0.5):
            draw.line([(c[0] + k * r, c[1] - r), (c[0] + k * r, c[1] + r)], fill=255, width=width)
            draw.line([(c[0] - r, c[1] + k * r), (c[0] + r, c[1] + k * r)], fill=255, width=width)
    elif kind == "arrow":
        draw.line([(c[0] - r, c[1]), (c[0] + r, c[1])], fill=255, width=width)
        draw.line([(c[0] + r * 0.5, c[1] - r * 0.5), (c[0] + r, c[1]),
                   (c[0] + r * 0.5, c[1] + r * 0.5)], fill=255, width=width)
    elif kind == "heart":
        t = np.linspace(0, 2 * np.pi, 80)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        draw.line([(c[0] + r * a / 17, c[1] - r * b / 17) for a, b in zip(x, y)], fill=255,
                  width=width)
    else:  # smiley
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=255, width=width)
        for dx in (-0.35, 0.35):
            draw.ellipse([c[0] + dx * r - 6, c[1] - 0.3 * r - 6, c[0] + dx * r + 6,
                          c[1] - 0.3 * r + 6], fill=255)
        draw.arc([c[0] - 0.5 * r, c[1] - 0.3 * r, c[0] + 0.5 * r, c[1] + 0.55 * r], 20, 160,
                 fill=255, width=width)
    mask = np.asarray(image, np.float64) / 255
    if rng.random() < 0.5:
        return camera(rng, ink_on_paper(rng, mask))
    return Image.fromarray((255 * (1 - mask)).astype(np.uint8))


SHAPES = ("triangle", "square", "star", "hatch", "arrow", "heart", "smiley")


def blank_page(rng) -> Image.Image:
    """Empty paper, photographed."""
    return camera(rng, paper(rng, (int(rng.integers(120, 300)), int(rng.integers(120, 300)))))


def noise_page(rng) -> Image.Image:
    """Uniform or speckled noise."""
    size = (int(rng.integers(60, 200)), int(rng.integers(60, 200)))
    if rng.random() < 0.5:
        return Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))
    sheet = paper(rng, size)
    specks = rng.random(size) < rng.uniform(0.01, 0.08)
    sheet[specks] *= 0.2
    return camera(rng, sheet)


def clouds(rng, size: tuple[int, int]) -> np.ndarray:
    """Smooth multi-scale noise (H, W) in [0, 1]: a texture like fabric, wood or a wall."""
    out = np.zeros(size)
    for octave in (4, 8, 16, 32):
        small = Image.fromarray((rng.random((octave, octave)) * 255).astype(np.uint8))
        out += np.asarray(small.resize(size[::-1], Image.Resampling.BICUBIC), float) / octave
    out -= out.min()
    return out / max(out.max(), 1e-9)


def photo_scene(rng) -> Image.Image:
    """A photo-like non-digit: a texture, objects on a table, or a gradient with a shadow."""
    size = (int(rng.integers(160, 320)), int(rng.integers(160, 320)))
    colour = rng.uniform(40, 220, 3)
    base = clouds(rng, size)[..., None] * rng.uniform(40, 120) + colour[None, None, :]
    kind = rng.integers(3)
    if kind == 1:  # objects on a table
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            box = sorted(rng.uniform(0, size[1], 2)), sorted(rng.uniform(0, size[0], 2))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
                [box[0][0], box[1][0], box[0][1], box[1][1]], fill=fill)
        base = np.asarray(image, float)
    elif kind == 2:  # gradient with a soft shadow
        y, x = np.mgrid[0:size[0], 0:size[1]]
        base = base * (0.5 + 0.5 * (x / size[1]))[..., None]
    return camera(rng, base)


def non_digits(seed: int = 0, per_kind: int = 12) -> list[tuple[Image.Image, str]]:
    """(image, kind) for letters, scribbles, shapes, blank and noise pages and photo scenes."""
    rng = np.random.default_rng(seed)
    found = fonts() or [None]
    out = [(letter(rng, LETTERS[i % len(LETTERS)], found[int(rng.integers(len(found)))]),
            "letter") for i in range(3 * per_kind)]
    out += [(scribble(rng), "scribble") for _ in range(per_kind)]
    out += [(shape(rng, SHAPES[i % len(SHAPES)]), "shape") for i in range(2 * per_kind)]
    out += [(blank_page(rng), "blank") for _ in range(per_kind // 2)]
    out += [(noise_page(rng), "noise") for _ in range(per_kind // 2)]
    out += [(photo_scene(rng), "photo") for _ in range(per_kind)]
    return out
