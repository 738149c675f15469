"""The worker's side of a re-pack: an image encoded by an earlier pack, taken from its shard by
byte offset instead of being decoded again, and the facts a pack records about each source image
so that the next pack can find it (its SHA-256, size, modification time and inode). No Polars.

A reused image is checked before it is used: the earlier sample's bytes must parse as one tar
sample whose `jpg` member has the SHA-256 the earlier catalog recorded (unless the parent found its
shard as the earlier pack left it: previous.trusted_shards), and whose JSON carries the image's
metadata. Anything else (a damaged, replaced or foreign shard) returns None, and the
image is encoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from typing import Any

from .images import DIGEST_CHUNK
from .shards import END_OF_ARCHIVE, open_regular, plain_header
from .storage import is_url


def read_source(path: str, limit: int) -> tuple[bytes | None, dict[str, Any] | None]:
    """A regular file read once: its bytes, and its facts (SHA-256 of those bytes, size, mtime (ns),
    inode) for the stat cache; the decoder then reads the same bytes from memory. A file over `limit`
    bytes is hashed as it streams and not kept (no bytes: it is decoded from its path). A path that
    cannot be opened or is not a regular file (a folder, a pipe, a device) is never read: (None,
    None), and the decode from its path fails it with its reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None, None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None
    digest, blocks, total = hashlib.sha256(), [], 0
    try:
        with os.fdopen(fd, "rb") as handle:
            # The whole file in one read where it may be kept (one more byte, to see it grow): a read
            # of `limit` bytes would allocate that much first.
            block = handle.read(st.st_size + 1 if st.st_size <= limit else DIGEST_CHUNK)
            while block:
                digest.update(block)
                total += len(block)
                if total <= limit:
                    blocks.append(block)
                else:
                    blocks.clear()
                block = handle.read(DIGEST_CHUNK)
    except OSError:
        return None, None
    facts = {"sha256": digest.hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    return (b"".join(blocks) if total <= limit else None), facts


def read_members(
    path: str, offset: int, size: int, open_shards: dict[str, int] | None = None
) -> dict[str, bytes] | None:
    """The members (extension -> bytes) of the one sample at `offset` in a shard; None when the
    shard is not a regular file reached without a link, or the bytes are not one tar sample.
    `open_shards` (path -> fd) keeps shards open between calls; its owner closes them."""
    fd = open_shards.get(path) if open_shards is not None else None
    if fd is None:
        try:
            fd = open_regular(path)
        except (OSError, ValueError):
            return None
        if open_shards is not None:
            open_shards[path] = fd
    try:
        data = os.pread(fd, size, offset)
    except OSError:
        data = b""
    finally:
        if open_shards is None:
            os.close(fd)
    if len(data) != size:
        return None
    fast = plain_members(data)
    if fast is not None:
        return fast
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data + END_OF_ARCHIVE), mode="r:") as tar:
            keys = set()
            for info in tar:
                key, _, ext = info.name.rsplit("/", 1)[-1].partition(".")
                keys.add(key)
                handle = tar.extractfile(info)
                if handle is None or ext in members:
                    return None
                members[ext] = handle.read()
    except (tarfile.TarError, OSError, EOFError):
        return None
    return members if len(keys) == 1 else None


def plain_members(data: bytes) -> dict[str, bytes] | None:
    """The members of one sample's bytes where every header is exactly the plain ustar block packer
    writes for its name and size (shards.plain_header: the checksum and every fixed field
    included), read directly (20x tarfile's pace); None for anything else, which tarfile then
    reads or refuses."""
    members: dict[str, bytes] = {}
    keys = set()
    position = 0
    view = memoryview(data)
    while position < len(data):
        header = data[position : position + 512]
        name = header[:100].split(b"\0", 1)[0]
        try:
            size = int(header[124:136].strip(b"\0 ") or b"-1", 8)
        except ValueError:
            return None
        if size < 0 or header != plain_header(name, size):
            return None  # a damaged header, a long or foreign one: tarfile judges it
        key, _, ext = name.decode("ascii").partition(".")
        start = position + 512
        if start + size > len(data) or ext in members:
            return None
        keys.add(key)
        members[ext] = bytes(view[start : start + size])
        position = start + size + (-size) % 512
    return members if len(keys) == 1 else None


def reused_clip(
    reuse: dict[str, Any], frames: int, open_shards: dict[str, int] | None = None
) -> tuple[dict[str, bytes], dict[str, Any], dict[str, Any]] | None:
    """An earlier pack's sample of this clip: its frame members (`jpg`, then `f00.jpg`...), and its
    `image` and `video` metadata; None to decode the clip again. Only from a shard as that pack left
    it (previous.match_clips), whose middle frame has the catalog's digest."""
    if not reuse.get("trusted"):
        return None
    members = read_members(reuse["shard"], reuse["offset"], reuse["size"], open_shards)
    names = ["jpg", *(f"f{i:02d}.jpg" for i in range(frames))]
    if members is None or "json" not in members or any(n not in members for n in names):
        return None
    if hashlib.sha256(members["jpg"]).hexdigest() != reuse["image_sha256"]:
        return None
    try:
        doc = json.loads(members["json"])
        image, video = doc.get("image"), doc.get("video")
    except (ValueError, AttributeError):
        return None
    if not isinstance(image, dict) or not isinstance(video, dict) or len(video.get("frame_times") or ()) != frames:
        return None
    return {n: members[n] for n in names}, image, video


def clip_facts(path: str, objects: Any = None) -> dict[str, Any] | None:
    """A clip's size, mtime and inode (an object's size, last-modified and ETag), for the stat cache:
    no digest, a clip is never read whole. None when it cannot be stat'ed."""
    try:
        st = objects.head(path) if objects is not None and is_url(path) else os.stat(path)
    except (OSError, ValueError, RuntimeError):
        return None
    if st is None:
        return None
    return {"sha256": None, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def reused_image(
    reuse: dict[str, Any], open_shards: dict[str, int] | None = None
) -> tuple[bytes, dict[str, Any]] | None:
    """The earlier pack's JPEG for this image and its `image` metadata, checked; None to encode again."""
    members = read_members(reuse["shard"], reuse["offset"], reuse["size"], open_shards)
    if members is None or "jpg" not in members or "json" not in members:
        return None
    jpg = members["jpg"]
    if not reuse.get("trusted") and hashlib.sha256(jpg).hexdigest() != reuse["image_sha256"]:
        return None
    try:
        image = json.loads(members["json"]).get("image")
    except (ValueError, AttributeError):
        return None
    wanted = ("orig_width", "orig_height", "orig_format")
    if not isinstance(image, dict) or sorted(image) != sorted(wanted):
        return None
    return jpg, {k: image[k] for k in wanted}
