"""How a pack's time and memory grow with the manifest: text-only manifests of `--text-rows` rows
and a manifest of `--image-rows` small PNG memes, each packed with `--workers` workers, in one run.

Printed as one table: rows, wall seconds, each stage's seconds (stats.json), and peak RSS: the
parent's own (its VmHWM, read from /proc while it runs), the largest worker's, and the largest
sum over the whole process tree at any sample (every 0.1 s). The rows are OLID-like posts with
unique ids and texts; the images are 64x64 PNGs, each unique.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

SAMPLE_SECONDS = 0.1


def write_text_manifest(path: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = ["user", "post", "they", "people", "never", "always", "this", "that", "go", "back", "home", "love"]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            text = f"@USER {' '.join(rng.choice(words) for _ in range(12))} #{i}"
            label = {"subtask_a": "OFF" if i % 3 == 0 else "NOT"}
            row = {"id": f"olid_train_{i}", "dataset": "olid", "split": "train", "image_path": None,
                   "text_raw": text, "labels_raw": label}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    return path


def write_image_manifest(path: Path, folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    gradient = bytes((x + y) % 256 for y in range(64) for x in range(64) for _ in range(3))
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            image = folder / f"m{i}.png"
            if not image.exists():
                pixels = i.to_bytes(8, "big") + gradient[8:]  # a gradient, unique by its first pixels
                buffer = io.BytesIO()
                Image.frombytes("RGB", (64, 64), pixels).save(buffer, format="PNG", compress_level=1)
                image.write_bytes(buffer.getvalue())
            labels = {"misogynous": i % 2, "shaming": 0, "stereotype": 0, "objectification": 0, "violence": 0}
            row = {"id": f"mami_train_{i}", "dataset": "mami", "split": "train", "image_path": str(image),
                   "text_raw": f"meme {i}", "labels_raw": labels}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    return path


def tree(pid: int) -> list[int]:
    """The process and its descendants (by /proc's children lists)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured_pack(cmd: list[str]) -> dict:
    """Run a pack, sampling its process tree: wall seconds and peak RSS (MB) of the parent, the
    largest worker and the tree's sum."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"parent": 0, "worker": 0, "total": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pids = tree(proc.pid)
            peaks["parent"] = max(peaks["parent"], status_kb(proc.pid, "VmHWM"))
            workers = [status_kb(p, "VmRSS") for p in pids[1:]]
            peaks["worker"] = max([peaks["worker"], *workers])
            peaks["total"] = max(peaks["total"], status_kb(proc.pid, "VmRSS") + sum(workers))
            time.sleep(SAMPLE_SECONDS)

    start = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pack failed (exit {proc.returncode}): {stderr.decode()[-2000:]}")
    return {"wall_seconds": round(wall, 2), **{f"{k}_peak_mb": round(v / 1024) for k, v in peaks.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text-rows", default="100000,1000000", help="comma-separated sizes of the text-only manifests")
    p.add_argument("--image-rows", type=int, default=200000, help="rows of the image manifest (0: none)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = [
        (f"text {int(n):,}", write_text_manifest(work / f"text-{n}.jsonl", int(n))) for n in args.text_rows.split(",")
    ]
    if args.image_rows:
        manifest = write_image_manifest(work / "images.jsonl", work / "images", args.image_rows)
        cases.append((f"images {args.image_rows:,}", manifest))
    results = []
    try:
        for name, manifest in cases:
            out = work / "Step_3"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "packer", "--manifest", str(manifest), "--output-dir", str(out / "shards"),
                   "--label-taxonomy", str(out / "label_taxonomy.json"), "--splits", str(out / "splits.json"),
                   "--workers", str(args.workers)]  # fmt: skip
            measured = measured_pack(cmd)
            seconds = json.loads((out / "stats.json").read_text())["seconds"]
            results.append({"case": name, **measured, "stages": seconds})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    stages = ["load", "plan", "images_and_shards", "catalog", "report"]
    print(f"{'case':>16} {'wall s':>8} " + " ".join(f"{s[:10]:>10}" for s in stages) +
          f" {'parent MB':>10} {'worker MB':>10} {'all MB':>8}")  # fmt: skip
    for r in results:
        print(f"{r['case']:>16} {r['wall_seconds']:8.1f} " + " ".join(f"{r['stages'].get(s, 0):10.1f}" for s in stages)
              + f" {r['parent_peak_mb']:10d} {r['worker_peak_mb']:10d} {r['total_peak_mb']:8d}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
