"""Chunks of samples in, samples out, shards cut.

Workers (pool.py runs them) encode the images of one chunk and write its tar members to a chunk
file, or return them with the result; the parent reads them back in plan order and cuts them into
shards at the plan's starts, --shard-maxcount and --shard-maxsize. Decoding runs on every core
while the parent writes, and the shards do not depend on how many workers there were, nor where.
This module and those it imports never import Polars.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .guard import create_exclusive
from .images import ImageFailure, encode_image
from .objects import Objects, Prefetch, objects_for
from .reuse import clip_facts, read_source, reused_clip, reused_image
from .shards import SERIES, ShardWriter, sample_bytes, series_of
from .specs import ChunkResult, ChunkSpec, SampleOutcome, SampleSpec
from .state import ClosedShard, Progress, RunState
from .storage import StorageError, is_url
from .video import VideoSettings, encode_clip

if TYPE_CHECKING:
    from .pool import Pool


@dataclass(frozen=True)
class ImageSettings:
    size: int
    quality: int
    max_pixels: int
    video: VideoSettings = VideoSettings()  # clips: how many frames, and the bounds of one decode
    # Storage options for s3:// images and clips (objects.worker_options); None when the run has none.
    storage: dict | None = None

    @property
    def object_limit(self) -> int:
        """The most bytes a worker fetches of one image object: 4 bytes per pixel of the pixel bound
        (an image within it is no larger, uncompressed), and 1 MiB of headers."""
        return 4 * self.max_pixels + (1 << 20)


@dataclass
class ShardInfo:
    split: str
    series: str  # shards.IMAGE_SERIES, TEXT_SERIES or VIDEO_SERIES
    path: str
    examples: int
    bytes: int
    sha256: str  # the shard's digest: SHA-256 over its samples' content digests (ShardWriter)

    @property
    def name(self) -> str:
        """The shard's path under the shards folder, `<split>/<file>`: as the catalog, the
        card's fingerprint and energon's metadata name it."""
        return f"{self.split}/{Path(self.path).name}"


@dataclass
class ExecutionResult:
    outcomes: list[SampleOutcome] = field(default_factory=list)
    shards: list[ShardInfo] = field(default_factory=list)


def sample_json(spec: SampleSpec, image: dict | None, video: dict | None = None) -> bytes:
    """The sample's `.json`; a video example's also holds `video` (its facts) and `asr` (the kept
    speech segments, when it has an ASR row). Image and text examples have neither key."""
    labels = dict(spec.labels)
    groups = labels.get("target_group")
    if groups is not None:
        labels["target_group"] = [g for g in groups.split("|") if g]
    doc = {
        "id": spec.id,
        "key": spec.key,
        "dataset": spec.dataset,
        "split": spec.split,
        "source_split": spec.source_split,
        "labels": labels,
        "aux": json.loads(spec.aux_json),
        "lang": spec.lang,
        "image": image,
    }
    if video is not None:
        doc["video"] = video
        doc["asr"] = json.loads(spec.asr_json) if spec.asr_json is not None else None
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


SOURCE_FACTS = ("sha256", "size", "mtime_ns", "inode")


def sample_digest(key: str, digests: dict[str, str]) -> str:
    """A sample's content digest: SHA-256 over its member names and their SHA-256s, in tar order.
    The sample's bytes are a function of exactly these (shards.sample_bytes), so the digest
    changes when they do; a shard's digest is made of its samples' (ShardWriter), which spares
    the parent hashing every shard's bytes again."""
    listing = "".join(f"{key}.{ext} {digests[ext]}\n" for ext in sorted(digests))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def reuse_of(spec: SampleSpec, open_shards: dict[str, int]) -> tuple[bytes, dict] | None:
    """The earlier pack's encoded image for this sample, when the plan found one and it checks out."""
    return reused_image(spec.reuse, open_shards) if spec.reuse is not None else None


@contextmanager
def closing_all(fds: dict[str, int], prefetch: Prefetch | None = None) -> Iterator[None]:
    try:
        yield
    finally:
        for fd in fds.values():
            os.close(fd)
        if prefetch is not None:
            prefetch.close()


