"""Draw docs/preprocessing.png: synthetic user images (top), a plain resize (middle) and the
28x28 inputs predict makes of them (bottom).

    .venv/bin/python docs/make_preprocessing_figure.py

Only generated images are used (the real test photos may not be published).
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digitnet.images.preprocess import to_mnist

HERE = Path(__file__).resolve().parent
TILE = 168  # pixels per panel in the figure


def pen(draw, points, width, fill):
    draw.line(points, fill=fill, width=width, joint="curve")


def paper_photo() -> Image.Image:
    """A dark 4 on ruled paper, photographed under a shadow, saved as a noisy JPEG-like RGB."""
    image = Image.new("RGB", (640, 480), (236, 232, 220))
    draw = ImageDraw.Draw(image)
    for y in range(40, 480, 36):
        draw.line([(0, y), (640, y)], fill=(170, 190, 220), width=2)
    pen(draw, [(330, 110), (250, 300), (400, 300)], 14, (40, 40, 60))
    pen(draw, [(360, 180), (360, 400)], 14, (40, 40, 60))
    shade = np.linspace(1.0, 0.45, 640)[None, :, None]
    noisy = np.asarray(image) * shade + np.random.default_rng(0).normal(0, 6, (480, 640, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def faint_pencil() -> Image.Image:
    """A thin, low-contrast 7 in pencil."""
    image = Image.new("L", (300, 300), 200)
    draw = ImageDraw.Draw(image)
    pen(draw, [(90, 80), (210, 80), (130, 240)], 3, 160)
    return image.filter(ImageFilter.GaussianBlur(1))


def corner_canvas() -> Image.Image:
    """A small 2 drawn with a mouse in the corner of a wide white canvas."""
    image = Image.new("RGB", (900, 400), "white")
    draw = ImageDraw.Draw(image)
    pen(draw, [(70, 70), (110, 50), (140, 80), (70, 150), (150, 150)], 3, "black")
    return image


def transparent_drawing() -> Image.Image:
    """A white 3 on a transparent web canvas (invisible on a white page)."""
    image = Image.new("RGBA", (256, 256), (255, 255, 255, 0))
    font = ImageFont.load_default(size=200)
    ImageDraw.Draw(image).text((70, 10), "3", fill=(255, 255, 255, 255), font=font)
    return image


def panel(image: Image.Image) -> Image.Image:
    """The input fitted into a square tile, on grey so transparency shows."""
    tile = Image.new("RGB", (TILE, TILE), (128, 128, 128))
    copy = image.convert("RGBA")
    copy.thumbnail((TILE, TILE))
    tile.paste(copy, ((TILE - copy.width) // 2, (TILE - copy.height) // 2), copy)
    return tile


def plain_resize(image: Image.Image) -> Image.Image:
    """What a naive classifier feeds the model: grey, inverted if light, squashed to 28x28."""
    grey = np.asarray(image.convert("L").resize((28, 28), Image.BILINEAR))
    grey = 255 - grey if grey.mean() > 127 else grey
    return Image.fromarray(grey).resize((TILE, TILE), Image.NEAREST).convert("RGB")


def result(image: Image.Image) -> Image.Image:
    """The 28x28 model input, enlarged without smoothing."""
    array = (to_mnist(image) * 255).astype(np.uint8)
    return Image.fromarray(array).resize((TILE, TILE), Image.NEAREST).convert("RGB")


def main() -> None:
    inputs = [paper_photo(), faint_pencil(), corner_canvas(), transparent_drawing()]
    gap = 8
    figure = Image.new("RGB", (len(inputs) * (TILE + gap) + gap, 3 * TILE + 4 * gap), "white")
    for column, image in enumerate(inputs):
        x = gap + column * (TILE + gap)
        for row, tile in enumerate((panel(image), plain_resize(image), result(image))):
            figure.paste(tile, (x, gap + row * (TILE + gap)))
    figure.save(HERE / "preprocessing.png", optimize=True)
    print(HERE / "preprocessing.png")


if __name__ == "__main__":
    main()
