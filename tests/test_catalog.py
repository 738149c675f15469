"""shards/samples.parquet: one row per packed sample, whose offset and size read back exactly the
sample's bytes in its shard, with the ids and labels the sample's .json carries."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from packer.catalog import COLUMNS, parse_sample
from packer.shards import END_OF_ARCHIVE


def test_offsets_read_back_every_sample_exactly(pilot: Path):
    shards = pilot / "shards"
    catalog = pl.read_parquet(shards / "samples.parquet")
    assert catalog.columns == COLUMNS
    stats = json.loads((pilot / "stats.json").read_text())
    assert len(catalog) == stats["packed_examples"]
    assert catalog["key"].is_unique().all() and catalog["id"].is_unique().all()
    counts = Counter(catalog.select("split", "series").iter_rows())
    for split, entry in stats["splits"].items():
        assert counts.get((split, "images"), 0) == entry["image_examples"], split
        assert counts.get((split, "text"), 0) == entry["text_examples"], split
    for (shard,), rows in catalog.group_by("shard", maintain_order=True):
        data = (shards / shard).read_bytes()
        rows = rows.sort("index")
        assert rows["index"].to_list() == list(range(len(rows)))
        pieces = []
        for row in rows.iter_rows(named=True):
            piece = data[row["offset"] : row["offset"] + row["size"]]
            key, members = parse_sample(piece)
            doc = json.loads(members["json"])
            assert key == row["key"] == doc["key"]
            assert (doc["id"], doc["dataset"], doc["split"], doc["source_split"]) == (
                row["id"],
                row["dataset"],
                row["split"],
                row["source_split"],
            )
            assert doc["labels"] == {f: row[f] for f in ("abuse_hate", "offensive", "target_type", "target_group")}
            assert ("jpg" in members) == (row["series"] in ("images", "video"))
            assert ("f00.jpg" in members) == (row["series"] == "video")
            pieces.append(piece)
        # The samples tile the shard: nothing between them, the end-of-archive blocks after them.
        assert b"".join(pieces) + END_OF_ARCHIVE == data, shard


def test_pyarrow_reads_the_catalog_with_list_labels(pilot: Path):
    table = pq.read_table(pilot / "shards" / "samples.parquet")
    import pyarrow as pa

    assert pa.types.is_large_list(table.schema.field("target_group").type)
    groups = table.column("target_group").to_pylist()
    assert [] in groups and None in groups and any(g and "women" in g for g in groups)
