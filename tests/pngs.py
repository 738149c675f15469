"""PNG files of every variant, written byte by byte (Pillow cannot write 16-bit colour, Adam7
interlacing or low-bit grey): the corpus on which packer's libspng path must give Pillow's pixels."""

from __future__ import annotations

import struct
import zlib

import numpy as np

# color types
GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
CHANNELS = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rows(samples: np.ndarray, depth: int, filter_type: int) -> bytes:
    """Scanlines of a (h, w, c) array of samples at `depth` bits, each with its filter byte
    (0 none, 1 sub, 2 up): the filters make the decoder unfilter."""
    h = samples.shape[0]
    if depth < 8:
        flat = samples.reshape(h, -1).astype(np.uint8)
        per = 8 // depth
        pad = (-flat.shape[1]) % per
        flat = np.pad(flat, ((0, 0), (0, pad)))
        groups = flat.reshape(h, -1, per)
        shifts = np.array([8 - depth * (i + 1) for i in range(per)], dtype=np.uint8)
        raw = (groups << shifts).sum(axis=2).astype(np.uint8)
        bpp = 1
    elif depth == 8:
        raw = samples.reshape(h, -1).astype(np.uint8)
        bpp = samples.shape[2]
    else:
        raw = samples.reshape(h, -1).astype(">u2").view(np.uint8).reshape(h, -1)
        bpp = 2 * samples.shape[2]
    out = bytearray()
    previous = np.zeros(raw.shape[1], dtype=np.uint8)
    for row in raw:
        if filter_type == 1:
            left = np.concatenate([np.zeros(bpp, dtype=np.uint8), row[:-bpp]])
            line = (row - left).astype(np.uint8)
        elif filter_type == 2:
            line = (row - previous).astype(np.uint8)
        else:
            line = row
        out.append(filter_type)
        out += line.tobytes()
        previous = row
    return bytes(out)


def png(
    samples: np.ndarray,
    color: int,
    depth: int = 8,
    *,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    gamma: int | None = None,
    filter_type: int = 1,
    exif_orientation: int | None = None,
) -> bytes:
    """A PNG of `samples` (h, w, channels) stored as they are (indices for a palette image)."""
    if samples.ndim == 2:
        samples = samples[:, :, None]
    h, w, _ = samples.shape
    head = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 1 if interlace else 0)
    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                data += _rows(sub, depth, filter_type)
    else:
        data = _rows(samples, depth, filter_type)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", head)]
    if gamma is not None:
        parts.append(chunk(b"gAMA", struct.pack(">I", gamma)))
    if palette is not None:
        parts.append(chunk(b"PLTE", palette.astype(np.uint8).tobytes()))
    if trns is not None:
        parts.append(chunk(b"tRNS", trns))
    parts.append(chunk(b"IDAT", zlib.compress(data, 6)))
    if exif_orientation is not None:  # after the image data, where Pillow finds it only by decoding
        tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, exif_orientation, 0, 0)
        parts.append(chunk(b"eXIf", tiff))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def corpus(h: int = 61, w: int = 83, seed: int = 0) -> dict[str, bytes]:
    """Every colour type at every bit depth it allows, interlaced and not, palettes with and without
    transparency, grey and colour with a tRNS colour key, and gamma-tagged files."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    for interlace in (False, True):
        tag = "_adam7" if interlace else ""
        for depth in (1, 2, 4, 8, 16):
            top = (1 << depth) - 1
            grey = rng.integers(0, top + 1, (h, w, 1))
            files[f"grey{depth}{tag}"] = png(grey, GREY, depth, interlace=interlace)
            key = int(grey[0, 0, 0])
            files[f"grey{depth}_trns{tag}"] = png(grey, GREY, depth, interlace=interlace, trns=struct.pack(">H", key))
            if depth <= 8:
                n = 1 << depth
                palette = rng.integers(0, 256, (n, 3))
                index = rng.integers(0, n, (h, w, 1))
                files[f"palette{depth}{tag}"] = png(index, PALETTE, depth, interlace=interlace, palette=palette)
                alpha = bytes(rng.integers(0, 256, n // 2 + 1).astype(np.uint8))
                files[f"palette{depth}_trns{tag}"] = png(
                    index, PALETTE, depth, interlace=interlace, palette=palette, trns=alpha
                )
            if depth >= 8:
                colour = rng.integers(0, top + 1, (h, w, 3))
                files[f"rgb{depth}{tag}"] = png(colour, RGB, depth, interlace=interlace)
                key = b"".join(struct.pack(">H", int(v)) for v in colour[0, 0])
                files[f"rgb{depth}_trns{tag}"] = png(colour, RGB, depth, interlace=interlace, trns=key)
                files[f"rgba{depth}{tag}"] = png(rng.integers(0, top + 1, (h, w, 4)), RGBA, depth, interlace=interlace)
                files[f"grey_alpha{depth}{tag}"] = png(
                    rng.integers(0, top + 1, (h, w, 2)), GREY_ALPHA, depth, interlace=interlace
                )
                files[f"rgb{depth}_gamma{tag}"] = png(colour, RGB, depth, interlace=interlace, gamma=45455)
        files[f"rgb8_up{tag}"] = png(rng.integers(0, 256, (h, w, 3)), RGB, 8, interlace=interlace, filter_type=2)
        files[f"rgb8_exif_rotated{tag}"] = png(rng.integers(0, 256, (h, w, 3)), RGB, 8, interlace=interlace,
                                               exif_orientation=6)  # fmt: skip
    return files
