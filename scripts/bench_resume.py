"""A pack killed (SIGKILL) at about 80% of its images, then resumed: the resumed run's wall time as a
share of an uninterrupted run's (target: at most 30%), measured side by side in one run, and the
resumed output checked byte for byte against the uninterrupted one.

The corpus is `make profile`'s (600 meme-like images, cached in .cache/profile/corpus), each used
--repeat times under other ids and captions, packed with shards of --shard-maxcount examples
(default: a 36th of the pack, the ratio of 5000-example shards in a 180k-example pack).

    python scripts/bench_resume.py [--repeat 8] [--workers 2] [--at 0.8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from profile_throughput import MAMI_SUBTYPES, make_corpus  # noqa: E402

from packer.report.stats import output_digests as digests  # noqa: E402


def manifest(path: Path, images: list[Path], repeat: int) -> int:
    rows = [
        {
            "id": f"mami_train_{r}_{i:05d}",
            "dataset": "mami",
            "split": "train",
            "image_path": str(p),
            "text_raw": f"caption {r} of {p.stem}",
            "labels_raw": {"misogynous": int(i % 3 == 0), **dict.fromkeys(MAMI_SUBTYPES, 0)},
        }
        for r in range(repeat)
        for i, p in enumerate(images)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def command(manifest_path: Path, out: Path, workers: int, maxcount: int) -> list[str]:
    return [sys.executable, "-m", "packer", "--manifest", str(manifest_path), "--output-dir", str(out / "shards"),
            "--label-taxonomy", str(out / "label_taxonomy.json"), "--splits", str(out / "splits.json"),
            "--workers", str(workers), "--shard-maxcount", str(maxcount)]  # fmt: skip


def consumed(out: Path) -> int:
    path = out / "shards" / ".run" / "journal.jsonl"
    if not path.exists():
        return 0
    total = 0
    for line in path.read_text().splitlines():
        if line.startswith('{"chunk"'):
            try:
                total += len(json.loads(line)["chunk"]["outcomes"])
            except ValueError:
                pass
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--at", type=float, default=0.8, help="kill when this share of the samples is encoded")
    p.add_argument("--shard-maxcount", type=int, default=None)
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "profile")
    args = p.parse_args()
    images = make_corpus(args.cache / "corpus", 480)  # make profile's 1,440 files
    work = ROOT / ".cache" / "bench-resume"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    total = manifest(work / "manifest.jsonl", images, args.repeat)
    maxcount = args.shard_maxcount or max(1, total // 36)
    out = work / "Step_3"
    cmd = command(work / "manifest.jsonl", out, args.workers, maxcount)

    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    full = time.perf_counter() - start
    expected = digests(out)
    out.rename(work / "uninterrupted")

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    while consumed(out) < args.at * total:
        if proc.poll() is not None:
            sys.exit("the run ended before the kill point")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after, done = time.perf_counter() - start, consumed(out)

    start = time.perf_counter()
    resumed_run = subprocess.run(cmd, check=True, capture_output=True, text=True)
    resumed = time.perf_counter() - start
    identical = digests(out) == expected
    kept = next((line for line in resumed_run.stdout.splitlines() if line.startswith("packer: resuming")), "no resume")

    print(f"{total} examples ({len(images)} images x {args.repeat}), {args.workers} workers, shards of {maxcount}")
    print(f"uninterrupted run: {full:6.2f} s")
    print(f"killed after:      {killed_after:6.2f} s, {done} of {total} samples encoded ({100 * done / total:.0f}%)")
    print(f"resumed run:       {resumed:6.2f} s  ({kept})")
    verdict = "PASS" if resumed / full <= 0.30 else "MISS"
    print(f"resumed / uninterrupted: {resumed / full:.2f} (target <= 0.30): {verdict}")
    print(f"resumed output byte-identical to the uninterrupted run's (timings aside): {identical}")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
