"""The joblib (loky) process pool: chunks of samples in, shards out.

Workers encode the images of one chunk and write its tar members to a chunk file; the parent
reads the chunk files back in plan order and cuts them into shards at --shard-maxcount /
--shard-maxsize. Decoding runs on every core while the parent writes, and the shards do not
depend on how many workers there were. This module and those it imports never import Polars.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from joblib import Parallel, delayed
from tqdm import tqdm

from .images import ImageFailure, encode_image, file_digest
from .shards import IMAGE_SERIES, SERIES, TEXT_SERIES, ShardWriter, sample_bytes
from .specs import ChunkResult, ChunkSpec, SampleOutcome, SampleSpec


@dataclass(frozen=True)
class ImageSettings:
    size: int
    quality: int
    max_pixels: int


@dataclass
class ShardInfo:
    split: str
    series: str  # shards.IMAGE_SERIES or shards.TEXT_SERIES
    path: str
    examples: int
    bytes: int


@dataclass
class ExecutionResult:
    outcomes: list[SampleOutcome] = field(default_factory=list)
    shards: list[ShardInfo] = field(default_factory=list)


def sample_json(spec: SampleSpec, image: dict | None) -> bytes:
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
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def pack_chunk(chunk: ChunkSpec, chunk_path: str, settings: ImageSettings) -> ChunkResult:
    """Worker: encode every sample of a chunk and append its tar members to `chunk_path`."""
    outcomes = []
    with open(chunk_path, "wb") as out:
        for spec in chunk.samples():
            members = {"txt": spec.text.encode("utf-8")}
            image = near_hash = None
            if spec.image_path is not None:
                try:
                    encoded = encode_image(spec.image_path, settings.size, settings.quality, settings.max_pixels)
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
            members["json"] = sample_json(spec, image)
            data = sample_bytes(spec.key, members)
            out.write(data)
            outcomes.append(SampleOutcome(spec.id, "packed", nbytes=len(data), image=image, dhash=near_hash))
    return ChunkResult(chunk.split, chunk.index, chunk_path, tuple(outcomes))


def fingerprint(paths: list[str], workers: int) -> dict[str, str | None]:
    """A key per image file that is equal exactly when the bytes are: None when it cannot be read.

    Two files can only hold the same bytes if they have the same size, so a file whose size no
    other file has is keyed by its size, from one stat(); only files sharing a size are read and
    hashed (SHA-256). Meme corpora rarely repeat a size but for real copies, so the images are
    read once, by the workers, instead of twice. On `workers` threads of the parent: stat, file
    reads and hashlib release the GIL, so this scales without waiting for the pool to start.
    """
    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=workers) as threads:
        sizes = dict(zip(unique, threads.map(file_size, unique)))
        seen = Counter(sizes.values())
        shared = [p for p, size in sizes.items() if size is not None and seen[size] > 1]
        digests = dict(zip(shared, threads.map(file_digest, shared)))
    return {p: digests[p] if p in digests else None if size is None else f"size:{size}" for p, size in sizes.items()}


def file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _ready() -> int:
    return os.getpid()


def warm_pool(workers: int) -> Callable[[], None]:
    """Start the pool's processes in a background thread (they spawn and import while the parent
    loads and plans; joblib re-uses loky's executor afterwards). Call the result before using the pool."""
    if workers <= 1:
        return lambda: None

    def start() -> None:
        Parallel(n_jobs=workers, backend="loky")(delayed(_ready)() for _ in range(workers))

    thread = threading.Thread(target=start, name="warm-pool", daemon=True)
    thread.start()
    return thread.join


class ShardCutter:
    """Cuts one series of one split (its image or its text-only examples) into shards, in order."""

    def __init__(self, directory: Path, series: str, maxcount: int, maxsize: int):
        self.directory = directory
        self.series = series
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.writer: ShardWriter | None = None
        self.index = 0
        self.done: list[tuple[str, int, int]] = []

    def add(self, data: bytes) -> None:
        w = self.writer
        if w is not None and (w.count >= self.maxcount or (w.count and w.size + len(data) > self.maxsize)):
            self.finish()
        if self.writer is None:
            self.writer = ShardWriter(self.directory, self.index, self.series)
            self.index += 1
        self.writer.add(data)

    def finish(self) -> None:
        if self.writer is not None:
            count = self.writer.count
            size = self.writer.close()
            self.done.append((str(self.writer.path), count, size))
            self.writer = None


def _read_samples(result: ChunkResult) -> Iterator[tuple[SampleOutcome, bytes]]:
    with open(result.path, "rb") as handle:
        for outcome in result.outcomes:
            if outcome.status == "packed":
                yield outcome, handle.read(outcome.nbytes)


def execute(
    chunks: Iterable[ChunkSpec],
    total: int,
    shard_root: Path,
    settings: ImageSettings,
    workers: int,
    maxcount: int,
    maxsize: int,
) -> ExecutionResult:
    """Run every chunk through the pool (`total` samples) and cut the results into shards per split."""
    work_dir = shard_root / ".chunks"
    work_dir.mkdir(parents=True, exist_ok=True)
    result = ExecutionResult()
    cutters: dict[tuple[str, str], ShardCutter] = {}  # (split, series)
    tasks = (delayed(pack_chunk)(c, str(work_dir / f"{c.split}-{c.index:06d}.part"), settings) for c in chunks)
    # Results come back in submission order, so shards never depend on scheduling.
    stream: Iterable[ChunkResult] = Parallel(
        n_jobs=workers, backend="loky", return_as="generator", pre_dispatch="4*n_jobs"
    )(tasks)
    try:
        with tqdm(total=total, unit="ex", desc="images", disable=not sys.stdout.isatty()) as bar:
            for chunk_result in stream:
                split = chunk_result.split
                if (split, IMAGE_SERIES) not in cutters:
                    for other in cutters.values():
                        other.finish()
                    for series in SERIES:
                        cutters[split, series] = ShardCutter(shard_root / split, series, maxcount, maxsize)
                for outcome, data in _read_samples(chunk_result):
                    cutters[split, IMAGE_SERIES if outcome.image is not None else TEXT_SERIES].add(data)
                os.remove(chunk_result.path)
                result.outcomes.extend(chunk_result.outcomes)
                bar.update(len(chunk_result.outcomes))
        for cutter in cutters.values():
            cutter.finish()
    finally:
        for cutter in cutters.values():
            if cutter.writer is not None:
                cutter.writer.abort()
        for leftover in work_dir.glob("*.part"):
            leftover.unlink()
        work_dir.rmdir()
    for (split, series), cutter in cutters.items():
        result.shards.extend(ShardInfo(split, series, path, count, size) for path, count, size in cutter.done)
    return result
