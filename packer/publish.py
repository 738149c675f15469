"""`pack-examples publish STEP_3 URL` (also `python -m packer.publish`, and `--publish URL` on the pack
command): a finished pack uploaded to a bucket prefix, verified, resumable, never half-visible.

The prefix gets the local pack's tree (shards, their indexes, the catalog, `.nv-meta/`, the card,
report, stats, splits, taxonomy and failures log), never the run state. Order and proof:
1. The prefix must be empty or packer's (its `.packer` object, and nothing but packer's names);
   one publisher at a time holds `.packer-publish.lock`, created only if absent.
2. Every local file is hashed; an object whose size and ETag already match is skipped. Before the
   first object is written, the earlier `published.json` is deleted: from then on a reader sees an
   incomplete pack.
3. Shards go up first, then their indexes, the catalog and energon's metadata, then the card,
   report, splits, taxonomy and failures log, then stats.json: each phase only once every object
   of the one before is checked (size and the ETag the store computed).
4. Last, `published.json`: every object with its size, SHA-256 and ETag. Its presence means the
   whole pack is there. Only then are the objects of an earlier publish that this pack no longer
   has removed (those carrying packer's metadata), and the lock released.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import __version__
from .config import InputError, OutputError
from .guard import INCOMPLETE, META_FILE, SPLIT_DIRS, SPLIT_FILE, OutputLock, _is_packer_file, error_exit, inert
from .remote import MANIFEST
from .storage import (
    MIN_PART_SIZE,
    PART_SIZE,
    FileDigest,
    StorageError,
    Store,
    client_error,
    digest_file,
    parse_options,
    parse_url,
)

LOCK = ".packer-publish.lock"
MARKER = ".packer"
MARKER_TEXT = "published by packer: every object under this prefix is packer's and is replaced by its next publish\n"
CONTROL = (MANIFEST, LOCK, MARKER)
FORMAT = "packer-published/1"
ROOT_FILES = ("label_taxonomy.json", "splits.json", "README.md", "report.html", "failures.jsonl", "stats.json")
# What a run leaves only while it writes (temporaries, SQLite's side files): never published.
TRANSIENT = (".tmp", "-journal", "-wal", "-shm")
SHOWN = 5  # foreign objects named in a refusal


def published_name(relative: str) -> bool:
    """Whether a key (relative to the prefix) is one packer publishes, besides the CONTROL objects:
    a file beside stats.json, the catalog, or a name of guard.py's split or energon patterns."""
    if relative in ROOT_FILES or relative == "shards/samples.parquet":
        return True
    folder, _, name = relative.rpartition("/")
    if name.endswith(TRANSIENT):
        return False
    if folder == "shards/.nv-meta":
        return bool(META_FILE.fullmatch(name))
    split = folder.removeprefix("shards/")
    return folder.startswith("shards/") and split in SPLIT_DIRS and bool(SPLIT_FILE.fullmatch(name))


def phase_of(relative: str) -> int:
    """Upload order: the shards (0); what describes them: their indexes, the catalog, energon's
    metadata, the card, report, splits, taxonomy and failures (1); stats.json (2), the verdict on
    all of it. (published.json comes after, alone.) Only shards end in `.tar` among published names."""
    if relative == "stats.json":
        return 2
    return 0 if relative.endswith(".tar") else 1


def pack_files(shards: Path, beside: dict[str, Path]) -> dict[str, Path]:
    """relative key -> local file: the published tree of a pack whose shards folder is `shards` and
    whose files beside stats.json are `beside` (name -> path; absent files are left out). A link
    anywhere in it is refused (nothing outside the pack is ever read)."""
    files: dict[str, Path] = {}

    def take(relative: str, path: Path) -> None:
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link: packer publishes only the pack's own files")
        if path.is_file():
            files[relative] = path

    for name, path in beside.items():
        if os.path.lexists(path):
            take(name, path)
    for split in SPLIT_DIRS:
        folder = shards / split
        if folder.is_dir() and not folder.is_symlink():
            for entry in sorted(folder.iterdir()):
                if published_name(f"shards/{split}/{entry.name}"):
                    take(f"shards/{split}/{entry.name}", entry)
    take("shards/samples.parquet", shards / "samples.parquet")
    meta = shards / ".nv-meta"
    if meta.is_dir() and not meta.is_symlink():
        for entry in sorted(meta.iterdir()):
            if published_name(f"shards/.nv-meta/{entry.name}"):
                take(f"shards/.nv-meta/{entry.name}", entry)
    return files


