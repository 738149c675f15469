"""The report's samples, read back from the shards by byte offset: through the catalog
(shards/samples.parquet, or the run's own frame), each sample one seek and one read. A pack made
before packer wrote a catalog is located once by its tar headers (catalog.scan_catalog)."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markupsafe
import polars as pl

from .. import catalog
from ..config import DIAGNOSTICS, SPLITS


@dataclass
class Sample:
    """One packed example as read back from a shard."""

    key: str
    shard: str
    jpg: bytes | None
    txt: str
    doc: dict[str, Any]

    @classmethod
    def of(cls, sample: catalog.Sample) -> Sample:
        m = sample.members
        return cls(sample.key, sample.shard, m.get("jpg"), m.get("txt", b"").decode("utf-8"), json.loads(m["json"]))

    @property
    def image_uri(self) -> markupsafe.Markup | None:
        """The packed JPEG as a data URI (base64 only: safe markup, exempt from the text bound)."""
        if self.jpg is None:
            return None
        return markupsafe.Markup("data:image/jpeg;base64," + base64.b64encode(self.jpg).decode("ascii"))

    @property
    def first_speech(self) -> str | None:
        """A clip's first kept ASR segment, as `[start-end s] text`; None for other samples."""
        segments = (self.doc.get("asr") or {}).get("segments") or []
        if not segments:
            return None
        first = segments[0]
        return f"[{first.get('start')}-{first.get('end')} s] {first.get('text')}"

    @property
    def labels(self) -> str:
        return json.dumps(self.doc.get("labels", {}), ensure_ascii=False)

    @property
    def aux(self) -> str:
        return json.dumps(self.doc.get("aux", {}), ensure_ascii=False)


LOCATED = ["key", "split", "shard", "index", "offset", "size"]


def locate(shard_root: Path, given: pl.DataFrame | None = None) -> pl.DataFrame:
    """Where every packed sample is: the run's catalog, samples.parquet, or (a pack made before
    packer wrote one) its tar headers scanned once."""
    if given is not None:
        return given.select(LOCATED)
    found = catalog.read_catalog(shard_root, LOCATED)
    if found is not None:
        return found
    splits = [s for s in (*SPLITS, DIAGNOSTICS) if (shard_root / s / "index.json").is_file()]
    return catalog.scan_catalog(shard_root, splits)


def read(shard_root: Path, located: pl.DataFrame) -> list[Sample]:
    return [Sample.of(s) for s in catalog.read_samples(shard_root, located)]


def contact_sheet(shard_root: Path, located: pl.DataFrame, split: str, size: int, seed: int) -> list[Sample]:
    """A seeded random sample of `size` packed examples of a split, each read with one seek (in
    shard order: the order a reader meets them)."""
    rows = located.filter(pl.col("split") == split)
    rng = random.Random(f"{seed}:{split}")
    picks = sorted(rng.sample(range(len(rows)), min(size, len(rows))))
    return read(shard_root, rows[picks].sort("shard", "index"))
