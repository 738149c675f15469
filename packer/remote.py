"""A published pack read from its bucket (`pack-examples show ID --pack s3://...`, `diff LOCAL s3://...`).

Only a complete pack is read: `published.json` must be there, and the catalog read must be the
bytes it lists (SHA-256). A sample is one ranged read at its catalog offset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl

from .catalog import CATALOG, Sample, parse_sample
from .config import InputError
from .storage import StorageError, Store, is_url, parse_options, parse_url

MANIFEST = "published.json"  # packer.publish.MANIFEST: what a complete published pack has


class RemotePack:
    """A pack published to `url` (s3://bucket/prefix), read with the storage options given."""

    def __init__(self, url: str, options_json: str | None = None):
        self.url = url
        self.store = Store(parse_url(url), parse_options(options_json))
        found = self.store.get(MANIFEST)
        if found is None:
            raise InputError(
                f"{url}: no {MANIFEST}: not a published pack, or its publish is incomplete (rerun the publish)"
            )
        try:
            doc = json.loads(found[0])
            self.files = {f["path"]: f for f in doc["files"]}
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{self.store.url.of(MANIFEST)}: not a packer manifest") from None

    def read(self, relative: str) -> bytes:
        """A listed object, whole, checked against the manifest's SHA-256."""
        entry = self.files.get(relative)
        found = self.store.get(relative) if entry is not None else None
        if entry is None or found is None:
            raise InputError(f"{self.store.url.of(relative)}: not in the published pack")
        if hashlib.sha256(found[0]).hexdigest() != entry["sha256"]:
            raise StorageError(f"{self.store.url.of(relative)}: its bytes are not those {MANIFEST} lists")
        return found[0]

    def catalog(self) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read(f"shards/{CATALOG}")))

    def failures(self) -> dict[str, str]:
        if "failures.jsonl" not in self.files:
            return {}
        return failures_from_lines(self.read("failures.jsonl").decode("utf-8").splitlines())

    def samples(self, located: pl.DataFrame) -> Iterator[Sample]:
        """The samples of catalog rows, each one ranged read of its shard."""
        for shard, offset, size in located.select("shard", "offset", "size").iter_rows():
            found = self.store.get(f"shards/{shard}", int(offset), int(size))
            if found is None:
                raise StorageError(f"{self.store.url.of('shards/' + str(shard))}: missing from the published pack")
            key, members = parse_sample(found[0])
            yield Sample(key, str(shard), members)


def failures_from_lines(lines: Iterable[str]) -> dict[str, str]:
    """id -> `<status>: <reason category>`, from the lines of a failures.jsonl."""
    out = {}
    for line in lines:
        if line.strip():
            row = json.loads(line)
            out[row["id"]] = f"{row['status']}: {(row.get('reason') or '').split(': ')[0]}"
    return out


def pack_argument(text: str) -> str | Path:
    """A `--pack`/diff argument: a URL stays a string (a Path would fold its `//`), else a Path."""
    return text if is_url(text) else Path(os.path.expanduser(text))
