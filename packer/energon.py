"""Megatron-Energon's metadata, written with the shards, so that `shards/` is an energon dataset
root as packed, without `energon prepare` re-reading every tar.

In energon 7.x's formats (read from its source, megatron-energon 7.4.1, and checked against what
its `energon prepare` writes for the same shards):

- `<split>/<shard>.tar.idx`: per shard, each sample's byte offset, then the end of the last
  sample, as little-endian uint64.
- `.nv-meta/.info.json`: the energon version and every shard's sample count, by path.
- `.nv-meta/split*.yaml`: split part -> shard paths (brace patterns), one file per shard series.
- `.nv-meta/dataset*.yaml`: how a sample is read, one file per sample type that fits.

energon needs keys unique across the root and a sample's members contiguous: packer's keys are
unique by construction (a repeated key fails in the plan) and each sample is written whole.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from .guard import META_FILE, check_no_link, remove_owned
from .shards import END_OF_ARCHIVE, IMAGE_SERIES, TEXT_SERIES, VIDEO_SERIES, write_atomic

# The energon release these formats are written for; any 7.x reads them. For another version,
# `energon prepare` rebuilds the metadata from the shards (README, "Megatron-Energon").
ENERGON_VERSION = "7.4.1"
META_DIR = ".nv-meta"

# split config -> the shard series it lists. split.yaml (energon's default) takes the image series.
# split.video.yaml is written only for a pack with video shards (a pack without is as before).
SPLIT_CONFIGS = {
    "split.yaml": (IMAGE_SERIES,),
    "split.text.yaml": (TEXT_SERIES,),
    "split.all.yaml": (IMAGE_SERIES, TEXT_SERIES, VIDEO_SERIES),
    "split.video.yaml": (VIDEO_SERIES,),
}

# dataset config -> how energon reads a sample. dataset.yaml (energon's default) is the crude
# webdataset: a dict of the decoded members, for a TaskEncoder's cooker.
DATASET_CONFIGS: dict[str, dict[str, Any]] = {
    "dataset.yaml": {"__module__": "megatron.energon", "__class__": "CrudeWebdataset"},
    "dataset.text.yaml": {
        "sample_type": {"__module__": "megatron.energon", "__class__": "TextSample"},
        "field_map": {"text": "txt"},
    },
    "dataset.image_abuse_hate.yaml": {
        "sample_type": {"__module__": "megatron.energon", "__class__": "ImageClassificationSample"},
        "field_map": {"image": "jpg", "label": "json[labels][abuse_hate]"},
    },
}


def write_tar_indexes(shard_root: Path, catalog: pl.DataFrame, shards: Iterable[Any]) -> None:
    """Each shard's `.tar.idx`, from the catalog's offsets (no tar is read)."""
    offsets = dict(catalog.group_by("shard", maintain_order=True).agg(pl.col("offset")).iter_rows())
    for shard in shards:
        values = [*offsets[shard.name], shard.bytes - len(END_OF_ARCHIVE)]
        write_atomic(shard_root / f"{shard.name}.idx", struct.pack(f"<{len(values)}Q", *values))


def brace(names: list[str]) -> list[str]:
    """Shard paths of one series (`<split>/<series>-NNNNN.tar`, numbered from 0 without gaps) as
    energon's prepare collapses them: one `{00000..000NN}` pattern, or the name itself."""
    if len(names) <= 1:
        return names
    head = names[0].rsplit("-", 1)[0]
    return [f"{head}-{{{names[0].rsplit('-', 1)[1][:5]}..{names[-1].rsplit('-', 1)[1][:5]}}}.tar"]


def write_meta(shard_root: Path, shards: Iterable[Any], splits: Iterable[str]) -> None:
    """`.nv-meta/`: the info, the split configs (every split of the pack a part, `[]` where a series
    has no shard, as energon's prepare writes it) and the dataset configs."""
    shards = list(shards)
    meta = shard_root / META_DIR
    check_no_link(meta)
    meta.mkdir(exist_ok=True)
    names = {(s.split, s.series): [] for s in shards}
    for s in shards:
        names[s.split, s.series].append(s.name)
    counts = {s.name: s.examples for s in shards}
    info = {"energon_version": ENERGON_VERSION, "shard_counts": dict(sorted(counts.items()))}
    write_atomic(meta / ".info.json", json.dumps(info, indent=2).encode("utf-8"))
    has_video = any(s.series == VIDEO_SERIES for s in shards)
    for config, series in SPLIT_CONFIGS.items():
        if series == (VIDEO_SERIES,) and not has_video:
            continue
        parts = {split: [p for one in series for p in brace(names.get((split, one), []))] for split in splits}
        doc = {"split_parts": parts, "exclude": []}
        write_atomic(meta / config, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
    for config, doc in DATASET_CONFIGS.items():
        write_atomic(meta / config, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))


def remove_meta(shard_root: Path) -> None:
    """Before a run writes new shards: the old metadata goes (with what `energon prepare` may have
    added: index.sqlite, index.uuid), so nothing describes shards that are being replaced."""
    remove_owned(shard_root / META_DIR, META_FILE)
