"""The joblib (loky) process pool: chunks of samples in, shards out.

Workers encode the images of one chunk and write its tar members to a chunk file; the parent
reads the chunk files back in plan order and cuts them into shards at --shard-maxcount /
--shard-maxsize. Decoding runs on every core while the parent writes, and the shards do not
depend on how many workers there were. This module and those it imports never import Polars.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
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
from .state import ClosedShard, Progress, RunState


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
    exit_with_parent()
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
    return ChunkResult(chunk.split, chunk.index, chunk.start, chunk_path, tuple(outcomes))


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


_watching = False


def exit_with_parent(poll: float = 0.5) -> None:
    """In a pool worker: end this process when the parent dies, `kill -9` included (loky's workers
    would otherwise wait for work forever, and keep its resource trackers alive). The worker's
    parent changes when the parent dies (it is re-parented), so a daemon thread polls for that.
    Does nothing in the parent itself (one worker runs the tasks in-process)."""
    global _watching
    if _watching or multiprocessing.parent_process() is None:
        return
    _watching = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _ready() -> int:
    exit_with_parent()
    time.sleep(0.02)  # long enough for every worker to take one of these
    return os.getpid()


def warm_pool(workers: int) -> Callable[[], None]:
    """Start the pool's processes in a background thread (they spawn and import while the parent
    loads and plans; joblib re-uses loky's executor afterwards), each with its exit-with-parent
    watch. Call the result before using the pool, and before exiting (see `stop_pool`)."""
    if workers <= 1:
        return lambda: None

    def start() -> None:
        seen: set[int] = set()
        for _ in range(10):
            seen.update(Parallel(n_jobs=workers, backend="loky")(delayed(_ready)() for _ in range(2 * workers)))
            if len(seen) >= workers:
                break

    thread = threading.Thread(target=start, name="warm-pool", daemon=True)
    thread.start()
    return thread.join


def stop_pool() -> None:
    """Shut loky's re-usable executor down and wait for its workers, so that a run that stops early
    (an input error) exits with nothing but its own message: a worker still starting up when the
    parent exits prints a traceback (EOFError) of its own."""
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


class ShardCutter:
    """Cuts one series of one split (its image or its text-only examples) into shards, in order.

    A resumed run hands it the shards that were complete (`closed`); it goes on with the next index.
    Each shard, once complete under its final name, is reported to `on_close`."""

    def __init__(
        self,
        directory: Path,
        split: str,
        series: str,
        maxcount: int,
        maxsize: int,
        closed: list[ClosedShard],
        on_close: Callable[[ClosedShard], None],
    ):
        self.directory = directory
        self.split = split
        self.series = series
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.writer: ShardWriter | None = None
        self.done: list[ClosedShard] = list(closed)
        self.index = len(self.done)
        self.on_close = on_close
        self.end = 0

    def add(self, data: bytes, position: int) -> None:
        w = self.writer
        if w is not None and (w.count >= self.maxcount or (w.count and w.size + len(data) > self.maxsize)):
            self.finish()
        if self.writer is None:
            self.writer = ShardWriter(self.directory, self.index, self.series)
            self.index += 1
        self.writer.add(data)
        self.end = position + 1

    def finish(self) -> None:
        if self.writer is not None:
            count = self.writer.count
            size = self.writer.close()
            shard = ClosedShard(self.split, self.series, self.index - 1, str(self.writer.path), count, size, self.end)
            self.done.append(shard)
            self.on_close(shard)
            self.writer = None


def _read_samples(result: ChunkResult) -> Iterator[tuple[int, SampleOutcome, bytes]]:
    """The packed samples of a chunk file with their positions in the split's order."""
    with open(result.path, "rb") as handle:
        for i, outcome in enumerate(result.outcomes):
            if outcome.status == "packed":
                yield result.start + i, outcome, handle.read(outcome.nbytes)


def execute(
    chunks: Iterable[ChunkSpec],
    total: int,
    shard_root: Path,
    settings: ImageSettings,
    workers: int,
    maxcount: int,
    maxsize: int,
    state: RunState,
    progress: Progress,
) -> ExecutionResult:
    """Run every chunk through the pool (`total` samples) and cut the results into shards per split.

    `progress` is what an earlier, interrupted run of the same plan finished (nothing on a fresh
    run); `state` journals what this one finishes, so that a crash costs at most the shards in the
    making."""
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

    tasks = (delayed(pack_chunk)(c, str(work_dir / f"{c.split}-{c.index:06d}.part"), settings) for c in chunks)
    # Results come back in submission order, so shards never depend on scheduling.
    stream: Iterable[ChunkResult] = Parallel(
        n_jobs=workers, backend="loky", return_as="generator", pre_dispatch="4*n_jobs"
    )(tasks)
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
                            progress.closed.get((split, series), []),
                            state.shard_closed,
                        )
                for position, outcome, data in _read_samples(chunk_result):
                    series = IMAGE_SERIES if outcome.image is not None else TEXT_SERIES
                    # A resumed run encodes again from the earliest unfinished sample of the split;
                    # a series keeps the samples that are already in its complete shards.
                    if position >= progress.series_end.get((split, series), 0):
                        cutters[split, series].add(data, position)
                os.remove(chunk_result.path)
                state.chunk_consumed(split, chunk_result.start, chunk_result.outcomes)
                result.outcomes.extend(chunk_result.outcomes)
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
            result.shards.extend(ShardInfo(split, series, s.path, s.count, s.bytes) for s in shards)
    return result
