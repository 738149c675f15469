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
from collections import Counter
from pathlib import Path

import pytest
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
numbers = st.floats(allow_nan=False, allow_infinity=False)
json_scalar = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | numbers | any_text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
OPTIONAL = ("split", "image_path", "text_raw", "lang")
DATASETS = ["mami", "olid", "hatexplain", "memotion2", "hateful_memes", "mmhs150k", "hatecheck"]
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def hostile_row(draw, index: int) -> dict:
    """A structurally valid manifest row (every required field present, with its type) whose values
    are hostile: any Unicode, NUL, lone surrogates, long texts, labels of every JSON type."""
    row = {
        "id": f"{index}:" + draw(any_text),  # unique, whatever follows
        "dataset": draw(st.sampled_from(DATASETS) | st.sampled_from(DATASETS) | st.sampled_from(DATASETS) | any_text),
        # Label values of any JSON type that keeps the field's shape: a scalar where the taxonomy reads
        # one value, a list (of anything) where it reads a list of annotators.
        # labels_raw may be any JSON value: an object, a bare value or list (the Step-2 builder's
        # shapes), null, or absent.
        "labels_raw": draw(
            st.just(MAMI)
            | json_value
            | st.fixed_dictionaries(
                {},
                optional={
                    **{f: json_scalar for f in ("misogynous", "shaming", "subtask_a", "humour", "label")},
                    "annotators": st.none() | st.lists(json_value, max_size=3),
                },
            )
        ),
    }
    if draw(st.integers(0, 9)) == 0:
        del row["labels_raw"]
    for name in OPTIONAL:
        splits = ["train", "test", "val", "unsplit", "dev"]
        usual = st.sampled_from(splits if name == "split" else ["/nonexistent/x.jpg", "en", "a b"])
        value = draw(st.none() | usual | usual | any_text)
        if value is not None or draw(st.booleans()):
            row[name] = value
    row.update(draw(st.dictionaries(st.sampled_from(["extra", "x_y", "annotators"]), json_value, max_size=2)))
    if "text_raw" in row and draw(st.integers(0, 9)) == 0:
        row["text_raw"] = draw(long_text)
    if draw(st.integers(0, 2)):  # two rows in three carry labels and a split their dataset maps
        dataset, labels = draw(st.sampled_from(sorted(VALID_LABELS.items())))
        row.update(dataset=dataset, labels_raw=labels, split="train")
        if row.get("image_path") not in (None, "/nonexistent/x.jpg"):
            row["image_path"] = None
    return row


VALID_LABELS = {
    "mami": MAMI,
    "olid": {"subtask_a": "OFF"},
    "hateful_memes": 1,  # the builder's bare label
    "hatexplain": [{"label": "normal", "target": ["None"]}] * 2,  # the builder's bare annotator list
}


BREAKS = {  # what makes a whole manifest invalid (exit 2), and the field the message must name
    # (a missing or odd labels_raw is not among them: it fails or drops its row alone)
    "drop_id": "field 'id': missing",
    "drop_dataset": "field 'dataset': missing",
    "infinity": "not valid JSON: Infinity is not a JSON value",
}


def broken(row: dict, how: str) -> dict:
    row = dict(row)
    if how.startswith("drop_"):
        row.pop(how[len("drop_") :])
    else:
        row["extra"] = float("inf")  # json.dumps writes Infinity, which is not JSON
    return row


def pack_rows(rows: list, work: Path) -> tuple[int, Path]:
    manifest = work / "manifest.jsonl"
    # ensure_ascii escapes lone surrogates as \udXXX, which is valid JSON text.
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = work / "Step_3"
    flags = ["--workers", "1", "--report-sample", "4", "--include-diagnostics"]
    args = ["--manifest", str(manifest), "--output-dir", str(out / "shards"), "--label-taxonomy", str(out / "t.json")]
    return main([*args, "--splits", str(out / "splits.json"), *flags]), out


OUTCOMES: Counter[str] = Counter()


