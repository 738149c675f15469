"""Image path in, 384x384 RGB JPEG bytes out (Pillow or pillow-simd only; no Polars here)."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import stat
import struct
import time
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageFile

from .storage import is_url

if TYPE_CHECKING:
    from .objects import Objects

# A truncated file is an error to report, never a silently grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
DIGEST_CHUNK = 1 << 20

# PNG pixels are decoded by libspng (pyspng) where it gives exactly Pillow's pixels after
# to_rgb_or_rgba: by Pillow's mode, the mode libspng decodes to. Palette images with transparency
# (libspng as pyspng calls it does not apply tRNS) and 16-bit grey (Pillow's I;16, scaled here)
# stay with Pillow, as does any file libspng refuses (Pillow then decodes it, or fails it with its
# reason). The image data is inflated by libdeflate first, where it is installed (stored_png):
# inflating is most of a PNG's decode, and libdeflate does it 2-2.5x faster than the zlib libspng
# and Pillow use. PACKER_PNG_DECODER picks the path: spng (the default), spng-zlib (libspng
# inflating with zlib itself) or pillow; the output is the same whichever runs.
SPNG_TARGET = {"RGB": "RGB", "L": "RGB", "1": "RGB", "P": "RGB", "RGBA": "RGBA", "LA": "RGBA"}
PNG_DECODERS = ("spng", "spng-zlib", "pillow")
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
STORED_BLOCK = 65535  # the largest uncompressed deflate block
# Above this many bytes of image data, libspng inflates by itself: the libdeflate path holds the
# inflated data twice (about 3x the decoded image in all), which is bounded here (a 4096x4096 RGBA).
STORED_MAX = 64 << 20
IEND = b"\0\0\0\0IEND\xaeB`\x82"


class ImageFailure(Exception):
    """An image that cannot be packed; `reason` is a short, countable category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    orig_width: int
    orig_height: int
    orig_format: str
    dhash: int  # 64-bit difference hash of the resized image (near-duplicate detection)


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: 9x8 grey thumbnail, one bit per horizontally adjacent pair
    (left brighter than right). Robust to re-encoding, resizing and small edits; cheap."""
    small = image.convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = small.tobytes()
    bits = 0
    for row in range(8):
        base = row * 9
        for col in range(8):
            bits = (bits << 1) | (pixels[base + col] > pixels[base + col + 1])
    return bits


def file_digest(path: str, objects: Objects | None = None) -> str | None:
    """SHA-256 of a file's bytes (exact duplicates, groups, the audit); None when it cannot be read.
    SHA-256 runs at about 2 GB/s with the CPU's SHA extensions, faster than blake2b here. A URL is
    an object of `objects`, fetched whole."""
    if objects is not None and is_url(path):
        return objects.digest(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(DIGEST_CHUNK), b""):
                digest.update(block)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    return digest.hexdigest()


def fingerprint(paths: list[str], workers: int, objects: Objects | None = None) -> dict[str, str | None]:
    """A key per image file that is equal exactly when the bytes are: None when it cannot be read.

    Two files can only hold the same bytes if they have the same size, so a file whose size no
    other file has is keyed by its size, from one stat(); only files sharing a size are read and
    hashed (SHA-256). Meme corpora rarely repeat a size but for real copies, so the images are
    read once, by the workers, instead of twice. On `workers` threads of the parent: stat, file
    reads and hashlib release the GIL, so this scales without waiting for the pool to start. URLs
    are objects of `objects`: their sizes come from a listing, and shared sizes are fetched and hashed.
    """
    stats = stat_many(paths, workers, objects)
    sizes = {p: st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None for p, st in stats.items()}
    seen = Counter(sizes.values())
    shared = [p for p, size in sizes.items() if size is not None and seen[size] > 1]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as threads:
        digests = dict(zip(shared, threads.map(lambda p: file_digest(p, objects), shared)))
    return {p: digests[p] if p in digests else None if size is None else f"size:{size}" for p, size in sizes.items()}


def stat_many(paths: list[str], workers: int, objects: Objects | None = None) -> dict[str, Any]:
    """stat() of every distinct path (None where it fails), sorted by path. On `workers` threads
    (stat releases the GIL: a cold cache or a network file system waits in parallel), each taking
    one contiguous slice: a task per file would cost ten times the stat itself. With `objects`,
    each URL's answer is its ObjectFacts (size, last-modified, ETag), found by listing."""
    remote = objects.facts([p for p in set(paths) if is_url(p)]) if objects is not None else {}

    def batch(part: list[str]) -> list[os.stat_result | None]:
        out: list[os.stat_result | None] = []
        for path in part:
            try:
                out.append(os.stat(path))
            except (OSError, ValueError):  # ValueError: a NUL in the path
                out.append(None)
        return out

    unique = sorted(set(paths) - set(remote))
    step = max(1, -(-len(unique) // max(1, workers)))
    parts = [unique[i : i + step] for i in range(0, len(unique), step)]
    with ThreadPoolExecutor(max_workers=max(1, len(parts))) as threads:
        results = [st for part in threads.map(batch, parts) for st in part]
    return dict(sorted({**dict(zip(unique, results)), **remote}.items()))


def to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, or RGBA where the image has transparency; 16-bit scaled to 8-bit."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey: scale to 8 bits instead of clipping everything above 255 to white.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return image if image.mode == "RGBA" else image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def on_white(image: Image.Image) -> Image.Image:
    """RGBA composited on white; RGB unchanged."""
    if image.mode != "RGBA":
        return image
    background = Image.new("RGB", image.size, WHITE)
    background.paste(image, mask=image.getchannel("A"))
    return background


def open_regular(path: str) -> io.BufferedReader:
    """`path` opened for reading if it is a regular file; anything else (a FIFO a download tool
    left, a socket, a device, a folder) fails as `image_not_a_file` and is never read, since a read
    from a pipe would block the run. Opened non-blocking and checked again on the open file, so
    that a path swapped for a pipe in between cannot block either."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ImageFailure("image_not_a_file", f"{_kind(path)}: {path}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ImageFailure("image_not_a_file", f"{_kind(path)}: {path}")
    return os.fdopen(fd, "rb")


def _kind(path: str) -> str:
    mode = os.stat(path).st_mode
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def png_decoder() -> str:
    """The PNG decoder in use: PACKER_PNG_DECODER (spng, spng-zlib or pillow), spng by default
    where pyspng is installed."""
    wanted = os.environ.get("PACKER_PNG_DECODER", "spng")
    if wanted not in PNG_DECODERS:
        raise ValueError(f"PACKER_PNG_DECODER={wanted!r}: use one of {', '.join(PNG_DECODERS)}")
    return wanted if wanted == "pillow" or _optional("pyspng") is not None else "pillow"


_optional_modules: dict[str, Any] = {}


def _optional(name: str) -> Any:
    """An optional module (pyspng, deflate), imported once; None where it is not installed."""
    if name not in _optional_modules:
        try:
            _optional_modules[name] = importlib.import_module(name)
        except ImportError:
            _optional_modules[name] = None
    return _optional_modules[name]


def spng_pixels(image: Image.Image, handle: io.BufferedReader | io.BytesIO, inflate: bool = True) -> Image.Image | None:
    """The PNG's pixels decoded by libspng, in the mode to_rgb_or_rgba gives for Pillow's: None
    where libspng would not give Pillow's pixels, where the file carries EXIF (Pillow must read it,
    and reading it decodes the image) or any damage (png_for_spng), or where libspng refuses the
    file: Pillow decodes those, or fails them with its reason. With `inflate`, the image data is
    inflated by libdeflate and handed to libspng stored (stored_png), where that can be done.
    Called before anything asks Pillow for the pixels or the EXIF: either would decode the image."""
    target = SPNG_TARGET.get(image.mode)
    if target is None or (image.mode == "P" and "transparency" in image.info) or getattr(image, "is_animated", False):
        return None
    handle.seek(0)
    data = handle.read()
    chunks = png_chunks(data)
    if chunks is None or not png_for_spng(data, chunks):
        return None
    stored = stored_png(data, chunks) if inflate else None
    try:
        # 4 bytes a pixel: Pillow's own layout, copied as is.
        array = _optional("pyspng").load(stored or data, "RGBA")
    except RuntimeError:
        return None
    height, width = array.shape[:2]
    if (width, height) != image.size:
        return None
    # RGB targets come as RGBX: the alpha libspng fills in (no tRNS applied, as in Pillow's RGB
    # conversion) is dropped after the resize.
    mode = "RGBA" if target == "RGBA" else "RGBX"
    return Image.frombuffer(mode, (width, height), array, "raw", mode, 0, 1)


Chunk = tuple[bytes, int, int]  # a PNG chunk: its type, where its data starts and ends


def png_chunks(data: bytes) -> list[Chunk] | None:
    """Every chunk of a PNG up to IEND, each whole and its CRC right; None for a damaged or
    truncated file (pyspng tells libspng to ignore CRCs, and a damaged IDAT may then still
    inflate, where Pillow stops at the broken stream: Pillow judges those)."""
    view = memoryview(data)
    libdeflate = _optional("deflate")
    crc32 = libdeflate.crc32 if libdeflate is not None else zlib.crc32  # the same CRC, libdeflate's 3x faster
    chunks = []
    position = 8
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > len(data) or crc32(view[position + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            return None
        chunks.append((kind, position + 8, end))
        if kind == b"IEND":
            return chunks
        position = end + 4
    return None  # no IEND: a truncated file


def png_for_spng(data: bytes, chunks: list[Chunk]) -> bool:
    """Whether libspng may decode this PNG (its `chunks`, all sound) in Pillow's place: not where it
    carries EXIF where Pillow looks for it (an eXIf chunk, or ImageMagick's "Raw profile type exif"
    text chunk), which only Pillow reads."""
    for kind, start, _ in chunks:
        if kind == b"eXIf":
            return False
        if kind in (b"tEXt", b"zTXt", b"iTXt") and data[start : start + 22] == b"Raw profile type exif\0":
            return False
    return True


def image_data_size(ihdr: bytes) -> int | None:
    """Bytes of a PNG's inflated image data (every scanline with its filter byte, every Adam7 pass)
    by its IHDR; None for a header this does not know."""
    if len(ihdr) != 13:
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    if colour not in PNG_CHANNELS or depth not in (1, 2, 4, 8, 16) or interlace not in (0, 1):
        return None
    bits = PNG_CHANNELS[colour] * depth

    def scanlines(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if not interlace:
        return scanlines(width, height)
    return sum(scanlines(-(-(width - x) // dx), -(-(height - y) // dy)) for x, y, dx, dy in ADAM7)


def stored_png(data: bytes, chunks: list[Chunk]) -> bytes | None:
    """The same PNG with its image data inflated by libdeflate and stored uncompressed (deflate's
    stored blocks, its Adler-32 and the IDAT's CRC right), for libspng to unfilter: the same pixels,
    without zlib's slow inflate. None, and libspng inflates the file itself, where libdeflate is not
    installed or the data is not exactly one sound zlib stream of the size the header says (libspng
    or Pillow then judges the file as before), or would be over STORED_MAX."""
    libdeflate = _optional("deflate")
    kinds = [kind for kind, _, _ in chunks]
    if libdeflate is None or kinds[0] != b"IHDR" or b"IDAT" not in kinds:
        return None
    first = kinds.index(b"IDAT")
    count = kinds.count(b"IDAT")
    if kinds[first : first + count] != [b"IDAT"] * count:  # IDATs not consecutive: not a PNG libspng reads
        return None
    size = image_data_size(data[chunks[0][1] : chunks[0][2]])
    if not size or size > STORED_MAX:
        return None
    view = memoryview(data)
    stream = b"".join(view[start:end] for _, start, end in chunks[first : first + count])
    try:
        plain = libdeflate.zlib_decompress(stream, size)
    except libdeflate.DeflateError:
        return None
    if len(plain) != size:
        return None
    body: list[bytes | memoryview] = [b"\x78\x01"]  # a zlib header: deflate, 32 KiB window
    inflated = memoryview(plain)
    for offset in range(0, size, STORED_BLOCK):
        n = min(STORED_BLOCK, size - offset)
        body.append(struct.pack("<BHH", offset + n == size, n, n ^ 0xFFFF))  # final?, LEN, NLEN
        body.append(inflated[offset : offset + n])
    body.append(struct.pack(">I", libdeflate.adler32(plain)))
    crc = libdeflate.crc32(b"IDAT")
    for part in body:
        crc = libdeflate.crc32(part, crc)
    head = chunks[first][1] - 8  # where the first IDAT chunk starts
    length = sum(len(part) for part in body)
    return b"".join((view[:head], struct.pack(">I4s", length, b"IDAT"), *body, struct.pack(">I", crc), IEND))


class Clock:
    """Seconds per stage, summed over calls (the profiler's stage breakdown); a no-op when off."""

    def __init__(self, on: bool = True):
        self.on = on
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def start(self) -> None:
        if self.on:
            self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.on:
            now = time.perf_counter()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
            self._last = now


OFF = Clock(on=False)


def encode_image(
    path: str,
    size: int,
    quality: int,
    max_pixels: int,
    *,
    draft: bool = True,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
    reducing_gap: float | None = None,
    decoder: str | None = None,
    clock: Clock = OFF,
    data: bytes | None = None,
) -> EncodedImage:
    """Open, orient, convert, squash-resize to size x size, encode as JPEG.

    JPEGs are decoded in draft mode (DCT scaling by 1/2, 1/4 or 1/8 to no less than the target
    size), cheaper than a full decode for large memes. EXIF orientation is applied last, to the
    384x384 result: squashing to a square commutes with the 8 orientations, so this equals orienting
    the source, without copying a full-size image. PNG pixels come from libspng where it gives
    Pillow's (spng_pixels). The keyword arguments exist for the profiler's comparisons; packer uses
    the defaults (`decoder`: png_decoder()). `data`: the image's bytes, already fetched (an object
    of a bucket): decoded exactly as the file would be.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    decoder = decoder or png_decoder()
    clock.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            source = io.BytesIO(data) if data is not None else open_regular(path)
            with source as handle, Image.open(handle) as image:
                orig_format = image.format or "unknown"
                image.seek(0)  # first frame of a GIF / animated WebP
                # libspng first: for a PNG, Pillow's getexif() would decode the image itself.
                pixels = (
                    spng_pixels(image, handle, inflate=decoder == "spng")
                    if orig_format == "PNG" and decoder != "pillow"
                    else None
                )
                orientation = 1 if pixels is not None else image.getexif().get(EXIF_ORIENTATION, 1)
                width, height = image.size
                if orientation in (5, 6, 7, 8):
                    width, height = height, width
                if pixels is None:
                    if draft and orig_format == "JPEG":
                        image.draft("RGB", (size, size))
                    image.load()
                    pixels = image
                clock.lap("decode")
                # libspng's RGB pixels come as RGBX (Pillow's own layout, not copied): resized as they
                # are, each colour channel alone, and made RGB at 384x384.
                converted = pixels if pixels.mode == "RGBX" else to_rgb_or_rgba(pixels)
                clock.lap("convert")
                # Transparent images are resized first (Pillow resizes RGBA premultiplied), then put
                # on white: the same pixels as flattening first, at 384x384 instead of full size.
                resized = on_white(converted.resize((size, size), resample, reducing_gap=reducing_gap))
                if resized.mode == "RGBX":
                    resized = resized.convert("RGB")
                # The target is square, so orienting the small result equals orienting the source.
                if orientation in TRANSPOSE:
                    resized = resized.transpose(TRANSPOSE[orientation])
                clock.lap("resize_orient")
    except FileNotFoundError:
        raise ImageFailure("image_missing", path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFailure("image_too_large", str(exc)) from None
    except Image.UnidentifiedImageError:
        raise ImageFailure("image_unreadable", "not an image or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageFailure("image_corrupt", f"{type(exc).__name__}: {exc}") from None
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=quality)
    clock.lap("encode")
    fingerprint = dhash(resized)
    clock.lap("dhash")
    return EncodedImage(out.getvalue(), width, height, orig_format, fingerprint)
