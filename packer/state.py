"""Run state: what a rerun after a crash may keep. One folder, `<output dir>/.run/`, read in one place.

- `state.json`: the run's identity (a hash of every input and flag that decides the output bytes,
  with its parts, so that a changed one can be named) and the input pins; written atomically
  (temporary file, then rename).
- `pins.json`: the input splits.json as it was when the run started (the run rewrites splits.json
  near its end; a rerun after that reads the pins from here).
- `journal.jsonl`: progress, appended one JSON line at a time as it happens: the outcomes of each
  chunk of samples the parent consumed, each shard once it is complete under its final name, and
  each split once all its shards are. A line cut short by a crash is ignored.

A rerun with the same identity keeps the journal's shards and outcomes and encodes only the rest
(see `Progress`); any other rerun starts fresh and says why.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .guard import WORK_FILE, remove_owned
from .images import stat_many
from .objects import ObjectFacts, Objects
from .shards import series_of, write_atomic
from .specs import SampleOutcome

FORMAT = 2
STATE_DIR = ".run"
# Flags that do not change a byte of the output: a rerun may change them and still resume.
NEUTRAL_FLAGS = ("stats",)  # besides config.EXECUTION_ONLY, which PackConfig.to_json leaves out


def file_digest(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_digest(text: str | bytes | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def images_digest(paths: list[str], workers: int, objects: Objects | None = None) -> str:
    """Size and modification time of every image file the plan reads (and an object's ETag): a
    changed file or object changes it."""

    digest = hashlib.sha256()
    for path, st in stat_many(paths, workers, objects).items():
        if st is None:
            line = f"{path}\0missing\n"
        elif isinstance(st, ObjectFacts):
            line = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.etag}\n"
        else:
            line = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"
        digest.update(line.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def identity(
    config: dict[str, Any],
    manifest: str | None,
    ocr: str | None,
    taxonomy: str | None,
    pins: str | None,
    images: str,
    asr: str | None = None,
) -> dict[str, Any]:
    # As JSON reads it back (tuples become lists), so that an identity compares equal to its stored self.
    flags = json.loads(json.dumps({k: v for k, v in sorted(config.items()) if k not in NEUTRAL_FLAGS}))
    return {
        "format": FORMAT,
        "packer": __version__,
        "manifest": manifest,
        "ocr": ocr,
        "asr": asr,
        "label_taxonomy": taxonomy,
        "pinned_splits": pins,
        "images": images,
        "flags": flags,
    }


def difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why a previous run's output cannot be kept, in a few words; None when it can."""
    names = {
        "manifest": "the manifest changed",
        "ocr": "the OCR file changed",
        "asr": "the ASR file changed",
        "label_taxonomy": "the label taxonomy changed",
        "pinned_splits": "the input splits.json changed",
        "images": "image or video files changed (size or modification time)",
    }
    for key in ("format", "packer"):
        if old.get(key) != new[key]:
            return f"the previous run was made by another packer ({key} {old.get(key)} -> {new[key]})"
    for key, why in names.items():
        if old.get(key) != new[key]:
            return why
    flags_old, flags_new = old.get("flags", {}), new["flags"]
    changed = sorted(k for k in set(flags_old) | set(flags_new) if flags_old.get(k) != flags_new.get(k))
    if changed:
        return "flags changed: " + ", ".join(f"--{k.replace('_', '-')}" for k in changed)
    return None


@dataclass
class ClosedShard:
    split: str
    series: str
    index: int
    path: str
    count: int
    bytes: int
    end: int  # position (in the split's sample order) after the shard's last sample
    sha256: str  # over its samples' content digests (ShardWriter); the card's fingerprint is made of these


@dataclass
class Progress:
    """What a resumed run keeps, from the journal.

    Per split, `start` is the first position to encode again: every earlier sample is in a
    complete shard of its series or in no shard (failed). Samples from `start` on are encoded
    again, but a series only takes those at or after its own `end` (the rest are in its complete
    shards already).
    """

    done_splits: set[str] = field(default_factory=set)
    start: dict[str, int] = field(default_factory=dict)
    closed: dict[tuple[str, str], list[ClosedShard]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, list[SampleOutcome]] = field(default_factory=dict)  # per split, positions < start

    def end(self, split: str, series: str) -> int:
        """The position after the last sample in a complete shard of this series (0: none yet)."""
        shards = self.closed.get((split, series))
        return shards[-1].end if shards else 0

    @property
    def kept_shards(self) -> int:
        return sum(len(v) for v in self.closed.values())


class RunState:
    """The `.run/` folder of one output directory."""

    def __init__(self, output_dir: Path):
        self.dir = output_dir / STATE_DIR
        self.journal_path = self.dir / "journal.jsonl"
        self._journal: Any = None

    # -- reading --------------------------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and "identity" in doc else None

    def saved_pins(self) -> bytes | None:
        path = self.dir / "pins.json"
        return path.read_bytes() if path.is_file() else None

    def progress(self) -> Progress | None:
        """The journal read back; None when a shard it lists is gone or altered (start fresh)."""
        records = []
        if self.journal_path.is_file():
            with open(self.journal_path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        break  # a line cut short by the crash, and nothing valid after it
        progress = Progress()
        consumed: dict[str, list[tuple[int, SampleOutcome]]] = defaultdict(list)
        for record in records:
            if "chunk" in record:
                chunk = record["chunk"]
                for i, outcome in enumerate(chunk["outcomes"]):
                    consumed[chunk["split"]].append((chunk["start"] + i, SampleOutcome(**outcome)))
            elif "shard" in record:
                shard = ClosedShard(**record["shard"])
                path = Path(shard.path)
                if not path.is_file() or path.stat().st_size != shard.bytes:
                    return None
                progress.closed[shard.split, shard.series].append(shard)
            elif "split_done" in record:
                progress.done_splits.add(record["split_done"])
        for split, seen in consumed.items():
            by_position = dict(sorted(seen))  # a chunk encoded twice (by an earlier resume) counts once
            start = max(by_position) + 1
            if split not in progress.done_splits:
                # The first packed sample that is not in a complete shard of its series.
                for pos, outcome in by_position.items():
                    if outcome.status == "packed" and pos >= progress.end(
                        split, series_of(outcome.image, outcome.video)
                    ):
                        start = pos
                        break
            progress.start[split] = start
            progress.outcomes[split] = [o for p, o in by_position.items() if p < start]
        return progress

    # -- writing --------------------------------------------------------------------------------
    def begin(self, ident: dict[str, Any], pins: bytes | None, keep_journal: bool) -> None:
        """Record the run's identity (a fresh run also clears the journal)."""
        if not keep_journal:
            remove_owned(self.dir, WORK_FILE)
        self.dir.mkdir(parents=True, exist_ok=True)
        if pins is not None and not (keep_journal and (self.dir / "pins.json").is_file()):
            write_atomic(self.dir / "pins.json", pins)
        state = self.load() if keep_journal else None
        doc = {"identity": ident, "splits_written": (state or {}).get("splits_written")}
        write_atomic(self.dir / "state.json", json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))

    def splits_written(self, digest: str) -> None:
        """splits.json now holds this run's output: a rerun reads its input pins from pins.json."""
        doc = self.load() or {}
        doc["splits_written"] = digest
        write_atomic(self.dir / "state.json", json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))

    def _append(self, record: dict[str, Any]) -> None:
        if self._journal is None:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            self._journal = os.fdopen(fd, "a", encoding="utf-8")
        self._journal.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._journal.flush()

    def chunk_consumed(self, split: str, start: int, outcomes: tuple[SampleOutcome, ...]) -> None:
        # vars(), not dataclasses.asdict: a flat copy is all JSON needs, at a tenth of the cost.
        self._append({"chunk": {"split": split, "start": start, "outcomes": [vars(o) for o in outcomes]}})

    def shard_closed(self, shard: ClosedShard) -> None:
        self._append({"shard": asdict(shard)})

    def split_done(self, split: str) -> None:
        self._append({"split_done": split})

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def remove(self) -> None:
        self.close()
        remove_owned(self.dir, WORK_FILE)
