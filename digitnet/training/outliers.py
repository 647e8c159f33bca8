"""Generated non-digits for outlier exposure (Hendrycks et al. 2019, "Deep Anomaly Detection with
Outlier Exposure").

A model trained only on digits is sure of some digit for anything: a letter, a scribble, a
photo of a table. With `training.outliers` > 0, each batch also holds that share of generated
non-digits whose target is the uniform distribution, so the model learns to answer them with a
low top probability, and `predict --min-confidence` can refuse them.

The non-digits are drawn as 80x80 bilevel shapes and finished by predict's own last stages
(stroke width, 20x20 box, centre of mass), so they look like what preprocessing makes of a
real letter or scribble: capital and small letters in the installed fonts, scribbles, polygons
and other shapes, and solid blobs (what a photo, a blank page or noise becomes).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitnet.data import cache_dir, cached_images

# The drawing code imports Pillow and digitnet.images (with OpenCV) in its functions: a run whose
# bank is in the cache does not need them (20 MB).
if TYPE_CHECKING:
    from PIL import Image, ImageDraw

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path("/Library/Fonts"))
# Letters nobody writes as a digit (no O, o, I, l, i, S, s, Z, z, B, b, G, g, q, D, T, J, L)
LETTERS = "ACEFHKMNPRUVWXYacdefhkmnrtuvwxy"
KINDS = ("letter", "scribble", "shape", "blob")
BANK_SIZE = 3000  # distinct non-digits; each batch draws from them at random
# Part of the bank's cache file name (`outlier_images`): change it when the drawings change.
BANK_VERSION = 1


def installed_fonts() -> list[Path]:
    """TrueType fonts on this machine; [] where there are none (Pillow's own font is used)."""
    found: list[Path] = []
    for folder in FONT_DIRS:
        if folder.is_dir():
            found += [p for p in sorted(folder.rglob("*.ttf")) if "Math" not in p.name]
    return found


@functools.cache
def load_font(path: Path | None, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size=size)


def blank() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    from PIL import Image, ImageDraw

    from digitnet.images.preprocess import SHAPE_SIDE

    image = Image.new("L", (SHAPE_SIDE * 2, SHAPE_SIDE * 2), 0)
    return image, ImageDraw.Draw(image)


def letter(rng, fonts: list[Path]) -> Image.Image:
    from PIL import Image

    from digitnet.images.preprocess import SHAPE_SIDE

    image, draw = blank()
    char = LETTERS[int(rng.integers(len(LETTERS)))]
    size = int(rng.integers(70, 110))
    path = fonts[int(rng.integers(len(fonts)))] if fonts else None
    face = load_font(path, size)
    draw.text((SHAPE_SIDE, SHAPE_SIDE), char, fill=255, anchor="mm", font=face)
    return image.rotate(float(rng.uniform(-15, 15)), Image.Resampling.BILINEAR)


def curve(rng, count: int) -> list[tuple]:
    """A smooth random path through `count` points (Catmull-Rom)."""
    from digitnet.images.preprocess import SHAPE_SIDE

    points = rng.uniform(20, 2 * SHAPE_SIDE - 20, (count, 2))
    out = []
    for a, b, c, d in zip(points, points[1:], points[2:], points[3:]):
        for t in np.linspace(0, 1, 10, endpoint=False):
            out.append(tuple(0.5 * (2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t ** 2
                                    + (3 * b - a - 3 * c + d) * t ** 3)))
    return out


def scribble(rng) -> Image.Image:
    image, draw = blank()
    draw.line(curve(rng, int(rng.integers(7, 16))), fill=255, width=int(rng.integers(4, 10)))
    return image


def shape(rng) -> Image.Image:
    """A random polygon, star, grid, arrow or several strokes."""
    from digitnet.images.preprocess import SHAPE_SIDE

    image, draw = blank()
    centre, radius = SHAPE_SIDE + rng.uniform(-10, 10, 2), rng.uniform(35, 60)
    width = int(rng.integers(4, 10))
    kind = int(rng.integers(4))
    if kind == 0:  # polygon or star outline
        corners = int(rng.integers(3, 7))
        steps = corners * (2 if rng.random() < 0.4 else 1)
        angles = np.linspace(0, 2 * np.pi, steps, endpoint=False) + rng.uniform(0, np.pi)
        radii = np.where(np.arange(steps) % 2, radius * rng.uniform(0.35, 0.6), radius) \
            if steps > corners else np.full(steps, radius)
        points = [(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a))
                  for a, r in zip(angles, radii)]
        draw.line(points + points[:1], fill=255, width=width, joint="curve")
    elif kind == 1:  # grid: two or more crossing strokes each way
        for offset in rng.uniform(-0.6, 0.6, int(rng.integers(2, 4))) * radius:
            draw.line([(centre[0] + offset, centre[1] - radius),
                       (centre[0] + offset, centre[1] + radius)], fill=255, width=width)
            draw.line([(centre[0] - radius, centre[1] + offset),
                       (centre[0] + radius, centre[1] + offset)], fill=255, width=width)
    elif kind == 2:  # arrow
        tip = (centre[0] + radius, centre[1])
        draw.line([(centre[0] - radius, centre[1]), tip], fill=255, width=width)
        draw.line([(tip[0] - radius / 2, tip[1] - radius / 2), tip,
                   (tip[0] - radius / 2, tip[1] + radius / 2)], fill=255, width=width)
        image = image.rotate(float(rng.uniform(0, 360)))
    else:  # a ring with marks inside (a face, a target)
        box = [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius]
        draw.ellipse(box, outline=255, width=width)
        for _ in range(int(rng.integers(2, 4))):
            x, y = centre + rng.uniform(-0.5, 0.5, 2) * radius
            draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=255)
    return image


