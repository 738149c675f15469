"""Plain values the planner hands to the workers (no Polars: workers never import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import UNIFIED_FIELDS

# The plan's columns a chunk carries (besides the unified labels): every SampleSpec field but `labels`.
SAMPLE_COLUMNS = [
    "id",
    "key",
    "dataset",
    "split",
    "source_split",
    "lang",
    "image_path",
    "video_path",
    "text",
    "aux_json",
    "asr_json",
    "reuse",
    "object_size",
]


@dataclass(frozen=True)
class SampleSpec:
    id: str
    key: str
    dataset: str
    split: str
    source_split: str | None
    lang: str
    image_path: str | None
    video_path: str | None  # a video example (image_path is then None)
    text: str
    labels: dict[str, Any]
    aux_json: str
    asr_json: str | None  # a video example's kept speech segments (the sample JSON's `asr`), when it has an ASR row
    # Where an earlier pack holds this image encoded with the same settings (shard, offset, size,
    # image_sha256, dhash, source_sha256, source_size; the file's mtime and inode as now), or None.
    reuse: dict[str, Any] | None = None
    # An image or clip in a bucket (an s3:// path): its size as the plan found it (the workers'
    # fetch budget, and a clip's ranged reads); None for a local file.
    object_size: int | None = None


@dataclass(frozen=True)
class ChunkSpec:
    """A run of consecutive samples of one split: the unit of work of one pool task.

    It travels as columns (one list per field, cheap to take from the plan's frame and to pickle);
    the worker turns them into SampleSpecs. Shards do not depend on chunk boundaries: the parent
    cuts them from the stream of samples in plan order.
    """

    split: str
    index: int
    start: int  # the position of its first sample in the split's order
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["id"])

    def samples(self) -> list[SampleSpec]:
        c = self.columns
        labels = [dict(zip(UNIFIED_FIELDS, values)) for values in zip(*(c[f] for f in UNIFIED_FIELDS))]
        rows = zip(*(c[name] for name in SAMPLE_COLUMNS))
        return [SampleSpec(**dict(zip(SAMPLE_COLUMNS, row)), labels=label) for row, label in zip(rows, labels)]


@dataclass(frozen=True)
class SampleOutcome:
    id: str
    status: str  # "packed" or "failed"
    nbytes: int = 0  # bytes of its tar members in the chunk file
    reason: str | None = None
    detail: str | None = None
    image: dict[str, Any] | None = None
    dhash: int | None = None
    video: dict[str, Any] | None = None  # a packed video example's facts (duration, fps, size, frame times)
    # What the catalog records of a packed sample: its members' digests, its source file's facts
    # (sha256, size, mtime_ns, inode: what the next pack matches on; an object's last-modified and
    # ETag stand for mtime and inode), and whether it was reused.
    facts: dict[str, Any] | None = None
    digest: str | None = None  # a packed sample's content digest (execute.sample_digest)


@dataclass(frozen=True)
class ChunkResult:
    split: str
    index: int
    start: int
    path: str | None  # the chunk file (loky), or None: the samples' bytes are in `data` (Dask)
    outcomes: tuple[SampleOutcome, ...] = field(default_factory=tuple)
    data: bytes | None = None
