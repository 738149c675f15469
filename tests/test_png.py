"""PNG pixels through libspng (pyspng) give exactly the bytes the Pillow path packs, on every PNG
variant (colour types, bit depths, palettes with and without transparency, colour keys, Adam7,
gamma-tagged), and broken files fail as they do with Pillow."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Workspace, digests
from PIL import Image
from pngs import corpus

from packer.images import ImageFailure, encode_image, png_decoder, spng_pixels

pyspng = pytest.importorskip("pyspng", reason="pyspng (libspng) is not installed: pip install -e .")

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
    spng, pillow = outcome(path, "spng"), outcome(path, "pillow")
    assert spng[0] == "packed"
    assert spng == pillow
    if "exif" in name:  # the orientation was applied: 83 wide becomes 61 wide... as orig_width says
        assert pillow[1].endswith(" 61")


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
        assert outcome(path, "spng") == outcome(path, "pillow"), name
    path = tmp_path / "truncated.png"
    path.write_bytes(FILES[source][:-40])
    assert outcome(path, "spng")[0] == "failed"


def test_the_switch(monkeypatch):
    monkeypatch.delenv("PACKER_PNG_DECODER", raising=False)
    assert png_decoder() == "spng"
    monkeypatch.setenv("PACKER_PNG_DECODER", "pillow")
    assert png_decoder() == "pillow"
    monkeypatch.setenv("PACKER_PNG_DECODER", "libpng")
    with pytest.raises(ValueError, match="PACKER_PNG_DECODER='libpng'"):
        png_decoder()


def test_a_pack_of_pngs_is_byte_identical_with_and_without_libspng(tmp_path):
    """Whole runs on 2 real pool workers, as a user switches: PACKER_PNG_DECODER=pillow vs default."""
    ws = Workspace(tmp_path / "ws")
    ws.images.mkdir(parents=True)
    for i, name in enumerate(sorted(FILES)):
        path = ws.images / f"{name}.png"
        path.write_bytes(FILES[name])
        labels = {"misogynous": i % 2, "shaming": 0, "stereotype": 0, "objectification": 0, "violence": 0}
        ws.add(f"mami_{i}", "mami", "train", labels, image=str(path))
    ws.write()
    results = {}
    for decoder in ("pillow", "spng"):
        env = {**os.environ, "PACKER_PNG_DECODER": decoder}
        command = [sys.executable, "-m", "packer", *ws.args("--workers", "2")]
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ws.root)
        assert done.returncode in (0, 1), done.stderr
        results[decoder] = digests(ws.out)
        ws.out.rename(tmp_path / decoder)  # the next run writes the same paths (stats.json records them)
    assert results["spng"] == results["pillow"]
    stats = json.loads((tmp_path / "spng" / "stats.json").read_text())
    assert stats["packed_examples"] == len(FILES)
