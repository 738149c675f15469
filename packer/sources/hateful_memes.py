"""Hateful Memes (Facebook AI, 2020): the jsonl files of the challenge release, with the fine-grained
annotations (protected category, attack type) when --fine-grained gives their folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import Converted, Dataset, Images, Options, SourceError, manifest_row, read_jsonl

HM_SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
HM_FINE_FILES = {"train": "train.json", "dev_seen": "dev_seen.json", "dev_unseen": "dev_unseen.json"}
HM_FINE_TEST = "test.jsonl"  # the fine-grained release's (unlabelled) test file holds test_seen
HM_NOT_LABELS = ("id", "img", "text", "set_name")


def hm_key(value: Any, path: Path, number: int) -> int:
    """Hateful Memes ids are integers, released as 8291 or as the zero-padded string "08291"."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SourceError(f"{path}: line {number}: field 'id': expected an integer id, got {value!r}") from None


def read_fine_grained(folder: Path) -> dict[tuple[str, int], dict]:
    found: dict[tuple[str, int], dict] = {}
    files = {**HM_FINE_FILES, "test_seen": HM_FINE_TEST}
    for split, name in files.items():
        path = folder / name
        if not path.is_file():
            continue
        for number, obj in read_jsonl(path):
            labels = {k: v for k, v in obj.items() if k not in HM_NOT_LABELS}
            found[(split, hm_key(obj.get("id"), path, number))] = labels
    return found


def hateful_memes(raw: Path, images: Images, options: Options) -> Converted:
    fine_dir = options.fine_grained or (raw if (raw / "train.json").is_file() else None)
    fine = read_fine_grained(fine_dir) if fine_dir else {}
    rows, merged = [], 0
    present = [s for s in HM_SPLITS if (raw / f"{s}.jsonl").is_file()]
    if not present:
        raise SourceError(f"{raw}: none of {[s + '.jsonl' for s in HM_SPLITS]}")
    for split in present:
        path = raw / f"{split}.jsonl"
        for number, obj in read_jsonl(path):
            key = hm_key(obj.get("id"), path, number)
            img = obj.get("img")
            if not isinstance(img, str):
                raise SourceError(f"{path}: line {number}: field 'img': expected a path like 'img/08291.png'")
            labels = {"label": obj["label"]} if obj.get("label") is not None else {}
            extra = fine.get((split, key))
            if extra is not None:
                labels.update(extra)
                merged += 1
            rows.append(manifest_row("hateful_memes", split, f"{key:05d}", images.path(img), obj.get("text"), labels))
    notes = [f"fine-grained annotations merged into {merged} rows"] if fine_dir else []
    return Converted(rows, notes=notes)


DATASETS = [Dataset("hateful_memes", hateful_memes, image_dirs=(".",))]
