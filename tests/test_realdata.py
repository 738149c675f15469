"""The real annotation files of ../shared/realdata, converted by the adapters and packed: the
published counts must come out exactly. Skipped where ../shared is absent (a user's clone).

The releases' images are not there, so each image a row names is made as a tiny PNG whose
pixels derive from its file name: the same file for the same name (Hateful Memes' dev_seen and
dev_unseen name the same 400 files), different bytes for different files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REALDATA, Workspace, summed, tiny_png

from packer.sources import Options, convert

pytestmark = [
    pytest.mark.skipif(not (REALDATA / "olid").is_dir(), reason="../shared/realdata is not here"),
    pytest.mark.heavy,
    pytest.mark.xdist_group(name="realdata"),  # one module fixture: one pack
]

DATASETS = ("hateful_memes", "mami", "olid", "hatecheck", "memotion1")


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules between its tests
def packed_realdata(tmp_path_factory) -> tuple[dict, Workspace, dict]:
    ws = Workspace(tmp_path_factory.mktemp("realdata"))
    images = ws.root / "images"
    converted = {}
    for dataset in DATASETS:
        options = (
            Options(fine_grained=REALDATA / "fine_grained_hateful_memes") if dataset == "hateful_memes" else Options()
        )
        converted[dataset] = convert(dataset, REALDATA / dataset, [images], options)
        ws.rows += converted[dataset].rows
    for row in ws.rows:
        if row["image_path"] and not Path(row["image_path"]).exists():
            tiny_png(Path(row["image_path"]))
    assert ws.run("--include-diagnostics", "--workers", "2") == 0
    return ws.stats, ws, converted


def test_every_row_is_accounted_for(packed_realdata):
    stats, ws, converted = packed_realdata
    assert (
        stats["total_examples"] == sum(len(c.rows) for c in converted.values()) == 12540 + 11000 + 14100 + 3728 + 8390
    )
    assert stats["packed_examples"] + stats["dropped_examples"] + stats["failed_examples"] == stats["total_examples"]
    assert len(ws.failures()) == stats["dropped_examples"] + stats["failed_examples"]


def test_olid(packed_realdata):
    labels = packed_realdata[0]["labels"]
    train = {k: labels["train"]["olid"][k].get("1", 0) + labels["val"]["olid"][k].get("1", 0) for k in ("offensive",)}
    assert summed(packed_realdata[0], "olid", "offensive") == {"0": 8840 + 620, "1": 4400 + 240}
    assert train == {"offensive": 4400}
    types = {
        t: labels["train"]["olid"]["target_type"].get(t, 0) + labels["val"]["olid"]["target_type"].get(t, 0)
        for t in ("individual", "group", "other")
    }
    assert types == {"individual": 2407, "group": 1074, "other": 395}
    test = labels["test"]["olid"]
    assert test["offensive"] == {"0": 620, "1": 240}
    assert (test["target_type"]["individual"], test["target_type"]["group"], test["target_type"]["other"]) == (
        100,
        78,
        35,
    )
    assert test["target_type"]["none"] == 620 + 27  # NOT, and OFF but untargeted
    assert packed_realdata[0]["datasets"]["olid"]["failed"] == 0


def test_mami(packed_realdata):
    labels = packed_realdata[0]["labels"]
    train = {v: labels["train"]["mami"]["abuse_hate"][v] + labels["val"]["mami"]["abuse_hate"][v] for v in "01"}
    assert train == {"0": 5000, "1": 5000}
    assert labels["test"]["mami"]["abuse_hate"] == {"0": 500, "1": 500}
    assert packed_realdata[0]["datasets"]["mami"]["counts"] == {"sub_type_but_not_misogynous": {"train": 4}}


def test_hateful_memes(packed_realdata):
    stats, ws, _ = packed_realdata
    labels = stats["labels"]
    assert labels["train"]["hateful_memes"]["abuse_hate"] == {"0": 5481, "1": 3019}
    assert sum(labels["val"]["hateful_memes"]["abuse_hate"].values()) == 500 + 540 - 400 == 640
    assert labels["test"]["hateful_memes"]["abuse_hate"] == {"0": 510 + 1250, "1": 490 + 750}
    duplicates = [f for f in ws.failures() if f["reason"] == "duplicate"]
    assert len([f for f in duplicates if f["id"].startswith("hateful_memes_dev_unseen_")]) == 400
    assert stats["leakage"]["exact_duplicates_dropped"] == {
        "hateful_memes": {"dev_unseen": 400},
        "memotion1": {"train": 1},
    }
    hm = stats["datasets"]["hateful_memes"]
    assert hm["counts"] == {"gold_hate_disagrees_with_label": {"train": 12, "dev_seen": 1, "dev_unseen": 1}}
    assert hm["failed"] == 0 and hm["dropped"] == 400


def test_hatecheck(packed_realdata):
    diag = packed_realdata[0]["labels"]["diagnostics"]["hatecheck"]
    assert diag["abuse_hate"] == {"0": 1165, "1": 2563}
    assert diag["target_type"] == {"group": 3728 - 292, "none": 292}
    assert diag["target_group"]["lgbtq"] == 463 + 551 and diag["target_group"]["[]"] == 292


def test_memotion1_corrupted_cell_and_repeated_row(packed_realdata):
    stats, ws, _ = packed_realdata
    memotion = stats["datasets"]["memotion1"]
    assert (memotion["rows"], memotion["failed"]) == (6512 + 1878, 1)
    failed = [f for f in ws.failures() if f["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["id"] == "memotion1_train_chandler_f50efbd3af8d0a93a2ecdead0dc5044a.jpg"
    assert "positivechandler_friday_mood_af._meme_friends_chandlerbing.jpg" in failed[0]["reason"]
    dropped = {f["id"]: f["reason"] for f in ws.failures() if f["id"].startswith("memotion1_train")}
    repeat = "memotion1_train_hillary_c3fd01300e5bee2ba12a45ee2f160ed11b89265177c11f97be8ef2b3a4ddc17a.jpg#2"
    assert dropped[repeat] == "duplicate"
    # Published 2540 not_offensive / 3972 others, less the failed row (not_offensive) and the repeat (slight).
    assert summed(stats, "memotion1", "offensive") == {"0": 2540 - 1, "1": 2403 + 1362 + 207 - 1}


def test_original_format_ids_equal_the_reserialised_ones(tmp_path):
    original = REALDATA / "hateful_memes" / "original_format_sample"
    assert "\\/" in (original / "dev_seen.jsonl").read_text()[:200]
    rows = convert("hateful_memes", original, [tmp_path]).rows
    copy = [
        r for r in convert("hateful_memes", REALDATA / "hateful_memes", [tmp_path]).rows if r["split"] == "dev_seen"
    ]
    assert [(r["id"], r["labels_raw"], r["text_raw"]) for r in rows] == [
        (r["id"], r["labels_raw"], r["text_raw"]) for r in copy
    ]
    assert len(rows) == 500 and json.dumps(rows[0]["labels_raw"]) in ('{"label": 1}', '{"label": 0}')


def test_leakage_audit_of_the_real_splits(packed_realdata):
    leak = packed_realdata[0]["leakage"]
    # Images are stand-ins (one per file), so no image is shared once the 400 twins are dropped;
    # MAMI's train and test both have a 15001.jpg, but in different folders.
    assert (leak["images_in_two_splits"], leak["near_duplicate_images_across_splits"]) == (0, 0)
    # Texts are real: Hateful Memes re-uses captions on other images (its "confounders").
    texts = leak["texts"]
    assert texts["train/test"]["by_dataset"]["hateful_memes"]["shared"] == 175
    assert texts["train/val"]["by_dataset"]["hateful_memes"]["shared"] == 103
    assert texts["val/test"]["by_dataset"]["hateful_memes"]["shared"] == 70
    assert texts["train/test"]["by_dataset"]["olid"]["shared"] == 6
    assert all(len(d["examples"]) <= 20 for e in texts.values() for d in e["by_dataset"].values())
