"""Every image form of INPUTS.md: packed as 384x384 RGB, or failed with a reason."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image, ImageOps, features

from packer.images import ImageFailure, encode_image

SIZE, QUALITY, MAX_PIXELS = 384, 95, 89_478_485


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def save(path: Path, image: Image.Image, fmt: str, **kw) -> str:
    image.save(path, fmt, **kw)
    return str(path)


def half_red_half_blue(size=(800, 400)) -> Image.Image:
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


CASES = {
    "baseline.jpg": lambda p: save(p, half_red_half_blue(), "JPEG"),
    "progressive.jpg": lambda p: save(p, half_red_half_blue(), "JPEG", progressive=True),
    "cmyk.jpg": lambda p: save(p, Image.new("CMYK", (500, 300), (0, 255, 255, 0)), "JPEG"),
    "rgb.png": lambda p: save(p, half_red_half_blue(), "PNG"),
    "rgba.png": lambda p: save(p, Image.new("RGBA", (400, 400), (255, 0, 0, 0)), "PNG"),
    "la.png": lambda p: save(p, Image.new("LA", (400, 400), (0, 0)), "PNG"),
    "palette.png": lambda p: save(p, half_red_half_blue().convert("P"), "PNG"),
    "palette_transparent.png": lambda p: save(p, Image.new("P", (400, 400), 0), "PNG", transparency=0),
    "grey.png": lambda p: save(p, Image.new("L", (400, 400), 128), "PNG"),
    "grey16.png": lambda p: save(p, Image.new("I;16", (400, 400), 65535), "PNG"),
    "anim.gif": lambda p: save(
        p, Image.new("P", (400, 400), 1), "GIF", save_all=True, append_images=[Image.new("P", (400, 400), 2)]
    ),
    "image.bmp": lambda p: save(p, half_red_half_blue(), "BMP"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_format_and_mode_becomes_384_rgb_jpeg(tmp_path, name):
    path = CASES[name](tmp_path / name)
    out = encode_image(path, SIZE, QUALITY, MAX_PIXELS)
    image = decode(out.data)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIZE, SIZE))
    assert out.orig_width > 0 and out.orig_height > 0


def test_transparency_is_composited_on_white(tmp_path):
    for name in ("rgba.png", "la.png", "palette_transparent.png"):
        image = decode(encode_image(CASES[name](tmp_path / name), SIZE, QUALITY, MAX_PIXELS).data)
        assert min(image.getpixel((SIZE // 2, SIZE // 2))) > 245, name


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    path = save(tmp_path / "mid16.png", Image.new("I;16", (400, 400), 32768), "PNG")
    value = decode(encode_image(path, SIZE, QUALITY, MAX_PIXELS).data).getpixel((10, 10))
    assert all(118 <= c <= 138 for c in value)


def test_exif_orientation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(tmp_path / "rot.jpg", half_red_half_blue((800, 400)), "JPEG", exif=exif.tobytes())
    out = encode_image(path, SIZE, QUALITY, MAX_PIXELS)
    assert (out.orig_width, out.orig_height) == (400, 800)
    image = decode(out.data)
    top, bottom = image.getpixel((SIZE // 2, 20)), image.getpixel((SIZE // 2, SIZE - 20))
    assert top[0] > 200 and top[2] < 60  # red half on top after the turn
    assert bottom[2] > 200 and bottom[0] < 60


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (100, 100), c).convert("P") for c in ((255, 0, 0), (0, 255, 0))]
    path = save(tmp_path / "two.gif", frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixel = decode(encode_image(path, SIZE, QUALITY, MAX_PIXELS).data).getpixel((50, 50))
    assert pixel[0] > 200 and pixel[1] < 60


@pytest.mark.skipif(not features.check("webp"), reason="this Pillow build has no WebP")
def test_webp(tmp_path):
    path = save(tmp_path / "a.webp", half_red_half_blue(), "WEBP")
    assert decode(encode_image(path, SIZE, QUALITY, MAX_PIXELS).data).size == (SIZE, SIZE)


def test_jpeg_output_is_deterministic_across_processes(tmp_path):
    """The same bytes from two fresh interpreters (what two pool workers are), and from this one."""
    import subprocess
    import sys

    path = CASES["baseline.jpg"](tmp_path / "b.jpg")
    code = (
        "import hashlib, sys\nfrom packer.images import encode_image\n"
        f"print(hashlib.sha256(encode_image(sys.argv[1], {SIZE}, {QUALITY}, {MAX_PIXELS}).data).hexdigest())"
    )
    command = [sys.executable, "-c", code, path]
    runs = [subprocess.run(command, capture_output=True, text=True, check=True) for _ in (1, 2)]
    here = hashlib.sha256(encode_image(path, SIZE, QUALITY, MAX_PIXELS).data).hexdigest()
    assert runs[0].stdout.strip() == runs[1].stdout.strip() == here


def broken(tmp_path: Path, kind: str) -> str:
    path = tmp_path / f"{kind}.jpg"
    if kind == "missing":
        return str(path)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_image":
        path.write_text("hello, I am text")
    elif kind == "truncated":
        save(path, half_red_half_blue(), "JPEG")
        path.write_bytes(path.read_bytes()[:400])
    elif kind == "truncated_png":
        path = tmp_path / "t.png"
        save(path, half_red_half_blue(), "PNG")
        path.write_bytes(path.read_bytes()[:200])
    return str(path)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "image_missing"),
        ("empty", "image_unreadable"),
        ("not_image", "image_unreadable"),
        ("truncated", "image_corrupt"),
        ("truncated_png", "image_corrupt"),
    ],
)
def test_broken_files_fail_with_reason(tmp_path, kind, reason):
    with pytest.raises(ImageFailure) as info:
        encode_image(broken(tmp_path, kind), SIZE, QUALITY, MAX_PIXELS)
    assert info.value.reason == reason


def test_decompression_bomb_fails(tmp_path):
    path = save(tmp_path / "big.png", Image.new("L", (3000, 3000), 0), "PNG")
    with pytest.raises(ImageFailure) as info:
        encode_image(path, SIZE, QUALITY, max_pixels=1_000_000)
    assert info.value.reason == "image_too_large"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_orienting_the_source_first(tmp_path, orientation):
    # Four quadrants of different colours on a non-square image: any wrong turn or flip shows.
    source = Image.new("RGB", (900, 500))
    for (x, y), colour in zip(
        [(0, 0), (450, 0), (0, 250), (450, 250)], [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    ):
        source.paste(colour, (x, y, x + 450, y + 250))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / f"o{orientation}.jpg", source, "JPEG", exif=exif.tobytes())
    out = encode_image(path, SIZE, QUALITY, MAX_PIXELS)
    reference = ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    image = decode(out.data)
    for x, y in [
        (SIZE // 4, SIZE // 4),
        (3 * SIZE // 4, SIZE // 4),
        (SIZE // 4, 3 * SIZE // 4),
        (3 * SIZE // 4, 3 * SIZE // 4),
    ]:
        assert all(abs(a - b) < 40 for a, b in zip(image.getpixel((x, y)), reference.getpixel((x, y)))), (x, y)
    assert (out.orig_width, out.orig_height) == reference_size(orientation)


def reference_size(orientation: int) -> tuple[int, int]:
    return (500, 900) if orientation in (5, 6, 7, 8) else (900, 500)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "progressive"])
def test_draft_decode_of_large_jpegs_matches_a_full_decode(tmp_path, mode):
    # Large enough that the draft scales by 1/4: colours and layout must match the full decode.
    source = half_red_half_blue((1800, 1600))
    image = source.convert("RGB" if mode == "progressive" else mode)
    path = save(tmp_path / f"{mode}.jpg", image, "JPEG", quality=92, progressive=mode == "progressive")
    fast = decode(encode_image(path, SIZE, QUALITY, MAX_PIXELS).data)
    full = decode(encode_image(path, SIZE, QUALITY, MAX_PIXELS, draft=False).data)
    for x in (SIZE // 4, 3 * SIZE // 4):
        assert all(abs(a - b) <= 8 for a, b in zip(fast.getpixel((x, SIZE // 2)), full.getpixel((x, SIZE // 2))))
    assert (fast.mode, fast.size) == ("RGB", (SIZE, SIZE))


def test_fingerprint_keys_equal_exactly_when_bytes_are(tmp_path):
    from packer.images import fingerprint

    a, copy, same_size, other, missing = (str(tmp_path / n) for n in ("a", "copy", "same_size", "other", "missing"))
    for path, data in ((a, b"x" * 100), (copy, b"x" * 100), (same_size, b"y" * 100), (other, b"z" * 7)):
        with open(path, "wb") as handle:
            handle.write(data)
    keys = fingerprint([other, a, missing, copy, same_size, a], workers=2)
    assert set(keys) == {a, copy, same_size, other, missing}
    assert keys[a] == keys[copy] == hashlib.sha256(b"x" * 100).hexdigest()
    assert keys[same_size] == hashlib.sha256(b"y" * 100).hexdigest()  # same size, other bytes: hashed, differs
    assert keys[other] == "size:7"  # no other file is 7 bytes: never read
    assert keys[missing] is None
