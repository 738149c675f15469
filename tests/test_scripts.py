"""The benchmark scripts run end to end on a small folder of real images."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds
from conftest import ROOT, digests
from PIL import Image


def image_folder(folder: Path) -> list[Path]:
    """Two JPEGs (one in a subfolder, same stem), a PNG with alpha and a file that is not an image."""
    (folder / "sub").mkdir(parents=True)
    paths = [folder / "a.jpg", folder / "sub" / "a.jpg", folder / "b.png"]
    Image.new("RGB", (900, 600), (200, 30, 30)).save(paths[0], quality=90)
    Image.new("RGB", (500, 700), (30, 200, 30)).save(paths[1], quality=90)
    Image.new("RGBA", (640, 640), (30, 30, 200, 128)).save(paths[2])
    (folder / "notes.txt").write_text("not an image")
    return paths


@pytest.mark.slow  # a benchmark script
def test_naive_baseline_writes_readable_384px_shards(tmp_path):
    paths = image_folder(tmp_path / "images")
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    child = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "naive_webdataset.py"), str(listing), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["images"] == 3 and result["seconds"] > 0
    assert set(result["seconds_by_suffix"]) == {".jpg", ".png"}

    samples = list(wds.WebDataset(str(tmp_path / "out" / "naive-0-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["000000", "000001", "000002"]
    for sample, path in zip(samples, paths):
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert (image.format, image.size, image.mode) == ("JPEG", (384, 384), "RGB")
        assert json.loads(sample["json"]) == {"id": path.name}

    # On 2 processes: each writes its own slice's shards, and together they hold every image once.
    child = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "naive_webdataset.py"), str(listing), str(tmp_path / "two"),
         "--processes", "2"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout)["processes"] == 2
    shards = sorted(str(p) for p in (tmp_path / "two").glob("naive-*.tar"))
    assert [p.rsplit("/", 1)[1] for p in shards] == ["naive-0-000000.tar", "naive-1-000000.tar"]
    keys = [s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False)]
    assert keys == ["000000", "000001", "000002"]


@pytest.mark.heavy  # a Dask LocalCluster (its Dask line)
@pytest.mark.slow  # a benchmark script
def test_profiler_on_a_folder_of_images_writes_profile_json(tmp_path):
    image_folder(tmp_path / "images")
    args = ["--corpus", str(tmp_path / "images"), "--max-workers", "2", "--plan-rows", "0", "--repeat", "1"]
    args += ["--naive-python", sys.executable, "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "prof")]
    child = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "profile_throughput.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert "targets:" in child.stdout
    profile = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert profile["corpus"]["images"] == 3
    assert profile["corpus"]["jpeg_share"] == round(2 / 3, 3)
    assert set(profile["naive"]) == {"same_pillow", "pypi_pillow"}  # the same interpreter, given twice
    assert set(profile["by_format"]) == {"jpg", "png"}
    assert profile["by_format"]["jpg"]["images"] == 2
    assert set(profile["packer"]) == {"1", "2"}
    for run in profile["packer"].values():
        assert run["images_per_s"] > 0 and run["stage_seconds"]["images_and_shards"] > 0
    assert set(profile["ratios"]["packer_vs_naive"]["pypi_pillow"]) == {"1", "2"}
    assert profile["packer"]["2"]["parent_stage_cpu_ms_per_image"] > 0
    assert "parent_stage_cpu_ms_per_image" not in profile["packer"]["1"]  # one worker runs in the parent
    # Every second of a whole process is accounted for: the image stage and the fixed costs.
    for run in profile["packer"].values():
        split = run["time_split_seconds"]
        assert set(split) == {"load", "plan", "images_and_shards", "catalog", "report", "startup_and_exit"}
        assert abs(sum(split.values()) - run["seconds"]) < 0.05
    assert profile["naive_parallel"]["processes"] == 2 and profile["naive_parallel"]["images_per_s"] > 0
    assert profile["ratios"]["packer_vs_naive_parallel"] > 0
    # Per format and decoder: the PNG's decode stage measured for Pillow and for libspng.
    for decoder in ("pillow", "spng"):
        assert profile["stages_ms_per_image"][decoder]["png"]["decode"] > 0
        assert set(profile["stages_ms_per_image"][decoder]) == {"jpg", "png"}
    # The three PNG paths' kernels, each with its CPU seconds; packer's whole runs with theirs.
    for kernel in ("kernel", "kernel_tuned", "kernel_spng_zlib", "kernel_spng"):
        assert profile[kernel]["images_per_s"] > 0 and profile[kernel]["cpu_seconds"] > 0
        assert profile["by_format"]["png"][f"{kernel}_images_per_s"] > 0
    assert all(run["cpu_seconds"] > 0 for run in profile["packer"].values())
    assert profile["ratios"]["packer_1_worker_cpu_vs_kernel_cpu"] > 0
    assert "round 1 of 1" in child.stdout
    assert "bare Pillow kernel" in child.stdout
    assert profile["ratios"]["workers_the_parent_can_feed"] > 0  # tiny here: 3 images barely amortise the plan
    # The Dask line: a LocalCluster of 2 processes (when dask[distributed] is installed).
    if profile["dask"] is not None:
        assert profile["dask"]["workers"] == 2 and profile["dask"]["images_per_s"] > 0
        assert profile["ratios"]["dask_vs_loky_image_stage"] > 0 and "packer on Dask vs loky" in child.stdout
    assert Image.open(tmp_path / "prof" / "profile.png").format == "PNG"


def test_the_yardstick_sees_every_byte_but_the_timings(packed, tmp_path):
    """conftest.digests, which every byte-identity test relies on: a flipped byte in any file, or a
    change to stats.json outside its seconds block, changes it; the timings do not."""
    import shutil

    copy = tmp_path / "Step_3"
    shutil.copytree(packed, copy)
    before = digests(copy)
    assert before == digests(packed) and len(before) > 20 and any(k.endswith(".tar") for k in before)
    stats = copy / "stats.json"
    text = stats.read_text()
    timed = text.replace('"seconds": {', '"seconds": {\n    "extra_timing": 12.5,', 1)
    stats.write_text(timed)
    assert digests(copy) == before
    stats.write_text(timed.replace('"packed_examples": ', '"packed_examples": 1', 1))
    assert digests(copy)["stats.json"] != before["stats.json"]
    stats.write_text(text)
    shard = next(iter(sorted(copy.glob("shards/train/shard-*.tar"))))
    data = bytearray(shard.read_bytes())
    data[600] ^= 1
    shard.write_bytes(bytes(data))
    changed = {k for k, v in digests(copy).items() if before.get(k) != v}
    assert changed == {str(shard.relative_to(copy))}


@pytest.mark.slow  # a benchmark script
def test_bench_report_finds_the_planted_pairs_by_offset_and_by_scan(pilot, tmp_path):
    """scripts/bench_report.py on a small grown pack: both readers find the samples of the 4 pairs
    shown. Grown from (a copy of) the pilot the session packed, which is what the script packs."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench_report.py"),
            "--examples",
            "3000",
            "--work",
            str(tmp_path),
            "--pilot",
            str(pilot),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3000 report, read by offset:" in done.stdout
    assert "(8 of 8 pair samples shown found)" in done.stdout
    scanned = (tmp_path / "big" / "Step_3" / "report.html").read_text(encoding="utf-8")
    assert "not found in the shards" not in scanned and scanned.count('class="pair"') == 4