@FUZZ_SETTINGS
@given(rows=st.integers(1, 6).flatmap(lambda n: st.tuples(*(hostile_row(i) for i in range(n)))))
def check_hostile_rows_are_accounted_for(rows, tmp_path_factory, capsys):
    code, out = pack_rows(list(rows), tmp_path_factory.mktemp("fuzz"))
    err = capsys.readouterr().err
    assert code in (0, 1), err  # valid structure: never an input error, never a crash
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total_examples"] == len(rows)
    assert stats["packed_examples"] + stats["dropped_examples"] + stats["failed_examples"] == len(rows)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == stats["dropped_examples"] + stats["failed_examples"]
    assert all(f["reason"] and f["status"] in ("dropped", "failed") for f in failures)
    assert len(json.loads((out / "splits.json").read_text())) == stats["packed_examples"]
    OUTCOMES.update(
        {"runs": 1, "rows": len(rows), **{k: stats[f"{k}_examples"] for k in ("packed", "dropped", "failed")}}
    )


@pytest.mark.slow  # a fuzz campaign: 60 packs
def test_hostile_manifest_rows_are_accounted_for(tmp_path_factory, capsys):
    """Every generated manifest is structurally valid, so every run must end 0 or 1 with every row
    packed, dropped or failed with a reason; the outcome counts are printed and must cover all three."""
    OUTCOMES.clear()
    check_hostile_rows_are_accounted_for(tmp_path_factory=tmp_path_factory, capsys=capsys)
    with capsys.disabled():
        print(f"\nfuzz (hypothesis, max_examples={FUZZ_SETTINGS.max_examples}): {dict(OUTCOMES)}")
    assert OUTCOMES["runs"] >= min(FUZZ_SETTINGS.max_examples, 20)
    assert OUTCOMES["rows"] == OUTCOMES["packed"] + OUTCOMES["dropped"] + OUTCOMES["failed"]
    assert OUTCOMES["packed"] > 0 and OUTCOMES["failed"] > 0


@pytest.mark.slow  # a fuzz campaign
@FUZZ_SETTINGS
@given(
    rows=st.integers(1, 6).flatmap(lambda n: st.tuples(*(hostile_row(i) for i in range(n)))),
    how=st.sampled_from(sorted(BREAKS)),
    data=st.data(),
)
def test_a_structurally_invalid_row_is_exit_2_naming_line_and_field(rows, how, data, tmp_path_factory, capsys):
    rows = list(rows)
    line = data.draw(st.integers(0, len(rows) - 1))
    rows[line] = broken(rows[line], how)
    work = tmp_path_factory.mktemp("fuzz-invalid")
    code, out = pack_rows(rows, work)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {work / 'manifest.jsonl'}: line ") and err.count("\n") == 1, err
    # The first invalid line is named: the broken one, unless an earlier row is invalid too.
    assert f": line {line + 1}: {BREAKS[how]}" in err, err
    assert not out.exists()


def test_lone_surrogates_and_nul_fail_their_row_with_the_field_named(ws):
    ws.add("mami_train_1\ud800", "mami", "train", MAMI, text="fine")
    ws.add("mami_train_2", "mami", "train", MAMI, text="NUL \x00 and lone \udc00")
    ws.add("mami_train_3\x00", "mami", "train", MAMI, text="a NUL in the id is fine")
    ws.rows.append({"id": "mami_train_4", "dataset": "mami", "split": "train", "labels_raw": MAMI, "text_raw": "ok"})
    # A backslash right before a lone surrogate: JSON `\\\udfff` (found by the fuzzer; an escaped
    # backslash once hid the escape after it), and a backslash before a literal `udfff`: no surrogate.
    ws.add("mami_train_5", "mami", "train", MAMI, text="path\\\udfff")
    ws.add("mami_train_6", "mami", "train", MAMI, text="not an escape: \\udfff")
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
        "mami_train_5": "invalid_unicode: field 'text_raw' holds a lone UTF-16 surrogate",
    }
    packed = {"mami_train_3\x00", "mami_train_4", "mami_train_6"}
    assert set(json.loads((ws.out / "splits.json").read_text())) == packed


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
