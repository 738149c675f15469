"""Tar members with fixed metadata, and shards written to a temporary name then renamed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from .guard import create_exclusive

BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


def member_bytes(name: str, data: bytes) -> bytes:
    """One tar member (header + data + padding) with fixed mtime, owner and mode, for reproducible shards."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    padding = (-len(data)) % BLOCK
    return header + data + b"\0" * padding


def sample_bytes(key: str, members: dict[str, bytes]) -> bytes:
    """All members of one sample, `<key>.<ext>`, in sorted order as webdataset's TarWriter writes them."""
    out = io.BytesIO()
    for ext in sorted(members):
        out.write(member_bytes(f"{key}.{ext}", members[ext]))
    return out.getvalue()


# The shard series of a split: examples with an image (jpg, txt, json), text-only ones (txt, json)
# and video clips (jpg, f00.jpg .. fNN.jpg, txt, json). Every shard holds samples with the same
# members, so every reader infers one schema per shard.
IMAGE_SERIES = "shard"
TEXT_SERIES = "text"
VIDEO_SERIES = "video"
SERIES = (IMAGE_SERIES, TEXT_SERIES, VIDEO_SERIES)
# The series as readers see them: the dataset card's configs and the catalog's `series` column.
SERIES_NAMES = {IMAGE_SERIES: "images", TEXT_SERIES: "text", VIDEO_SERIES: "video"}
# The stats' per-split counts of each series (`image_examples`, `text_shards`, `video_examples`...).
SERIES_KINDS = {IMAGE_SERIES: "image", TEXT_SERIES: "text", VIDEO_SERIES: "video"}


def series_of(image: dict | None, video: dict | None = None) -> str:
    """The series a packed sample goes to, by its metadata: video facts, else image (None: text-only)."""
    if video is not None:
        return VIDEO_SERIES
    return IMAGE_SERIES if image is not None else TEXT_SERIES


class ShardWriter:
    """Appends sample bytes to `<dir>/<series>-NNNNN.tar.tmp`; `close()` ends the archive and renames it."""

    def __init__(self, directory: Path, index: int, series: str = IMAGE_SERIES):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{series}-{index:05d}.tar"
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.handle = os.fdopen(create_exclusive(self.tmp), "wb")
        self.count = 0
        self.size = 0
        self.digest = hashlib.sha256()  # of the bytes as written: names the pack's content (the card)

    def add(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.count += 1
        self.size += len(data)

    def close(self) -> int:
        """Finish the archive; returns the shard's size in bytes (`sha256()` its digest)."""
        self.handle.write(END_OF_ARCHIVE)
        self.digest.update(END_OF_ARCHIVE)
        self.handle.close()
        os.replace(self.tmp, self.path)
        return self.size + len(END_OF_ARCHIVE)

    def sha256(self) -> str:
        return self.digest.hexdigest()

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file under a temporary name, then rename it: a reader (or a resumed run) sees
    the old file or the new one, never half of one. Every output but the shards is written so. The
    temporary is created exclusively, never through a link (guard.create_exclusive); the rename
    replaces a link standing at `path` itself, never its target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(create_exclusive(tmp), "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# The index files of a split: every series (image shards first), and each series alone.
INDEXES = {
    "index.json": SERIES,
    "index.images.json": (IMAGE_SERIES,),
    "index.text.json": (TEXT_SERIES,),
    "index.video.json": (VIDEO_SERIES,),
}


def write_shard_index(directory: Path, shards: list[tuple[str, int]]) -> None:
    """`<split>/index.json`, `index.images.json`, `index.text.json` and `index.video.json` in the layout of webdataset's
    `wids`: each shard's url (relative to the index) and its number of samples. An index that would
    list no shard is not written (wids refuses an empty shardlist); a split with none has no index."""
    for name, series in INDEXES.items():
        listed = [{"url": url, "nsamples": n} for url, n in shards if url.split("-", 1)[0] in series]
        if listed:
            doc = {"wids_version": 1, "shardlist": listed}
            write_atomic(directory / name, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