def fetched_image(spec: SampleSpec, objects: Objects, prefetch: Prefetch, limit: int) -> tuple[bytes, dict[str, Any]]:
    """An image object's bytes and its source facts (SHA-256, size, last-modified, ETag as the
    inode), or ImageFailure as a file would fail: missing, refused, or over the byte bound."""
    url = spec.image_path
    assert url is not None
    try:
        # Prefetched unless a reuse was planned (and its JPEG then failed its check).
        got = prefetch.take(url) if spec.reuse is None else objects.fetch(url, limit)
    except StorageError as exc:
        raise ImageFailure("image_unreadable", str(exc)) from None
    if got is None:
        raise ImageFailure("image_missing", url)
    data, facts = got
    if len(data) > limit:
        raise ImageFailure("image_too_large", f"{url}: over {limit} bytes (4 per pixel of --max-image-pixels)")
    digest = hashlib.sha256(data).hexdigest()
    return data, {"sha256": digest, "size": len(data), "mtime_ns": facts.st_mtime_ns, "inode": facts.st_ino}


def wanted_objects(specs: list[SampleSpec]) -> list[tuple[str, int | None]]:
    """The image objects of a chunk its worker fetches ahead: every s3:// image with no planned reuse."""
    return [
        (s.image_path, s.object_size)
        for s in specs
        if s.video_path is None and s.image_path is not None and s.reuse is None and is_url(s.image_path)
    ]


def pack_chunk(chunk: ChunkSpec, chunk_path: str | None, settings: ImageSettings) -> ChunkResult:
    """Worker: encode every sample of a chunk and append its tar members to `chunk_path`, or, with
    no path, return them with the result (a Dask worker on another machine)."""
    outcomes = []
    open_shards: dict[str, int] = {}  # the earlier pack's shards this chunk reuses from, open while it runs
    specs = chunk.samples()
    objects = objects_for(settings.storage) if settings.storage is not None else None
    limit = settings.object_limit
    prefetch = Prefetch(objects, wanted_objects(specs), limit) if objects is not None else None
    with (
        os.fdopen(create_exclusive(Path(chunk_path)), "wb") if chunk_path else io.BytesIO() as out,
        closing_all(open_shards, prefetch),
    ):
        for spec in specs:
            members = {"txt": spec.text.encode("utf-8")}
            image = near_hash = video = source = None
            reused = False
            if spec.video_path is not None and (
                found_clip := reused_clip(spec.reuse, settings.video.frames, open_shards) if spec.reuse else None
            ):
                # Decoded by an earlier pack with the same settings, from the same file: its frames taken as they are.
                frames, image, video = found_clip
                members.update(frames)
                near_hash, reused = spec.reuse["dhash"], True
                source = {k: spec.reuse[f"source_{k}"] for k in SOURCE_FACTS}
            elif spec.video_path is not None:
                try:
                    clip = encode_clip(
                        spec.video_path,
                        settings.size,
                        settings.quality,
                        settings.max_pixels,
                        settings.video,
                        objects,
                        spec.object_size,
                    )
                except ImageFailure as exc:
                    outcomes.append(SampleOutcome(spec.id, "failed", reason=exc.reason, detail=exc.detail))
                    continue
                members["jpg"] = clip.middle
                members.update({f"f{i:02d}.jpg": frame for i, frame in enumerate(clip.frames)})
                image, video, near_hash = clip.image, clip.facts, clip.dhash
                source = clip_facts(spec.video_path, objects)
            elif spec.image_path is not None and (found := reuse_of(spec, open_shards)) is not None:
                # Encoded by an earlier pack with the same settings, from the same bytes: taken as is.
                members["jpg"], image = found
                near_hash, reused = spec.reuse["dhash"], True
                source = {k: spec.reuse[f"source_{k}"] for k in SOURCE_FACTS}
            elif spec.image_path is not None:
                try:
                    if objects is not None and prefetch is not None and is_url(spec.image_path):
                        data, source = fetched_image(spec, objects, prefetch, limit)
                    else:
                        # Read once: hashed, then decoded from memory; a file larger than any image within
                        # the pixel bound, or not a regular file, is decoded (or failed) from its path.
                        data, source = read_source(spec.image_path, limit)
                    encoded = encode_image(
                        spec.image_path, settings.size, settings.quality, settings.max_pixels, data=data
                    )
                except ImageFailure as exc:
                    outcomes.append(SampleOutcome(spec.id, "failed", reason=exc.reason, detail=exc.detail))
                    continue
                members["jpg"] = encoded.data
                image = {
                    "orig_width": encoded.orig_width,
                    "orig_height": encoded.orig_height,
                    "orig_format": encoded.orig_format,
                }
                near_hash = encoded.dhash
            members["json"] = sample_json(spec, image, video)
            data = sample_bytes(spec.key, members)
            out.write(data)
            # A reused JPEG's digest is the earlier catalog's (checked by reuse.py, or its shard trusted).
            digests = {ext: spec.reuse["image_sha256"] if reused and ext == "jpg" else None for ext in members}
            digests = {ext: d or hashlib.sha256(members[ext]).hexdigest() for ext, d in digests.items()}
            facts = {
                "image_sha256": digests.get("jpg"),
                "text_sha256": digests["txt"],
                "source": source,
                "reused": reused,
                "reuse_checked": reused and not spec.reuse.get("trusted"),  # its JPEG hashed against the catalog
            }
            outcomes.append(
                SampleOutcome(
                    spec.id,
                    "packed",
                    nbytes=len(data),
                    image=image,
                    dhash=near_hash,
                    video=video,
                    facts=facts,
                    digest=sample_digest(spec.key, digests),
                )
            )
        data = None if chunk_path else out.getvalue()
    return ChunkResult(chunk.split, chunk.index, chunk.start, chunk_path, tuple(outcomes), data)