def manifest_bytes(digests: dict[str, FileDigest]) -> bytes:
    """published.json: every object of the pack, by relative key, with its size, SHA-256 and ETag."""
    objects = [{"path": k, "size": d.size, "sha256": d.sha256, "etag": d.etag} for k, d in sorted(digests.items())]
    doc = {
        "format": FORMAT,
        "written_by": f"packer {__version__}",
        "complete": True,
        "objects": len(objects),
        "bytes": sum(d.size for d in digests.values()),
        "files": objects,
    }
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


# -- the lock object ----------------------------------------------------------------------------


def _start_ticks(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, /proc): tells a live pid from a reused one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _running(pid: object, ticks: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and (ticks is None or _start_ticks(pid) == ticks)


class BucketLock:
    """`.packer-publish.lock`, created only if absent (S3 conditional write, If-None-Match: *).

    The rule for a lock left behind: a lock written on this host by a process that no longer runs
    is taken over (a publish killed with kill -9 never blocks its own rerun); any other lock is
    honoured until `--break-lock` says its run is dead."""

    def __init__(self, store: Store):
        self.store = store
        self.token = uuid.uuid4().hex
        self.etag: str | None = None

    def acquire(self, break_lock: bool = False) -> None:
        pid = os.getpid()
        doc = {
            "what": "a packer publish is writing this prefix",
            "host": socket.gethostname(),
            "pid": pid,
            "pid_started": _start_ticks(pid),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "token": self.token,
        }
        body = (json.dumps(doc) + "\n").encode()
        for _ in range(5):
            try:
                self.etag = self.store.put(LOCK, body, if_none_match=True)
                return
            except client_error():
                pass  # it exists (412), or another create raced ours (409)
            found = self.store.get(LOCK)
            if found is None:
                continue  # released meanwhile: try again
            data, etag = found
            try:
                holder = json.loads(data)
            except ValueError:
                holder = {}
            holder = holder if isinstance(holder, dict) else {}
            if holder.get("token") == self.token:  # our own create landed; its answer was lost
                self.etag = etag
                return
            here = holder.get("host") == socket.gethostname()
            dead = here and not _running(holder.get("pid"), holder.get("pid_started"))
            if break_lock or dead:
                why = "--break-lock" if break_lock else "its process is gone"
                print(f"packer: {self.store.url.of(LOCK)}: taking over a lock left by pid {inert(holder.get('pid'))} "
                      f"on {inert(holder.get('host'))} ({why})")  # fmt: skip
                self.store.delete(LOCK, if_match=etag)
                continue
            raise InputError(
                f"{self.store.url}: another packer publish (pid {inert(holder.get('pid'))} on "
                f"{inert(holder.get('host'))}, since {inert(holder.get('since'))}) holds {self.store.url.of(LOCK)}: "
                "wait for it to finish; if that run is dead, rerun with --break-lock"
            )
        raise InputError(f"{self.store.url.of(LOCK)}: the lock could not be taken (it kept changing): rerun")

    def release(self) -> None:
        if self.etag is not None:
            try:
                self.store.delete(LOCK, if_match=self.etag)
            except StorageError as exc:
                print(f"packer: could not remove {self.store.url.of(LOCK)}: {inert(exc)}", file=sys.stderr)
            self.etag = None


# -- publishing ---------------------------------------------------------------------------------


def check_ownership(store: Store, listing: dict[str, tuple[int, str]]) -> None:
    """The prefix is empty, or packer's: it holds the `.packer` object and nothing but packer's names."""
    foreign = sorted(k for k in listing if k not in CONTROL and not published_name(k))
    if not foreign and MARKER not in listing:  # packer's names, but not under packer's mark
        foreign = sorted(set(listing) - set(CONTROL))
    if foreign:
        shown = ", ".join(inert(store.url.of(k)) for k in foreign[:SHOWN])
        more = f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else ""
        raise InputError(
            f"{store.url}: holds objects packer did not publish ({shown}{more}): packer publishes only into an "
            "empty prefix or one it published before; choose another prefix"
        )


class Publisher:
    """One publish to one prefix. `open()` checks the prefix and takes its lock (nothing is written
    before); `early(relative, path)` starts a shard's upload while the pack goes on; `finish(files)`
    uploads the rest in order, writes published.json and removes what the pack no longer has."""

    def __init__(
        self,
        url: str,
        options_json: str | None = None,
        break_lock: bool = False,
        jobs: int = 8,
        part_size: int = PART_SIZE,
    ):
        # The URL and options are checked here; the client is made by open() (botocore's import and
        # set-up take 0.3 s: with --publish, in the background while the pack is planned).
        self.url, self.options = parse_url(url), parse_options(options_json)
        self.store: Store = None  # type: ignore[assignment]
        self.lock: BucketLock | None = None
        self.break_lock = break_lock
        self.part_size = part_size
        self.jobs = jobs
        self.listing: dict[str, tuple[int, str]] = {}
        self.manifest_present = False
        self.write_lock = threading.Lock()
        self.writing = False  # the earlier manifest is gone and the marker is there
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, tuple[Path, Future[tuple[FileDigest, bool]]]] = {}
        self.uploaded_bytes = 0
        self.started = time.perf_counter()
        self.opening: threading.Thread | None = None
        self.open_error: BaseException | None = None
        self.opened = False  # the prefix was checked and its lock taken

    def open_in_background(self) -> None:
        """Start `open()` in a thread (its requests overlap the pack's planning); `wait_open()` joins it."""

        def run() -> None:
            try:
                self.open()
            except BaseException as exc:  # re-raised by wait_open
                self.open_error = exc

        self.opening = threading.Thread(target=run, name="publish-open", daemon=True)
        self.opening.start()

    def wait_open(self) -> None:
        if self.opening is not None:
            self.opening.join()
            self.opening = None
        if self.open_error is not None:
            error, self.open_error = self.open_error, None
            raise error

    def open(self) -> None:
        self.store = Store(self.url, self.options)
        self.lock = BucketLock(self.store)
        self.listing = self.store.listing()  # a bad credential, bucket or endpoint fails here (exit 3)
        check_ownership(self.store, self.listing)
        self.lock.acquire(self.break_lock)
        try:
            self.listing = self.store.listing()  # as it is now that the prefix is ours
            check_ownership(self.store, self.listing)
            for relative, upload_id in self.store.unfinished_uploads():
                if published_name(relative):  # left by a killed publish
                    self.store.abort(relative, upload_id)
        except BaseException:
            self.lock.release()
            raise
        self.manifest_present = MANIFEST in self.listing
        self.pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="publish")
        self.opened = True

    def _start_writing(self) -> None:
        """Before the first object changes: the earlier manifest goes (the pack is incomplete from
        here until the new one is written), and the prefix gets its `.packer` object."""
        with self.write_lock:
            if self.writing:
                return
            if self.manifest_present:
                self.store.delete(MANIFEST)
                if self.store.head(MANIFEST) is not None:
                    raise StorageError(f"{self.store.url.of(MANIFEST)}: could not be removed before the upload")
                self.manifest_present = False
            if MARKER not in self.listing:
                try:
                    self.store.put(MARKER, MARKER_TEXT.encode(), if_none_match=True)
                except client_error():
                    pass  # already there
            self.writing = True

    def _send(self, relative: str, path: Path) -> tuple[FileDigest, bool]:
        digest = digest_file(path, self.part_size)
        if self.listing.get(relative) == (digest.size, digest.etag):
            return digest, False
        self._start_writing()
        self.store.upload(relative, path, digest, self.part_size)
        with self.write_lock:
            self.uploaded_bytes += digest.size
        return digest, True

    def early(self, relative: str, path: Path) -> None:
        """Start uploading a final shard now (its phase is the first: nothing refers to it yet)."""
        assert self.pool is not None and phase_of(relative) == 0
        self.futures[relative] = (path, self.pool.submit(self._send, relative, path))

    def finish(self, files: dict[str, Path]) -> dict[str, Any]:
        """Upload every file of the pack phase by phase, then the manifest, then remove the stale
        objects; returns the counts (and releases the lock)."""
        assert self.pool is not None
        digests: dict[str, FileDigest] = {}
        uploaded = 0
        for phase in sorted({phase_of(k) for k in files}):
            wanted = {k: p for k, p in files.items() if phase_of(k) == phase}
            for relative, path in wanted.items():
                if relative not in self.futures or self.futures[relative][0] != path:
                    self.futures[relative] = (path, self.pool.submit(self._send, relative, path))
            sent_now = {}
            for relative in sorted(wanted):
                digest, sent = self.futures[relative][1].result()  # the first failure ends the publish
                digests[relative] = digest
                if sent:
                    sent_now[relative] = digest
            if sent_now:  # checked before the next phase, which refers to them, starts
                self.store.verify_listed(sent_now)
            uploaded += len(sent_now)
        manifest = manifest_bytes(digests)
        written = (len(manifest), hashlib.md5(manifest).hexdigest())
        if not (self.manifest_present and self.listing.get(MANIFEST) == written):
            self._start_writing()
            self.store.put(MANIFEST, manifest)
            uploaded += 1
        listed = self.store.listing()  # the manifest checked, and what the pack no longer has found
        if listed.get(MANIFEST) != written:
            raise StorageError(f"{self.store.url.of(MANIFEST)}: not as written right after its upload: rerun")
        removed = self._remove_stale(set(digests), listed)
        self.close()
        seconds = time.perf_counter() - self.started
        return {
            "url": str(self.store.url),
            "objects": len(digests) + 1,
            "bytes": sum(d.size for d in digests.values()) + len(manifest),
            "uploaded": uploaded,
            "unchanged": len(digests) + 1 - uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "removed": removed,
            "retries": dict(sorted(self.store.counters.retries.items())),
            "seconds": round(seconds, 3),
        }

    def _remove_stale(self, kept: set[str], listed: dict[str, tuple[int, str]]) -> list[str]:
        """The objects of an earlier publish this pack no longer has: packer's names, carrying the
        metadata packer puts on every object it uploads. Anything else is left and named."""
        removed = []
        for relative in sorted(listed):
            if relative in kept or relative in CONTROL or not published_name(relative):
                continue
            head = self.store.head(relative)
            if head is not None and "packer-sha256" in head.get("Metadata", {}):
                self.store.delete(relative)
                removed.append(relative)
            elif head is not None:
                print(f"packer: left {inert(self.store.url.of(relative))}: packer did not upload it", file=sys.stderr)
        return removed

    def close(self) -> None:
        """Stop (pending uploads are cancelled; one under way ends its request) and release the lock."""
        if self.opening is not None:
            self.opening.join()
            self.opening = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.lock is not None:
            self.lock.release()


