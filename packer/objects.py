"""Inputs in object storage: `s3://bucket/key` images, clips and input files, read with the failure
rules of local files. No Polars.

- **Facts, once per run.** `Objects.facts` finds the size, ETag and last-modified time of every
  object the plan reads, one listing request per 1,000 keys of a folder (a HEAD each where a folder
  holds only a few of them), and keeps them for the run: the image keys of the plan, the resume
  identity and the re-pack's stat cache all read them. `ObjectFacts` answers as an `os.stat_result`
  does (`st_size`, `st_mtime_ns`, and `st_ino`: 63 bits of the ETag's SHA-256), so that the code
  that compares files compares objects unchanged.
- **Refused before the run.** An access error on a bucket's first request (403, a wrong key or
  secret, no such bucket, an endpoint that does not answer) is an `InputError` (exit 2) naming the
  URL: never 100,000 examples failed one by one. A missing object fails its example alone
  (`image_missing`, `video_missing`), as a missing file does.
- **Fetching in the workers.** `Prefetch` fetches a chunk's objects on a few threads, in order and
  within a byte budget, while the worker decodes the ones before; each request is retried on
  throttling, resets and timeouts (storage.Store). A clip is read through `RangedFile`: ranged
  requests of 1 MiB where PyAV seeks, never downloaded whole.
- **Input files.** A manifest, OCR or ASR file given as a URL is copied once to a local temporary
  file (`stage`), so that its line numbers, its digest and its repairs work as for a local file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import InputError
from .guard import inert
from .storage import BUCKET, ObjectUrl, Retry, StorageError, Store, _botocore, describe, is_url, parse_options

REFUSED = "check the credentials, the endpoint and the bucket (nothing was changed)"
S_IFREG = 0o100000
LIST_FROM = 50  # a folder with at least this many wanted keys is listed; fewer get a HEAD each
BLOCK = 1 << 20  # a clip's ranged reads
BLOCKS_KEPT = 8
WINDOW = 16  # objects a worker fetches ahead of its decoder ...
BUDGET = 64 << 20  # ... and their bytes (one object over it is fetched alone)
FETCH_THREADS = 8
# Requests of the inputs: a connection that takes 10 s, or a read that waits 30 s, is retried.
INPUT_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 30}


@dataclass(frozen=True)
class ObjectFacts:
    """An object as a stat of it: size, last-modified (whole seconds, as every S3 API gives it) and
    ETag; `st_ino` stands for the ETag where a file's inode stands."""

    st_size: int
    st_mtime_ns: int
    etag: str
    st_mode: int = S_IFREG

    @property
    def st_ino(self) -> int:
        return int.from_bytes(hashlib.sha256(self.etag.encode()).digest()[:8], "big") >> 1


