"""`pack-examples show ID [--pack Step_3] [--out DIR]`: one packed example, found by id or key.

Prints where it is (split, source split, series, shard, index, byte offset and size) and what it
is (labels, aux, text; every input-derived string shown inertly), and writes its image (a clip:
its middle frame and every fNN frame) to DIR (default: the current folder) as `<key>.jpg`, naming
each file it wrote. An id the pack does not hold is exit 2 with the nearest ids it does.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

import polars as pl

from .catalog import read_samples
from .config import InputError, OutputError
from .diff import shards_folder
from .guard import check_no_link, error_exit, inert
from .remote import RemotePack, pack_argument
from .shards import write_atomic

NEAREST = 5


def nearest(wanted: str, ids: list[str]) -> list[str]:
    """The ids closest to `wanted` (those sharing its first characters first, as typos keep them)."""
    for keep in (6, 3, 0):
        pool = [i for i in ids if i[:keep] == wanted[:keep]] if keep else ids
        if pool:
            found = difflib.get_close_matches(wanted, pool[:50_000], n=NEAREST, cutoff=0.5)
            if found:
                return found
    return []


def show(pack: Path | str, wanted: str, out: Path, storage_options: str | None = None) -> list[str]:
    """The lines to print for one example, after writing its images to `out`. A URL is a published
    pack: its catalog is read from the bucket, and the sample with one ranged read."""
    remote = RemotePack(pack, storage_options) if isinstance(pack, str) else None
    shards = shards_folder(pack) if remote is None else None
    catalog = remote.catalog() if remote is not None else pl.read_parquet(shards / "samples.parquet")
    row = catalog.filter((pl.col("id") == wanted) | (pl.col("key") == wanted))
    if row.is_empty():
        close = nearest(wanted, catalog["id"].to_list())
        hint = f"; nearest ids: {', '.join(close)}" if close else ""
        raise InputError(f"{pack}: no packed example with id or key {wanted!r}{hint}")
    found = row.row(0, named=True)
    sample = next(remote.samples(row.head(1)) if remote is not None else read_samples(shards, row.head(1)))
    doc = json.loads(sample.members["json"])
    lines = [
        f"id: {found['id']}",
        f"key: {found['key']}",
        f"dataset: {found['dataset']}",
        f"split: {found['split']} (source split: {found['source_split'] or 'none'})",
        f"series: {found['series']}",
        f"shard: {found['shard']}, sample {found['index']}, bytes {found['offset']}..{found['offset'] + found['size']}",
        f"labels: {json.dumps(doc.get('labels'), ensure_ascii=False)}",
        f"aux: {json.dumps(doc.get('aux'), ensure_ascii=False)}",
        f"text: {sample.members['txt'].decode('utf-8')}",
    ]
    if doc.get("video"):
        lines.append(f"video: {json.dumps(doc['video'])}")
    images = sorted(ext for ext in sample.members if ext.endswith("jpg"))
    if images:
        check_no_link(out)
        out.mkdir(parents=True, exist_ok=True)
    for ext in images:
        path = out / f"{found['key']}.{ext}"
        check_no_link(path)
        if path.exists() and (not path.is_file() or path.read_bytes() != sample.members[ext]):
            raise InputError(f"{path}: exists with other content; choose another --out (nothing is overwritten)")
        write_atomic(path, sample.members[ext])
        lines.append(f"image written: {path}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pack-examples show", description="Show one packed example by id or key.")
    p.add_argument("id", help="the example's id (as in the manifest) or its key (as in the shards)")
    p.add_argument(
        "--pack", type=pack_argument, default=Path("Step_3"), help="the pack (its Step_3 or shards folder, or s3://...)"
    )
    p.add_argument("--storage-options", default=None, metavar="JSON", help="for an s3:// pack (as publish takes)")
    p.add_argument("--out", type=Path, default=Path("."), help="where to write its image(s) (default: here)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        lines = show(args.pack, args.id, args.out, args.storage_options)
    except (InputError, OutputError) as exc:  # OutputError: a bucket that refused or kept failing
        return error_exit(exc)
    print("\n".join(inert(line) for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
