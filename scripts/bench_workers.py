"""Pack the same manifest with 1, 2, ... workers side by side; print examples/s and the ratios.

python scripts/bench_workers.py --manifest sample/Step_2/data_manifest.jsonl --ocr sample/Step_2/ocr.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

from packer.cli import main as pack


def run_once(manifest: Path, ocr: Path | None, workers: int, extra: list[str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        args = [
            "--manifest",
            str(manifest),
            "--output-dir",
            str(out / "shards"),
            "--label-taxonomy",
            str(out / "tax.json"),
            "--splits",
            str(out / "splits.json"),
            "--workers",
            str(workers),
            *extra,
        ]
        if ocr:
            args += ["--ocr", str(ocr)]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = pack(args)
        elapsed = time.perf_counter() - start
        if code == 2:
            raise SystemExit("packing failed with an input error")
        import json

        packed = json.loads((out / "stats.json").read_text())["packed_examples"]
        shutil.rmtree(out / "shards", ignore_errors=True)
    return elapsed, packed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=Path("sample/Step_2/data_manifest.jsonl"))
    p.add_argument("--ocr", type=Path, default=Path("sample/Step_2/ocr.jsonl"))
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=2, help="best of N runs per worker count")
    args, extra = p.parse_known_args()
    results = {}
    for workers in range(1, args.max_workers + 1):
        runs = [run_once(args.manifest, args.ocr, workers, extra) for _ in range(args.repeat)]
        elapsed, packed = min(runs)
        results[workers] = packed / elapsed
        print(
            f"workers={workers}: {packed} examples in {elapsed:.2f} s = {results[workers]:.1f} examples/s (whole run)"
        )
    for workers, rate in results.items():
        print(f"speed-up {workers} vs 1 worker: {rate / results[1]:.2f}x  efficiency {rate / results[1] / workers:.2f}")


if __name__ == "__main__":
    main()
