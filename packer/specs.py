"""Plain values the planner hands to the workers (no Polars: workers never import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SampleSpec:
    id: str
    key: str
    dataset: str
    split: str
    source_split: str | None
    lang: str
    image_path: str | None
    text: str
    labels: dict[str, Any]
    aux_json: str


@dataclass(frozen=True)
class ChunkSpec:
    """A run of consecutive samples of one split: the unit of work of one pool task.

    Chunk boundaries depend only on the plan, never on the worker count, so the shards cut from
    the chunks' outputs are byte-identical whatever --workers is.
    """

    split: str
    index: int
    samples: tuple[SampleSpec, ...]


@dataclass(frozen=True)
class SampleOutcome:
    id: str
    status: str  # "packed" or "failed"
    nbytes: int = 0  # bytes of its tar members in the chunk file
    reason: str | None = None
    detail: str | None = None
    image: dict[str, Any] | None = None
    dhash: int | None = None


@dataclass(frozen=True)
class ChunkResult:
    split: str
    index: int
    path: str
    outcomes: tuple[SampleOutcome, ...] = field(default_factory=tuple)
