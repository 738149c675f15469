"""The output contract (../shared/docs/OUTPUTS.md), read back with the readers users have: the documented
webdataset line, a text reader over both shard series, and Hugging Face `datasets` through the card."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import webdataset as wds
from conftest import MAMI, ROOT

SPLITS = ("train", "val", "test", "diagnostics")


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def test_stats_and_splits_json_follow_the_contract(packed):
    stats = stats_of(packed)
    total, done = stats["total_examples"], stats["packed_examples"]
    assert total == done + stats["dropped_examples"] + stats["failed_examples"]
    assert stats["failed_examples"] > 0 and stats["dropped_examples"] > 0  # the sample breaks some on purpose
    assert stats["failure_rate"] == stats["failed_examples"] / total
    assert [name for name, ok in stats["checks"].items() if not ok] == ["failure_rate_below_0.5%"]
    splits = json.loads((packed / "splits.json").read_text())
    assert list(splits) == sorted(splits) and len(splits) == done
    assert set(splits.values()) == set(SPLITS)
    per_split = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
    assert per_split == {s: stats["splits"][s]["examples"] for s in SPLITS}
    failures = [json.loads(line) for line in (packed / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == total - done and not {f["id"] for f in failures} & set(splits)


def readme_reader_line() -> str:
    """The README's documented line on the image shards, as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Reading the shards", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    line = block[block.index("ds = (") :]
    assert 'shard-{00000..00015}.tar", shardshuffle=False)' in line and '.to_tuple("jpg;png", "txt", "json")' in line
    return line


def test_documented_reader_verbatim_over_every_image_shard(packed, monkeypatch):
    stats, splits = stats_of(packed), json.loads((packed / "splits.json").read_text())
    line = readme_reader_line()
    monkeypatch.chdir(packed.parent)
    for split in ("train", "val", "test"):
        urls = sorted(glob.glob(str(packed / "shards" / split / "shard-*.tar")))
        assert len(urls) == stats["splits"][split]["image_shards"] == 16  # --min-shards 16: the line's range
        namespace = {"wds": wds}
        exec(line.replace("Step_3/shards/train/", f"{packed.name}/shards/{split}/"), namespace)
        ds = namespace["ds"]
        seen = []
        for image, text, doc in ds:
            assert image.size == (384, 384) and image.mode == "RGB"
            assert text.startswith("[OCR] ") and doc["image"]["orig_width"] > 0
            assert splits[doc["id"]] == doc["split"] == split
            seen.append(doc["id"])
        assert len(seen) == len(set(seen)) == stats["splits"][split]["image_examples"]


def test_text_reader_over_both_series_yields_every_packed_example_once(packed):
    stats, splits = stats_of(packed), json.loads((packed / "splits.json").read_text())
    for split in SPLITS:
        urls = sorted(glob.glob(str(packed / "shards" / split / "*.tar")))
        ids = [doc["id"] for _, doc in wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("txt", "json")]
        assert len(ids) == len(set(ids)) == stats["splits"][split]["examples"]
        assert set(ids) == {i for i, s in splits.items() if s == split}
    # Every shard holds samples with the same members: jpg+json+txt, json+txt, or a clip's frames too.
    expected = {
        "shard": ("jpg", "json", "txt"),
        "text": ("json", "txt"),
        "video": (*(f"f{i:02d}.jpg" for i in range(8)), "jpg", "json", "txt"),
    }
    for url in glob.glob(str(packed / "shards/*/*.tar")):
        members = {
            tuple(sorted(k for k in s if not k.startswith("__"))) for s in wds.WebDataset(url, shardshuffle=False)
        }
        assert members == {expected[Path(url).name.split("-")[0]]}, url


