"""Publishing's cost, side by side in one run, against a local S3 server (SeaweedFS's `weed mini`,
started here on 127.0.0.1):

1. upload rate (MB/s) of the same pack: `pack-examples publish` (hash, Content-MD5, checks after
   upload, phases, manifest) against a plain upload loop with the same library (botocore
   put_object, the same number of threads, no checks), and against s3fs's and obstore's own bulk
   uploads (the libraries considered for the transfers);
2. wall time of packing `make profile`'s corpus with `--publish` against packing it without
   (alternating, median of --repeat runs each).

    python scripts/bench_publish.py [--images 480] [--workers N] [--repeat 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from profile_throughput import make_corpus, write_manifest  # noqa: E402
from s3server import KEY, SECRET, S3Server, new_bucket, start_server  # noqa: E402

from packer.publish import ROOT_FILES, pack_files, publish  # noqa: E402


def pack_command(manifest: Path, out: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "packer", "--manifest", str(manifest), "--output-dir", str(out / "shards"),
            "--label-taxonomy", str(out / "label_taxonomy.json"), "--splits", str(out / "splits.json"),
            "--workers", str(workers), *extra]  # fmt: skip


def timed_pack(cmd: list[str], out: Path, env: dict) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"pack failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return seconds


def plain_loop(files: dict[str, Path], bucket: str, prefix: str, endpoint: str, jobs: int) -> float:
    """botocore put_object of every file, `jobs` at a time, nothing checked: seconds."""
    from botocore.config import Config
    from botocore.session import get_session

    client = get_session().create_client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
    )  # fmt: skip
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=f"{prefix}/{kv[0]}", Body=kv[1].read_bytes()),
                      files.items()))  # fmt: skip
    return time.perf_counter() - start


def s3fs_put(files: dict[str, Path], bucket: str, prefix: str, endpoint: str) -> float | None:
    try:
        import s3fs
    except ImportError:
        return None
    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=endpoint)
    start = time.perf_counter()
    fs.put([str(p) for p in files.values()], [f"{bucket}/{prefix}/{k}" for k in files])
    return time.perf_counter() - start


def obstore_put(files: dict[str, Path], bucket: str, prefix: str, endpoint: str, jobs: int) -> float | None:
    try:
        import obstore
        from obstore.store import S3Store
    except ImportError:
        return None
    store = S3Store(bucket, endpoint=endpoint, access_key_id=KEY, secret_access_key=SECRET, region="us-east-1",
                    virtual_hosted_style_request=False, client_options={"allow_http": True})  # fmt: skip

    async def run() -> None:
        limit = asyncio.Semaphore(jobs)

        async def one(key: str, path: Path) -> None:
            async with limit:
                await obstore.put_async(store, f"{prefix}/{key}", path.read_bytes())

        await asyncio.gather(*(one(k, p) for k, p in files.items()))

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def corpus_and_server(args: argparse.Namespace, prefix: str) -> tuple[Path, list[Path], Path, S3Server, dict]:
    """The scratch folder (--work, else a temporary one named `prefix`...), the profile corpus
    (--images, cached in --cache), its manifest, a SeaweedFS server on 127.0.0.1 with a bucket
    `bench` (--endpoint: one running already, e.g. a test session's, with a new bucket), and an
    environment whose AWS chain points at it."""
    work = args.work or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    images = make_corpus(args.cache, args.images)
    manifest = write_manifest(work / "manifest.jsonl", images)
    if getattr(args, "endpoint", None):
        server = S3Server(args.endpoint, None, work)
        args.bucket = f"bench-{os.getpid()}"
    else:
        server = start_server(work / "seaweedfs")
        args.bucket = "bench"
    new_bucket(server, args.bucket)
    return work, images, manifest, server, {**os.environ, **server.env()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=480, help="distinct corpus images (each written 3 times)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--jobs", type=int, default=8, help="uploads at once, for every library")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "profile-corpus")
    p.add_argument("--no-libraries", action="store_true", help="leave out the s3fs and obstore uploads")
    p.add_argument("--endpoint", default=None, help="an S3 server running already (its credentials: the AWS chain)")
    args = p.parse_args()
    work, images, manifest, server, env = corpus_and_server(args, "bench-publish-")
    os.environ.update(server.env())
    try:
        out = work / "Step_3"
        # 2. pack with and without --publish, alternating
        plain, with_publish = [], []
        for i in range(args.repeat):
            plain.append(timed_pack(pack_command(manifest, out, args.workers), out, env))
            cmd = pack_command(manifest, out, args.workers, "--publish", f"s3://{args.bucket}/during{i}")
            with_publish.append(timed_pack(cmd, out, env))
        # 1. upload rates of the last pack's files
        files = pack_files(out / "shards", {name: out / name for name in ROOT_FILES})
        size = sum(p.stat().st_size for p in files.values())
        rates: dict[str, list[float]] = {"packer publish": [], "botocore loop": [], "s3fs put": [], "obstore put": []}
        endpoint = server.endpoint
        if not args.no_libraries:  # each library's first uploads (sessions, a first burst) are not timed
            s3fs_put(files, args.bucket, "warm-s3fs", endpoint)
            obstore_put(files, args.bucket, "warm-obstore", endpoint, args.jobs)
        for i in range(args.repeat):
            with contextlib.redirect_stdout(io.StringIO()):
                start = time.perf_counter()
                publish(out, f"s3://{args.bucket}/cli{i}", jobs=args.jobs)
                rates["packer publish"].append(size / (time.perf_counter() - start) / 1e6)
            timings = {"botocore loop": plain_loop(files, args.bucket, f"loop{i}", endpoint, args.jobs)}
            if not args.no_libraries:
                timings["s3fs put"] = s3fs_put(files, args.bucket, f"s3fs{i}", endpoint)
                timings["obstore put"] = obstore_put(files, args.bucket, f"obs{i}", endpoint, args.jobs)
            for name, seconds in timings.items():
                if seconds is not None:
                    rates[name].append(size / seconds / 1e6)
    finally:
        server.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results = {
        "corpus_images": len(images),
        "workers": args.workers,
        "objects": len(files),
        "megabytes": round(size / 1e6, 1),
        "upload_mb_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items() if v},
        "pack_seconds": round(statistics.median(plain), 2),
        "pack_with_publish_seconds": round(statistics.median(with_publish), 2),
    }
    base = results["upload_mb_per_s"]["botocore loop"]
    results["publish_vs_plain_loop"] = round(results["upload_mb_per_s"]["packer publish"] / base, 3)
    results["pack_with_publish_vs_pack"] = round(results["pack_with_publish_seconds"] / results["pack_seconds"], 3)
    print(f"{len(files)} objects, {results['megabytes']} MB (a pack of {len(images)} images, {args.workers} workers)")
    for name, rate in results["upload_mb_per_s"].items():
        print(f"  {name:15s} {rate:8.1f} MB/s   {rate / base:5.2f}x the plain botocore loop")
    print(f"  pack              {results['pack_seconds']:8.2f} s")
    print(f"  pack --publish    {results['pack_with_publish_seconds']:8.2f} s   "
          f"{results['pack_with_publish_vs_pack']:5.3f}x the pack alone")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
