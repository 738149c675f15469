"""`pack-examples diff OLD NEW` (also `python -m packer.diff`): what changed between two packs.

Two packs (their Step_3 folders, or their shards folders) are compared by example id through their
catalogs (`shards/samples.parquet`) and failure logs: examples added and removed (with the reason
the other pack dropped or failed them), split moves, every unified label field's transitions per
dataset (`memotion1 abuse_hate: null -> 1: 214`), examples whose text changed and whose image bytes
changed, each with a few example ids. Printed as a table, or `--json` for scripts, or `--html FILE`
with the look of report.html. Exit 0 when the packs hold the same examples with the same labels,
texts and splits; 1 otherwise; 2 when a folder is not a pack.

The catalog's member digests make this a read of two Parquet files; a pack made before the
catalog carried them has its texts and images read back by offset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from .catalog import CATALOG, read_samples
from .config import UNIFIED_FIELDS, InputError, OutputError
from .guard import error_exit, inert
from .remote import RemotePack, failures_from_lines, pack_argument
from .shards import write_atomic

EXAMPLES = 5  # example ids shown per entry
DIFF_MARKER = "<!-- packer diff -->"  # the page's second line: a later diff may replace it


def shards_folder(folder: Path) -> Path:
    """A pack's shards folder: `folder/shards` or `folder` itself, whichever holds the catalog."""
    for candidate in (folder / "shards", folder):
        if (candidate / CATALOG).is_file():
            return candidate
    raise InputError(f"{folder}: not a pack (no shards/{CATALOG}; packs made before packer wrote one: re-pack)")


def failures_of(folder: Path, shards: Path) -> dict[str, str]:
    """id -> `<status>: <reason category>` from the pack's failures.jsonl (beside stats.json)."""
    for path in (shards.parent / "failures.jsonl", folder / "failures.jsonl", shards / "failures.jsonl"):
        if path.is_file():
            return read_failures(path)
    return {}


def read_failures(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        return failures_from_lines(handle)


def load(folder: Path | str, storage_options: str | None = None) -> tuple[pl.DataFrame, dict[str, str]]:
    """A pack's catalog (with text and image digests, read back where the catalog lacks them) and
    its failures by id. A URL is a published pack, read from its bucket."""
    if isinstance(folder, str):
        remote = RemotePack(folder, storage_options)
        return remote.catalog(), remote.failures()
    shards = shards_folder(folder)
    return load_catalog(shards), failures_of(folder, shards)


def load_catalog(shards: Path) -> pl.DataFrame:
    catalog = pl.read_parquet(shards / CATALOG)
    if "text_sha256" not in catalog.columns or "image_sha256" not in catalog.columns:
        digests = {}
        for sample in read_samples(shards, catalog):
            m = sample.members
            digests[(sample.shard, sample.key)] = (
                hashlib.sha256(m.get("txt", b"")).hexdigest(),
                hashlib.sha256(m["jpg"]).hexdigest() if "jpg" in m else None,
            )
        keys = list(zip(catalog["shard"], catalog["key"]))
        catalog = catalog.with_columns(
            text_sha256=pl.Series([digests[k][0] for k in keys], dtype=pl.String),
            image_sha256=pl.Series([digests[k][1] for k in keys], dtype=pl.String),
        )
    return catalog


def shown(value: Any) -> str:
    """A label value as the comparison names it: null, 0, 1, none, [], [black, jewish]."""
    if value is None:
        return "null"
    if isinstance(value, list | pl.Series):
        return "[" + ", ".join(sorted(str(v) for v in value)) + "]"
    return str(value)


def entry(ids: list[str]) -> dict[str, Any]:
    return {"count": len(ids), "examples": sorted(ids)[:EXAMPLES]}


def compare(old_folder: Path | str, new_folder: Path | str, storage_options: str | None = None) -> dict[str, Any]:
    """The comparison of two packs (folders, or URLs of published packs) as a JSON-able dict;
    `same` says whether they hold the same examples, labels, texts and splits."""
    old, old_failed = load(old_folder, storage_options)
    new, new_failed = load(new_folder, storage_options)
    return compare_catalogs(old, old_failed, new, new_failed, str(old_folder), str(new_folder))


def compare_catalogs(
    old: pl.DataFrame,
    old_failed: dict[str, str],
    new: pl.DataFrame,
    new_failed: dict[str, str],
    old_name: str,
    new_name: str,
) -> dict[str, Any]:
    """`compare` on two catalogs and their failures by id (a run compares itself with the pack it
    replaces this way: report.html's "Since the previous pack")."""
    columns = ["id", "dataset", "split", "text_sha256", "image_sha256", *UNIFIED_FIELDS]
    joined = old.select(columns).join(new.select(columns), on="id", how="full", suffix="_new", coalesce=True)
    only_old = joined.filter(pl.col("split_new").is_null())
    only_new = joined.filter(pl.col("split").is_null())
    both = joined.filter(pl.col("split").is_not_null() & pl.col("split_new").is_not_null())

    def by_reason(rows: pl.DataFrame, failures: dict[str, str], missing: str) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for i in rows["id"].to_list():
            groups.setdefault(failures.get(i, missing), []).append(i)
        return {
            "count": rows.height,
            "by_reason": {r: entry(ids) for r, ids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))},
        }

    moves: dict[str, list[str]] = {}
    for i, a, b in both.filter(pl.col("split") != pl.col("split_new")).select("id", "split", "split_new").iter_rows():
        moves.setdefault(f"{a} -> {b}", []).append(i)
    labels: dict[str, dict[str, dict[str, Any]]] = {}
    for field in UNIFIED_FIELDS:
        a, b = pl.col(field), pl.col(f"{field}_new")
        changed = both.filter(~a.eq_missing(b)).select("id", "dataset", field, f"{field}_new")
        per: dict[str, dict[str, list[str]]] = {}
        for i, dataset, before, after in changed.iter_rows():
            per.setdefault(dataset, {}).setdefault(f"{shown(before)} -> {shown(after)}", []).append(i)
        if per:
            labels[field] = {
                d: {t: entry(ids) for t, ids in sorted(ts.items(), key=lambda kv: (-len(kv[1]), kv[0]))}
                for d, ts in sorted(per.items())
            }
    texts = both.filter(~pl.col("text_sha256").eq_missing(pl.col("text_sha256_new")))
    images = both.filter(~pl.col("image_sha256").eq_missing(pl.col("image_sha256_new")))
    result = {
        "old": old_name,
        "new": new_name,
        "examples": {"old": old.height, "new": new.height, "in_both": both.height},
        "added": by_reason(only_new, old_failed, "not in the old pack"),
        "removed": by_reason(only_old, new_failed, "not in the new pack"),
        "split_moves": {k: entry(v) for k, v in sorted(moves.items())},
        "labels": labels,
        "texts_changed": {**entry(texts["id"].to_list()), "by_dataset": counted(texts)},
        "images_changed": {**entry(images["id"].to_list()), "by_dataset": counted(images)},
    }
    result["same"] = not (only_new.height or only_old.height or moves or labels or texts.height)
    return result


