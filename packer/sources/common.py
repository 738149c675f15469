"""What the release-format adapters share: readers for JSON, JSON lines and delimited files that
name the file, line and field of anything they cannot read; where the images are; the manifest row
and the registration of a dataset (`Dataset`), which packer/sources/__init__.py collects from every
module of this package."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import InputError, parse_json

csv.field_size_limit(sys.maxsize)


class SourceError(InputError):
    """A raw release file that cannot be read as its format says."""


# -- reading the release files ------------------------------------------------
def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file (".json" files too)."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise SourceError(f"{path}: line {number}: not valid JSON: nested too deeply") from None
            if not isinstance(obj, dict):
                raise SourceError(f"{path}: line {number}: expected a JSON object")
            yield number, obj


def read_json(path: Path) -> Any:
    return parse_json(path.read_text(encoding="utf-8-sig"), str(path), SourceError)


@dataclass
class Table:
    """A delimited file read with its header: rows as dicts, with their line numbers."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]

    def need(self, *names: str) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise SourceError(f"{self.path}: line 1: missing column(s) {missing}; the header has {self.columns}")

    def has(self, name: str) -> bool:
        return name in self.columns


def read_table(
    path: Path,
    delimiter: str = ",",
    quoted: bool = True,
    header: list[str] | None = None,
    renames: dict[str, str] | None = None,
) -> Table:
    """A CSV/TSV file: UTF-8 with or without BOM, LF, CRLF or lone-CR line ends.

    `header` gives the column names of a file without a header line (a first line that is the
    header anyway is skipped). `renames` maps alternative column names to the canonical ones.
    """
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        lines = [(reader.line_num, row) for row in reader]
    lines = [(n, r) for n, r in lines if any(cell.strip() for cell in r)]
    if not lines:
        raise SourceError(f"{path}: the file is empty")
    names = [c.strip() for c in lines[0][1]]
    if header is not None and not set(header) & set(names):
        names, body = list(header), lines
    else:
        body = lines[1:]
    if renames:
        names = [renames.get(n, n) for n in names]
    rows = []
    for number, cells in body:
        if len(cells) != len(names):
            raise SourceError(f"{path}: line {number}: {len(cells)} fields where the header has {len(names)} ({names})")
        rows.append((number, dict(zip(names, cells))))
    return Table(path, names, rows)


def find_file(root: Path, names: Iterable[str], what: str, required: bool = True) -> Path | None:
    """The first of `names` found in `root` or below it (shallowest first)."""
    for name in names:
        hits = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0]
    if required:
        raise SourceError(f"{root}: no {what} (looked for {', '.join(names)})")
    return None


def int_or_text(value: str) -> int | str | None:
    """A label cell as released: "0" -> 0, "" -> None, anything else verbatim."""
    value = value.strip()
    if value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


# -- images -------------------------------------------------------------------
@dataclass
class Images:
    """Where the image files are: the first of `dirs` holding the file, else the first dir."""

    dirs: list[Path]
    missing: int = 0
    found: int = 0
    _listing: dict[Path, set[str]] = field(default_factory=dict)

    def _names(self, folder: Path) -> set[str]:
        if folder not in self._listing:
            self._listing[folder] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        return self._listing[folder]

    def path(self, relative: str, prefer: tuple[str, ...] = ()) -> str | None:
        """The file `relative` names; `prefer` are sub-folders tried first in each folder (a
        release whose splits re-use file names in separate folders, like MAMI's TRAINING/ and test/)."""
        if not relative or not self.dirs:
            return None
        rel = Path(relative.replace("\\", "/"))
        for folder in self.dirs:
            for sub in (*prefer, ""):
                for candidate in (folder / sub / rel, folder / sub / rel.name):
                    if candidate.name in self._names(candidate.parent):
                        self.found += 1
                        return str(candidate.resolve())
        self.missing += 1
        return str((self.dirs[0] / (prefer[0] if prefer else "") / rel).resolve())


def manifest_row(
    dataset: str, split: str | None, example_id: str, image: str | None, text: str | None, labels: dict
) -> dict:
    return {
        "id": f"{dataset}_{split if split is not None else 'nosplit'}_{example_id}",
        "dataset": dataset,
        "split": split,
        "image_path": image,
        "text_raw": text,
        "labels_raw": labels,
    }


@dataclass(frozen=True)
class Options:
    fine_grained: Path | None = None  # hateful_memes: the fine-grained annotations folder
    test_labels: Path | None = None  # mami: the file holding the test labels


@dataclass
class Converted:
    rows: list[dict]
    ocr: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Adapter = Callable[[Path, "Images", Options], Converted]


@dataclass(frozen=True)
class Dataset:
    """One dataset an adapter module converts: its name (as in label_taxonomy.json), the function
    that reads its release folder, and where the release keeps its images relative to that folder
    when --images is not given."""

    name: str
    adapter: Adapter
    image_dirs: tuple[str, ...] = ()
