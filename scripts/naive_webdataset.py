"""The baseline packer is measured against: the script a user writes from the webdataset docs.

    python scripts/naive_webdataset.py IMAGE_LIST OUT_DIR

IMAGE_LIST is a text file with one image path per line. Each image is decoded in full, converted
to RGB, resized to 384x384 (bicubic, Pillow's default) and handed to ShardWriter, which encodes
it (JPEG, quality 100, webdataset's default) and writes the tar. One process, no draft decode.

Needs only Pillow and webdataset, so `make profile` can run it twice: with packer's pillow-simd
and in a venv holding Pillow from PyPI, which is what `pip install webdataset pillow` gives a
user. Prints one JSON line: the Pillow version, images, seconds in all and per file suffix.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import PIL
import webdataset as wds
from PIL import Image

SIZE = 384


def main() -> None:
    listing, out = Path(sys.argv[1]), Path(sys.argv[2])
    paths = [Path(line) for line in listing.read_text().splitlines() if line.strip()]
    out.mkdir(parents=True, exist_ok=True)
    by_suffix: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "naive-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            image = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            sink.write({"__key__": f"{i:06d}", "jpg": image, "txt": f"caption {i}", "json": {"id": path.name}})
            by_suffix[path.suffix.lower()] += time.perf_counter() - t0
    seconds = time.perf_counter() - start
    result = {
        "pillow": PIL.__version__,
        "images": len(paths),
        "seconds": seconds,
        "seconds_by_suffix": by_suffix,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
