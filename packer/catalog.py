"""shards/samples.parquet: one row per packed sample, where it is (shard, index, byte offset and
size) and what it is (ids and unified labels), so that any sample can be read with one seek.

packer writes every tar itself, so the catalog is computed, never scanned: the packed samples in
plan order, cut by the shards' sample counts, their byte sizes summed within each shard. The same
offsets make each shard's `.tar.idx` (energon.py). A pack made before the catalog existed is
scanned once, by tar headers (`scan_catalog`), for the report only.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .config import UNIFIED_FIELDS
from .shards import END_OF_ARCHIVE, SERIES_NAMES, write_atomic

CATALOG = "samples.parquet"

LOCATION = {"shard": pl.String, "index": pl.Int32, "offset": pl.Int64, "size": pl.Int64}
# What a later pack compares (`diff`) and reuses: the digests of the sample's jpg and txt members,
# its image's dHash, its source file's path, digest and size, and the digest of the settings its
# image was encoded with (previous.encoder_identity; a clip's: previous.clip_encoder_identity, and
# no digest of the clip's bytes, which are read in ranges, never whole). Each source file's mtime and inode, which
# change when a file is only touched, are kept beside the catalog (previous.SOURCES), not in it.
FACTS = {
    "image_sha256": pl.String,
    "text_sha256": pl.String,
    "dhash": pl.UInt64,
    "source_path": pl.String,
    "source_sha256": pl.String,
    "source_size": pl.Int64,
    "encoder": pl.String,
}
COLUMNS = ["key", "id", "dataset", "split", "source_split", "series", *LOCATION, "lang", *UNIFIED_FIELDS, *FACTS]


class CatalogError(RuntimeError):
    """The shards and the samples that were packed into them disagree: a bug, never an input error."""


def sample_facts(outcomes: Iterable[Any], encoder: str | None, clip_encoder: str | None = None) -> pl.DataFrame:
    """The FACTS of every packed sample (SampleOutcome.facts), by id; `encoder` is the digest of the
    image settings, `clip_encoder` of the clip settings (previous.clip_encoder_identity)."""
    rows = []
    for o in outcomes:
        if o.status != "packed":
            continue
        facts = o.facts or {}
        source = facts.get("source") or {}
        rows.append(
            (
                o.id,
                facts.get("image_sha256"),
                facts.get("text_sha256"),
                o.dhash,
                source.get("sha256"),
                source.get("size"),
                (clip_encoder if o.video is not None else encoder) if o.image is not None else None,
            )
        )
    names = ["image_sha256", "text_sha256", "dhash", "source_sha256", "source_size", "encoder"]
    schema = {"id": pl.String, **{n: FACTS[n] for n in names}}
    return pl.DataFrame(rows, schema=schema, orient="row")


def build_catalog(
    samples: pl.DataFrame, packed: dict[str, int], shards: Iterable[Any], facts: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The catalog of a run.

    `samples`: the plan's samples in packing order, with their series (plan.ordered_samples); `packed`: id -> bytes of
    the sample's tar members, for every packed sample; `shards`: the run's shards (ShardInfo: split,
    series, path, examples, bytes) in order. The samples of each (split, series) fill its shards in
    order, so a sample's shard and index follow from the shards' counts, and its offset from the
    sizes of the samples before it in its shard. Every shard's size is checked against its samples'."""
    sizes = pl.DataFrame(
        {"id": list(packed), "size": list(packed.values())}, schema={"id": pl.String, "size": pl.Int64}
    )
    rows = samples.join(sizes, on="id", how="inner", maintain_order="left").with_columns(
        series=pl.col("series").replace_strict(SERIES_NAMES, return_dtype=pl.String)
    )
    if facts is None:
        facts = pl.DataFrame(schema={"id": pl.String, **{n: t for n, t in FACTS.items() if n != "source_path"}})
    rows = rows.join(facts, on="id", how="left", maintain_order="left").with_columns(
        source_path=pl.when(pl.col("series") == "images")
        .then(pl.col("image_path"))
        .when(pl.col("series") == "video")
        .then(pl.col("video_path"))
    )
    listing = pl.DataFrame(
        [
            {
                "split": s.split,
                "series": SERIES_NAMES[s.series],
                "shard": s.name,
                "count": s.examples,
                "bytes": s.bytes,
            }
            for s in shards
        ],
        schema={"split": pl.String, "series": pl.String, "shard": pl.String, "count": pl.Int64, "bytes": pl.Int64},
    )
    # One row per slot of every shard, numbered within its (split, series): sample n of a series
    # goes to slot n.
    slots = (
        listing.with_columns(index=pl.int_ranges(0, pl.col("count"), dtype=pl.Int32))
        .explode("index")
        .drop_nulls("index")
        .with_columns(position=pl.int_range(pl.len()).over("split", "series"))
        .select("split", "series", "position", "shard", "index")
    )
    rows = rows.with_columns(position=pl.int_range(pl.len()).over("split", "series"))
    located = rows.join(slots, on=["split", "series", "position"], how="inner", maintain_order="left").with_columns(
        offset=(pl.col("size").cum_sum() - pl.col("size")).over("shard")
    )
    check = located.group_by("shard").agg(n=pl.len(), end=pl.col("size").sum())
    joined = listing.join(check, on="shard", how="left").with_columns(pl.col("n", "end").fill_null(0))
    wrong = joined.filter((pl.col("n") != pl.col("count")) | (pl.col("end") + len(END_OF_ARCHIVE) != pl.col("bytes")))
    if len(located) != len(rows) or len(slots) != len(rows) or len(wrong):
        raise CatalogError(f"the shards do not hold the samples packed into them: {wrong.head(3).to_dicts()}")
    order = {s: i for i, s in enumerate(rows["split"].unique(maintain_order=True))}
    return (
        located.with_columns(
            _split=pl.col("split").replace_strict(order, return_dtype=pl.Int32),
            target_group=pl.when(pl.col("target_group") == "")
            .then(pl.lit([], dtype=pl.List(pl.String)))
            .otherwise(pl.col("target_group").str.split("|")),
        )
        .sort("_split", "shard", "index")
        .select(COLUMNS)
    )


