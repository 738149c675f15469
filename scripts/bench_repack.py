"""The relabel loop's cost: a fresh pack against a re-pack that reuses the earlier pack's images,
after a label-only change (MAMI's target group for misogynous memes) and after a text-rule change
(--ocr-min-conf), side by side in one run, on a corpus of at least 10,000 images and on `make
profile`'s 1,440-file corpus. Each run starts from a copy of the same earlier pack at the same
path, so the fresh run (--no-reuse) and the reusing one write comparable outputs: the script checks
that they are byte-identical (stats.json less its timings and reuse counts). The copy is synced
to disk before each timed run, so that neither pays for writing it back.

    python scripts/bench_repack.py [--images 10000] [--workers 2] [--work DIR] [--no-profile] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from profile_throughput import MAMI_SUBTYPES, cached_corpus, make_corpus, meme  # noqa: E402

from packer.report.stats import output_digests  # noqa: E402


def small_corpus(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` meme-like images of 480-800 px (JPEG, a sixth PNG), cached."""
    listing = folder / "files.json"
    cached = cached_corpus(listing, count)
    if cached is not None:
        return cached
    rng = random.Random(seed)
    names = []
    for i in range(count):
        image = meme(rng, (rng.randint(480, 800), rng.randint(480, 800)))
        out = io.BytesIO()
        suffix = ".png" if i % 6 == 0 else ".jpg"
        image.save(out, "PNG" if suffix == ".png" else "JPEG", quality=90)
        names.append(f"m{i:06d}{suffix}")
        (folder / names[-1]).write_bytes(out.getvalue())
    listing.write_text(json.dumps(names))
    return [folder / n for n in names]


def write_inputs(step2: Path, images: list[Path]) -> None:
    rows, ocr = [], []
    for i, p in enumerate(images):
        row_id = f"mami_train_{i:06d}"
        labels = {"misogynous": int(i % 3 == 0), **dict.fromkeys(MAMI_SUBTYPES, 0)}
        rows.append({"id": row_id, "dataset": "mami", "split": "train", "image_path": str(p),
                     "text_raw": f"caption of {p.stem}", "labels_raw": labels})  # fmt: skip
        lines = [{"text": f"top text {i}", "conf": 0.95, "bbox": [0, 0, 100, 20]},
                 {"text": f"faint text {i}", "conf": 0.6 + (i % 4) * 0.1, "bbox": [0, 40, 100, 60]}]  # fmt: skip
        ocr.append({"id": row_id, "ocr": {"lines": lines}})
    step2.mkdir(parents=True, exist_ok=True)
    (step2 / "data_manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (step2 / "ocr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ocr))


def pack(root: Path, workers: int, *extra: str) -> float:
    step2, out = root / "Step_2", root / "Step_3"
    cmd = [sys.executable, "-m", "packer", "--manifest", str(step2 / "data_manifest.jsonl"),
           "--ocr", str(step2 / "ocr.jsonl"), "--output-dir", str(out / "shards"),
           "--label-taxonomy", str(out / "label_taxonomy.json"), "--splits", str(out / "splits.json"),
           "--workers", str(workers), *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"pack failed: {done.stderr[-2000:]}")
    return seconds


def label_change(out: Path) -> None:
    path = out / "label_taxonomy.json"
    doc = json.loads(path.read_text())
    doc["datasets"]["mami"]["labels"]["target_group"]["map"]["1"] = ["gender"]
    path.write_text(json.dumps(doc, indent=1))


def measure(name: str, root: Path, images: list[Path], workers: int, repeat: int) -> None:
    write_inputs(root / "Step_2", images)
    earlier = root / "earlier"
    if not (earlier / "stats.json").is_file():
        shutil.rmtree(root / "Step_3", ignore_errors=True)
        pack(root, workers)
        shutil.rmtree(earlier, ignore_errors=True)
        (root / "Step_3").rename(earlier)
    out = root / "Step_3"
    results = {}
    for change, edit, flags in (
        ("label-only change", label_change, ()),
        ("text-rule change (--ocr-min-conf 0.75)", None, ("--ocr-min-conf", "0.75")),
    ):
        timings, digests = {}, {}
        # Fresh and re-pack alternate, `repeat` times each; each is the median of its runs.
        runs: dict[str, list[float]] = {"fresh (--no-reuse)": [], "re-pack (reuse)": []}
        for _ in range(repeat):
            for mode, extra in (("fresh (--no-reuse)", ("--no-reuse",)), ("re-pack (reuse)", ())):
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(earlier, out)
                if edit:
                    edit(out)
                os.sync()  # the copy's writeback is not the pack's cost: neither run pays it
                runs[mode].append(pack(root, workers, *flags, *extra))
                digests[mode] = output_digests(out)
                stats = json.loads((out / "stats.json").read_text())
        timings = {mode: statistics.median(seconds) for mode, seconds in runs.items()}
        reuse = stats["reuse"]
        same = digests["fresh (--no-reuse)"] == digests["re-pack (reuse)"]
        ratio = timings["re-pack (reuse)"] / timings["fresh (--no-reuse)"]
        results[change] = ratio
        print(
            f"  {change}: fresh {timings['fresh (--no-reuse)']:.1f} s, re-pack {timings['re-pack (reuse)']:.1f} s "
            f"({reuse['reused']} reused, {reuse['encoded']} encoded): {ratio:.3f} of fresh; byte-identical: {same}"
        )
        if repeat > 1:
            print("    runs: " + "; ".join(f"{m} " + ", ".join(f"{t:.1f}" for t in ts) for m, ts in runs.items()))
    print(f"{name}: " + ", ".join(f"{c} {r:.3f}" for c, r in results.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-repack")
    p.add_argument("--no-profile", action="store_true", help="skip the 1,440-file profile corpus")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; medians are compared")
    args = p.parse_args()
    start = time.perf_counter()
    images = small_corpus(args.work / f"corpus-{args.images}", args.images)
    print(f"{len(images)} images of 480-800 px ready in {time.perf_counter() - start:.0f} s")
    print(f"{len(images)}-image corpus, {args.workers} workers:")
    measure(f"{len(images)} images", args.work / f"run-{args.images}", images, args.workers, args.repeat)
    if not args.no_profile:
        profile = make_corpus(ROOT / ".cache" / "profile" / "corpus", 480)
        print(f"profile corpus ({len(profile)} files of 1536x2048), {args.workers} workers:")
        measure("profile corpus", args.work / "run-profile", profile, args.workers, args.repeat)


if __name__ == "__main__":
    main()