def test_shard_index_lists_every_shard_with_its_count(packed):
    for split in SPLITS:
        folder = packed / "shards" / split
        index = json.loads((folder / "index.json").read_text())
        assert index["wids_version"] == 1
        urls = [entry["url"] for entry in index["shardlist"]]
        assert sorted(urls) == sorted(p.name for p in folder.glob("*.tar"))
        assert urls == [u for series in ("shard-", "text-", "video-") for u in sorted(urls) if u.startswith(series)]
        for entry in index["shardlist"]:
            assert entry["nsamples"] == sum(1 for _ in wds.WebDataset(str(folder / entry["url"]), shardshuffle=False))


def test_datasets_load_dataset_reads_both_configs_through_the_card(packed, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(packed.parent)
    stats = stats_of(packed)
    card = (packed / "README.md").read_text()
    assert card.startswith("---\n") and f"{stats['packed_examples']} examples" in card
    labels_seen: dict[str, dict[str, int]] = {}
    configs = (("images", "image", ("train", "val", "test")), ("text", "text", SPLITS), ("video", "video", SPLITS[:3]))
    for config, kind, splits in configs:
        for split in splits:
            ds = datasets.load_dataset("Step_3", config, split=split, cache_dir=str(tmp_path / "hf"))
            assert ds.num_rows == stats["splits"][split][f"{kind}_examples"]
            for row in ds:
                doc = row["json"]
                assert doc["split"] == split and row["__key__"] == doc["key"]
                if kind in ("image", "video"):
                    assert row["jpg"].size == (384, 384)
                if kind == "video":
                    assert row["f07.jpg"].size == (384, 384) and doc["video"]["duration"] > 0
                by_value = labels_seen.setdefault(f"{split}/{doc['dataset']}", {})
                value = "null" if doc["labels"]["abuse_hate"] is None else str(doc["labels"]["abuse_hate"])
                by_value[value] = by_value.get(value, 0) + 1
    expected = {
        f"{split}/{dataset}": fields["abuse_hate"]
        for split, per_dataset in stats["labels"].items()
        for dataset, fields in per_dataset.items()
    }
    assert labels_seen == expected


def test_examples_limit_draws_no_diagnostics_unless_asked(ws):
    for i in range(40):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI, text=f"m{i}")
    for i in range(40):
        labels = {"functionality": "f", "case_id": i, "label_gold": "hateful", "target_ident": "women"}
        ws.add(f"hatecheck_test_{i}", "hatecheck", "test", labels, text=f"h{i}")
    assert ws.run("--examples-limit", "20") == 0
    stats = ws.stats
    assert (stats["total_examples"], stats["packed_examples"], stats["dropped_examples"]) == (20, 20, 0)
    assert stats["manifest_rows"] == 80
    assert ws.run("--examples-limit", "20", "--include-diagnostics", shards="diag") == 0
    assert ws.stats["splits"]["diagnostics"]["examples"] == 10


def test_a_readme_packer_did_not_write_is_never_overwritten(ws, capsys):
    ws.add("mami_train_0", "mami", "train", MAMI, text="m")
    ws.out.mkdir(parents=True)
    (ws.out / "README.md").write_text("# my project\n")
    assert ws.run() == 2
    assert "README.md: exists and is not a packer dataset card" in capsys.readouterr().err
    assert (ws.out / "README.md").read_text() == "# my project\n" and not (ws.out / "stats.json").exists()
    (ws.out / "README.md").unlink()
    assert ws.run() == 0 and ws.run() == 0  # its own card is rewritten


def test_aux_fields_of_one_name_must_agree_in_type(tmp_path):
    from packer.config import InputError, load_taxonomy

    doc = json.loads((ROOT / "packer/data/label_taxonomy.json").read_text())
    doc["datasets"]["olid"]["aux"]["case_id"] = {"field": "subtask_a", "type": "str"}
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"datasets.hatecheck.aux.case_id: type 'int' conflicts with 'str' in olid"):
        load_taxonomy(path)


def test_card_data_files_are_relative_to_its_folder(packed):
    card = (packed / "README.md").read_text()
    for split in ("train", "val", "test"):
        assert f"path: shards/{split}/shard-*.tar" in card and f"path: shards/{split}/text-*.tar" in card
