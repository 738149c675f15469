"""packer's throughput, side by side in one run, on a realistic meme-like corpus.

    make profile                          # or:
    python scripts/profile_throughput.py [--images 600] [--max-workers N] [--plan-rows 1000000] [--out profile]

Measured on the same images in the same run:
  kernel   the bare per-image kernel (packer.images.encode_image: draft decode, orient, convert,
           bicubic resize, JPEG encode, dHash) in a loop, one process, no packer around it;
  naive    scripts/naive_webdataset.py, the script a user writes from the webdataset docs: full
           decode, resize, ShardWriter, one process. It runs twice: with packer's Pillow build
           (pillow-simd) and with --naive-python, a venv holding Pillow from PyPI (`make profile`
           builds it in .cache/naive-venv from pyproject's `naive` extra), which is what a user
           who writes that script has;
  packer   the whole `pack-examples` run (load, plan, image hashing, pool, shards, report) at
           1, 2, ... --max-workers workers;
  variants resampling choices of the kernel (bilinear, reducing_gap, no draft) with their PSNR
           against a full-decode bicubic reference;
  plan     load + plan of a --plan-rows manifest (text-only), in a child process: seconds, peak RSS.
Prints a table, writes <out>/profile.json and <out>/profile.png. The corpus and the big manifest
are cached under --cache. --corpus DIR profiles a folder of your own images instead.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageStat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from packer.cli import main as pack  # noqa: E402
from packer.images import Clock, encode_image  # noqa: E402
from packer.shards import sample_bytes  # noqa: E402

SIZE, QUALITY, MAX_PIXELS = 384, 95, 89_478_485
MAMI_SUBTYPES = ("shaming", "stereotype", "objectification", "violence")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
NAIVE_LABELS = {"same_pillow": "packer's Pillow build", "pypi_pillow": "Pillow from PyPI"}
CAPTIONS = ["WHEN YOU SEE IT", "NOBODY:", "ME AT 3 AM", "THEY SAID IT COULDN'T BE DONE", "MONDAY AGAIN", "SUCH WOW"]


# -- the corpus ---------------------------------------------------------------
def meme(rng: random.Random) -> Image.Image:
    """A photograph-like image (smooth colour fields, grain, shapes) with big meme captions."""
    width = rng.randint(500, 2048)
    height = max(500, min(2048, int(width * rng.uniform(0.6, 1.5))))
    base = Image.frombytes("RGB", (6, 5), rng.randbytes(90)).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), rng.uniform(8, 24)).convert("RGB")
    image = Image.blend(base, grain, 0.15)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(width // 20, width // 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randbytes(3)))
    font = ImageFont.load_default(size=max(24, height // 9))
    for top, text in ((True, rng.choice(CAPTIONS)), (False, rng.choice(CAPTIONS))):
        y = height // 40 if top else height - height // 7
        draw.text((width // 2, y), text, font=font, fill="white", anchor="ma", stroke_width=3, stroke_fill="black")
    return image


def make_corpus(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """85% JPEG (some progressive, some with EXIF orientation), 15% PNG (half with alpha); cached."""
    listing = folder / "files.json"
    if listing.is_file():
        paths = [folder / name for name in json.loads(listing.read_text())]
        if len(paths) == count and all(p.is_file() for p in paths):
            return paths
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    names = []
    for i in range(count):
        image = meme(rng)
        if rng.random() < 0.85:
            name = f"meme_{i:05d}.jpg"
            exif = Image.Exif()
            if rng.random() < 0.2:
                exif[0x0112] = rng.choice([3, 6, 8])
            image.save(folder / name, "JPEG", quality=rng.randint(75, 95), progressive=rng.random() < 0.3, exif=exif)
        else:
            name = f"meme_{i:05d}.png"
            if rng.random() < 0.5:
                image = image.convert("RGBA")
            image.save(folder / name, "PNG", compress_level=6)
        names.append(name)
    listing.write_text(json.dumps(names))
    return [folder / n for n in names]


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def write_manifest(path: Path, images: list[Path]) -> Path:
    rows = [
        {
            "id": f"mami_train_{i:06d}_{p.stem}",
            "dataset": "mami",
            "split": "train",
            "image_path": str(p),
            "text_raw": f"caption of {p.stem}",
            "labels_raw": {"misogynous": int(i % 3 == 0), **dict.fromkeys(MAMI_SUBTYPES, 0)},
        }
        for i, p in enumerate(images)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- the runs -----------------------------------------------------------------
def timed(fn, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run_kernel(paths: list[Path], **options) -> dict:
    """The kernel over `paths`: seconds in all and per file suffix (the same JSON as the naive script)."""
    by_suffix: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    for p in paths:
        t0 = time.perf_counter()
        encode_image(str(p), SIZE, QUALITY, MAX_PIXELS, **options)
        by_suffix[p.suffix.lower()] += time.perf_counter() - t0
    return {"images": len(paths), "seconds": time.perf_counter() - start, "seconds_by_suffix": by_suffix}


def rates(run: dict, paths: list[Path]) -> dict:
    """A run of the kernel or the naive script as seconds, images/s, and images/s per format."""
    counts = Counter(p.suffix.lower() for p in paths)
    return {
        "seconds": round(run["seconds"], 2),
        "images_per_s": round(run["images"] / run["seconds"], 1),
        "images_per_s_by_format": {
            suffix.lstrip("."): round(counts[suffix] / seconds, 1)
            for suffix, seconds in run["seconds_by_suffix"].items()
        },
    }


def stage_breakdown(paths: list[Path]) -> dict[str, float]:
    """Milliseconds per image for each stage of the kernel, plus writing its tar members."""
    clock = Clock()
    sink = io.BytesIO()
    for i, p in enumerate(paths):
        encoded = encode_image(str(p), SIZE, QUALITY, MAX_PIXELS, clock=clock)
        clock.start()
        sink.write(sample_bytes(f"k{i:06d}", {"jpg": encoded.data, "txt": b"text", "json": b"{}"}))
        clock.lap("write")
    return {k: round(1000 * v / len(paths), 3) for k, v in clock.seconds.items()}


def run_naive(python: str, paths: list[Path], out: Path, repeat: int) -> dict:
    """scripts/naive_webdataset.py under `python`, best of `repeat`: Pillow version, images/s overall and per format."""
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    runs = []
    for _ in range(repeat):
        shutil.rmtree(out / "shards", ignore_errors=True)
        child = subprocess.run(
            [python, str(ROOT / "scripts" / "naive_webdataset.py"), str(listing), str(out / "shards")],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["seconds"])
    return {"pillow": best["pillow"], **rates(best, paths)}


def parent_cpu() -> float:
    """CPU seconds of this process and its threads (the pool's workers are other processes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_packer(manifest: Path, out: Path, workers: int, *extra: str) -> dict:
    args = ["--manifest", str(manifest), "--output-dir", str(out / "shards"), "--label-taxonomy", str(out / "t.json")]
    args += ["--splits", str(out / "splits.json"), "--workers", str(workers), *extra]
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):
        code = pack(args)
    stats = json.loads((out / "stats.json").read_text())
    if code == 2 or not stats["packed_examples"]:
        raise SystemExit(
            f"packer run failed (exit {code}, {stats['failed_examples']} failed); see {out / 'stats.json'}"
        )
    return stats


