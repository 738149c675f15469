"""The joblib (loky) process pool: chunks of samples in, shards out.

Workers encode the images of one chunk and write its tar members to a chunk file; the parent
reads the chunk files back in plan order and cuts them into shards at --shard-maxcount /
--shard-maxsize. Decoding runs on every core while the parent writes, and the shards do not
depend on how many workers there were. This module and those it imports never import Polars.
"""

from __future__ import annotations

import bisect
import io
import json
import multiprocessing
import os
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed
from tqdm import tqdm

from .config import InputError
from .guard import create_exclusive
from .images import ImageFailure, encode_image, file_digest
from .shards import SERIES, ShardWriter, sample_bytes, series_of
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
    sha256: str  # of the shard's bytes


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


def pack_chunk(chunk: ChunkSpec, chunk_path: str | None, settings: ImageSettings) -> ChunkResult:
    """Worker: encode every sample of a chunk and append its tar members to `chunk_path`, or, with
    no path, return them with the result (a Dask worker on another machine)."""
    exit_with_parent()
    tune_malloc()
    outcomes = []
    with os.fdopen(create_exclusive(Path(chunk_path)), "wb") if chunk_path else io.BytesIO() as out:
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
        data = None if chunk_path else out.getvalue()
    return ChunkResult(chunk.split, chunk.index, chunk.start, chunk_path, tuple(outcomes), data)


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
    """The size of a regular file; None for anything else (missing, a FIFO, a device, a folder),
    which is never opened here: reading a named pipe would block the run."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


_watching = False
_malloc_tuned = False


def tune_malloc() -> None:
    """In a Dask worker: undo what the nanny's MALLOC_TRIM_THRESHOLD_ does to image decoding.

    Setting any malloc threshold turns off glibc's dynamic mmap threshold, so every buffer over
    128 KiB (each decoded image, each resize) is mmap'ed, page-faulted in zeroed and unmapped
    again. That cost 25% of the image stage here (a LocalCluster ran at 0.73x loky; 0.94x after).
    Raising the mmap threshold to glibc's maximum keeps those buffers in the heap for re-use."""
    global _malloc_tuned
    if _malloc_tuned or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def exit_with_parent(parent: int | None = None, poll: float = 0.5) -> None:
    """In a pool worker: end this process when the parent dies, `kill -9` included (loky's workers
    would otherwise wait for work forever, and keep its resource trackers alive). The worker's
    parent changes when the parent dies (it is re-parented), so a daemon thread polls for that.
    loky workers run it as they start, with the parent's pid (which may be dead already by the time
    a worker has imported); Dask workers on their first task. Does nothing in the parent itself
    (one worker runs the tasks in-process)."""
    global _watching
    if _watching or multiprocessing.parent_process() is None:
        return
    _watching = True
    parent = parent if parent is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _ready() -> int:
    time.sleep(0.02)  # long enough for every worker to take one of these
    return os.getpid()


def loky_parallel(workers: int, **options: Any) -> Parallel:
    """joblib on loky's re-usable executor, whose workers start with `exit_with_parent` (the same
    initializer every time, so that the executor the warm-up started is the one re-used)."""
    from joblib.parallel import parallel_config

    with parallel_config(backend="loky", initializer=exit_with_parent, initargs=(os.getpid(),)):
        return Parallel(n_jobs=workers, **options)


def _readable(path: str) -> bool:
    try:
        return os.access(path, os.R_OK)
    except ValueError:  # a NUL in the path
        return False


def _missing(paths: list[str]) -> list[str]:
    return [p for p in paths if not _readable(p)]


def _build() -> dict[str, str]:
    """What decides the encoded bytes besides the inputs: packer's and Pillow's versions."""
    from PIL import __version__ as pil

    from . import __version__ as packer

    return {"packer": packer, "Pillow": pil}


