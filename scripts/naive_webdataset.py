"""The baseline packer is measured against: the script a user writes from the webdataset docs.

    python scripts/naive_webdataset.py IMAGE_LIST OUT_DIR [--processes N]

IMAGE_LIST is a text file with one image path per line. Each image is decoded in full, converted
to RGB, resized to 384x384 (bicubic, Pillow's default) and handed to ShardWriter, which encodes
it (JPEG, quality 100, webdataset's default) and writes the tar. No draft decode. With
--processes N, a multiprocessing.Pool of N processes each writes the shards of its own contiguous
slice of the list (`naive-<p>-%06d.tar`), as a user parallelises it.

Needs only Pillow and webdataset, so `make profile` can run it twice: with packer's pillow-simd
and in a venv holding Pillow from PyPI, which is what `pip install webdataset pillow` gives a
user. Prints one JSON line: the Pillow version, images, seconds in all and per file suffix.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections import defaultdict
from pathlib import Path

import PIL
import webdataset as wds
from PIL import Image

SIZE = 384


def write_slice(job: tuple[list[str], str, int, int]) -> dict[str, float]:
    """Pack `paths` (the first with key number `first`) into `<out>/naive-<part>-%06d.tar`."""
    paths, out, part, first = job
    by_suffix: dict[str, float] = defaultdict(float)
    with wds.ShardWriter(f"{out}/naive-{part}-%06d.tar", maxcount=1000, verbose=0) as sink:
        for i, name in enumerate(paths, start=first):
            path = Path(name)
            t0 = time.perf_counter()
            image = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            sink.write({"__key__": f"{i:06d}", "jpg": image, "txt": f"caption {i}", "json": {"id": path.name}})
            by_suffix[path.suffix.lower()] += time.perf_counter() - t0
    return by_suffix


def main() -> None:
    args = sys.argv[1:]
    processes = 1
    if "--processes" in args:
        at = args.index("--processes")
        processes = int(args[at + 1])
        del args[at : at + 2]
    listing, out = Path(args[0]), Path(args[1])
    paths = [line for line in listing.read_text().splitlines() if line.strip()]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step = -(-len(paths) // processes)
    jobs = [(paths[i : i + step], str(out), n, i) for n, i in enumerate(range(0, len(paths), step))]
    if processes == 1:
        parts = [write_slice(job) for job in jobs]
    else:
        with multiprocessing.Pool(processes) as pool:
            parts = pool.map(write_slice, jobs)
    seconds = time.perf_counter() - start
    by_suffix: dict[str, float] = defaultdict(float)
    for part in parts:
        for suffix, t in part.items():
            by_suffix[suffix] += t / processes  # wall-clock share: the processes ran side by side
    result = {
        "pillow": PIL.__version__,
        "images": len(paths),
        "processes": processes,
        "seconds": seconds,
        "seconds_by_suffix": by_suffix,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