def run_dask(manifest: Path, repeat: int, workers: int) -> dict | None:
    try:
        from distributed import LocalCluster
    except ImportError:
        print("note: dask[distributed] is not installed: no Dask line (make install adds it)")
        return None
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                stats = run_packer(manifest, Path(tmp) / "dask", workers, "--backend", "dask", "--scheduler",
                                   cluster.scheduler_address)  # fmt: skip
                runs.append((time.perf_counter() - t0, stats))
    best, stats = min(runs[1:], key=lambda r: r[0])
    return {
        "workers": workers,
        "seconds": round(best, 2),
        "images_per_s": round(stats["packed_examples"] / best, 1),
        "image_stage_images_per_s": round(stats["packed_examples"] / stats["seconds"]["images_and_shards"], 1),
        "first_run_images_per_s": round(runs[0][1]["packed_examples"] / runs[0][0], 1),
        "stage_seconds": stats["seconds"],
    }


def psnr(a: Image.Image, b: Image.Image) -> float:
    rms = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).rms
    mse = sum(r * r for r in rms) / len(rms)
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def variant_quality(paths: list[Path], **options) -> float:
    """Mean PSNR of a kernel variant's output against full decode + bicubic (before JPEG encoding)."""
    scores = []
    for p in paths:
        reference = encode_image(str(p), SIZE, 100, MAX_PIXELS, draft=False)
        candidate = encode_image(str(p), SIZE, 100, MAX_PIXELS, **options)
        scores.append(psnr(Image.open(io.BytesIO(reference.data)), Image.open(io.BytesIO(candidate.data))))
    return round(sum(scores) / len(scores), 1)


