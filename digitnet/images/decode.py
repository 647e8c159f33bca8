"""Opening users' image files safely: checked before anything is decoded, decoded in full,
upright, first frame only; plain grayscale PNGs take a quicker path through OpenCV.

The first stage of preprocessing (see digitnet.images.preprocess). No TensorFlow here.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import (
    BmpImagePlugin,
    IcoImagePlugin,
    Image,
    ImageOps,
    PngImagePlugin,
    UnidentifiedImageError,
)

from digitnet.errors import DigitnetError, first_line, os_reason
from digitnet.inputs import not_regular_reason

MAX_PIXELS = 50_000_000  # larger images are refused before any pixel is decoded
MAX_SIDE = 30_000  # ... and so are longer ones: Pillow keeps a pointer per row, resizing a
# weight per source pixel, so a 1x49,000,000 sliver took 1.7 GB and 12 s (and OpenCV's PNG
# reader refuses sides above 1,000,000, printing libpng's complaint on stderr)
TOO_MANY = ("image is {width}x{height} = {pixels} pixels, above the limit of {limit} "
            "(decompression bomb?)")
# ... and for an ICO, in the words of Pillow's own check, which refused it until then
ICON_TOO_MANY = ("Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be "
                 "decompression bomb DOS attack.")
SVG_SUFFIXES = (".svg", ".svgz")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLAIN_PNG_HEAD = 33  # the signature and the IHDR chunk, which must come first
# chunks that change nothing Pillow makes of a grayscale PNG (tEXt and iTXt may hold XMP
# orientation, iCCP makes libpng print warnings)
PLAIN_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tIME"})
# What a file's first bytes say it is, when Pillow will not read it: a clearer refusal than
# "not an image file". EPS is read by running Ghostscript on the file (were it installed), which
# no file from a stranger should do: refused like the others.
NOT_READ = {b"%PDF": "PDF", b"%!PS": "PostScript", b"\xc5\xd0\xd3\xc6": "PostScript"}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
NOT_OPENED = ("EPS",)  # Pillow's formats never opened (see NOT_READ)
ICON_HEAD = b"\x00\x00\x01\x00"  # an ICO file: Pillow decodes its largest image as it opens it
# open_checked changes Pillow's limit (a global) around Image.open: the server opens images in
# several threads at once, and two of them interleaved left it off (None) for the process
PILLOW_LIMIT = threading.Lock()
GREY = (0,)  # PNG colour types: grey
ANY_COLOUR = (0, 2, 4, 6)  # ... grey, RGB, grey and alpha, RGBA (not palette)

# Pillow warns about damage it works around in users' files (a TIFF's corrupt EXIF, say): the
# file is then decoded or refused with a one-line error, and the warning, printed on stderr
# above it, would only break the promise of one line per file.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # (see open_checked)


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
        image, an SVG, above MAX_PIXELS or MAX_SIDE, truncated or corrupt.
    """
    name = os.fspath(path)  # messages name the file as the user wrote it
    check_file(name)
    return decode(name, name, draft_side)


def load_image_bytes(data: bytes, name: str, draft_side: int | None = None) -> Image.Image:
    """load_image for an image held in memory (an upload): the same checks and messages.

    Args:
      data: the encoded image file's bytes.
      name: what messages call it (the upload's file name).
      draft_side: as for load_image.

    Raises:
      DigitnetError: as load_image, for empty, SVG, non-image, too large, truncated data.
    """
    check_head(name, data[:512])
    return decode(io.BytesIO(data), name, draft_side)