def test_bench_video_prints_the_three_rates_and_their_ratios(tmp_path):
    """scripts/bench_video.py on two short clips: packer, the ffmpeg loop and the whole decode
    side by side, for both GOPs."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_video.py"), "--clips", "1", "--seconds", "4", "--size", "160x96",
         "--fps", "10", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    timed = [line.split()[0] for line in lines if " frames in " in line and "frames/s" in line]
    assert timed == ["packer", "ffmpeg", "PyAV"] * 2
    assert sum("packer / ffmpeg loop:" in line and "packer / PyAV whole decode:" in line for line in lines) == 2


def test_bench_scale_prints_time_and_peak_memory_per_case(tmp_path):
    """scripts/bench_scale.py on tiny manifests: a row per case with its stages and the peaks the
    sampler saw (every process of the tree has a resident set over a few MB)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_scale.py"), "--text-rows", "300", "--image-rows", "40",
         "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["case"] for r in results] == ["text 300", "images 40"]
    for r in results:
        assert r["parent_peak_mb"] > 20 and r["worker_peak_mb"] > 5
        assert r["total_peak_mb"] >= r["parent_peak_mb"] and r["stages"]["images_and_shards"] > 0
    assert json.loads((tmp_path / "Step_3" / "stats.json").read_text())["packed_examples"] == 40


@pytest.mark.heavy  # venvs of its own
def test_side_venv_is_built_once_per_key_and_never_removes_what_it_did_not_make(tmp_path):
    """scripts/side_venv.py: the same key is a no-op (the same folder, untouched); another key (here
    a module to warm) builds the venv again; a folder that is not a venv is refused and kept."""
    from side_venv import MARKER, ensure, key

    folder = tmp_path / "venv"
    assert ensure(folder, []) is True
    marker = folder / MARKER
    assert marker.read_text().strip() == key([], [])
    stamp = marker.stat().st_mtime_ns
    assert ensure(folder, []) is False and marker.stat().st_mtime_ns == stamp
    assert ensure(folder, [], ["json"]) is True
    assert marker.read_text().strip() == key([], ["json"]) != key([], [])
    assert subprocess.run([str(folder / "bin" / "python"), "-c", "import json"]).returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a venv"):
        ensure(mine, [])
    assert (mine / "notes.txt").read_text() == "keep me"