def counted(rows: pl.DataFrame) -> dict[str, int]:
    return dict(sorted(rows.group_by("dataset").len().iter_rows()))


def lines(result: dict[str, Any]) -> list[str]:
    """The comparison as a terminal table (every input-derived value shown inertly by the caller)."""
    e = result["examples"]
    out = [
        f"old {result['old']}: {e['old']} examples; new {result['new']}: {e['new']} examples; {e['in_both']} in both",
        "SAME: the same examples, labels, texts and splits" if result["same"] else "DIFFERENT",
    ]
    for kind in ("added", "removed"):
        block = result[kind]
        out.append(f"{kind}: {block['count']}")
        for reason, sub in block["by_reason"].items():
            out.append(f"  {sub['count']:>7}  {reason}  e.g. {', '.join(sub['examples'])}")
    out.append(f"split moves: {sum(m['count'] for m in result['split_moves'].values())}")
    for move, sub in result["split_moves"].items():
        out.append(f"  {sub['count']:>7}  {move}  e.g. {', '.join(sub['examples'])}")
    changes = sum(t["count"] for per in result["labels"].values() for d in per.values() for t in d.values())
    out.append(f"label changes: {changes}")
    for field, per in result["labels"].items():
        for dataset, transitions in per.items():
            for transition, sub in transitions.items():
                out.append(f"  {dataset} {field}: {transition}: {sub['count']}  e.g. {', '.join(sub['examples'])}")
    for kind in ("texts_changed", "images_changed"):
        block = result[kind]
        detail = ", ".join(f"{d} {n}" for d, n in block["by_dataset"].items())
        more = f" ({detail})  e.g. {', '.join(block['examples'])}" if block["count"] else ""
        out.append(f"{kind.replace('_', ' ')}: {block['count']}{more}")
    return out


def html(result: dict[str, Any]) -> str:
    """The comparison as a page with report.html's look."""
    from .report.html import diff_template

    return diff_template().render(result=result, title=f"packer diff: {'same' if result['same'] else 'different'}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pack-examples diff", description="Compare two packs by example id.")
    p.add_argument("old", type=pack_argument, help="the earlier pack (its Step_3 or shards folder, or s3://... URL)")
    p.add_argument("new", type=pack_argument, help="the later pack")
    p.add_argument("--storage-options", default=None, metavar="JSON", help="for s3:// packs (as publish takes)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--html", type=Path, default=None, metavar="FILE", help="also write the comparison as a page")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        result = compare(args.old, args.new, args.storage_options)
    except (InputError, OutputError) as exc:  # OutputError: a bucket that refused or kept failing
        return error_exit(exc)
    if args.html is not None:
        # Never over a file packer did not write (a page of an earlier diff is replaced).
        target = args.html
        if os.path.lexists(target) and (
            target.is_symlink() or not target.is_file() or DIFF_MARKER.encode() not in target.read_bytes()[:200]
        ):
            print(f"error: {inert(args.html)}: exists and is not a page packer's diff wrote", file=sys.stderr)
            return 2
        write_atomic(args.html, html(result).encode("utf-8"))
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=True))
    else:
        print("\n".join(inert(line) for line in lines(result)))
    return 0 if result["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
