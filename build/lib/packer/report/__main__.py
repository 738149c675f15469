"""python -m packer.report Step_3: rebuild report.html of an earlier pack, without repacking."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import InputError
from ..guard import check_owned_file, inert
from .html import build_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m packer.report", description=__doc__)
    p.add_argument("folder", type=Path, help="the output folder: stats.json, failures.jsonl, shards/")
    p.add_argument("--shards", type=Path, default=None, help="the shard folder (default: <folder>/shards)")
    p.add_argument("--sample", type=int, default=48, help="examples per contact sheet")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.folder / "stats.json").is_file():
        where = inert(args.folder / "stats.json")
        print(f"error: {where}: not found (is this a packer output folder?)", file=sys.stderr)
        return 2
    try:
        check_owned_file(args.folder / "report.html", "report", "folder")
    except InputError as exc:
        print(f"error: {inert(exc)}", file=sys.stderr)
        return 2
    print(build_report(args.folder, args.shards, args.sample, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
