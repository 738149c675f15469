"""The real label files of ../shared/realdata written as the users' own Step-2 builder writes them
(INPUTS.md section 1b: bare labels, null labels, its own split names, [x1, y1, x2, y2] OCR boxes in a
1024-px copy's coordinates), packed with the command as users run it: the published counts must
come out per dataset, split and label, with exit 0, and every drop and failure by reason.

This file reads the release files itself (csv/json, not packer's adapters), so that it checks
packer against the format, not against its own converters. Skipped where ../shared is absent.
"""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REALDATA, summed, tiny_png, write_jsonl

pytestmark = [
    pytest.mark.skipif(not (REALDATA / "olid").is_dir(), reason="../shared/realdata is not here"),
    pytest.mark.heavy,
    pytest.mark.xdist_group(name="realdata_builder"),  # one module fixture: one pack
]

HX_LABELS = ("hatespeech", "offensive", "normal")
# HateXplain's published majorities over its 19,229 decided posts.
HX_PUBLISHED = {"hatespeech": 5935, "offensive": 5480, "normal": 7814}


def read_tsv(path: Path, quoting: int = csv.QUOTE_MINIMAL) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=quoting))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ocr_row(row: dict, n: int) -> dict:
    """PaddleOCR 3.x's line for an image: [x1, y1, x2, y2] boxes in a 1024-px copy, conf in [0, 1];
    written bottom line first, one low-confidence line; every 7th image has no text."""
    lines = [
        {"text": f"BOTTOM {n}", "conf": 0.93, "bbox": [80.5, 930.25, 940.0, 1001.0]},
        {"text": f"TOP {n}", "conf": 0.98, "bbox": [102.4, 20.5, 900.0, 60.2]},
        {"text": "noise", "conf": 0.21, "bbox": [500.0, 500.0, 520.0, 510.0]},
    ]
    return {
        "id": row["id"],
        "dataset": row["dataset"],
        "split": row["split"],
        "image_path": row["image_path"],
        "ocr": {"lines": [] if n % 7 == 0 else lines},
    }


