"""Image path in, 384x384 RGB JPEG bytes out (Pillow or pillow-simd only; no Polars here)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps

# A truncated file is an error to report, never a silently grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
WHITE = (255, 255, 255)
DIGEST_CHUNK = 1 << 20


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


def file_digest(path: str) -> str | None:
    """blake2b of a file's bytes (exact-duplicate detection); None when it cannot be read."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(DIGEST_CHUNK), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on white, 16-bit scaled to 8-bit."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey: scale to 8 bits instead of clipping everything above 255 to white.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def encode_image(path: str, size: int, quality: int, max_pixels: int) -> EncodedImage:
    """Open, orient, convert, squash-resize to size x size, encode as JPEG.

    JPEGs are decoded in draft mode (DCT scaling to no less than the target size), which is
    several times cheaper than a full decode for large memes.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                orig_format = image.format or "unknown"
                image.seek(0)  # first frame of a GIF / animated WebP
                width, height = _oriented_size(image)
                if orig_format == "JPEG":
                    # Draft before orientation: a square target is the same either way round.
                    image.draft("RGB", (size, size))
                oriented = ImageOps.exif_transpose(image)
                rgb = to_rgb(oriented)
                resized = rgb.resize((size, size), Image.Resampling.BICUBIC)
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
    return EncodedImage(out.getvalue(), width, height, orig_format, dhash(resized))


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """The image's size as displayed: width and height swapped for a 90-degree EXIF orientation."""
    width, height = image.size
    orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