def summary_line(result: dict[str, Any]) -> str:
    retries = result["retries"]
    causes = ", ".join(f"{k} {v}" for k, v in retries.items())
    tried = f"; {sum(retries.values())} retries ({causes})" if retries else ""
    rate = result["uploaded_bytes"] / 1e6 / max(result["seconds"], 1e-9)
    return (
        f"packer: published {result['url']}: {result['objects']} objects ({result['bytes'] / 1e6:.1f} MB): "
        f"{result['uploaded']} uploaded, {result['unchanged']} unchanged, {len(result['removed'])} removed{tried}; "
        f"{result['seconds']:.1f} s, {rate:.1f} MB/s; complete: {result['url']}/{MANIFEST}"
    )


def local_pack(step3: Path) -> tuple[Path, dict[str, Path]]:
    """A finished pack's shards folder and the files beside its stats.json, or InputError."""
    shards = step3 / "shards"
    if not (shards / "samples.parquet").is_file() or not (step3 / "stats.json").is_file():
        raise InputError(f"{step3}: not a finished pack (no stats.json and shards/samples.parquet): pack it first")
    if os.path.lexists(step3 / INCOMPLETE) or (shards / ".run").exists():
        raise InputError(f"{step3}: its run is incomplete ({INCOMPLETE}): rerun the pack to finish it, then publish")
    if not _is_packer_file(step3 / "stats.json", "stats"):
        raise InputError(f"{step3 / 'stats.json'}: not a packer stats.json: not a pack")
    return shards, {name: step3 / name for name in ROOT_FILES}