def builder_manifest(images: Path) -> tuple[list[dict], dict]:
    """The builder's rows for Hateful Memes (Kaggle train/dev/test), MAMI (null where the test label
    file lacks a row), OLID, Memotion 1.0 (the Kaggle 7k columns, `train` on every row) and
    HateXplain (bare annotator lists, `unsplit` for ids in no division); and what to expect."""
    rows: list[dict] = []
    expect: dict = {}

    def add(id_, dataset, split, image, text, labels):
        rows.append(
            {"id": id_, "dataset": dataset, "split": split, "image_path": image, "text_raw": text, "labels_raw": labels}
        )

    # Hateful Memes: the Kaggle mirror's train.jsonl, dev.jsonl (dev_seen) and test.jsonl (no labels).
    hm = REALDATA / "hateful_memes"
    for split, name in (("train", "train"), ("dev", "dev_seen"), ("test", "test_seen")):
        for r in read_jsonl(hm / f"{name}.jsonl"):
            ident = int(r["id"])
            label = None if split == "test" else r["label"]
            add(
                f"hateful_memes_{split}_{ident}",
                "hateful_memes",
                split,
                str(images / "hm" / r["img"]),
                r["text"],
                label,
            )

    # MAMI: training.csv, and test.csv with labels from the labelled copy; every 10th test row has
    # no line in the label file, so its labels_raw is null.
    mami = REALDATA / "mami"
    types = ("shaming", "stereotype", "objectification", "violence")
    for r in read_tsv(mami / "training.csv"):
        labels = {"misogynous": int(r["misogynous"]), **{t: int(r[t]) for t in types}}
        name = r["file_name"]
        add(
            f"mami_train_{name}", "mami", "train", str(images / "mami/training" / name), r["Text Transcription"], labels
        )
    gold = {r["file_name"]: r for r in read_tsv(mami / "tib_split" / "test.tsv")}
    test_counts: Counter = Counter()
    for n, r in enumerate(read_tsv(mami / "test.csv")):
        name = r["file_name"]
        g = None if n % 10 == 0 else gold[name]
        labels = None if g is None else {"misogynous": int(g["label"]), **{t: int(g[t]) for t in types}}
        test_counts["null" if g is None else g["label"]] += 1
        add(f"mami_test_{name}", "mami", "test", str(images / "mami/test" / name), r["Text Transcription"], labels)
    expect["mami_test"] = test_counts

    # OLID: the training TSV (literal NULL), and the test tweets with only subtask_a.
    olid = REALDATA / "olid"
    for r in read_tsv(olid / "olid-training-v1.0.tsv", csv.QUOTE_NONE):
        labels = {t: r[t] for t in ("subtask_a", "subtask_b", "subtask_c")}
        add(f"olid_train_{r['id']}", "olid", "train", None, r["tweet"], labels)
    with open(olid / "labels-levela.csv", encoding="utf-8", newline="") as handle:
        level_a = {i.strip(): v.strip() for i, v in csv.reader(handle)}
    for r in read_tsv(olid / "testset-levela.tsv", csv.QUOTE_NONE):
        add(f"olid_test_{r['id']}", "olid", "test", None, r["tweet"], {"subtask_a": level_a[r["id"]]})

    # Memotion 1.0 as the Kaggle 7k labels.csv: lower-case columns, `train` on every row.
    memotion = REALDATA / "memotion1"
    seen: Counter = Counter()
    with open(memotion / "data_6512.csv", encoding="utf-8", newline="") as handle:
        for r in csv.DictReader(handle):
            name = r["Image_name"]
            seen[name] += 1
            # The subset repeats one row; the builder's ids would collide (an input error), so the
            # copy gets a suffix and is then dropped as an exact duplicate (same file, same text).
            ident = f"memotion1_{name}" + (f"#{seen[name]}" if seen[name] > 1 else "")
            labels = {k.lower(): r[k] for k in ("Humour", "Sarcasm", "Offensive", "Motivational", "Overall_Sentiment")}
            text = r["Corrected_text"].strip() or r["OCR_extracted_text"]
            add(ident, "memotion1", "train", str(images / "memotion" / name), text, labels)

    # HateXplain: split ids from post_id_divisions.json, bare annotator lists with a 2-of-3
    # majority matching the published totals; the 919 undecided posts are in no division (unsplit).
    divisions = json.loads((REALDATA / "hatexplain" / "post_id_divisions.json").read_text())
    ids = [(split, i) for split in ("train", "val", "test") for i in divisions[split]]
    majority = [label for label in HX_LABELS for _ in range(HX_PUBLISHED[label])]
    assert len(ids) == len(majority) == 19229
    hx_expect: Counter = Counter()
    random.Random(0).shuffle(majority)  # every split gets each label
    for (split, post), label in zip(ids, majority):
        other = HX_LABELS[(HX_LABELS.index(label) + 1) % 3]
        target = ["African"] if label != "normal" else ["None"]
        annotators = [
            {"label": label, "annotator_id": 1, "target": target},
            {"label": other, "annotator_id": 2, "target": ["None"]},
            {"label": label, "annotator_id": 3, "target": target},
        ]
        hx_expect[split, label] += 1
        add(f"hatexplain_{post}", "hatexplain", split, None, f"post {post} says {label}", annotators)
    for n in range(919):
        annotators = [{"label": label, "annotator_id": i, "target": ["None"]} for i, label in enumerate(HX_LABELS)]
        add(f"hatexplain_{n}_gab", "hatexplain", "unsplit", None, f"undecided post {n}", annotators)
    expect["hatexplain"] = hx_expect
    return rows, expect


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules between its tests
def builder_pack(tmp_path_factory) -> tuple[dict, Path, dict, str]:
    root = tmp_path_factory.mktemp("builder")
    images = root / "Datasets"
    rows, expect = builder_manifest(images)
    for row in rows:
        if row["image_path"] and not Path(row["image_path"]).exists():
            tiny_png(Path(row["image_path"]))
    write_jsonl(root / "Step_2" / "data_manifest.jsonl", rows)
    ocr = [ocr_row(r, n) for n, r in enumerate(rows) if r["image_path"]]
    write_jsonl(root / "Step_2" / "ocr.jsonl", ocr)
    step3 = root / "Step_3"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "packer",
            "--manifest",
            "Step_2/data_manifest.jsonl",
            "--ocr",
            "Step_2/ocr.jsonl",
            "--output-dir",
            "Step_3/shards",
            "--label-taxonomy",
            "Step_3/label_taxonomy.json",
            "--splits",
            "Step_3/splits.json",
            "--workers",
            "2",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expect["rows"] = rows
    return json.loads((step3 / "stats.json").read_text()), step3, expect, done.stdout


def failures(step3: Path) -> list[dict]:
    return [json.loads(line) for line in (step3 / "failures.jsonl").read_text().splitlines()]


def test_every_row_is_accounted_for(builder_pack):
    stats, step3, expect, _ = builder_pack
    assert stats["total_examples"] == len(expect["rows"]) == 10000 + 11000 + 14100 + 6512 + 19229 + 919
    assert all(stats["checks"].values())
    assert stats["failed_examples"] == 1  # memotion1's corrupted sentiment cell
    assert stats["reasons"] == {
        "dropped": {"unlabelled": 1000 + 100, "undecided": 919, "duplicate": 1},
        "failed": {"unmapped label memotion1.overall_sentiment/Overall_Sentiment": 1},
    }
    by_reason = Counter((f["status"], f["reason"].split(":")[0]) for f in failures(step3))
    assert by_reason == {
        ("dropped", "unlabelled"): 1100,
        ("dropped", "undecided"): 919,
        ("dropped", "duplicate"): 1,
        ("failed", "unmapped label memotion1.overall_sentiment/Overall_Sentiment"): 1,
    }