def decode(source, name: str, draft_side: int | None) -> Image.Image:
    """Decode a checked image (a file name or a binary stream); errors name it `name`."""
    try:
        with open_checked(source, name) as image:  # closes the file, keeps the pixels
            if draft_side:
                image.draft(image.mode, (draft_side, draft_side))
            image.load()  # the first frame only
            if image.mode in ("P", "PA") and image.palette is None:  # a PNG without PLTE:
                # Pillow decodes it, and fails an assert when asked for its colours
                raise DigitnetError(f"{name}: truncated or corrupt image (a palette image "
                                    f"without its palette)")
            # in place: a copy of a 49-megapixel RGBA image would be 196 MB more
            ImageOps.exif_transpose(image, in_place=True)
        return image
    except UnidentifiedImageError:
        raise DigitnetError(f"{name}: {unidentified(head(source, 12))}") from None
    except Image.DecompressionBombError as err:
        raise DigitnetError(f"{name}: {err}") from None
    except MemoryError:
        raise DigitnetError(f"{name}: not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        raise DigitnetError(f"{name}: truncated or corrupt image ({err})") from None
    except DigitnetError:
        raise
    except Exception as err:  # what else Pillow's parsers raise on damaged data: AVIF's
        # RuntimeError, a TIFF tag's TypeError, ... (found by fuzzing; a traceback, or a 500)
        raise DigitnetError(f"{name}: truncated or corrupt image "
                            f"({type(err).__name__}: {first_line(err)})") from None


def unidentified(start: bytes) -> str:
    """What to say of a file Pillow does not open, from its first 12 bytes."""
    if start[4:8] == b"ftyp" and start[8:12] in HEIF_BRANDS:
        return "HEIC/HEIF is not supported; export it as JPEG or PNG"
    for magic, kind in NOT_READ.items():
        if start.startswith(magic):
            return f"{kind} is not supported; export it as PNG"
    return "not an image file (cannot identify image format)"


@functools.cache
def opened_formats() -> tuple[str, ...]:
    """The formats Pillow may open: all it has but NOT_OPENED."""
    Image.init()
    return tuple(kind for kind in Image.OPEN if kind not in NOT_OPENED)


def check_file(name: str) -> None:
    """Refuse what is not a non-empty, readable, non-SVG file before handing it to Pillow."""
    path = Path(name)
    reason = not_regular_reason(name)  # a FIFO would block the read below forever
    if reason == "not found":
        raise DigitnetError(f"{name or repr(name)}: file not found")  # '': file not found
    if os.path.isdir(name):  # (Path.is_dir raises for a name too long)
        raise DigitnetError(f"{name}: is a folder, not an image file")
    if reason is not None:
        raise DigitnetError(f"{name}: {reason}")
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError as err:
        raise DigitnetError(f"{name}: cannot read file ({os_reason(err)})") from None
    check_head(name, head)


def check_head(name: str, head: bytes) -> None:
    """Refuse an empty file or an SVG (by its name or its first 512 bytes)."""
    if not head:
        raise DigitnetError(f"{name}: file is empty (0 bytes)")
    if name.lower().endswith(SVG_SUFFIXES) or b"<svg" in head.lower():
        raise DigitnetError(f"{name}: SVG is not supported; export it as PNG")


def open_checked(source, name: str) -> Image.Image:
    """Parse the image's header and refuse it, before decoding, if it claims too many pixels.

    This check, with its clearer message, stands in for Pillow's own decompression-bomb check
    while the header is parsed (nothing large is allocated then); Pillow's is back on after.
    An ICO is the exception: Pillow decodes its image as it opens it (a 1.5 MB icon holding a
    20000x20000 PNG took 1.6 GB before it was refused), so its size is read from its headers
    (icon_size) and checked before Image.open, and Pillow's limit is left as it is.
    """
    if head(source, 4) == ICON_HEAD:
        check_icon(source, name)
        image = Image.open(source, formats=opened_formats())
    else:
        with PILLOW_LIMIT:
            limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                image = Image.open(source, formats=opened_formats())
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    reason = refusal(*image.size)
    if reason is not None:
        image.close()
        raise DigitnetError(f"{name}: {reason}")
    return image


def refusal(width: int, height: int, too_many: str = TOO_MANY) -> str | None:
    """Why an image of width x height is refused before it is decoded (above MAX_PIXELS or
    MAX_SIDE), or None when it is within both; `too_many` words the first."""
    if width * height > MAX_PIXELS:
        return too_many.format(width=width, height=height, pixels=width * height,
                               limit=MAX_PIXELS)
    if max(width, height) > MAX_SIDE:
        return f"image is {width}x{height} pixels, a side above the limit of {MAX_SIDE}"
    return None


def check_icon(source, name: str) -> None:
    """Refuse an ICO whose image Pillow would decode is above MAX_PIXELS or MAX_SIDE, from its
    headers (the words for too many pixels are Pillow's, which refused it until then)."""
    reason = refusal(*(icon_size(source) or (0, 0)), too_many=ICON_TOO_MANY)
    if reason is not None:
        raise DigitnetError(f"{name}: {reason}")


def icon_size(source) -> tuple[int, int] | None:
    """The size of the image Pillow decodes as it opens an ICO (a file name or a binary stream,
    left where it was), read from headers only, by Pillow's own parsers, as its IcoFile.frame
    reads them: the directory's first entry in Pillow's order, then that entry's PNG header
    or BMP header (whose height counts the mask too). None when Pillow cannot parse them
    either: Image.open then fails on the same header, before decoding anything."""
    if isinstance(source, str):
        with open(source, "rb") as file:
            return icon_size(file)
    position = source.tell()
    try:
        entry = IcoImagePlugin.IcoFile(source).entry[0]
        source.seek(entry.offset)
        if source.read(8) == PNG_SIGNATURE:
            source.seek(entry.offset)
            return PngImagePlugin.PngImageFile(source).size
        source.seek(entry.offset)
        width, height = BmpImagePlugin.DibImageFile(source).size
        return width, int(height / 2)
    except Exception:  # Pillow's parsers raise SyntaxError, OSError, IndexError, ...
        return None
    finally:
        source.seek(position)


def head(source, size: int) -> bytes:
    """The first `size` bytes of a file name's file or of a binary stream (left where it was)."""
    if isinstance(source, str):
        with open(source, "rb") as file:
            return file.read(size)
    position = source.tell()
    data = source.read(size)
    source.seek(position)
    return data


def read_plain_png(name: str) -> np.ndarray | None:
    """The pixels of a plain 8-bit grayscale PNG, decoded by OpenCV in a third of Pillow's time.

    Plain: complete, every chunk's checksum right, not interlaced, and nothing in it that
    Pillow would act on (transparency, EXIF or XMP orientation, text, colour profiles): what
    MNIST-style exports are. Any other file, or any doubt, gives None, and load_image then
    decodes, checks and explains as for every image.
    """
    if name.lower().endswith(SVG_SUFFIXES) or not_regular_reason(name) is not None:
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
    return plain_png_pixels(data)


def claimed_pixels(data: bytes) -> int:
    """The pixels an encoded image's header claims, read without decoding it: what decoding
    it may take. 0 for data whose header is refused (above MAX_PIXELS or MAX_SIDE) or
    unreadable: its decoding stops at once."""
    try:
        width, height = claimed_size(data)
    except Exception:  # refused or unreadable: decoding will stop at once
        return 0
    return width * height if refusal(width, height) is None else 0


def claimed_size(data: bytes) -> tuple[int, int]:
    """The size an encoded image's header claims (an ICO's: (0, 0) when unreadable).

    Raises:
      DigitnetError, or what Pillow raises, for a header refused or unreadable.
    """
    size = png_size(data)
    if size is not None:
        return size
    if data.startswith(ICON_HEAD):  # not opened: Pillow would decode it
        return icon_size(io.BytesIO(data)) or (0, 0)
    with open_checked(io.BytesIO(data), "upload") as image:
        return image.size


def png_pixels(data: bytes) -> int | None:
    """The number of pixels a PNG's header claims (width x height), or None for other data."""
    size = png_size(data)
    return None if size is None else size[0] * size[1]


def png_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) a PNG's first chunk (IHDR) claims, or None for other data."""
    if len(data) < PLAIN_PNG_HEAD or not data.startswith(PNG_SIGNATURE) \
            or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def plain_png_pixels(data: bytes, colours: tuple[int, ...] = GREY) -> np.ndarray | None:
    """read_plain_png for a file's bytes in memory: the pixels, or None for any other file.

    With more `colours` (PNG colour types), OpenCV's pixels of those: BGR, or BGRA when the
    file has an alpha channel.
    """
    if not data.startswith(PNG_SIGNATURE) or not plain_png_header(data[16:29], colours):
        return None
    if b"<svg" in data[:512].lower():
        return None  # check_file's sniffing, as load_image would do it
    if not plain_png_chunks(memoryview(data), colours):
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != (2 if data[25] == 0 else 3) or pixels.dtype != np.uint8:
        return None
    return pixels


