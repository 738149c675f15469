"""The image stage reading `make profile`'s corpus from a bucket against reading it from disk.

One run, side by side, alternating: the corpus packed from its files (a local manifest), then
from a local S3 server (SeaweedFS on 127.0.0.1, the same files uploaded as objects, the manifest
read from the bucket too), `--repeat` times each. Printed: the image stage's rate (images per
second, from stats.json's `images_and_shards` seconds) and the whole pack's wall time of each,
and their ratios (bucket / disk). Both packs must be the same bytes: their shards are compared.
The server runs on the same cores as the pack, so the ratio also pays for the server's own work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_publish import corpus_and_server  # noqa: E402
from profile_throughput import write_manifest  # noqa: E402


def pack_command(manifest: str, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "packer", "--manifest", manifest, "--output-dir", str(out / "shards"),
            "--label-taxonomy", str(out / "label_taxonomy.json"), "--splits", str(out / "splits.json"),
            "--workers", str(workers)]  # fmt: skip


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds these processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "weed mini"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def timed_pack(cmd: list[str], out: Path, env: dict) -> tuple[float, float, dict[str, str], float]:
    """Wall seconds, image-stage seconds, the shards' digests of one pack into a fresh `out`, and
    the CPU seconds the S3 server used meanwhile."""
    shutil.rmtree(out, ignore_errors=True)
    pids = server_pids()
    server_before = cpu_seconds(pids)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    server = cpu_seconds(pids) - server_before
    if done.returncode not in (0, 1):
        raise SystemExit(f"pack failed (exit {done.returncode}): {done.stderr[-2000:]}")
    stage = json.loads((out / "stats.json").read_text())["seconds"]["images_and_shards"]
    shards = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*.tar")}
    return wall, stage, shards, server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=480, help="distinct corpus images (each written 3 times)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "profile-corpus")
    p.add_argument("--endpoint", default=None, help="an S3 server running already (its credentials: the AWS chain)")
    args = p.parse_args()
    work, images, disk_manifest, server, env = corpus_and_server(args, "bench-inputs-")
    try:
        client = server.client()

        def put(path: Path) -> None:
            client.put_object(Bucket=args.bucket, Key=f"corpus/{path.name}", Body=path.read_bytes())

        with ThreadPoolExecutor(8) as threads:
            list(threads.map(put, images))
        urls = [Path(f"/corpus/{path.name}") for path in images]
        bucket_manifest = write_manifest(work / "bucket.jsonl", urls)
        text = bucket_manifest.read_text().replace('"/corpus/', f'"s3://{args.bucket}/corpus/')
        client.put_object(Bucket=args.bucket, Key="manifest.jsonl", Body=text.encode())
        out = work / "Step_3"
        runs: dict[str, list[tuple[float, float, float]]] = {"disk": [], "bucket": []}
        shards: dict[str, dict[str, str]] = {}
        for _ in range(args.repeat):
            for name, manifest in (("disk", str(disk_manifest)), ("bucket", f"s3://{args.bucket}/manifest.jsonl")):
                wall, stage, shards[name], server_cpu = timed_pack(pack_command(manifest, out, args.workers), out, env)
                runs[name].append((wall, stage, server_cpu))
    finally:
        server.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if shards["disk"] != shards["bucket"] or not shards["disk"]:
        raise SystemExit("the pack from the bucket is not the pack from disk: its shards differ")
    size = sum(p.stat().st_size for p in images)
    results: dict[str, object] = {"corpus_images": len(images), "megabytes": round(size / 1e6, 1)}
    results["workers"] = args.workers
    for name, measured in runs.items():
        stage = statistics.median(s for _, s, _ in measured)
        results[name] = {
            "image_stage_seconds": round(stage, 2),
            "images_per_second": round(len(images) / stage, 1),
            "pack_seconds": round(statistics.median(w for w, _, _ in measured), 2),
            "server_cpu_seconds": round(statistics.median(c for _, _, c in measured), 2),
        }
    disk, bucket = results["disk"], results["bucket"]
    assert isinstance(disk, dict) and isinstance(bucket, dict)
    results["image_stage_bucket_vs_disk"] = round(bucket["images_per_second"] / disk["images_per_second"], 3)
    results["pack_bucket_vs_disk"] = round(disk["pack_seconds"] / bucket["pack_seconds"], 3)
    print(f"{len(images)} images, {results['megabytes']} MB, {args.workers} workers, median of {args.repeat}")
    for name in runs:
        r = results[name]
        assert isinstance(r, dict)
        print(f"  {name:7s} image stage {r['images_per_second']:7.1f} images/s ({r['image_stage_seconds']:.2f} s)   "
              f"pack {r['pack_seconds']:.2f} s   server CPU {r['server_cpu_seconds']:.2f} s")  # fmt: skip
    print(f"  bucket / disk: image stage rate {results['image_stage_bucket_vs_disk']:.3f}x, "
          f"whole pack rate {results['pack_bucket_vs_disk']:.3f}x; shards identical")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
