"""report.html of a big pack: its size and build time, beside those of the pilot it was grown from,
and reading samples by offset (shards/samples.parquet) against scanning tar headers (a pack
without the catalog), side by side in one run.

Packs the built-in sample, then replaces its shards with N synthetic examples (default 300,000,
70% with an image: the pilot's own packed JPEGs re-used, 5000 per shard) with their catalog, and
plants 8 leakage pairs (the report shows 4) whose samples sit in the last shards of val and test (the scan's worst
case). The report samples: its time must not grow with the pack.

    python scripts/bench_report.py [--examples 300000] [--work .cache/bench-report] [--pilot STEP_3]

--pilot grows a copy of an earlier pack of the built-in sample instead of packing it again (the
tests pass the pilot their session already packed).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import webdataset as wds

from packer.catalog import CATALOG, COLUMNS, write_catalog
from packer.cli import main as pack
from packer.report.html import build_report
from packer.shards import ShardWriter, sample_bytes, write_shard_index

ROOT = Path(__file__).resolve().parents[1]


def pilot(work: Path, earlier: Path | None = None) -> Path:
    step2, out = work / "Step_2", work / "pilot" / "Step_3"
    if earlier is not None:  # a copy: the pilot's own report is rebuilt and timed below
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(earlier, out, symlinks=True)
        return out
    subprocess.run([sys.executable, str(ROOT / "scripts/make_sample_data.py"), "--out", str(step2)], check=True)
    shutil.rmtree(out, ignore_errors=True)
    args = ["--manifest", str(step2 / "data_manifest.jsonl"), "--ocr", str(step2 / "ocr.jsonl")]
    args += ["--output-dir", str(out / "shards"), "--label-taxonomy", str(out / "label_taxonomy.json")]
    pack([*args, "--splits", str(out / "splits.json")])
    return out


def grow(small: Path, big: Path, examples: int, per_shard: int = 5000) -> None:
    """A copy of `small` whose shards hold `examples` synthetic samples made of its own."""
    shutil.rmtree(big, ignore_errors=True)
    big.mkdir(parents=True)
    for name in ("stats.json", "failures.jsonl", "splits.json"):
        shutil.copy(small / name, big / name)
    # The image and text series (a grown pack of those is what the report's reading is measured on).
    urls = sorted(glob.glob(str(small / "shards/*/shard-*.tar")) + glob.glob(str(small / "shards/*/text-*.tar")))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    images = [s for s in samples if "jpg" in s]
    texts = [s for s in samples if "jpg" not in s]
    stats = json.loads((small / "stats.json").read_text())
    sizes = {
        "train": int(examples * 0.8),
        "val": examples // 10,
        "test": examples - int(examples * 0.8) - examples // 10,
    }
    rows = []
    for split, n in sizes.items():
        folder = big / "shards" / split
        listed, entry = [], {k: 0 for k in stats["splits"][split]}
        for series, pool, count in (("shard", images, int(n * 0.7)), ("text", texts, n - int(n * 0.7))):
            source = itertools.cycle(pool)
            for index, start in enumerate(range(0, count, per_shard)):
                writer = ShardWriter(folder, index, series)
                for i in range(start, min(count, start + per_shard)):
                    s = next(source)
                    doc = json.loads(s["json"])
                    key = f"{split}_{series}_{i:07d}"
                    doc.update(id=key, key=key, split=split)
                    members = {k: s[k] for k in ("jpg", "txt") if k in s} | {"json": json.dumps(doc).encode()}
                    data = sample_bytes(key, members)
                    labels = doc["labels"]
                    rows.append(
                        (
                            key,
                            key,
                            doc["dataset"],
                            split,
                            doc["source_split"],
                            "images" if series == "shard" else "text",
                            f"{split}/{writer.path.name}",
                            writer.count,
                            writer.size,
                            len(data),
                            doc["lang"],
                            labels["abuse_hate"],
                            labels["offensive"],
                            labels["target_type"],
                            labels["target_group"],
                        )
                    )
                    writer.add(data, len(data), "")  # the digest only names a real pack (the card)
                size = writer.close()
                listed.append((writer.path.name, writer.count))
                kind = "image" if series == "shard" else "text"
                entry["examples"] += writer.count
                entry[f"{kind}_examples"] += writer.count
                entry["shards"] += 1
                entry[f"{kind}_shards"] += 1
                entry["bytes"] += size
        write_shard_index(folder, listed)
        stats["splits"][split] = entry
    schema = dict(
        zip(
            COLUMNS,
            [pl.String] * 7
            + [pl.Int32, pl.Int64, pl.Int64, pl.String, pl.Int8, pl.Int8, pl.String, pl.List(pl.String)],
        )
    )
    write_catalog(big / "shards", pl.DataFrame(rows, schema=schema, orient="row"))
    # 8 same-text pairs between the last samples of train's, val's and test's text series.
    last = {split: f"{split}_text_{sizes[split] - int(sizes[split] * 0.7) - 1 - j:07d}" for split in sizes for j in [0]}
    examples = [
        [f"{last['val'][:-7]}{int(last['val'][-7:]) - j:07d}", f"{last['test'][:-7]}{int(last['test'][-7:]) - j:07d}"]
        for j in range(8)
    ]
    # Only the planted pairs are shown: the pilot's own pairs (its clips') have no samples in the grown pack.
    leak = stats["leakage"]
    for kind in ("images", "near_duplicate_images"):
        leak[kind] = {k: v for k, v in leak[kind].items() if not (isinstance(v, dict) and "by_dataset" in v)}
    stats["leakage"]["texts"] = {"val/test": {"shared": 8, "by_dataset": {"olid": {"shared": 8, "examples": examples}}}}
    stats["packed_examples"] = examples
    (big / "stats.json").write_text(json.dumps(stats, indent=2))


def timed(folder: Path) -> tuple[float, float]:
    start = time.perf_counter()
    path = build_report(folder)
    return time.perf_counter() - start, path.stat().st_size / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--examples", type=int, default=300_000)
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-report")
    p.add_argument("--pilot", type=Path, help="grow a copy of this pack of the built-in sample (default: pack it)")
    args = p.parse_args()
    small = pilot(args.work, args.pilot)
    big = args.work / "big" / "Step_3"
    start = time.perf_counter()
    grow(small, big, args.examples)
    print(f"grew {args.examples} examples in {time.perf_counter() - start:.1f} s")
    (s_time, s_mb), (b_time, b_mb) = timed(small), timed(big)
    page = (big / "report.html").read_text(encoding="utf-8")
    shown, missing = 2 * page.count('class="pair"'), page.count("not found in the shards")
    catalog = big / "shards" / CATALOG
    catalog.rename(catalog.with_suffix(".aside"))
    try:
        scan_time, _ = timed(big)  # no catalog: the samples are found by scanning tar headers
    finally:
        catalog.with_suffix(".aside").rename(catalog)
    print(f"pilot report:  {s_time:6.2f} s  {s_mb:6.2f} MB")
    print(
        f"{args.examples} report, read by offset: {b_time:6.2f} s  {b_mb:6.2f} MB"
        f"  ({shown - missing} of {shown} pair samples shown found)"
    )
    print(f"{args.examples} report, tar headers scanned: {scan_time:6.2f} s")
    print(f"by offset vs scanning: {scan_time / b_time:.1f}x faster")
    print(f"big / pilot: time {b_time / s_time:.2f}x, size {b_mb / s_mb:.2f}x (targets: seconds, under ~20 MB)")


if __name__ == "__main__":
    main()