def publish(step3: Path, url: str, options_json: str | None = None, break_lock: bool = False,
            jobs: int = 8, part_size: int = PART_SIZE) -> dict[str, Any]:  # fmt: skip
    """Publish the pack in `step3` (its Step_3 folder) to `url`; holds the pack's own lock meanwhile."""
    shards, beside = local_pack(step3)
    publisher = Publisher(url, options_json, break_lock, jobs, part_size)
    lock = OutputLock(shards)
    lock.acquire()  # no pack run rewrites the folder while it is read
    try:
        files = pack_files(shards, beside)
        publisher.open()
        try:
            return publisher.finish(files)
        finally:
            publisher.close()
    finally:
        lock.release()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pack-examples publish",
        description="Upload a finished pack to a bucket prefix, verified; published.json last says it is complete.",
    )
    p.add_argument("step3", type=Path, metavar="STEP_3", help="the pack's folder (holding stats.json and shards/)")
    p.add_argument("url", metavar="URL", help="s3://bucket/prefix")
    p.add_argument(
        "--storage-options",
        default=None,
        metavar="JSON",
        help="s3fs-style options: key, secret, token, profile, endpoint_url, client_kwargs, config_kwargs",
    )
    p.add_argument("--break-lock", action="store_true", help="take over a lock whose publish you know is dead")
    p.add_argument("--jobs", type=int, default=8, help="objects uploaded at once")
    p.add_argument("--part-size", type=int, default=PART_SIZE, help="bytes per part of a multipart upload (>= 5 MiB)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.part_size < MIN_PART_SIZE or args.jobs < 1:
        print("error: --part-size must be at least 5 MiB (5242880) and --jobs at least 1", file=sys.stderr)
        return 2
    try:
        result = publish(args.step3, args.url, args.storage_options, args.break_lock, args.jobs, args.part_size)
    except (InputError, OutputError) as exc:
        return error_exit(exc)
    print(summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
