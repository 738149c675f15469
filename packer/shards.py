"""Tar members with fixed metadata, and shards written to a temporary name then renamed."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

from .guard import create_exclusive

BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


# Every member packer writes has the same header but for its name, size and checksum: built once by
# tarfile (whatever this Python's tarfile writes in the other fields), then filled in per member.
_TEMPLATE = _tar_header("x", 0)
_BASE_SUM = 256 + sum(_TEMPLATE[100:124]) + sum(_TEMPLATE[136:148]) + sum(_TEMPLATE[156:])


def plain_header(name: bytes, size: int) -> bytes | None:
    """The header tarfile writes for a member of this name and size, when it is one plain ustar
    block (an ASCII name of at most 100 bytes, a size below 8 GiB); None when a PAX record is due."""
    if len(name) > 100 or size >= 8**11 or not name.isascii() or b"\0" in name:
        return None
    size_field = b"%011o\0" % size
    checksum = _BASE_SUM + sum(name) + sum(size_field)
    return b"".join(
        (
            name.ljust(100, b"\0"),
            _TEMPLATE[100:124],
            size_field,
            _TEMPLATE[136:148],
            b"%06o\0 " % checksum,
            _TEMPLATE[156:BLOCK],
        )
    )


def member_bytes(name: str, data: bytes) -> bytes:
    """One tar member (header + data + padding) with fixed mtime, owner and mode, for reproducible
    shards: tarfile's bytes, filled in from one template where the header is a plain block."""
    header = plain_header(name.encode("utf-8"), len(data)) or _tar_header(name, len(data))
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
    """Appends samples to `<dir>/<series>-NNNNN.tar.tmp`; `close()` ends the archive and renames it.

    A sample comes as bytes, or as a byte range of a chunk file that the kernel copies
    (copy_file_range: the parent never reads a loky worker's output into memory). The shard's
    digest is made of its samples' content digests (execute.sample_digest), in order: it names
    the shard's bytes without hashing them again."""

    def __init__(self, directory: Path, index: int, series: str = IMAGE_SERIES):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{series}-{index:05d}.tar"
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.fd = create_exclusive(self.tmp)
        self.count = 0
        self.size = 0
        self.digest = hashlib.sha256()
        self.pending: list[int] = []  # a range not yet copied: [fd, offset, size] (consecutive samples join it)

    def add(self, sample: bytes | tuple[int, int], size: int, digest: str) -> None:
        """One sample: its bytes, or `(fd, offset)` of `size` bytes in another file."""
        if isinstance(sample, bytes):
            self.flush()
            write_all(self.fd, sample)
        elif self.pending and self.pending[0] == sample[0] and self.pending[1] + self.pending[2] == sample[1]:
            self.pending[2] += size
        else:
            self.flush()
            self.pending = [sample[0], sample[1], size]
        self.digest.update(f"{digest}\n".encode("ascii"))
        self.count += 1
        self.size += size

    def flush(self) -> None:
        """Copy the pending range (before its source file is closed, and before other bytes)."""
        if self.pending:
            src, offset, size = self.pending
            self.pending = []
            copy_range(src, offset, size, self.fd)

    def close(self) -> int:
        """Finish the archive; returns the shard's size in bytes (`sha256()` its digest)."""
        self.flush()
        write_all(self.fd, END_OF_ARCHIVE)
        os.close(self.fd)
        os.replace(self.tmp, self.path)
        return self.size + len(END_OF_ARCHIVE)

    def sha256(self) -> str:
        return self.digest.hexdigest()

    def abort(self) -> None:
        os.close(self.fd)
        self.tmp.unlink(missing_ok=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# copy_file_range fails so where the kernel or filesystem cannot copy between these two files.
NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def copy_range(src: int, offset: int, size: int, dst: int) -> None:
    """`size` bytes of `src` from `offset` appended at `dst`'s position, copied in the kernel
    where it can (else read and written); a source shorter than that is an error."""
    end = offset + size
    kernel = hasattr(os, "copy_file_range")
    while offset < end:
        n = 0
        if kernel:
            try:
                n = os.copy_file_range(src, dst, end - offset, offset)
            except OSError as exc:
                if exc.errno not in NO_KERNEL_COPY:
                    raise
                kernel = False
        if not kernel:
            block = os.pread(src, min(end - offset, 1 << 20), offset)
            write_all(dst, block)
            n = len(block)
        if n == 0:
            raise OSError(errno.EIO, f"a chunk file ended {end - offset} bytes early")
        offset += n


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of a regular file reached without a link (O_NOFOLLOW), never blocking
    on a pipe or device (O_NONBLOCK); OSError for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


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