def test_hateful_memes(builder_pack):
    stats, _, _, out = builder_pack
    hm = {split: stats["labels"][split]["hateful_memes"]["abuse_hate"] for split in ("train", "val")}
    assert hm == {"train": {"0": 5481, "1": 3019}, "val": {"0": 253, "1": 247}}
    assert "hateful_memes" not in stats["labels"].get("test", {})
    mapping = stats["split_mapping"]["hateful_memes"]
    assert mapping["dev"] == {"to": "val", "rows": 500, "packed": {"val": 500}, "dropped": {}, "failed": {}}
    assert mapping["test"] == {"to": "test", "rows": 1000, "packed": {}, "dropped": {"unlabelled": 1000}, "failed": {}}
    assert "  hateful_memes  dev -> val: 500 rows, 500 packed\n" in out
    assert "  hateful_memes  test -> test: 1000 rows, 0 packed, 1000 dropped (unlabelled 1000)\n" in out


def test_mami(builder_pack):
    stats, _, expect, _ = builder_pack
    labels = stats["labels"]
    train = {v: labels["train"]["mami"]["abuse_hate"][v] + labels["val"]["mami"]["abuse_hate"][v] for v in "01"}
    assert train == {"0": 5000, "1": 5000}
    counts = expect["mami_test"]
    assert counts["null"] == 100
    assert labels["test"]["mami"]["abuse_hate"] == {"0": counts["0"], "1": counts["1"]}
    assert stats["split_mapping"]["mami"]["test"]["dropped"] == {"unlabelled": 100}
    assert stats["split_mapping"]["mami"]["train"]["to"] == "train + carved val (10%)"


def test_olid(builder_pack):
    stats, _, _, _ = builder_pack
    labels = stats["labels"]
    train = {v: labels["train"]["olid"]["offensive"][v] + labels["val"]["olid"]["offensive"][v] for v in "01"}
    assert train == {"0": 8840, "1": 4400}
    assert labels["test"]["olid"]["offensive"] == {"0": 620, "1": 240}
    # Test rows carry subtask_a only: an OFF tweet's target is not known there.
    assert labels["test"]["olid"]["target_type"] == {"none": 620, "null": 240}


def test_hatexplain(builder_pack):
    stats, _, expect, _ = builder_pack
    sizes = {
        split: sum(stats["labels"][split]["hatexplain"]["offensive"].values()) for split in ("train", "val", "test")
    }
    assert sizes == {"train": 15383, "val": 1922, "test": 1924}
    for split in ("train", "val", "test"):
        got = stats["labels"][split]["hatexplain"]["abuse_hate"]
        assert got == {
            "1": expect["hatexplain"][split, "hatespeech"],
            "0": sum(expect["hatexplain"][split, label] for label in ("offensive", "normal")),
        }
    assert summed(stats, "hatexplain", "offensive") == {"1": 5935 + 5480, "0": 7814}
    assert stats["split_mapping"]["hatexplain"]["unsplit"] == {
        "to": "assigned 80/10/10",
        "rows": 919,
        "packed": {},
        "dropped": {"undecided": 919},
        "failed": {},
    }


def test_memotion1_is_assigned_80_10_10(builder_pack):
    stats, _, _, out = builder_pack
    entry = stats["split_mapping"]["memotion1"]["train"]
    assert entry["to"] == "assigned 80/10/10" and entry["rows"] == 6512
    packed = entry["packed"]
    assert sum(packed.values()) == 6512 - 2
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(packed[split] / 6510 - share) <= 0.03, packed
    assert "  memotion1      train -> assigned 80/10/10: 6512 rows, 6510 packed (train " in out


def test_ocr_boxes_in_reading_order(builder_pack):
    """[x1, y1, x2, y2] boxes: the top line first, the low-confidence one left out."""
    import webdataset as wds

    _, step3, _, _ = builder_pack
    tar = sorted((step3 / "shards" / "train").glob("shard-*.tar"))[0]
    texts = [s["txt"].decode() for s in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False)]
    blocks = [t[: t.index(" [/OCR]")] for t in texts if not t.startswith("[OCR] [/OCR]")]
    assert blocks and all(re.fullmatch(r"\[OCR\] TOP (\d+) BOTTOM \1", b) for b in blocks), blocks[:3]