def facts_of(answer: dict[str, Any], size_field: str = "ContentLength") -> ObjectFacts:
    modified = answer.get("LastModified")
    seconds = int(modified.timestamp()) if modified is not None else 0
    return ObjectFacts(int(answer[size_field]), seconds * 1_000_000_000, str(answer.get("ETag", "")).strip('"'))


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` input URL, or InputError."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise InputError(
            f"{inert(url)}: packer reads local paths and s3:// URLs (any S3-compatible store: give its endpoint "
            "by AWS_ENDPOINT_URL or --storage-options)"
        )
    if "@" in parts.netloc:
        raise InputError("an s3:// URL with credentials in it refused: give them by the AWS chain or --storage-options")
    key = url.split("/", 3)[3] if url.count("/") >= 3 else ""
    if not BUCKET.fullmatch(parts.netloc) or not key:
        raise InputError(f"{inert(url)}: not an s3://bucket/key URL of an object")
    return parts.netloc, key


def by_location(paths: list[str]) -> tuple[list[str], list[str]]:
    """(the local paths, the URLs) of `paths`, each in its order."""
    return [p for p in paths if not is_url(p)], [p for p in paths if is_url(p)]


def worker_options(options_json: str | None) -> dict[str, Any]:
    """The storage options the workers get with their tasks: --storage-options, with the endpoint
    this machine's AWS_ENDPOINT_URL names where the options name none (a Dask worker elsewhere has
    its own environment; its credentials come from its own AWS chain unless the options hold them)."""
    options = parse_options(options_json)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not options.get("endpoint_url") and "endpoint_url" not in options.get("client_kwargs", {}):
        options["endpoint_url"] = endpoint
    return options


class Objects:
    """The object stores of one process: a client per bucket (thread-safe), the facts found so far."""

    def __init__(self, options: dict[str, Any] | None = None, retry: Retry | None = None):
        self.options = dict(options or {})
        config_kwargs = {**INPUT_TIMEOUTS, **self.options.get("config_kwargs", {})}
        self.options["config_kwargs"] = config_kwargs
        self.retry = retry or Retry()
        self.stores: dict[str, Store] = {}
        self.known: dict[str, ObjectFacts | None] = {}
        self.lock = threading.Lock()

    def store(self, bucket: str) -> Store:
        with self.lock:
            if bucket not in self.stores:
                self.stores[bucket] = Store(ObjectUrl(bucket, ""), self.options, self.retry)
            return self.stores[bucket]

    # -- the parent: facts of every object, before the run -------------------------------------------

    def facts(self, urls: list[str], threads: int = 16) -> dict[str, ObjectFacts | None]:
        """Facts of each URL (None: no such object), found once per run. InputError when a bucket's
        first request is refused (credentials, permissions, no such bucket, no endpoint)."""
        wanted = sorted({u for u in urls if u not in self.known})
        by_folder: dict[tuple[str, str], list[str]] = {}
        for url in wanted:
            bucket, key = split_url(url)
            by_folder.setdefault((bucket, key.rsplit("/", 1)[0] + "/" if "/" in key else ""), []).append(key)
        tasks: list[Callable[[], dict[str, ObjectFacts | None]]] = []
        probed: set[str] = set()
        for (bucket, folder), keys in sorted(by_folder.items()):
            if bucket not in probed:  # the bucket's first request alone: refused, the run does not start
                probed.add(bucket)
                self.known.update(self._probe(bucket, keys[0]))
                keys = keys[1:]
            if len(keys) >= LIST_FROM:
                tasks.append(lambda b=bucket, f=folder, k=keys: self._listed(b, f, k))
            else:
                tasks += [lambda b=bucket, k=key: self._headed(b, k) for key in keys]
        if tasks:
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
                for found in pool.map(lambda task: task(), tasks):
                    self.known.update(found)
        return {u: self.known[u] for u in urls}

    def _probe(self, bucket: str, key: str) -> dict[str, ObjectFacts | None]:
        try:
            return self._headed(bucket, key, first=True)
        except StorageError as exc:
            raise InputError(f"{exc}: {REFUSED}") from None

    def head(self, url: str) -> ObjectFacts | None:
        """An object's facts, None when there is no such object; StorageError when refused."""
        bucket, key = split_url(url)
        try:
            return facts_of(self.store(bucket).call("head_object", key, Bucket=bucket, Key=key))
        except _botocore().exceptions.ClientError:  # 404
            return None

    def _headed(self, bucket: str, key: str, first: bool = False) -> dict[str, ObjectFacts | None]:
        url = f"s3://{bucket}/{key}"
        try:
            found = self.head(url)
        except StorageError:
            if first:
                raise
            return {url: None}  # refused alone (403 on one object): its worker fails it with the reason
        if found is None and first:  # a missing object, or a missing bucket: a listing tells which
            self.store(bucket).call("list_objects_v2", None, Bucket=bucket, Prefix=key, MaxKeys=1)
        return {url: found}

    def _listed(self, bucket: str, folder: str, keys: list[str]) -> dict[str, ObjectFacts | None]:
        store, last = self.store(bucket), max(keys)
        found: dict[str, ObjectFacts] = {}
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": folder, "Delimiter": "/"}
        while True:
            page = store.call("list_objects_v2", None, **kwargs)
            contents = page.get("Contents") or []
            for obj in contents:
                found[obj["Key"]] = facts_of(obj, "Size")
            if not page.get("IsTruncated") or (contents and contents[-1]["Key"] >= last):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return {f"s3://{bucket}/{key}": found.get(key) for key in keys}

    def digest(self, url: str) -> str | None:
        """SHA-256 of an object's bytes (None when absent or unreadable)."""
        try:
            got = self.fetch(url)
        except StorageError:
            return None
        return hashlib.sha256(got[0]).hexdigest() if got is not None else None

    # -- the workers ------------------------------------------------------------------------------

    def fetch(self, url: str, limit: int | None = None) -> tuple[bytes, ObjectFacts] | None:
        """An object's bytes and facts (None: no such object); StorageError when it cannot be read.
        A body longer than `limit` is not read past it (the caller fails it as too large)."""
        bucket, key = split_url(url)
        found = self.store(bucket).read(key, limit=limit)
        return (found[0], facts_of(found[1])) if found is not None else None

    def unreadable(self, urls: list[str]) -> list[str]:
        """Of these URLs, each this process cannot read, with the store's reason (a worker's check)."""
        out = []
        for url in urls:
            try:
                if self.head(url) is None:
                    out.append(f"{url} (no such object)")
            except StorageError as exc:
                out.append(str(exc))
        return out

    def ranged(self, url: str, start: int, size: int) -> bytes:
        bucket, key = split_url(url)
        got = self.store(bucket).get(key, start, size)
        if got is None:
            raise FileNotFoundError(url)
        return got[0]


_process_objects: dict[str, Objects] = {}
CHAIN_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")


def objects_for(options: dict[str, Any] | None) -> Objects:
    """This process's Objects for these options (a worker keeps its clients and connections from
    one task to the next). The AWS chain's variables are part of the key: a process whose
    environment changes (a notebook, a test) gets clients of its new settings."""
    chain = {name: os.environ.get(name) for name in CHAIN_VARIABLES}
    key = json.dumps([options or {}, chain], sort_keys=True)
    if key not in _process_objects:
        _process_objects[key] = Objects(options)
    return _process_objects[key]


_fetch_pool: ThreadPoolExecutor | None = None


def fetch_pool() -> ThreadPoolExecutor:
    global _fetch_pool
    if _fetch_pool is None:
        _fetch_pool = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch")
    return _fetch_pool


class Prefetch:
    """The objects of one chunk, fetched ahead of the decoder in order: at most WINDOW at once and
    BUDGET bytes (by the sizes the plan found), each taken once with `take(url)`. A fetch's error
    is raised by `take`, in the worker's thread."""

    def __init__(self, objects: Objects, wanted: list[tuple[str, int | None]], limit: int):
        self.objects = objects
        self.todo = deque(wanted)
        self.limit = limit
        self.pending: deque[tuple[str, int, Future]] = deque()
        self.bytes = 0

    def _fill(self) -> None:
        while self.todo:
            url, size = self.todo[0]
            cost = min(size if size is not None else BLOCK, self.limit + 1)
            if self.pending and (len(self.pending) >= WINDOW or self.bytes + cost > BUDGET):
                return
            self.todo.popleft()
            self.pending.append((url, cost, fetch_pool().submit(self.objects.fetch, url, self.limit)))
            self.bytes += cost

    def take(self, url: str) -> tuple[bytes, ObjectFacts] | None:
        self._fill()
        first, cost, future = self.pending.popleft()
        assert first == url, (first, url)
        self.bytes -= cost
        try:
            return future.result()
        finally:
            self._fill()

    def close(self) -> None:
        for _, _, future in self.pending:
            future.cancel()
        self.pending.clear()
        self.todo.clear()


class RangedFile(io.RawIOBase):
    """An object read as a seekable file, by ranged requests of BLOCK bytes (the last few kept)."""

    def __init__(self, objects: Objects, url: str, size: int):
        self.objects = objects
        self.url = url
        self.size = size
        self.position = 0
        self.blocks: OrderedDict[int, bytes] = OrderedDict()
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, index: int) -> bytes:
        block = self.blocks.get(index)
        if block is None:
            start = index * BLOCK
            block = self.objects.ranged(self.url, start, min(BLOCK, self.size - start))
            self.requests += 1
            self.blocks[index] = block
            while len(self.blocks) > BLOCKS_KEPT:
                self.blocks.popitem(last=False)
        else:
            self.blocks.move_to_end(index)
        return block

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.position < self.size:
            index, within = divmod(self.position, BLOCK)
            block = self._block(index)
            n = min(len(view) - done, len(block) - within)
            view[done : done + n] = block[within : within + n]
            done += n
            self.position += n
        return done


def stage(url: str, path: Path, name: str, objects: Objects) -> Path:
    """A copy of an input file's object (the `name`) at `path` (InputError when it cannot be read:
    nothing has changed yet). Read in ranged parts of 64 MiB, each retried, all of one version
    (If-Match)."""
    bucket, key = split_url(url)
    store = objects.store(bucket)
    try:
        facts = objects.head(url)
    except StorageError as exc:
        raise InputError(f"{exc}: {REFUSED}") from None
    if facts is None:
        raise InputError(f"{inert(url)}: no such object (the {name})")
    part = 64 << 20
    try:
        with open(path, "wb") as out:
            for start in range(0, facts.st_size, part):
                found = store.read(key, start, min(part, facts.st_size - start), if_match=facts.etag)
                if found is None:
                    raise InputError(f"{inert(url)}: the {name} changed or went away while it was read: run again")
                out.write(found[0])
    except StorageError as exc:
        raise InputError(f"{inert(url)}: the {name} could not be read: {describe(exc)}") from None
    return path