def measure_plan(manifest: Path) -> dict:
    """Run in a child process: load + plan only (no images), seconds and peak RSS."""
    from packer.config import PackConfig, load_taxonomy
    from packer.plan import build_plan

    with tempfile.TemporaryDirectory() as tmp:
        config = PackConfig(
            manifest=manifest,
            ocr=None,
            output_dir=Path(tmp) / "shards",
            label_taxonomy=Path(tmp) / "t.json",
            splits=Path(tmp) / "s.json",
            stats=Path(tmp) / "stats.json",
        )
        start = time.perf_counter()
        plan = build_plan(config, load_taxonomy(None), {}, lambda paths: {})
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": plan.rows.height, "seconds": round(seconds, 2), "peak_rss_mb": round(peak)}


# -- the report ---------------------------------------------------------------
def plot(results: dict, path: Path) -> None:
    """A bar chart of images/s, drawn with Pillow (no plotting library needed)."""
    bars = [("kernel (1 process)", results["kernel"]["images_per_s"])]
    bars += [(f"naive, {NAIVE_LABELS[name]}", naive["images_per_s"]) for name, naive in results["naive"].items()]
    bars += [(f"packer, {w} worker{'s' * (w > 1)}", r["images_per_s"]) for w, r in results["packer"].items()]
    if results.get("dask"):
        bars.append((f"packer on Dask, {results['dask']['workers']} workers", results["dask"]["images_per_s"]))
    width, row, left = 1000, 44, 330
    image = Image.new("RGB", (width, 90 + row * len(bars)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=16)
    corpus = results["corpus"]
    what = "generated meme-like images" if corpus["generated"] else f"images from {corpus['folder']}"
    title = f"images/s on {corpus['images']} {what}, {results['machine']['cores']} cores"
    draw.text((20, 20), title, fill="black", font=font)
    top = max(v for _, v in bars) or 1.0
    for i, (label, value) in enumerate(bars):
        y = 60 + i * row
        length = int((width - left - 110) * value / top)
        colour = (46, 125, 50) if label.startswith("packer") else (120, 120, 120)
        draw.text((20, y + 8), label, fill="black", font=font)
        draw.rectangle((left, y, left + length, y + row - 12), fill=colour)
        draw.text((left + length + 8, y + 8), f"{value:.1f}", fill="black", font=font)
    image.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, help="generated images (default 600), or the first N of --corpus")
    p.add_argument("--corpus", type=Path, help="profile this folder of images (searched recursively) instead")
    p.add_argument(
        "--naive-python",
        default=str(ROOT / ".cache" / "naive-venv" / "bin" / "python"),
        help="a Python with Pillow from PyPI and webdataset, for the naive baseline (skipped when absent)",
    )
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--plan-rows", type=int, default=1_000_000, help="0 skips the planning measurement")
    p.add_argument("--repeat", type=int, default=2, help="best of N for the kernel and naive runs (packer: N+1)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "profile")
    p.add_argument("--out", type=Path, default=ROOT / "profile")
    p.add_argument("--measure-plan", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_plan:
        print(json.dumps(measure_plan(args.measure_plan)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.corpus:
        paths = find_images(args.corpus)[: args.images]
        if not paths:
            raise SystemExit(f"{args.corpus}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    else:
        paths = make_corpus(args.cache / "corpus", args.images or 600)
    corpus_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"corpus: {len(paths)} images, {corpus_mb:.0f} MB ({time.perf_counter() - start:.0f} s incl. generation)")
    manifest = write_manifest(args.cache / "corpus_manifest.jsonl", paths)
    n = len(paths)
    run_kernel(paths[:20])  # warm the page cache and imports before timing anything

    results: dict = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "corpus": {
            "images": n,
            "megabytes": round(corpus_mb, 1),
            "folder": str(args.corpus or args.cache / "corpus"),
            "generated": args.corpus is None,
            "jpeg_share": round(sum(p.suffix.lower() in (".jpg", ".jpeg") for p in paths) / n, 3),
        },
    }
    kernel = min((run_kernel(paths) for _ in range(args.repeat)), key=lambda run: run["seconds"])
    results["kernel"] = rates(kernel, paths)
    results["stages_ms_per_image"] = stage_breakdown(paths)
    # The naive script with packer's own Pillow build, and with Pillow from PyPI when it is there.
    pythons = {"same_pillow": sys.executable}
    usable = Path(args.naive_python).is_file() and (
        subprocess.run([args.naive_python, "-c", "import PIL, webdataset"], capture_output=True).returncode == 0
    )
    if usable:
        pythons["pypi_pillow"] = args.naive_python
    else:
        print(f"{args.naive_python} missing or without Pillow/webdataset: naive runs with packer's Pillow only")
    with tempfile.TemporaryDirectory() as tmp:
        results["naive"] = {
            name: run_naive(python, paths, Path(tmp) / name, args.repeat) for name, python in pythons.items()
        }

    # Where the kernel's advantage comes from: each format apart (JPEG has draft decode, PNG none).
    results["by_format"] = {}
    for fmt, count in sorted(Counter(p.suffix.lower().lstrip(".") for p in paths).items()):
        entry = {"images": count, "kernel_images_per_s": results["kernel"]["images_per_s_by_format"][fmt]}
        for name, naive in results["naive"].items():
            naive_rate = naive["images_per_s_by_format"][fmt]
            entry[f"naive_{name}_images_per_s"] = naive_rate
            entry[f"kernel_vs_naive_{name}"] = round(entry["kernel_images_per_s"] / naive_rate, 2)
        results["by_format"][fmt] = entry

    # Each worker count runs --repeat + 1 times: the first run starts the pool (loky's processes
    # spawn and import, about 0.3 s here), the later ones re-use it, as a long pack does after
    # its first second. Both are reported; the targets use the best re-using run.
    results["packer"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in range(1, args.max_workers + 1):
            runs = []
            for _ in range(args.repeat + 1):
                t0, cpu0 = time.perf_counter(), parent_cpu()
                stats = run_packer(manifest, Path(tmp) / f"w{workers}", workers)
                runs.append((time.perf_counter() - t0, stats, parent_cpu() - cpu0))
            cold_seconds, cold, _ = runs[0]
            best, stats, cpu = min(runs[1:], key=lambda r: r[0])
            results["packer"][workers] = {
                "seconds": round(best, 2),
                "images_per_s": round(stats["packed_examples"] / best, 1),
                "image_stage_images_per_s": round(stats["packed_examples"] / stats["seconds"]["images_and_shards"], 1),
                "stage_seconds": stats["seconds"],
                "first_run_images_per_s": round(cold["packed_examples"] / cold_seconds, 1),
                "first_run_stage_seconds": cold["seconds"],
            }
            if workers > 1:
                # The parent's own CPU (plan, task specs, results, shard writing): what every
                # worker count shares. It caps the run at 1000 / ms-per-image images/s.
                entry = results["packer"][workers]
                entry["parent_cpu_ms_per_image"] = round(1000 * cpu / stats["packed_examples"], 3)
                # While the workers run (what they share); the whole run adds fixed costs (plan, report).
                stage_cpu = stats["seconds"]["images_and_shards_parent_cpu"]
                entry["parent_stage_cpu_ms_per_image"] = round(1000 * stage_cpu / stats["packed_examples"], 3)

    # The same runs on Dask (--backend dask): a LocalCluster of 2 worker processes, started once and
    # re-used, as a lab's cluster is; the first run is the one that connects and warms it.
    results["dask"] = run_dask(manifest, args.repeat, min(2, args.max_workers))

    sample = paths[: min(60, n)]
    variants = {
        "draft + bicubic (packer)": {},
        "draft + bilinear": {"resample": Image.Resampling.BILINEAR},
        "draft + bicubic, reducing_gap 2.0": {"reducing_gap": 2.0},
        "draft + bicubic, reducing_gap 3.0": {"reducing_gap": 3.0},
        "full decode + bicubic": {"draft": False},
    }
    results["kernel_variants"] = {}
    for name, options in variants.items():
        seconds = timed(lambda o=options: run_kernel(sample, **o), 1)
        results["kernel_variants"][name] = {
            "images_per_s": round(len(sample) / seconds, 1),
            "psnr_db_vs_full_decode": variant_quality(sample[:20], **options),
        }

    if args.plan_rows:
        from plan_manifest import write_manifest as write_plan_manifest

        big = args.cache / f"plan_{args.plan_rows}.jsonl"
        if not big.is_file():
            write_plan_manifest(big, args.plan_rows)
        child = subprocess.run(
            [sys.executable, __file__, "--measure-plan", str(big)], capture_output=True, text=True, check=True
        )
        results["plan"] = json.loads(child.stdout.strip().splitlines()[-1])

    one = results["packer"][1]["images_per_s"]
    ratios = {
        "packer_1_worker_vs_kernel": round(one / results["kernel"]["images_per_s"], 3),
        "packer_vs_naive": {
            name: {w: round(r["images_per_s"] / naive["images_per_s"], 2) for w, r in results["packer"].items()}
            for name, naive in results["naive"].items()
        },
        "speedup_vs_1_worker": {w: round(r["images_per_s"] / one, 2) for w, r in results["packer"].items()},
        "first_run_speedup_vs_1_worker": {
            w: round(r["first_run_images_per_s"] / results["packer"][1]["first_run_images_per_s"], 2)
            for w, r in results["packer"].items()
        },
        "image_stage_speedup_vs_1_worker": {
            w: round(r["image_stage_images_per_s"] / results["packer"][1]["image_stage_images_per_s"], 2)
            for w, r in results["packer"].items()
        },
        "parallel_efficiency": {w: round(r["images_per_s"] / one / w, 2) for w, r in results["packer"].items()},
    }
    parent_ms = [
        r["parent_stage_cpu_ms_per_image"] for r in results["packer"].values() if "parent_stage_cpu_ms_per_image" in r
    ]
    if parent_ms:
        # How many workers, each as fast as the one-worker run, the parent could keep fed.
        ratios["workers_the_parent_can_feed"] = round(1000 / max(parent_ms) / one, 1)
    if results["dask"]:
        loky = results["packer"][results["dask"]["workers"]]
        ratios["dask_vs_loky"] = round(results["dask"]["images_per_s"] / loky["images_per_s"], 3)
        ratios["dask_vs_loky_image_stage"] = round(
            results["dask"]["image_stage_images_per_s"] / loky["image_stage_images_per_s"], 3
        )
    results["ratios"] = ratios
    (args.out / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "profile.png")
    report(results)
    print(f"\nwrote {args.out / 'profile.json'} and {args.out / 'profile.png'}")


def report(results: dict) -> None:
    print(f"\n{'run':<52}{'images/s':>10}")
    print(f"{'kernel, 1 process':<52}{results['kernel']['images_per_s']:>10.1f}")
    for name, naive in results["naive"].items():
        label = f"naive script, {NAIVE_LABELS[name]} {naive['pillow']}"
        print(f"{label:<52}{naive['images_per_s']:>10.1f}")
    for w, r in results["packer"].items():
        print(f"{f'packer, {w} worker(s), first run':<52}{r['first_run_images_per_s']:>10.1f}")
        print(f"{f'packer, {w} worker(s), whole run':<52}{r['images_per_s']:>10.1f}")
        print(f"{f'packer, {w} worker(s), image stage only':<52}{r['image_stage_images_per_s']:>10.1f}")
    if results.get("dask"):
        d = results["dask"]
        name = f"packer on Dask, LocalCluster of {d['workers']}"
        print(f"{name + ', first run':<52}{d['first_run_images_per_s']:>10.1f}")
        print(f"{name + ', whole run':<52}{d['images_per_s']:>10.1f}")
        print(f"{name + ', image stage only':<52}{d['image_stage_images_per_s']:>10.1f}")
    for w, r in results["packer"].items():
        if "parent_cpu_ms_per_image" in r:
            print(
                f"packer, {w} workers: the parent's own CPU is {r['parent_stage_cpu_ms_per_image']} ms per image "
                f"during the image stage, {r['parent_cpu_ms_per_image']} over the whole run"
            )
    print("\nkernel stages, ms per image:", results["stages_ms_per_image"])
    for fmt, entry in results["by_format"].items():
        line = f"{fmt}: {entry['images']} images, kernel {entry['kernel_images_per_s']}/s"
        for name in results["naive"]:
            line += (
                f"; naive ({NAIVE_LABELS[name]}) {entry[f'naive_{name}_images_per_s']}/s,"
                f" kernel/naive {entry[f'kernel_vs_naive_{name}']}x"
            )
        print(line)
    print("\nkernel variants (images/s, PSNR vs full decode):")
    for name, v in results["kernel_variants"].items():
        print(f"  {name:<36}{v['images_per_s']:>8.1f}  {v['psnr_db_vs_full_decode']:>6.1f} dB")
    r = results["ratios"]
    workers = max(results["packer"])
    two = min(2, workers)
    one = r["packer_1_worker_vs_kernel"]
    checks = [("packer 1 worker >= 90% of kernel", one, one >= 0.9)]
    # The scaling target is 2 workers >= 1.8x one; more workers are shown, not judged
    # (on a many-core machine the default 600 images are too few to amortise a run's fixed costs;
    # the parent's CPU per image below is what bounds scaling there).
    for w in sorted({two, workers}):
        for name, key in (("whole run", "speedup_vs_1_worker"), ("image stage", "image_stage_speedup_vs_1_worker")):
            judged = w == two
            label = f"packer {w} workers vs 1, {name}" + (f" >= {0.9 * w:.1f}x" if judged else "")
            checks.append((label, r[key][w], (r[key][w] >= 0.9 * w) if judged else None))
    # The target is judged against the naive script as a user has it (Pillow from PyPI) when that
    # venv exists; the ratio against the same pillow-simd build is printed beside it.
    for name in results["naive"]:
        ratio = r["packer_vs_naive"][name][two]
        judged = name == ("pypi_pillow" if "pypi_pillow" in results["naive"] else "same_pillow")
        label = f"packer {two} workers vs naive, {NAIVE_LABELS[name]}"
        checks.append((label + (" >= 3x" if judged else ""), ratio, (ratio >= 3) if judged else None))
    if "workers_the_parent_can_feed" in r:
        fed = r["workers_the_parent_can_feed"]
        checks.append(("parent (shared work) keeps >= 32 workers fed", fed, fed >= 32))
    if "dask_vs_loky" in r:
        d = results["dask"]["workers"]
        checks.append(
            (f"packer on Dask vs loky, {d} workers, whole run >= 0.9", r["dask_vs_loky"], r["dask_vs_loky"] >= 0.9)
        )
        checks.append((f"packer on Dask vs loky, {d} workers, image stage", r["dask_vs_loky_image_stage"], None))
    if "plan" in results:
        plan = results["plan"]
        ok = plan["seconds"] < 5 and plan["peak_rss_mb"] < 2048
        checks.append((f"plan of {plan['rows']} rows: s / peak MB", f"{plan['seconds']} / {plan['peak_rss_mb']}", ok))
    print("\ntargets:")
    for name, value, ok in checks:
        verdict = "(shown)" if ok is None else "PASS" if ok else "MISS"
        print(f"  {name:<56}{value!s:>14}  {verdict}")


if __name__ == "__main__":
    main()