def catalog_bytes(catalog: pl.DataFrame) -> bytes:
    """The catalog as Parquet bytes: the same bytes for the same rows (a run's outputs do not depend
    on its workers, backend or resumes). Row groups of 64k rows, so a reader can skip by split."""
    buffer = io.BytesIO()
    catalog.write_parquet(buffer, compression="zstd", compression_level=3, statistics=True, row_group_size=65536)
    return buffer.getvalue()


def write_catalog(shard_root: Path, catalog: pl.DataFrame) -> None:
    write_atomic(shard_root / CATALOG, catalog_bytes(catalog))


def read_catalog(shard_root: Path, columns: list[str] | None = None) -> pl.DataFrame | None:
    """The catalog of a pack, or None for a pack made before packer wrote one."""
    path = shard_root / CATALOG
    if not path.is_file():
        return None
    return pl.read_parquet(path, columns=columns)


# -- reading samples by offset ------------------------------------------------------------------


@dataclass
class Sample:
    """One packed example as read back from a shard."""

    key: str
    shard: str
    members: dict[str, bytes]


def parse_sample(data: bytes) -> tuple[str, dict[str, bytes]]:
    """The key and members (extension -> bytes) of one sample's tar bytes."""
    members: dict[str, bytes] = {}
    key = ""
    with tarfile.open(fileobj=io.BytesIO(data + END_OF_ARCHIVE), mode="r:") as tar:
        for info in tar:
            name = info.name.rsplit("/", 1)[-1]
            key, _, ext = name.partition(".")
            handle = tar.extractfile(info)
            if handle is not None:
                members[ext] = handle.read()
    return key, members


def read_samples(shard_root: Path, located: pl.DataFrame) -> Iterator[Sample]:
    """The samples of catalog rows (columns shard, offset, size), each read with one seek: shard by
    shard, in offset order within each."""
    ordered = located.select("shard", "offset", "size").sort("shard", "offset")
    for (shard,), part in ordered.group_by("shard", maintain_order=True):
        with open(shard_root / str(shard), "rb") as handle:
            for offset, size in part.select("offset", "size").iter_rows():
                handle.seek(offset)
                key, members = parse_sample(handle.read(size))
                yield Sample(key, str(shard), members)


def scan_catalog(shard_root: Path, splits: Iterable[str]) -> pl.DataFrame:
    """Where every sample of a pack without samples.parquet is (key, split, shard, index, offset,
    size), from its tar headers: the only reader here that scans."""
    rows: list[tuple[str, str, str, int, int, int]] = []
    for split in splits:
        for path in sorted((shard_root / split).glob("*.tar")):
            shard = f"{split}/{path.name}"
            with tarfile.open(path, "r:") as tar:
                key, start, index = None, 0, -1
                for info in tar:
                    this = info.name.rsplit("/", 1)[-1].split(".", 1)[0]
                    if this != key:
                        if key is not None:
                            rows.append((key, split, shard, index, start, info.offset - start))
                        key, start, index = this, info.offset, index + 1
                if key is not None:
                    rows.append((key, split, shard, index, start, tar.offset - start))
    schema = {"key": pl.String, "split": pl.String, **LOCATION}
    return pl.DataFrame(rows, schema=schema, orient="row")
