"""Property-based tests (hypothesis): hostile manifest rows and corrupted images never crash or hang
a run; every row ends packed, dropped or failed with a reason; decompression bombs fail before
their pixels are allocated."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from conftest import MAMI, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from packer.cli import main
from packer.images import EncodedImage, ImageFailure, encode_image

IMAGE_REASONS = {"image_missing", "image_unreadable", "image_corrupt", "image_too_large"}

# -- manifest rows ------------------------------------------------------------------------------

plain_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # any code point, NUL too
# Lone surrogates (json.dumps escapes them as \udXXX: valid JSON, not Unicode) in some strings.
any_text = plain_text | st.tuples(plain_text, st.sampled_from(["\ud800", "\udfff", "\udbff"]), plain_text).map("".join)
long_text = st.tuples(st.integers(5000, 200_000), any_text).map(
    lambda p: ("ab \u00e9\u4e2d\U0001f600\n" + p[1]) * (p[0] // 8)
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
FIELDS = ("id", "dataset", "split", "image_path", "text_raw", "labels_raw", "lang")


@st.composite
def manifest_row(draw, index: int) -> dict:
    row = {
        "id": draw(st.sampled_from([f"row{index}", f"mami_train_{index}"]) | any_text.map(lambda s: f"{index}:{s}")),
        "dataset": draw(st.sampled_from(["mami", "olid", "hatexplain", "memotion2", "nope"]) | any_text),
        "split": draw(st.sampled_from(["train", "test", None, "val"]) | any_text),
        "image_path": draw(st.none() | st.just("/nonexistent/x.jpg") | any_text),
        "text_raw": draw(st.none() | any_text | long_text),
        "labels_raw": draw(
            st.just(MAMI)
            | st.dictionaries(
                st.sampled_from(["misogynous", "shaming", "subtask_a", "annotators", "humour"]), json_value
            )
            | json_value
        ),
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2, unique=True)):
        row.pop(name, None)  # a missing field
    row.update(draw(st.dictionaries(st.sampled_from(["extra", "lang", "x_y"]), json_value, max_size=2)))
    return row


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.integers(1, 6).flatmap(lambda n: st.tuples(*(manifest_row(i) for i in range(n)))))
def test_hostile_manifest_rows_are_accounted_for_or_named(rows, tmp_path_factory, capsys):
    work = tmp_path_factory.mktemp("fuzz")
    manifest = work / "manifest.jsonl"
    # ensure_ascii escapes lone surrogates as \udXXX, which is valid JSON text.
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = work / "Step_3"
    code = main(
        [
            "--manifest",
            str(manifest),
            "--output-dir",
            str(out / "shards"),
            "--label-taxonomy",
            str(out / "t.json"),
            "--splits",
            str(out / "splits.json"),
            "--workers",
            "1",
            "--report-sample",
            "4",
        ]
    )
    err = capsys.readouterr().err
    if code == 2:
        # An input error names the file and, where one line is at fault, the line.
        assert err.startswith(f"error: {manifest}") and err.count("\n") == 1, err
        assert not (out / "stats.json").exists()
        return
    assert code in (0, 1), err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total_examples"] == len(rows)
    assert stats["packed_examples"] + stats["dropped_examples"] + stats["failed_examples"] == len(rows)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == stats["dropped_examples"] + stats["failed_examples"]
    assert all(f["reason"] for f in failures)
    assert len(json.loads((out / "splits.json").read_text())) == stats["packed_examples"]


def test_lone_surrogates_and_nul_fail_their_row_with_the_field_named(ws):
    ws.add("mami_train_1\ud800", "mami", "train", MAMI, text="fine")
    ws.add("mami_train_2", "mami", "train", MAMI, text="NUL \x00 and lone \udc00")
    ws.add("mami_train_3\x00", "mami", "train", MAMI, text="a NUL in the id is fine")
    ws.rows.append({"id": "mami_train_4", "dataset": "mami", "split": "train", "labels_raw": MAMI, "text_raw": "ok"})
    ws.manifest.parent.mkdir(parents=True, exist_ok=True)
    ws.manifest.write_text("".join(json.dumps(r) + "\n" for r in ws.rows), encoding="utf-8")
    ws.ocr.write_text(
        json.dumps({"id": "mami_train_2", "ocr": {"lines": [{"text": "lone \udfff", "conf": 0.9}]}}) + "\n"
    )
    from packer.cli import main as run_main

    assert run_main(ws.args()) in (0, 1)
    failed = {f["id"]: f["reason"] for f in ws.failures()}
    assert failed == {
        "mami_train_1\ufffd": "invalid_unicode: field 'id' holds a lone UTF-16 surrogate",
        "mami_train_2": "invalid_unicode: field 'text_raw' holds a lone UTF-16 surrogate",
    }
    assert set(json.loads((ws.out / "splits.json").read_text())) == {"mami_train_3\x00", "mami_train_4"}


# -- images -------------------------------------------------------------------------------------


def real_images() -> dict[str, bytes]:
    base = Image.effect_noise((120, 90), 40).convert("RGB")
    out = {}
    for fmt, extra in (("JPEG", {"quality": 85}), ("PNG", {}), ("GIF", {}), ("WEBP", {"quality": 80})):
        buf = io.BytesIO()
        (base.convert("P") if fmt == "GIF" else base).save(buf, fmt, **extra)
        out[fmt] = buf.getvalue()
    buf = io.BytesIO()
    base.save(buf, "JPEG", progressive=True)
    out["JPEG progressive"] = buf.getvalue()
    return out


REAL = real_images()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(sorted(REAL)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    keep=st.none() | st.floats(0, 1),
)
def test_corrupted_images_encode_or_fail_with_a_reason(fmt, flips, keep, tmp_path_factory):
    data = bytearray(REAL[fmt])
    for where, value in flips:
        data[int(where * len(data))] = value
    if keep is not None:
        data = data[: int(keep * len(data))]
    path = tmp_path_factory.mktemp("img") / "fuzzed"
    path.write_bytes(bytes(data))
    try:
        encoded = encode_image(str(path), 384, 90, 89_478_485)
    except ImageFailure as exc:
        assert exc.reason in IMAGE_REASONS
        return
    assert isinstance(encoded, EncodedImage)
    assert Image.open(io.BytesIO(encoded.data)).size == (384, 384)


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def header_bombs(folder: Path) -> list[Path]:
    """PNG, GIF, JPEG and BMP headers claiming 60000 x 60000 pixels (10.8 GB as RGB)."""
    paths = {"bomb.png": png_bomb(60000, 60000)}
    gif = bytearray(REAL["GIF"])
    gif[6:10] = struct.pack("<HH", 60000, 60000)
    paths["bomb.gif"] = bytes(gif)
    jpeg = bytearray(REAL["JPEG"])
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    paths["bomb.jpg"] = bytes(jpeg)
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp, "BMP")
    raw = bytearray(bmp.getvalue())
    raw[18:26] = struct.pack("<ii", 60000, 60000)
    paths["bomb.bmp"] = bytes(raw)
    out = []
    for name, data in paths.items():
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out


def test_decompression_bombs_fail_before_their_pixels_are_allocated(tmp_path):
    bombs = header_bombs(tmp_path)
    # In a child limited to 1 GiB of address space: allocating 10.8 GB would fail with MemoryError.
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from packer.images import ImageFailure, encode_image\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        encode_image(path, 384, 90, 89_478_485)\n"
        "        print(path, 'packed')\n"
        "    except ImageFailure as exc:\n"
        "        print(path, exc.reason)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *map(str, bombs)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert run.returncode == 0, run.stderr
    reasons = dict(line.rsplit(" ", 1) for line in run.stdout.splitlines())
    assert reasons == {str(p): "image_too_large" for p in bombs}


def test_a_hostile_image_corpus_is_accounted_for(ws):
    rows = []
    for i, (_fmt, data) in enumerate(sorted(REAL.items())):
        for j, cut in enumerate((1.0, 0.5, 0.1, 0.02)):
            path = ws.images / f"{i}_{j}.img"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[: int(len(data) * cut)])
            rows.append(str(path))
    rows += [str(p) for p in header_bombs(ws.images)]
    for k, path in enumerate(rows):
        ws.add(f"mami_train_{k}", "mami", "train", MAMI, image=path, text=f"t{k}")
    code = ws.run("--workers", "2")
    assert code in (0, 1)
    stats = ws.stats
    assert stats["packed_examples"] + stats["failed_examples"] == len(rows) == stats["total_examples"]
    reasons = stats["reasons"]["failed"]
    assert set(reasons) <= IMAGE_REASONS and reasons["image_too_large"] == 4
    assert stats["packed_examples"] >= len(REAL)  # every intact file