def blob(rng) -> Image.Image:
    """Solid filled regions: what preprocessing finds in a photo, a shadow or noise."""
    from PIL import Image

    from digitnet.images.preprocess import SHAPE_SIDE

    image, draw = blank()
    for _ in range(int(rng.integers(1, 4))):
        points = rng.uniform(10, 2 * SHAPE_SIDE - 10, (int(rng.integers(3, 8)), 2))
        draw.polygon([tuple(p) for p in points], fill=255)
    if rng.random() < 0.5:  # ragged: speckle it
        pixels = np.asarray(image) > 0
        pixels &= rng.random(pixels.shape) > rng.uniform(0, 0.4)
        image = Image.fromarray((pixels * 255).astype(np.uint8))
    return image


def finish(image: Image.Image) -> np.ndarray | None:
    """predict's last stages on a drawn shape: uint8 (28, 28), or None for an empty drawing."""
    from PIL import Image

    from digitnet.images.preprocess import SHAPE_SIDE, centre_by_mass, downsample, normalise_stroke

    shape = np.asarray(image) > 127
    if not shape.any():
        return None
    rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
    crop = shape[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    side = max(crop.shape)
    scale = SHAPE_SIDE / side  # the longer side at SHAPE_SIDE, as predict redraws a digit
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    crop = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize(size)) > 127
    if not crop.any():
        return None
    digit = centre_by_mass(downsample(normalise_stroke(crop)))
    return np.round(digit * 255).astype(np.uint8)


def outlier_bank(count: int = BANK_SIZE, seed: int = 0) -> np.ndarray:
    """`count` generated non-digits, uint8 (count, 28, 28) like MNIST, a quarter of each kind.

    Args:
      count: how many.
      seed: the same seed gives the same images (on a machine with the same fonts).
    """
    rng = np.random.default_rng(seed)
    fonts = installed_fonts()
    makers = (lambda: letter(rng, fonts), lambda: scribble(rng), lambda: shape(rng),
              lambda: blob(rng))
    bank = np.zeros((count, 28, 28), np.uint8)
    made = 0
    while made < count:
        image = finish(makers[made % len(makers)]())
        if image is not None:
            bank[made] = image
            made += 1
    return bank


def outlier_images(seed: int) -> np.ndarray:
    """The bank for `seed`, made once and kept in the cache folder (making it takes some
    seconds); a cached file that is not such a bank (unreadable, another shape, a header claiming
    more than memory holds) is made again."""
    path = cache_dir() / f"outliers-v{BANK_VERSION}-seed{seed}.npy"
    return cached_images(path, (BANK_SIZE, 28, 28), lambda: outlier_bank(seed=seed))