class ShardCutter:
    """Cuts one series of one split (its image or its text-only examples) into shards, in order.

    A new shard starts at each of the plan's `starts` (positions in the split's order, from
    plan.shard_starts: equal shards, at least --min-shards), and wherever --shard-maxcount or
    --shard-maxsize would be passed. A resumed run hands it the shards that were complete
    (`closed`); it goes on with the next index. Each shard, once complete under its final name, is
    reported to `on_close`."""

    def __init__(
        self,
        directory: Path,
        split: str,
        series: str,
        maxcount: int,
        maxsize: int,
        starts: list[int],
        closed: list[ClosedShard],
        on_close: Callable[[ClosedShard], None],
    ):
        self.directory = directory
        self.split = split
        self.series = series
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.starts = starts
        self.writer: ShardWriter | None = None
        self.done: list[ClosedShard] = list(closed)
        self.index = len(self.done)
        self.on_close = on_close
        self.end = self.done[-1].end if self.done else 0
        self.next_start = bisect.bisect_left(starts, self.end)  # the starts the closed shards passed

    def add(self, sample: bytes | tuple[int, int], size: int, digest: str, position: int) -> None:
        boundary = False
        while self.next_start < len(self.starts) and self.starts[self.next_start] <= position:
            boundary, self.next_start = True, self.next_start + 1
        w = self.writer
        if w is not None and (boundary or w.count >= self.maxcount or (w.count and w.size + size > self.maxsize)):
            self.finish()
        if self.writer is None:
            self.writer = ShardWriter(self.directory, self.index, self.series)
            self.index += 1
        self.writer.add(sample, size, digest)
        self.end = position + 1

    def finish(self) -> None:
        if self.writer is not None:
            count = self.writer.count
            size = self.writer.close()
            path, sha256 = str(self.writer.path), self.writer.sha256()
            shard = ClosedShard(self.split, self.series, self.index - 1, path, count, size, self.end, sha256)
            self.done.append(shard)
            self.on_close(shard)
            self.writer = None


def _read_samples(result: ChunkResult, fd: int | None) -> Iterator[tuple[int, SampleOutcome, bytes | tuple[int, int]]]:
    """The packed samples of a chunk with their positions in the split's order: each as
    `(fd, offset)` in its chunk file, open at `fd` (copied by the kernel), or as the bytes it came
    back with."""
    data = memoryview(result.data or b"")
    offset = 0
    for i, outcome in enumerate(result.outcomes):
        if outcome.status == "packed":
            sample = (fd, offset) if fd is not None else bytes(data[offset : offset + outcome.nbytes])
            yield result.start + i, outcome, sample
            offset += outcome.nbytes


