"""`python -m packer.sources`: one dataset's release folder -> a Step-2 manifest (and OCR file)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from ..config import InputError
from ..guard import inert
from .common import Converted, Images, Options, SourceError


def convert(dataset: str, raw: Path, images: list[Path] | None = None, options: Options | None = None) -> Converted:
    """Convert one dataset's release folder; `images` are the folders to look for image files in."""
    from . import DATASETS

    options = options or Options()
    if dataset not in DATASETS:
        raise SourceError(f"unknown dataset {dataset!r}: one of {sorted(DATASETS)}")
    if not raw.is_dir():
        raise SourceError(f"{raw}: not a folder")
    dirs = images if images else [raw / d for d in DATASETS[dataset].image_dirs]
    locator = Images(dirs)
    result = DATASETS[dataset].adapter(raw, locator, options)
    # A release that lists an example twice (Memotion 1.0 does) keeps both rows under distinct ids;
    # packing then drops the copy as an exact duplicate, with its reason.
    seen: Counter[str] = Counter()
    repeats = []
    for row in result.rows:
        seen[row["id"]] += 1
        if seen[row["id"]] > 1:
            row["id"] = f"{row['id']}#{seen[row['id']]}"
            repeats.append(row["id"])
    if repeats:
        result.notes.append(f"{len(repeats)} rows repeat an earlier row's id, renamed: {repeats[:3]}")
    if locator.missing:
        result.notes.append(f"{locator.missing} of {locator.missing + locator.found} image files not found")
    return result


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m packer.sources", description="Turn a dataset's original release files into a Step-2 manifest."
    )
    from . import DATASETS

    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("raw_dir", type=Path, help="the folder holding the release's annotation files")
    parser.add_argument("--images", type=Path, action="append", help="a folder with the image files (repeatable)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the manifest to write (JSON lines)")
    parser.add_argument(
        "--ocr-out", type=Path, help="OCR JSONL for datasets that ship OCR (default: ocr.jsonl beside -o)"
    )
    parser.add_argument("--fine-grained", type=Path, help="hateful_memes: the fine-grained annotations folder")
    parser.add_argument("--test-labels", type=Path, help="mami: the file with the test labels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = Options(fine_grained=args.fine_grained, test_labels=args.test_labels)
        result = convert(args.dataset, args.raw_dir, args.images, options)
    except InputError as exc:
        print(f"error: {inert(exc)}", file=sys.stderr)
        return 2
    write_jsonl(args.output, result.rows)
    splits = Counter(str(r["split"]) for r in result.rows)
    wrote = f"{args.dataset}: {len(result.rows)} rows -> {args.output} ({dict(sorted(splits.items()))})"
    print(inert(wrote), file=sys.stderr)
    if result.ocr:
        ocr_out = args.ocr_out or args.output.with_name("ocr.jsonl")
        write_jsonl(ocr_out, result.ocr)
        print(f"{args.dataset}: {len(result.ocr)} OCR rows -> {ocr_out}", file=sys.stderr)
    for note in result.notes:
        print(f"  {inert(note)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
