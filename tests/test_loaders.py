"""The shards as the training cluster reads them: every rank and worker fed (webdataset's own
splitters), every index opened by the real `wids`, `datasets` never serving stale rows, and every
README snippet run as written against a pack."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from conftest import doc_blocks, sample_args

from packer.cli import main


def shard_keys(url: str) -> list[str]:
    """The keys of one shard, in order (whatever RANK/WORKER variables a test has set)."""
    return [s["__key__"] for s in wds.WebDataset(url, shardshuffle=False, nodesplitter=None, workersplitter=None)]


SERIES = {"images": "shard-*.tar", "text": "text-*.tar"}


def test_every_series_has_min_shards_of_equal_size(pilot):
    stats = json.loads((pilot / "stats.json").read_text())
    failures = [json.loads(line) for line in (pilot / "failures.jsonl").read_text().splitlines()]
    image_failures = sum(1 for f in failures if f["reason"].startswith("image_"))
    assert image_failures == 4  # the sample's broken images
    for split, entry in stats["splits"].items():
        for kind, pattern in SERIES.items():
            shards = sorted((pilot / "shards" / split).glob(pattern))
            examples = entry["image_examples" if kind == "images" else "text_examples"]
            assert len(shards) == min(16, examples), (split, kind)
            if shards:
                sizes = [len(shard_keys(str(s))) for s in shards]
                assert sum(sizes) == examples
                # Equal within one example; an image that failed to decode may leave its shard one short.
                assert max(sizes) - min(sizes) <= 1 + (image_failures if kind == "images" else 0), (split, sizes)


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_every_rank_and_worker_gets_samples_and_the_split_once(pilot, world_size, monkeypatch):
    workers = 2
    for split_dir in sorted((pilot / "shards").iterdir()):
        if split_dir.name.startswith("."):
            continue
        for kind, pattern in SERIES.items():
            urls = [str(p) for p in sorted(split_dir.glob(pattern))]
            if not urls:
                continue
            expected = Counter(k for url in urls for k in shard_keys(url))
            seen: Counter[str] = Counter()
            for rank in range(world_size):
                for worker in range(workers):
                    for name, value in (("RANK", rank), ("WORLD_SIZE", world_size), ("WORKER", worker)):
                        monkeypatch.setenv(name, str(value))
                    monkeypatch.setenv("NUM_WORKERS", str(workers))
                    reader = wds.WebDataset(
                        urls,
                        shardshuffle=False,
                        nodesplitter=wds.split_by_node,
                        workersplitter=wds.split_by_worker,
                    )  # the default empty check on: a reader without a shard raises
                    keys = [s["__key__"] for s in reader]
                    assert keys, (split_dir.name, kind, rank, worker)
                    seen.update(keys)
            assert seen == expected and set(seen.values()) == {1}, (split_dir.name, kind)


def test_wids_opens_every_index_packer_writes(pilot, tmp_path, monkeypatch):
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids"))
    wids = pytest.importorskip("wids", reason="wids (and torch) are installed by make install's `loaders` extra")
    indexes = sorted((pilot / "shards").glob("*/index*.json"))
    assert len(indexes) == 3 * 4 + 2  # train/val/test: four each (all, images, text, video); diagnostics: text only
    for index in indexes:
        doc = json.loads(index.read_text())
        dataset = wids.ShardListDataset(str(index))  # the default cache: by whole url (cache_dir= keys by name)
        assert len(dataset) == sum(s["nsamples"] for s in doc["shardlist"]) > 0
        urls = [index.parent / s["url"] for s in doc["shardlist"]]
        expected = [k for url in urls for k in shard_keys(str(url))]
        got = [dataset[i]["__key__"] for i in range(len(dataset))]
        assert got == expected
        members = {tuple(sorted(k for k in dataset[i] if k.startswith("."))) for i in range(len(dataset))}
        if index.name == "index.images.json":
            assert members == {(".jpg", ".json", ".txt")}
        elif index.name == "index.text.json":
            assert members == {(".json", ".txt")}
        elif index.name == "index.video.json":
            assert members == {(*(f".f{i:02d}.jpg" for i in range(8)), ".jpg", ".json", ".txt")}
    assert not (pilot / "shards" / "diagnostics" / "index.images.json").exists()


def pack_into(out: Path, step2: Path, *extra: str) -> dict:
    args = [a for a in sample_args(step2, out, *extra)]
    assert main(args) in (0, 1)
    return json.loads((out / "stats.json").read_text())


def test_datasets_loads_the_rows_on_disk_after_a_repack_and_in_a_namesake_folder(pilot, tmp_path, monkeypatch):
    from datasets import load_dataset

    step2 = pilot.parent / "Step_2"
    cache = str(tmp_path / "hf-cache")  # one cache for every load below, as the default one is
    first, other = tmp_path / "a", tmp_path / "b"
    loaded = {}
    for root, limit in ((first, "100"), (first, "300"), (other, "200")):
        (root / "Step_3").parent.mkdir(exist_ok=True)
        monkeypatch.chdir(root)
        stats = pack_into(root / "Step_3", step2, "--examples-limit", limit, "--fresh")
        rows = load_dataset("Step_3", "images", split="train", cache_dir=cache)
        ids = sorted(json.loads(j)["id"] if isinstance(j, str) else j["id"] for j in rows["json"])
        on_disk = sorted(
            json.loads(m)["id"]
            for url in sorted((root / "Step_3/shards/train").glob("shard-*.tar"))
            for m in (s["json"] for s in wds.WebDataset(str(url), shardshuffle=False))
        )
        assert len(rows) == stats["splits"]["train"]["image_examples"]
        assert ids == on_disk, (root, limit)
        loaded[root, limit] = ids
    assert loaded[first, "100"] != loaded[first, "300"] != loaded[other, "200"]
    again = load_dataset("Step_3", "images", split="train", cache_dir=cache, download_mode="force_redownload")
    assert len(again) == len(loaded[other, "200"])


def test_readme_python_snippets_run_against_the_pilot(pilot, tmp_path, monkeypatch):
    """Every ```python block of README.md and docs/, in order, in one namespace, from a folder
    holding Step_3."""
    blocks = doc_blocks("python")
    assert len(blocks) >= 8
    (tmp_path / "Step_3").symlink_to(pilot, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        if "dask_jobqueue" in block:
            continue  # needs a Slurm cluster
        if "megatron.energon" in block:
            continue  # runs in energon's own venv (test_energon.py)
        exec(compile(block, "README.md", "exec"), namespace)
    stats = json.loads((pilot / "stats.json").read_text())
    train = stats["splits"]["train"]
    assert sum(1 for _ in namespace["ds"]) == train["image_examples"]
    assert sum(1 for _ in namespace["val"]) == stats["splits"]["val"]["image_examples"]
    assert sum(1 for _ in namespace["urls"]) == train["image_shards"] + train["text_shards"] + train["video_shards"]
    pixels, captions, labels = namespace["image_batch"]
    assert pixels.shape == (32, 3, 384, 384) and len(captions) == 32
    assert labels["target_group"].shape == (32, len(namespace["GROUPS"]))
    frames, speech, times, hate = namespace["clip_batch"][0]  # docs/outputs.md's N frames per clip
    assert tuple(frames.shape) == (8, 3, 384, 384) and str(frames.dtype) == "torch.uint8"
    assert speech.startswith(("[OCR] [/OCR] [ASR] ", "[OCR] [/OCR] [CAP] "))  # with or without speech
    assert len(times) == 8 and hate in (0, 1)
    assert len(namespace["clip_batch"]) == min(4, train["video_examples"])
    text_captions, text_labels = namespace["text_batch"]
    assert len(text_captions) == 32 and str(text_labels["abuse_hate_mask"].dtype) == "torch.bool"
    assert len(namespace["train_images"]) == train["image_examples"]  # wids
    assert len(namespace["images"]) == train["image_examples"] and len(namespace["texts"]) == train["text_examples"]
    # docs/outputs.md's one-language evaluation read the pilot's German cases (written down in
    # scripts/make_sample_data.py: three hateful, three not), and the stand-in model got them all.
    assert namespace["german"].height == 6 and namespace["correct"] == 6
