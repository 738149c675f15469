"""A re-pack reuses what an earlier pack encoded: which earlier pack, and which of its images.

The earlier pack is the one this run replaces (its `--output-dir`; while a re-pack runs, its files
wait in `shards/.previous/`), or `--reuse-from` (another pack, e.g. the pilot before a full run).
An image to pack is matched to an earlier sample by the SHA-256 of its file's bytes, and only
where the earlier pack encoded with the same settings (`encoder`: image size, JPEG quality, pixel
bound, the versions of every library and of packer's image code). Reading every image to hash it
would cost about what decoding it costs, so, as git's index does, a pack keeps each source file's
size, modification time and inode beside its catalog (`.sources.parquet`, the stat cache; not in
the catalog, whose bytes must not change when a file is only touched), and they stand for the
file's digest while they are unchanged, unless the file was modified within 2 s of the cache being
written (then it may have changed again in the same tick: it is hashed). A file whose facts changed
is hashed when its size is one an earlier image had; otherwise it cannot match and is encoded. The
cache also keeps each earlier shard's size and mtime as the pack left them. A worker checks a reused
JPEG against the earlier catalog's digest of it (reuse.py), so a damaged or foreign earlier shard
costs an encode, never a wrong image, unless its shard is as the pack left it: same size and mtime
(a rename into `.previous/`, or a copy that keeps mtimes, keeps both), closed at least a timestamp
tick before the cache was written (2 s, or 0.1 s where the filesystem keeps sub-second mtimes).
Then the JPEG is taken as the catalog describes it, unhashed, as git trusts an unchanged file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from .catalog import CATALOG
from .config import InputError
from .guard import MARKER, PREVIOUS
from .images import file_digest, stat_many
from .objects import Objects
from .shards import write_atomic
from .storage import is_url

RACY_NS = 2_000_000_000
# The stat cache, beside the catalog in the shards folder: per source file its path, size, mtime,
# inode and digest, as the pack's workers read them.
SOURCES = ".sources.parquet"
STAT_CACHE = {
    "source_path": pl.String,
    "source_size": pl.Int64,
    "source_mtime_ns": pl.Int64,
    "source_inode": pl.Int64,
    "source_sha256": pl.String,
}
# The earlier pack's own shards, in the same file: name (`<split>/<file>`), size and mtime.
SHARD_STATS = {"shard": pl.String, "shard_size": pl.Int64, "shard_mtime_ns": pl.Int64}
# Where a filesystem keeps sub-second mtimes, its timestamp tick is at most this (a jiffy is 1-10 ms).
FINE_RACY_NS = 100_000_000
REUSE_FIELDS = {
    "shard": pl.String,
    "offset": pl.Int64,
    "size": pl.Int64,
    "image_sha256": pl.String,
    "dhash": pl.UInt64,
    "source_sha256": pl.String,
    "source_size": pl.Int64,
    "source_mtime_ns": pl.Int64,
    "source_inode": pl.Int64,
    "trusted": pl.Boolean,  # its shard is as the earlier pack left it: the JPEG is not hashed again
}
REUSE = pl.Struct(REUSE_FIELDS)
# What the catalog gives of each: where the earlier sample is and what its image and source were
# (the mtime and inode a worker passes on are this run's, for its own stat cache).
FROM_CATALOG = [f for f in REUSE_FIELDS if f not in ("source_mtime_ns", "source_inode", "trusted")]


def encoder_identity(size: int, quality: int, max_pixels: int) -> str:
    """A digest of everything that shapes an image's encoded bytes besides the image itself."""
    versions = {}
    for dist in ("Pillow", "pillow-simd", "pyspng", "deflate"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    from PIL import __version__ as pil

    here = Path(__file__).parent
    code = hashlib.sha256((here / "images.py").read_bytes() + (here / "reuse.py").read_bytes()).hexdigest()
    # PACKER_PNG_DECODER is left out: every PNG decoder path gives Pillow's pixels (images.py, tested
    # byte for byte), so it shapes no byte; the code that decodes is in `code`.
    parts = {
        "size": size,
        "quality": quality,
        "max_pixels": max_pixels,
        "libraries": {**versions, "PIL": pil},
        "code": code,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def clip_encoder_identity(encoder: str, frames: int, max_seconds: float) -> str:
    """A digest of everything that shapes a clip's frames besides the clip: the image settings
    (`encoder`), the frames per clip, the duration bound, PyAV's version and packer's clip code."""
    try:
        av = metadata.version("av")
    except metadata.PackageNotFoundError:
        av = None
    code = hashlib.sha256((Path(__file__).parent / "video.py").read_bytes()).hexdigest()
    parts = {"images": encoder, "frames": frames, "max_seconds": max_seconds, "av": av, "code": code}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def earlier_pack(shard_root: Path, reuse_from: Path | None) -> Path | None:
    """The shards folder of the pack to reuse: --reuse-from's (a Step_3 folder or its shards
    folder), else this folder's `.previous/` (a re-pack that was interrupted), else this folder."""
    if reuse_from is not None:
        for candidate in (reuse_from / "shards", reuse_from):
            if (candidate / CATALOG).is_file() and (candidate / MARKER).is_file():
                return candidate
        raise InputError(
            f"{reuse_from}: --reuse-from is not a pack packer wrote (no shards/{CATALOG} beside packer's marker)"
        )
    if (shard_root / PREVIOUS / CATALOG).is_file():
        return shard_root / PREVIOUS
    if (shard_root / CATALOG).is_file():
        return shard_root
    return None


def match_images(
    root: Path, encoder: str, paths: list[str], workers: int, objects: Objects | None = None
) -> pl.DataFrame:
    """Per image path of this run that an earlier sample holds encoded the same way: `image_path`
    and `reuse` (where: the shard as the catalog names it, relative to `root`; the JPEG's digest;
    the source file's facts)."""
    empty = pl.DataFrame(schema={"image_path": pl.String, "reuse": REUSE})
    catalog_path = root / CATALOG
    try:
        earlier = pl.read_parquet(catalog_path)
    except (OSError, pl.exceptions.PolarsError):
        return empty
    needed = {"encoder", "source_path", *FROM_CATALOG}
    if not paths or not needed <= set(earlier.columns):
        return empty
    earlier = (
        earlier.filter((pl.col("series") == "images") & (pl.col("encoder") == encoder))
        .filter(pl.col("image_sha256").is_not_null() & pl.col("source_sha256").is_not_null())
        .select("source_path", *FROM_CATALOG)
    )
    if earlier.is_empty():
        return empty
    cache, written = stat_cache(root)
    known = known_sources(cache)
    sizes = set(earlier["source_size"].to_list())
    stats = stat_many(paths, workers, objects)
    facts = {p: (st.st_size, st.st_mtime_ns, st.st_ino) for p, st in stats.items() if st is not None}
    digests: dict[str, str] = {}
    to_hash = []
    for path, now in facts.items():
        before = known.get(path)
        if unchanged(path, before, now, written):
            digests[path] = before[3]
        elif now[0] in sizes:
            to_hash.append(path)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as threads:
        hashed = threads.map(lambda p: file_digest(p, objects), to_hash)
        digests.update((p, d) for p, d in zip(to_hash, hashed) if d is not None)
    if not digests:
        return empty
    first = earlier.unique(subset="source_sha256", keep="first", maintain_order=True)
    found = pl.DataFrame(
        {"image_path": list(digests), "digest": list(digests.values())},
        schema={"image_path": pl.String, "digest": pl.String},
    )
    stat_rows = pl.DataFrame(
        {
            "image_path": list(digests),
            "now_size": [facts[p][0] for p in digests],
            "now_mtime_ns": [facts[p][1] for p in digests],
            "now_inode": [facts[p][2] for p in digests],
        },
        schema={"image_path": pl.String, "now_size": pl.Int64, "now_mtime_ns": pl.Int64, "now_inode": pl.Int64},
    )
    shards = trusted_shards(root, cache, written)
    trusted = pl.DataFrame(
        {"shard": shards, "trusted": [True] * len(shards)}, schema={"shard": pl.String, "trusted": pl.Boolean}
    )
    matched = (
        found.join(first, left_on="digest", right_on="source_sha256", how="inner")
        .join(stat_rows, on="image_path", how="left")
        .join(trusted, on="shard", how="left")
        .with_columns(
            # The source facts recorded for the new pack are this file's, now.
            source_sha256=pl.col("digest"),
            source_size=pl.col("now_size"),
            source_mtime_ns=pl.col("now_mtime_ns"),
            source_inode=pl.col("now_inode"),
            trusted=pl.col("trusted").fill_null(False),
        )
    )
    return matched.select("image_path", reuse=pl.struct(*REUSE_FIELDS))


def unchanged(path: str, before: tuple | None, now: tuple[int, int, int], written: int) -> bool:
    """Whether a source is as the earlier pack's stat cache recorded it (`before`: size, mtime,
    inode...), by its facts `now`: all three equal, and a file's mtime older than the cache by the
    racy window. An object's ETag (its "inode") changes with its bytes: no racy window for it (and
    the store's clock is not this machine's)."""
    settled = is_url(path) or now[1] < written - RACY_NS
    return before is not None and tuple(before[:3]) == now and settled


def match_clips(
    root: Path, clip_encoder: str, paths: list[str], workers: int, objects: Objects | None = None
) -> pl.DataFrame:
    """Per clip path of this run that an earlier sample holds, encoded with the same clip settings,
    from a file (or object) whose size, mtime and inode (an object's size, last-modified and ETag)
    are what that pack's stat cache recorded, in a shard as that pack left it: `video_path` and
    `reuse`. A clip is never hashed (it is read in ranges, not whole): its facts stand for it, with
    the racy window of a file, and only a trusted shard is taken from, so its frames need no check."""
    empty = pl.DataFrame(schema={"video_path": pl.String, "reuse": REUSE})
    if not paths:  # no clips: the earlier catalog is not read for them
        return empty
    try:
        earlier = pl.read_parquet(root / CATALOG)
    except (OSError, pl.exceptions.PolarsError):
        return empty
    if not {"encoder", "source_path", *FROM_CATALOG} <= set(earlier.columns):
        return empty
    earlier = (
        earlier.filter(
            (pl.col("series") == "video")
            & (pl.col("encoder") == clip_encoder)
            & pl.col("source_path").is_in(list(set(paths)))
        )
        .unique(subset="source_path", keep="first", maintain_order=True)
        .select("source_path", *FROM_CATALOG)
    )
    cache, written = stat_cache(root)
    if earlier.is_empty() or cache is None:
        return empty
    known = known_sources(cache)
    trusted = set(trusted_shards(root, cache, written))
    stats = stat_many(earlier["source_path"].to_list(), workers, objects)
    rows = []
    for found in earlier.iter_rows(named=True):
        path = found.pop("source_path")
        st = stats.get(path)
        if st is None or found["shard"] not in trusted:
            continue
        now = (st.st_size, st.st_mtime_ns, st.st_ino)
        if unchanged(path, known.get(path), now, written):
            rows.append(
                {
                    "video_path": path,
                    "reuse": {**found, "source_size": now[0], "source_mtime_ns": now[1], "source_inode": now[2],
                              "trusted": True},
                }
            )  # fmt: skip
    return pl.DataFrame(rows, schema={"video_path": pl.String, "reuse": REUSE}) if rows else empty


def stat_cache(root: Path) -> tuple[pl.DataFrame | None, int]:
    """A pack's stat cache (its source files' and its shards' rows) and when it was written; None
    when it has none or it cannot be read (then every candidate file is hashed, every JPEG checked)."""
    path = root / SOURCES
    try:
        cache = pl.read_parquet(path)
        written = path.stat().st_mtime_ns
    except (OSError, pl.exceptions.PolarsError):
        return None, 0
    if set(cache.columns) != {*STAT_CACHE, *SHARD_STATS}:
        return None, 0
    return cache, written


def known_sources(cache: pl.DataFrame | None) -> dict[str, tuple]:
    """The cache's source files: path -> size, mtime, inode, digest."""
    if cache is None:
        return {}
    sources = cache.filter(pl.col("source_path").is_not_null()).select(*STAT_CACHE)
    return {row[0]: row[1:] for row in sources.iter_rows()}


def trusted_shards(root: Path, cache: pl.DataFrame | None, written: int) -> list[str]:
    """The earlier pack's shards (as the catalog names them) that are as it left them: regular
    files, not links, of the recorded size and mtime, and closed a tick before the cache was written."""
    if cache is None:
        return []
    shards = cache.filter(pl.col("shard").is_not_null()).select(*SHARD_STATS)
    mtimes = shards["shard_mtime_ns"].to_list()
    racy = FINE_RACY_NS if any(m % 1_000_000_000 for m in mtimes) else RACY_NS
    trusted = []
    for name, size, mtime in shards.iter_rows():
        try:
            st = os.stat(root / name, follow_symlinks=False)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime) and mtime < written - racy:
            trusted.append(name)
    return trusted


def write_stat_cache(shard_root: Path, catalog: pl.DataFrame, outcomes: list[Any], shards: list[str]) -> None:
    """The stat cache of this pack: its image samples' source files as the workers read them, and
    its shards (names under `shard_root`) as they are now. Written last, just before stats.json,
    so that the pack's shards are as far as they can be from the cache's own mtime."""
    seen = {
        o.id: (o.facts["source"]["mtime_ns"], o.facts["source"]["inode"])
        for o in outcomes
        if o.status == "packed" and o.facts and o.facts.get("source")
    }
    # Clips have no digest (their bytes are never read whole): their facts alone stand for them.
    rows = [
        (path, size, *seen[i], digest)
        for i, path, size, digest in catalog.select("id", "source_path", "source_size", "source_sha256").iter_rows()
        if path is not None and i in seen
    ]
    sources = pl.DataFrame(rows, schema=STAT_CACHE, orient="row").unique(
        "source_path", keep="first", maintain_order=True
    )
    facts = [(name, os.stat(shard_root / name, follow_symlinks=False)) for name in shards]
    own = pl.DataFrame([(name, st.st_size, st.st_mtime_ns) for name, st in facts], schema=SHARD_STATS, orient="row")
    cache = pl.concat([sources, own], how="diagonal")
    buffer = io.BytesIO()
    cache.write_parquet(buffer, compression="zstd", compression_level=1)
    write_atomic(shard_root / SOURCES, buffer.getvalue())


def located(matches: pl.DataFrame, root: Path) -> pl.DataFrame:
    """The matches with each shard as a path a worker opens (under the earlier pack's folder as it
    is when the images are encoded)."""
    prefix = str(root.resolve()) + os.sep
    return matches.with_columns(
        reuse=pl.col("reuse").struct.with_fields(shard=pl.lit(prefix) + pl.col("reuse").struct.field("shard"))
    )


def reuse_of(samples: pl.DataFrame, matches: pl.DataFrame | None, clips: pl.DataFrame | None = None) -> pl.DataFrame:
    """The samples with their `reuse` column (null where nothing matched): images by `matches`
    (by image_path), clips by `clips` (by video_path)."""
    if matches is None or matches.is_empty():
        out = samples.with_columns(reuse=pl.lit(None, REUSE))
    else:
        out = samples.join(matches, on="image_path", how="left", maintain_order="left")
    out = out.with_columns(reuse=pl.when(pl.col("image_path").is_not_null()).then(pl.col("reuse")))
    if clips is None or clips.is_empty():
        return out
    clip = clips.rename({"reuse": "clip_reuse"})
    return (
        out.join(clip, on="video_path", how="left", maintain_order="left")
        .with_columns(reuse=pl.coalesce("reuse", "clip_reuse"))
        .drop("clip_reuse")
    )


def counts(outcomes: list[Any]) -> dict[str, int]:
    """Images reused from the earlier pack and images encoded, among the packed samples; and clips
    whose frames were reused and clips decoded, where there are clips."""
    packed = [o for o in outcomes if o.status == "packed" and o.image is not None]
    images = [o for o in packed if o.video is None]
    clips = [o for o in packed if o.video is not None]
    reused = sum(1 for o in images if o.facts and o.facts.get("reused"))
    checked = sum(1 for o in images if o.facts and o.facts.get("reuse_checked"))
    # `checked`: reused JPEGs hashed against the earlier catalog (their shard was not as left).
    out = {"reused": reused, "encoded": len(images) - reused, "checked": checked}
    if clips:
        clips_reused = sum(1 for o in clips if o.facts and o.facts.get("reused"))
        out.update(clips_reused=clips_reused, clips_decoded=len(clips) - clips_reused)
    return out