def plain_png_layers(data: bytes) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The luminance and alpha of a plain 8-bit PNG of any colour but a palette, as Pillow's
    convert("L") or convert("LA") makes them, decoded by OpenCV in a third of Pillow's time.

    Returns:
      (luminance, alpha) as uint8 arrays, alpha None for a file without one (Pillow then sees
      no transparency); None for any other file.
    """
    pixels = plain_png_pixels(data, ANY_COLOUR)
    if pixels is None:
        return None
    if pixels.ndim == 2:
        return pixels, None
    if pixels.shape[2] not in (3, 4):
        return None
    alpha = pixels[..., 3] if data[25] in (4, 6) and pixels.shape[2] == 4 else None
    return pillow_luminance(pixels), alpha


def pillow_luminance(bgr: np.ndarray) -> np.ndarray:
    """Pillow's ITU-R 601-2 luma of 8-bit BGR(A) pixels, its fixed-point rounding included.

    Its weights sum to 1 (65536), so a grey pixel's luma is its own level: a drawing in black
    and greys on white (a canvas) needs no arithmetic, only its red channel.
    """
    if is_grey(bgr):
        return np.ascontiguousarray(bgr[..., 2])
    blue, green, red = (bgr[..., channel].astype(np.uint32) for channel in range(3))
    return ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).astype(np.uint8)


def is_grey(bgr: np.ndarray) -> bool:
    """Whether every pixel of 8-bit BGR(A) pixels has blue == green == red."""
    if bgr.shape[2] == 4 and bgr.flags.c_contiguous:  # each pixel one uint32: B | G<<8 | R<<16
        pixels = bgr.view("<u4")  # little-endian, whatever the machine's order
        return not np.any((pixels ^ (pixels >> 8)) & 0xFFFF)  # B^G and G^R, both 0
    return (np.array_equal(bgr[..., 0], bgr[..., 1])
            and np.array_equal(bgr[..., 1], bgr[..., 2]))


def plain_png_chunks(data: memoryview, colours: tuple[int, ...] = GREY) -> bool:
    """Whether a PNG file's chunks are those of a plain 8-bit image of these colour types,
    its image data one run of IDAT chunks.

    The IDAT data is not inflated here (a check that would cost half of a canvas's decoding
    time): a file crafted with right checksums around corrupt compressed data makes OpenCV's
    libpng print a line on stderr before Pillow refuses it."""
    position = len(PNG_SIGNATURE)
    idats_end = None  # where the run of IDAT chunks ended
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = bytes(data[position + 4:position + 8])
        end = position + 12 + length
        if end > len(data) or kind not in PLAIN_PNG_CHUNKS:
            return False
        if (kind == b"IHDR") != (position == len(PNG_SIGNATURE)):
            return False  # IHDR first and only once (libpng would print its complaint)
        if zlib.crc32(data[position + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return False
        if position == len(PNG_SIGNATURE) and not plain_png_header(
                data[position + 8:end - 4], colours):
            return False
        if kind == b"IDAT":
            if idats_end not in (None, position):
                return False  # two runs of IDAT (libpng would print its complaint)
            idats_end = end
        if kind == b"IEND":
            return True
        position = end
    return False  # truncated: no IEND


def plain_png_header(header: bytes | memoryview, colours: tuple[int, ...] = GREY) -> bool:
    """Whether an IHDR chunk's data describes a plain 8-bit image of these colour types
    within MAX_PIXELS and MAX_SIDE."""
    if len(header) != 13:
        return False
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, _, _, interlace = header[8:13]
    return (depth == 8 and colour in colours and not interlace and width * height > 0
            and refusal(width, height) is None)