class Pool:
    """Where the image stage runs: loky's process pool on this machine (default), or a Dask
    cluster through joblib's dask backend. Started in the background while the parent plans.

    With Dask, the workers read the images under the same paths as the parent (a shared
    filesystem: checked on every worker before the run) and send the encoded samples back with
    their task's result, so the output folder need not be shared; with loky, workers write each
    chunk to a file in the output folder, which the parent reads and removes.
    """

    def __init__(self, backend: str, workers: int, scheduler: str | None = None):
        self.backend = backend
        self.workers = workers
        self.scheduler = scheduler
        self.client: Any = None
        self.cluster: Any = None
        self.error: BaseException | None = None
        if backend == "dask":
            try:
                import distributed  # noqa: F401
            except ImportError:
                raise InputError(
                    "--backend dask needs Dask's distributed scheduler: pip install -e '.[dask]' (make install does)"
                ) from None
        self._thread = threading.Thread(target=self._start, name="start-pool", daemon=True)
        self._thread.start()

    @property
    def ships_bytes(self) -> bool:
        return self.backend == "dask"

    def _start(self) -> None:
        try:
            if self.backend == "loky":
                if self.workers > 1:
                    seen: set[int] = set()
                    for _ in range(10):
                        tasks = (delayed(_ready)() for _ in range(2 * self.workers))
                        seen.update(loky_parallel(self.workers)(tasks))
                        if len(seen) >= self.workers:
                            break
                return
            from distributed import Client, LocalCluster

            if self.scheduler:
                self.client = Client(self.scheduler, set_as_default=False)
            else:
                self.cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
                self.client = Client(self.cluster, set_as_default=False)
            self.client.wait_for_workers(1)
            self.workers = sum(self.client.nthreads().values())
        except BaseException as exc:  # reported by ready(), in the parent's thread
            self.error = exc

    def ready(self) -> None:
        """Wait for the pool to be up (raises what starting it raised)."""
        self._thread.join()
        if self.error is not None:
            if self.backend == "dask":
                raise InputError(f"--scheduler {self.scheduler}: cannot connect: {self.error}") from None
            raise self.error

    def check_workers(self, paths: list[str]) -> None:
        """Every Dask worker runs the same packer and Pillow as the parent (the JPEG bytes depend on
        them) and can read a sample of the images the parent reads; else an InputError."""
        if self.backend != "dask":
            return
        mine = _build()
        try:
            builds = self.client.run(_build)
        except Exception as exc:  # a worker whose environment cannot even load packer's image code
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"a dask worker cannot run packer's image code ({first}): start the workers from the same "
                "environment as this machine"
            ) from None
        for worker, theirs in builds.items():
            if theirs != mine:
                raise InputError(
                    f"dask worker {worker} runs {theirs}, this machine {mine}: start the workers from the same "
                    "environment (the encoded bytes depend on it)"
                )
        if not paths:
            return
        sample = [p for p in paths[:: max(1, len(paths) // 5)][:5] if _readable(p)]
        for worker, missing in self.client.run(_missing, sample).items():
            if missing:
                raise InputError(
                    f"dask worker {worker} cannot read {len(missing)} of {len(sample)} sampled images "
                    f"(e.g. {missing[0]}): the workers need the images under the same paths as this machine "
                    "(a shared filesystem)"
                )

    def describe(self) -> str:
        if self.backend == "loky":
            return f"loky, {self.workers} worker(s)"
        where = self.scheduler or f"a local cluster, dashboard {self.cluster.dashboard_link}"
        return f"dask, {self.workers} worker thread(s) at {where}"

    def parallel(self, pre_dispatch: str) -> Parallel:
        if self.backend == "loky":
            return loky_parallel(self.workers, return_as="generator", pre_dispatch=pre_dispatch)
        from joblib.parallel import parallel_config

        with parallel_config(backend="dask", client=self.client):
            return Parallel(n_jobs=-1, return_as="generator", pre_dispatch=pre_dispatch)

    def close(self) -> None:
        """Shut down what this run started, so that it exits with nothing but its own output."""
        self._thread.join()
        if self.backend == "loky":
            from joblib.externals.loky import reusable_executor

            executor = reusable_executor._executor
            if executor is not None:
                executor.shutdown(wait=True, kill_workers=True)
            return
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


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

    def add(self, data: bytes, position: int) -> None:
        boundary = False
        while self.next_start < len(self.starts) and self.starts[self.next_start] <= position:
            boundary, self.next_start = True, self.next_start + 1
        w = self.writer
        if w is not None and (
            boundary or w.count >= self.maxcount or (w.count and w.size + len(data) > self.maxsize)
        ):
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
            path, sha256 = str(self.writer.path), self.writer.sha256()
            shard = ClosedShard(self.split, self.series, self.index - 1, path, count, size, self.end, sha256)
            self.done.append(shard)
            self.on_close(shard)
            self.writer = None


def _read_samples(result: ChunkResult) -> Iterator[tuple[int, SampleOutcome, bytes]]:
    """The packed samples of a chunk (its file, or the bytes it came back with) with their
    positions in the split's order."""
    with open(result.path, "rb") if result.path else io.BytesIO(result.data or b"") as handle:
        for i, outcome in enumerate(result.outcomes):
            if outcome.status == "packed":
                yield result.start + i, outcome, handle.read(outcome.nbytes)


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

    def part(c: ChunkSpec) -> str | None:
        return None if pool.ships_bytes else str(work_dir / f"{c.split}-{c.index:06d}.part")

    tasks = (delayed(pack_chunk)(c, part(c), settings) for c in chunks)
    # Results come back in submission order, so shards never depend on scheduling.
    stream: Iterable[ChunkResult] = pool.parallel(pre_dispatch="4*n_jobs")(tasks)
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
                            state.shard_closed,
                        )
                for position, outcome, data in _read_samples(chunk_result):
                    series = series_of(outcome.image)
                    # A resumed run encodes again from the earliest unfinished sample of the split;
                    # a series keeps the samples that are already in its complete shards.
                    if position >= progress.end(split, series):
                        cutters[split, series].add(data, position)
                if chunk_result.path:
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
            result.shards.extend(ShardInfo(split, series, s.path, s.count, s.bytes, s.sha256) for s in shards)
    return result