def execute(
    chunks: Iterable[ChunkSpec],
    total: int,
    shard_root: Path,
    settings: ImageSettings,
    pool: Pool,
    maxcount: int,
    maxsize: int,
    starts: dict[tuple[str, str], list[int]],
    state: RunState,
    progress: Progress,
    on_first_result: Callable[[], None] | None = None,
    on_shard: Callable[[Path], None] | None = None,
) -> ExecutionResult:
    """Run every chunk through the pool (`total` samples) and cut the results into shards per split.

    `progress` is what an earlier, interrupted run of the same plan finished (nothing on a fresh
    run); `state` journals what this one finishes, so that a crash costs at most the shards in the
    making. `on_first_result` is called once, after the first chunk is consumed (the parent's idle
    time begins). `on_shard` is given each shard's path once it is final (journalled first)."""
    work_dir = shard_root / ".chunks"
    work_dir.mkdir(parents=True, exist_ok=True)
    result = ExecutionResult()
    for outcomes in progress.outcomes.values():
        result.outcomes.extend(outcomes)
    cutters: dict[tuple[str, str], ShardCutter] = {}  # (split, series)

    def finish_split(split: str) -> None:
        for series in SERIES:
            cutters[split, series].finish()
        state.split_done(split)

    def shard_closed(shard: ClosedShard) -> None:
        state.shard_closed(shard)
        if on_shard is not None:
            on_shard(Path(shard.path))

    def part(c: ChunkSpec) -> str | None:
        return None if pool.ships_bytes else str(work_dir / f"{c.split}-{c.index:06d}.part")

    # Results come back in submission order, so shards never depend on scheduling.
    tasks = ((c, part(c), settings) for c in chunks)
    stream: Iterable[ChunkResult] = pool.map(pack_chunk, tasks, pre_dispatch="4*n_jobs")
    current: str | None = None
    try:
        with tqdm(total=total, unit="ex", desc="images", disable=not sys.stdout.isatty()) as bar:
            for chunk_result in stream:
                split = chunk_result.split
                if split != current:
                    if current is not None:
                        finish_split(current)
                    current = split
                    for series in SERIES:
                        cutters[split, series] = ShardCutter(
                            shard_root / split,
                            split,
                            series,
                            maxcount,
                            maxsize,
                            starts.get((split, series), []),
                            progress.closed.get((split, series), []),
                            shard_closed,
                        )
                path = chunk_result.path
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC) if path else None
                try:
                    for position, outcome, sample in _read_samples(chunk_result, fd):
                        series = series_of(outcome.image, outcome.video)
                        # A resumed run encodes again from the earliest unfinished sample of the split;
                        # a series keeps the samples that are already in its complete shards.
                        if position >= progress.end(split, series):
                            cutters[split, series].add(sample, outcome.nbytes, outcome.digest or "", position)
                    for series in SERIES:  # every range of the chunk file copied before it is closed
                        if (writer := cutters[split, series].writer) is not None:
                            writer.flush()
                finally:
                    if fd is not None:
                        os.close(fd)
                if path:
                    os.remove(path)
                state.chunk_consumed(split, chunk_result.start, chunk_result.outcomes)
                result.outcomes.extend(chunk_result.outcomes)
                if on_first_result is not None:
                    on_first_result()
                    on_first_result = None
                bar.update(len(chunk_result.outcomes))
        if current is not None:
            finish_split(current)
    finally:
        for cutter in cutters.values():
            if cutter.writer is not None:
                cutter.writer.abort()
        for leftover in work_dir.glob("*.part"):
            leftover.unlink()
        work_dir.rmdir()
    # Every split in order, each series in order: shards finished before a resume, then the rest.
    for split in dict.fromkeys(s for s, _ in (*progress.closed, *cutters)):
        for series in SERIES:
            cutter = cutters.get((split, series))
            shards = cutter.done if cutter is not None else progress.closed.get((split, series), [])
            result.shards.extend(ShardInfo(split, series, s.path, s.count, s.bytes, s.sha256) for s in shards)
    return result
