"""The CLI end to end through main([...]): exit codes, shards read back with webdataset, accounting."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import tarfile

import pytest
import webdataset as wds
from conftest import MAMI, MAMI_NOT, summed
from PIL import Image

from packer.cli import main


def read_shards(pattern: str, image: bool = True) -> list[tuple]:
    """The image series (shard-*.tar) as (jpg, txt, json), or the text-only series (text-*.tar) as (txt, json)."""
    series = "shard-" if image else "text-"
    urls = sorted(u for u in glob.glob(pattern) if u.rsplit("/", 1)[-1].startswith(series))
    assert urls, f"no {series}*.tar shards match {pattern}"
    ds = wds.WebDataset(urls, shardshuffle=False).decode("pil")
    return list(ds.to_tuple("jpg;png", "txt", "json") if image else ds.to_tuple("txt", "json"))


def build_mixed(ws, n_mami: int = 40) -> None:
    for i in range(n_mami):
        ws.add(
            f"mami_train_{i}.jpg",
            "mami",
            "train",
            MAMI if i % 2 else MAMI_NOT,
            image=ws.image(f"m{i}.jpg", colour=(i * 5, 10, 10)),
            text=f"meme number {i}",
        )
    ws.add("mami_test_0.jpg", "mami", "test", MAMI, image=ws.image("t0.png"), text="a test meme")
    ws.add(
        "olid_train_1",
        "olid",
        "train",
        {"subtask_a": "OFF", "subtask_b": "TIN", "subtask_c": "GRP"},
        text="@USER go away",
    )
    ws.add("olid_test_2", "olid", "test", {"subtask_a": "NOT"}, text="@USER nice")
    ws.add(
        "hatecheck_test_1",
        "hatecheck",
        "test",
        {"functionality": "f", "case_id": 1, "label_gold": "hateful", "target_ident": "women", "direction": "general"},
        text="I hate women.",
    )
    ws.ocr_rows.append(
        {
            "id": "mami_train_1.jpg",
            "ocr": {
                "lines": [
                    {"text": "BOTTOM", "conf": 0.9, "bbox": [0, 300, 100, 320]},
                    {"text": "TOP", "conf": 0.95, "bbox": [0, 5, 100, 25]},
                    {"text": "noise", "conf": 0.1, "bbox": [0, 100, 100, 120]},
                ]
            },
        }
    )
    ws.ocr_rows.append({"id": "nobody", "ocr": {"lines": []}})


def expected_key(example_id: str) -> str:
    """The README's key rule, written out here: [A-Za-z0-9_-] kept, anything else `_`; an id that
    was changed or is over 80 characters: its first 80 (after the change), `_`, 12 hex of SHA-256."""
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in example_id)
    if safe == example_id and len(example_id) <= 80:
        return example_id
    return f"{safe[:80]}_{hashlib.sha256(example_id.encode()).hexdigest()[:12]}"


@pytest.mark.parametrize(
    "example_id",
    ["olid_train_plain-1", "olid_train_a.b/c d", "olid_train_é", "o" * 80, "o" * 81, "olid_" + "x.y" * 40],
)
def test_sample_keys_follow_the_documented_rule(ws, example_id):
    ws.add(example_id, "olid", "train", {"subtask_a": "OFF"}, text="words")
    assert ws.run() == 0
    (shard,) = (ws.out / "shards" / "train").glob("text-*.tar")
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        doc = json.loads(tar.extractfile(f"{expected_key(example_id)}.json").read())
    key = expected_key(example_id)
    assert names == [f"{key}.json", f"{key}.txt"]
    assert doc["key"] == key and doc["id"] == example_id
    assert len(key) <= 80 + 13 and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)


def test_end_to_end_labels_text_and_images(ws):
    build_mixed(ws)
    assert ws.run("--workers", "2", "--include-diagnostics") == 0
    samples = {js["id"]: (img, txt, js) for img, txt, js in read_shards(str(ws.out / "shards/*/*.tar"))}
    img, txt, js = samples["mami_train_1.jpg"]
    assert img.size == (384, 384) and img.mode == "RGB"
    assert txt == "[OCR] TOP BOTTOM [/OCR] [CAP] meme number 1 [/CAP] <lang=en>"
    assert js["labels"] == {"abuse_hate": 1, "offensive": None, "target_type": "group", "target_group": ["women"]}
    assert js["aux"] == {"misogyny": {"shaming": 0, "stereotype": 1, "objectification": 0, "violence": 0}}
    assert js["key"] == "mami_train_1_jpg_" + hashlib.sha256(b"mami_train_1.jpg").hexdigest()[:12]
    assert js["image"] == {"orig_width": 600, "orig_height": 400, "orig_format": "JPEG"}
    assert js["source_split"] == "train" and js["split"] in ("train", "val")
    assert samples["mami_test_0.jpg"][2]["split"] == "test"
    text_only = {js["id"]: (txt, js) for txt, js in read_shards(str(ws.out / "shards/*/*.tar"), image=False)}
    olid_txt, olid = text_only["olid_train_1"]
    assert olid_txt == "[OCR] [/OCR] [CAP] @USER go away [/CAP] <lang=en>"
    assert olid["labels"] == {"abuse_hate": None, "offensive": 1, "target_type": "group", "target_group": None}
    assert olid["image"] is None
    diag = read_shards(str(ws.out / "shards/diagnostics/*.tar"), image=False)
    assert [js["id"] for _, js in diag] == ["hatecheck_test_1"]
    stats = ws.stats
    counts = [stats[f"{k}_examples"] for k in ("total", "packed", "dropped", "failed")]
    assert counts == [44, 44, 0, 0]
    assert stats["ocr"]["ocr_rows_without_manifest_row"] == 1
    assert stats["ocr"]["with_ocr"] == 1 and stats["ocr"]["without_ocr"] == 40
    assert (stats["ocr"]["lines_kept"], stats["ocr"]["lines_low_confidence"]) == (2, 1)
    assert stats["labels"]["test"]["mami"]["target_group"] == {"women": 1}
    assert stats["checks"] == {
        "failure_rate_below_0.5%": True,
        "no_id_in_two_splits": True,
        "assigned_splits_balanced_within_5_points": True,
        "no_image_or_text_in_two_assigned_splits": True,
    }
    assert json.loads((ws.out / "label_taxonomy.json").read_text())["datasets"]["mami"]
    splits = json.loads((ws.out / "splits.json").read_text())
    assert splits["mami_test_0.jpg"] == "test" and splits["olid_train_1"] in ("train", "val")
    assert splits["hatecheck_test_1"] == "diagnostics"
    assert list(splits) == sorted(splits) and len(splits) == stats["packed_examples"]


def test_every_row_is_packed_dropped_or_failed(ws):
    build_mixed(ws, n_mami=6)
    ws.add("mami_train_missing", "mami", "train", MAMI, image=str(ws.images / "nope.jpg"))
    (ws.images / "empty.jpg").write_bytes(b"")
    ws.add("mami_train_empty", "mami", "train", MAMI, image=str(ws.images / "empty.jpg"))
    ws.add("mami_train_bad_label", "mami", "train", {"misogynous": 7}, image=ws.image("x.jpg"))
    ws.add("olid_test_unlabelled", "olid", "test", {})
    ws.add("reddit_train_1", "reddit", "train", {"x": 1})
    ws.add("mami_dev_1", "mami", "dev", MAMI_NOT, image=ws.image("y.jpg"))
    assert ws.run("--workers", "2") == 1  # failure rate far above 0.5%
    stats = ws.stats
    assert (
        stats["total_examples"] == stats["packed_examples"] + stats["dropped_examples"] + stats["failed_examples"] == 16
    )
    assert stats["reasons"]["failed"] == {
        "image_missing": 1,
        "image_unreadable": 1,
        "unmapped label mami.misogynous": 1,
        "unknown dataset 'reddit'": 1,
        "unknown split 'dev' for dataset mami; known splits test, train, unsplit (or null)": 1,
    }
    assert stats["reasons"]["dropped"] == {"unlabelled": 1, "diagnostics (not requested)": 1}
    assert stats["checks"]["failure_rate_below_0.5%"] is False
    logged = {r["id"]: r for r in ws.failures()}
    assert logged["mami_train_missing"]["stage"] == "image" and logged["mami_train_missing"]["status"] == "failed"
    assert logged["olid_test_unlabelled"] == {
        "id": "olid_test_unlabelled",
        "status": "dropped",
        "stage": "plan",
        "reason": "unlabelled",
        "detail": None,
    }
    assert len(logged) == stats["dropped_examples"] + stats["failed_examples"]
    assert not glob.glob(str(ws.out / "shards/diagnostics/*"))


def shard_digests(root) -> dict[str, str]:
    return {
        p[len(str(root)) :]: hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in sorted(glob.glob(str(root / "*/*.tar")))
    }


def test_shards_byte_identical_for_1_and_2_workers(ws):
    build_mixed(ws, n_mami=30)
    assert ws.run("--workers", "1", "--shard-maxcount", "7", shards="w1") == 0
    (ws.out / "splits.json").unlink()
    assert ws.run("--workers", "2", "--shard-maxcount", "7", shards="w2") == 0
    one, two = shard_digests(ws.out / "w1"), shard_digests(ws.out / "w2")
    assert one == two and len(one) >= 5


def test_shards_cut_at_maxcount_and_maxsize(ws):
    build_mixed(ws, n_mami=20)
    assert ws.run("--shard-maxcount", "4") == 0
    counts = [s["examples"] for s in [ws.stats["splits"]["train"]]]
    train = sorted(glob.glob(str(ws.out / "shards/train/*.tar")))
    assert counts[0] == sum(len(list(wds.WebDataset(u, shardshuffle=False))) for u in train)
    assert all(len(list(wds.WebDataset(u, shardshuffle=False))) <= 4 for u in train)
    assert ws.run("--shard-maxsize", "20000", shards="small") == 0
    small = sorted(glob.glob(str(ws.out / "small/train/*.tar")))
    assert len(small) > 3
    assert all(
        len(open(u, "rb").read()) <= 20000 + 1024 or len(list(wds.WebDataset(u, shardshuffle=False))) == 1
        for u in small
    )


def test_tar_members_have_fixed_metadata(ws):
    import tarfile

    build_mixed(ws, n_mami=3)
    assert ws.run() == 0
    with tarfile.open(sorted(glob.glob(str(ws.out / "shards/train/*.tar")))[0]) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}
    names = [m.name for m in members]
    keys = [n.split(".", 1)[0] for n in names]
    for key in dict.fromkeys(keys):
        assert [n for n in names if n.startswith(key + ".")] == sorted(n for n in names if n.startswith(key + "."))


def test_exact_duplicates_packed_once_in_most_protected_split(ws):
    shared = ws.image("shared.jpg")
    ws.add("hateful_memes_dev_seen_1", "hateful_memes", "dev_seen", {"label": 1}, image=shared, text="Same   meme")
    ws.add("hateful_memes_test_seen_1", "hateful_memes", "test_seen", {"label": 1}, image=shared, text="same meme")
    ws.add("hateful_memes_dev_unseen_1", "hateful_memes", "dev_unseen", {"label": 1}, image=shared, text="same meme")
    ws.add("hateful_memes_train_2", "hateful_memes", "train", {"label": 0}, image=shared, text="another text")
    ws.add("olid_train_1", "olid", "train", {"subtask_a": "NOT"}, text="@USER fuck off")
    ws.add("olid_train_2", "olid", "train", {"subtask_a": "NOT"}, text="@USER fuck off")
    assert ws.run() == 0
    stats = ws.stats
    assert stats["duplicates_dropped"] == 2 and stats["packed_examples"] == 4
    dropped = {r["id"] for r in ws.failures() if r["reason"] == "duplicate"}
    assert dropped == {"hateful_memes_dev_seen_1", "hateful_memes_dev_unseen_1"}


def test_carved_val_is_stratified_and_groups_stay_together(ws):
    for i in range(600):
        labels = MAMI if i % 10 < 3 else MAMI_NOT
        ws.add(f"mami_train_{i}", "mami", "train", labels, text=f"text {i // 3 if i < 90 else i}")
    assert ws.run() == 0
    splits = json.loads((ws.out / "splits.json").read_text())
    val = {i for i, s in splits.items() if s == "val"}
    assert 55 <= len(val) <= 65
    for g in range(30):  # rows 3g, 3g+1, 3g+2 share a text
        assert len({f"mami_train_{3 * g + k}" in val for k in range(3)}) == 1
    positives = sum(1 for i in val if int(i.rsplit("_", 1)[1]) % 10 < 3)
    # 60 val rows, groups of 3 with mixed labels: whole groups cost up to ~2 rows of precision.
    assert abs(positives / len(val) - 0.3) <= 0.05


def test_pinned_ids_keep_their_split(ws):
    for i in range(50):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI_NOT, text=f"t{i}")
    ws.out.mkdir(parents=True)
    (ws.out / "splits.json").write_text(json.dumps({"val": ["mami_train_0", "mami_train_1"], "train": []}))
    assert ws.run() == 0
    first = json.loads((ws.out / "splits.json").read_text())
    assert first["mami_train_0"] == first["mami_train_1"] == "val"
    for i in range(50, 70):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI_NOT, text=f"t{i}")
    assert ws.run() == 0
    second = json.loads((ws.out / "splits.json").read_text())
    assert all(second[i] == s for i, s in first.items()) and len(second) == 70


def test_examples_limit_spreads_over_every_dataset(ws):
    for i in range(90):
        ws.add(f"olid_train_{i}", "olid", "train", {"subtask_a": "NOT"}, text=f"t{i}")
    for i in range(10):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI, text=f"m{i}")
    ws.ocr_rows.append({"id": "olid_train_89", "ocr": {"lines": []}})
    assert ws.run("--examples-limit", "20") == 0
    assert ws.stats["ocr"]["ocr_rows_without_manifest_row"] == 0
    stats = ws.stats
    assert stats["total_examples"] == 20 and stats["manifest_rows"] == 100
    per_ds = {ds: sum(summed(stats, ds, "abuse_hate").values()) for ds in ("olid", "mami")}
    assert {ds for split in stats["labels"].values() for ds in split} == {"olid", "mami"}
    assert per_ds == {"olid": 18, "mami": 2}


def test_a_line_repeated_byte_for_byte_is_dropped_and_counted(ws, capsys):
    """Two Step-2 outputs concatenated: the repeated lines are dropped as `repeated_line` (the first
    copy packs), counted, and the run passes; a third row of one id that differs is still an error."""
    ws.add("mami_1", "mami", "train", MAMI, ws.image("1.jpg"))
    ws.add("olid_1", "olid", "train", {"subtask_a": "OFF"}, text="@USER post")
    ws.write()
    lines = ws.manifest.read_text().splitlines(keepends=True)
    ws.manifest.write_text("".join(lines + lines[1:]))  # olid_1 twice: byte for byte
    assert main(ws.args("--workers", "1")) == 0
    stats = ws.stats
    assert stats["total_examples"] == 3 and stats["packed_examples"] == 2
    assert stats["reasons"]["dropped"] == {"repeated_line": 1}
    assert [(f["id"], f["status"], f["reason"]) for f in ws.failures()] == [("olid_1", "dropped", "repeated_line")]
    assert json.loads((ws.out / "splits.json").read_text()).keys() == {"mami_1", "olid_1"}
    ws.manifest.write_text("".join(lines + lines[1:]) + lines[1].replace("OFF", "NOT"))
    assert main(ws.args("--workers", "1")) == 2
    assert "'olid_1' (line 2), 'olid_1' (line 4)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "dataset": "mami", "labels_raw": {}}\n{"id": "b", oops}\n', "line 2: not valid JSON"),
        (
            '{"id": "a", "dataset": "mami", "labels_raw": {}}\n\n{"dataset": "mami", "labels_raw": {}}\n',
            "line 3: field 'id': missing",
        ),
        # labels_raw may be any JSON value (a bare value fails only its row); a missing dataset stops the run.
        ('{"id": "a", "labels_raw": 0}\n', "line 1: field 'dataset': missing (required)"),
        # Two different rows with one id (a line repeated byte for byte is dropped instead: below).
        (
            '{"id": "a", "dataset": "mami", "labels_raw": {}}\n'
            '{"id": "a", "dataset": "mami", "labels_raw": {"x": 1}}\n',
            "field 'id': 1 id(s) appear more than once: 'a' (line 1), 'a' (line 2)",
        ),
    ],
)
def test_bad_manifest_is_exit_2_naming_file_line_field(ws, capsys, content, message):
    ws.manifest.parent.mkdir(parents=True)
    ws.manifest.write_text(content)
    ws.ocr.write_text("")
    assert main(ws.args()) == 2
    err = capsys.readouterr().err
    assert str(ws.manifest) in err and message in err
    assert not ws.out.exists()


def test_wrong_type_in_labels_raw_fails_that_example(ws):
    ws.add("a", "mami", "train", {**MAMI, "misogynous": [1]})
    assert ws.run() == 1
    assert ws.failures()[0]["reason"] == "unmapped label mami.misogynous: '[1]'"


def test_bad_ocr_line_is_exit_2(ws, capsys):
    ws.add("a", "mami", "train", MAMI)
    ws.write()
    ws.ocr.write_text('{"id": "a", "ocr": {"lines": [{"text": "x", "conf": "high", "bbox": [0, 0, 1, 1]}]}}\n')
    assert main(ws.args()) == 2
    err = capsys.readouterr().err
    assert str(ws.ocr) in err and "line 1: field 'ocr.lines[0].conf'" in err


def test_ocr_line_without_id_is_exit_2(ws, capsys):
    ws.add("a", "mami", "train", MAMI)
    ws.write()
    ws.ocr.write_text('{"id": "a", "ocr": {"lines": []}}\n{"dataset": "mami", "ocr": {"lines": []}}\n')
    assert main(ws.args()) == 2
    err = capsys.readouterr().err
    assert str(ws.ocr) in err and "line 2" in err and "'id'" in err


def test_bad_taxonomy_file_is_exit_2(ws, capsys):
    ws.add("a", "mami", "train", MAMI)
    ws.out.mkdir(parents=True)
    (ws.out / "label_taxonomy.json").write_text('{"datasets": {}, "target_vocabulary": ["women"]}')
    assert ws.run() == 2
    assert "target_vocabulary" in capsys.readouterr().err


def test_usage_error_is_exit_2(capsys):
    assert main(["--manifest", "m.jsonl"]) == 2
    assert "required" in capsys.readouterr().err


def test_user_taxonomy_changes_mapping_without_code(ws):
    ws.add("a", "mami", "train", MAMI, text="x")
    ws.out.mkdir(parents=True)
    tax = json.loads(__import__("packer.config", fromlist=["x"]).default_taxonomy_text())
    tax["datasets"]["mami"]["labels"]["offensive"] = {"field": "misogynous", "map": {"0": 0, "1": 1}}
    (ws.out / "label_taxonomy.json").write_text(json.dumps(tax))
    assert ws.run() == 0
    ((txt, js),) = read_shards(str(ws.out / "shards/*/*.tar"), image=False)
    assert js["labels"]["offensive"] == 1


def test_the_installed_pack_examples_command_packs(ws):
    """The console script the install puts beside this Python, run as a user runs it."""
    import subprocess
    import sys
    from pathlib import Path

    ws.add("mami_train_0", "mami", "train", MAMI, image=ws.image("a.jpg"))
    ws.write()
    command = Path(sys.executable).parent / "pack-examples"
    usage = subprocess.run([str(command), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--min-shards" in usage.stdout and usage.stdout.startswith("usage: pack-examples")
    run = subprocess.run([str(command), *ws.args()], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert ws.stats["packed_examples"] == 1


def test_json_image_is_decodable_jpeg(ws):
    ws.add("m1", "mami", "train", MAMI, image=ws.image("a.jpg", size=(1000, 300)))
    assert ws.run() == 0
    tar = glob.glob(str(ws.out / "shards/*/*.tar"))[0]
    sample = next(iter(wds.WebDataset(tar, shardshuffle=False)))
    assert Image.open(io.BytesIO(sample["jpg"])).size == (384, 384)


def test_empty_manifest_is_exit_2(ws, capsys):
    assert ws.run() == 2
    assert "no examples" in capsys.readouterr().err


def test_dataset_without_splits_gets_80_10_10_stratified(ws):
    for i in range(1000):
        ws.add(f"olid_{i}", "olid", None, {"subtask_a": "OFF" if i % 4 == 0 else "NOT"}, text=f"post {i}")
    assert ws.run() == 0
    doc = json.loads((ws.out / "splits.json").read_text())
    splits = {s: [i for i, sp in doc.items() if sp == s] for s in ("train", "val", "test")}
    sizes = {s: len(ids) for s, ids in splits.items()}
    assert sizes == {"train": 800, "val": 100, "test": 100}
    for ids in splits.values():
        offensive = sum(1 for i in ids if int(i.split("_")[1]) % 4 == 0)
        assert abs(offensive / len(ids) - 0.25) <= 0.01


def test_guided_chunks_cover_every_sample_once_in_order_and_shrink_to_the_end():
    import polars as pl

    from packer.config import UNIFIED_FIELDS
    from packer.pipeline import guided_chunks
    from packer.plan import iter_chunks, ordered_samples
    from packer.specs import SAMPLE_COLUMNS

    n = {"train": 500, "val": 70, "test": 30}
    splits = [s for s, k in n.items() for _ in range(k)]
    rows = pl.DataFrame({"split": splits, "status": ["ok"] * len(splits), "order": list(range(len(splits)))})
    rows = rows.with_columns(id=pl.format("x{}", pl.col("order").cast(pl.String).str.zfill(4)))
    for column in (*SAMPLE_COLUMNS, *UNIFIED_FIELDS):
        if column not in rows.columns:
            rows = rows.with_columns(pl.lit(None, pl.String).alias(column))
    chunks = list(iter_chunks(ordered_samples(rows), guided_chunks(workers=2, largest=64)))
    for split in n:
        mine = [c for c in chunks if c.split == split]
        assert [i for c in mine for i in c.columns["id"]] == sorted(rows.filter(pl.col("split") == split)["id"])
        assert [c.index for c in mine] == list(range(len(mine)))
    assert [c.split for c in chunks] == sorted((c.split for c in chunks), key=list(n).index)
    sizes = [len(c) for c in chunks]
    # 600 // 8 = 75, capped at 64; then a quarter of each worker's share of the rest; 4 at the end.
    assert sizes[:4] == [64, 64, 59, 51]
    assert sizes[-8:] == [4] * 7 + [2]  # test: 30 = 7 x 4 + 2
    whole = [len(c) for c in chunks if c.split == "train"][:-1]  # the last one is cut by the split
    assert whole == sorted(whole, reverse=True)
