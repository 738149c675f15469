"""PNG pixels through libspng (pyspng), with the image data inflated by libdeflate or by libspng
itself, give exactly the bytes the Pillow path packs, on every PNG variant (colour types, bit
depths, palettes with and without transparency, colour keys, Adam7, gamma-tagged), and broken files
fail as they do with Pillow."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import Workspace, digests
from PIL import Image
from pngs import chunk, corpus

from packer.images import (
    PNG_DECODERS,
    ImageFailure,
    encode_image,
    image_data_size,
    png_chunks,
    png_decoder,
    spng_pixels,
    stored_png,
)

pyspng = pytest.importorskip("pyspng", reason="pyspng (libspng) is not installed: pip install -e .")
libdeflate = pytest.importorskip("deflate", reason="deflate (libdeflate) is not installed: pip install -e .")

FILES = corpus()
# Where libspng cannot give Pillow's pixels (it does not apply a palette's tRNS; Pillow reads 16-bit
# grey as I;16, which packer scales itself), packer keeps Pillow's decoder.
# A PNG with EXIF (its orientation applies) is Pillow's too: only Pillow reads it.
PILLOW_ONLY = {
    name for name in FILES if "palette" in name and "trns" in name or name.startswith("grey16") or "exif" in name
}


def outcome(path: Path, decoder: str) -> tuple[str, str]:
    try:
        encoded = encode_image(str(path), 384, 90, 10_000_000, decoder=decoder)
    except ImageFailure as exc:
        return "failed", exc.reason
    return "packed", hashlib.sha256(encoded.data).hexdigest() + f" {encoded.dhash} {encoded.orig_width}"


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_png_variant_packs_the_same_bytes_with_libspng(name, tmp_path):
    path = tmp_path / f"{name}.png"
    path.write_bytes(FILES[name])
    with Image.open(path) as image, open(path, "rb") as handle:
        used = spng_pixels(image, handle) is not None
    assert used == (name not in PILLOW_ONLY), name  # the libspng path really runs where it should
    results = {decoder: outcome(path, decoder) for decoder in PNG_DECODERS}
    assert results["spng"][0] == "packed"
    assert results["spng"] == results["spng-zlib"] == results["pillow"]
    if "exif" in name:  # the orientation was applied: 83 wide becomes 61 wide... as orig_width says
        assert results["pillow"][1].endswith(" 61")


@pytest.mark.parametrize("name", sorted(FILES))
def test_libdeflate_inflates_every_variant_for_libspng(name):
    """The stored rewrite is what libspng decodes on the default path: it exists for every variant
    (Adam7 and sub-byte depths included: the header gives the exact inflated size), its Adler-32 and
    CRC are right (zlib checks both), and libspng decodes it to the very same array."""
    data = FILES[name]
    chunks = png_chunks(data)
    stored = stored_png(data, chunks)
    assert stored is not None
    rewritten = png_chunks(stored)  # every chunk whole, its CRC right
    kinds = [kind for kind, _, _ in chunks]
    assert [kind for kind, _, _ in rewritten] == [*kinds[: kinds.index(b"IDAT")], b"IDAT", b"IEND"]
    _, start, end = rewritten[-2]
    inflated = zlib.decompress(stored[start:end])  # checks the Adler-32
    assert len(inflated) == image_data_size(data[16:29])
    assert inflated == zlib.decompress(b"".join(data[s:e] for k, s, e in chunks if k == b"IDAT"))
    assert (pyspng.load(stored, "RGBA") == pyspng.load(data, "RGBA")).all()


def test_libdeflate_declines_what_is_not_one_sound_stream_of_the_right_size():
    data = FILES["rgb8"]
    chunks = png_chunks(data)
    kind, start, end = next(c for c in chunks if c[0] == b"IDAT")
    stream = zlib.decompress(data[start:end])

    def with_idat(payload: bytes) -> bytes:
        return data[: start - 8] + chunk(b"IDAT", payload) + data[end + 4 :]

    short = with_idat(zlib.compress(stream[:-5]))  # a row short of the header's size
    long = with_idat(zlib.compress(stream + b"\0" * 50))  # more than the header's size
    bad_adler = with_idat(data[start : end - 1] + bytes([data[end - 1] ^ 1]))
    for broken_file in (short, long, bad_adler):
        assert stored_png(broken_file, png_chunks(broken_file)) is None
    assert stored_png(data, chunks) is not None


def test_image_data_split_over_many_idat_chunks_is_inflated_whole():
    """libpng writes 8 KiB IDATs: their data is one zlib stream, joined before inflating. IDATs with
    another chunk between them are not a PNG libspng reads: libdeflate leaves those alone."""
    data = FILES["rgba8"]
    kind, start, end = next(c for c in png_chunks(data) if c[0] == b"IDAT")
    stream = data[start:end]
    cuts = [0, len(stream) // 3, 2 * len(stream) // 3, len(stream)]
    pieces = [stream[a:b] for a, b in zip(cuts, cuts[1:])]

    split = data[: start - 8] + b"".join(chunk(b"IDAT", piece) for piece in pieces) + data[end + 4 :]
    stored = stored_png(split, png_chunks(split))
    assert stored is not None
    assert (pyspng.load(stored, "RGBA") == pyspng.load(data, "RGBA")).all()
    note = chunk(b"tEXt", b"Comment\0between")
    apart = data[: start - 8] + chunk(b"IDAT", pieces[0]) + note + chunk(b"IDAT", b"".join(pieces[1:]))
    apart += data[end + 4 :]
    assert stored_png(apart, png_chunks(apart)) is None


def broken(data: bytes) -> dict[str, bytes]:
    idat = data.index(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 40] ^= 0xFF
    return {
        "truncated_in_header": data[:30],
        "truncated_in_idat": data[: idat + 60],
        "truncated_before_iend": data[:-12],
        "idat_byte_flipped": bytes(flipped),
        "trailing_garbage": data + b"garbage" * 10,
    }


@pytest.mark.parametrize("source", ["rgb8", "palette4", "rgba16_adam7", "grey8"])
def test_broken_pngs_fail_or_pack_as_with_pillow(source, tmp_path):
    for name, data in broken(FILES[source]).items():
        path = tmp_path / f"{source}_{name}.png"
        path.write_bytes(data)
        assert outcome(path, "spng") == outcome(path, "spng-zlib") == outcome(path, "pillow"), name
    path = tmp_path / "truncated.png"
    path.write_bytes(FILES[source][:-40])
    assert outcome(path, "spng")[0] == "failed"


def test_the_switch(monkeypatch):
    monkeypatch.delenv("PACKER_PNG_DECODER", raising=False)
    assert png_decoder() == "spng"
    for decoder in ("pillow", "spng-zlib", "spng"):
        monkeypatch.setenv("PACKER_PNG_DECODER", decoder)
        assert png_decoder() == decoder
    monkeypatch.setenv("PACKER_PNG_DECODER", "libpng")
    with pytest.raises(ValueError, match="PACKER_PNG_DECODER='libpng'"):
        png_decoder()


@pytest.mark.slow  # two packs of large PNGs
def test_a_pack_of_pngs_is_byte_identical_with_and_without_libspng(tmp_path):
    """Whole runs on 2 real pool workers, as a user switches: PACKER_PNG_DECODER=pillow, spng-zlib
    and the default."""
    ws = Workspace(tmp_path / "ws")
    ws.images.mkdir(parents=True)
    for i, name in enumerate(sorted(FILES)):
        path = ws.images / f"{name}.png"
        path.write_bytes(FILES[name])
        labels = {"misogynous": i % 2, "shaming": 0, "stereotype": 0, "objectification": 0, "violence": 0}
        ws.add(f"mami_{i}", "mami", "train", labels, image=str(path))
    ws.write()
    results = {}
    for decoder in PNG_DECODERS:
        env = {**os.environ, "PACKER_PNG_DECODER": decoder}
        command = [sys.executable, "-m", "packer", *ws.args("--workers", "2")]
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ws.root)
        assert done.returncode in (0, 1), done.stderr
        results[decoder] = digests(ws.out)
        ws.out.rename(tmp_path / decoder)  # the next run writes the same paths (stats.json records them)
    assert results["spng"] == results["spng-zlib"] == results["pillow"]
    stats = json.loads((tmp_path / "spng" / "stats.json").read_text())
    assert stats["packed_examples"] == len(FILES)
