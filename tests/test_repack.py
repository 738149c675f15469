"""The relabel loop: a re-pack reuses every image an earlier pack encoded (byte-identical to
encoding them again), `pack-examples diff` names exactly what a taxonomy edit changed, and
`pack-examples show` opens any example."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import MAMI, MAMI_NOT, ROOT, built_once, command, digests, make_jpeg, run_aside, tiny_png, write_jsonl
from PIL import Image
from test_resume import kill_when

from packer.cli import main
from packer.previous import FINE_RACY_NS, RACY_NS, SOURCES, match_images, stat_cache, trusted_shards

OLID_OFF = {"subtask_a": "OFF", "subtask_b": "TIN", "subtask_c": "GRP"}
OLID_NOT = {"subtask_a": "NOT", "subtask_b": "NULL", "subtask_c": "NULL"}
MEMES = 30


def write_inputs(step2: Path) -> None:
    rows = []
    for i in range(MEMES):
        image = (
            make_jpeg(step2 / "images" / f"m{i}.jpg", size=(90 + i, 70), colour=(8 * i, 90, 250 - 8 * i))
            if i % 5
            else tiny_png(step2 / "images" / f"m{i}.png")
        )
        labels = MAMI if i % 3 else MAMI_NOT
        rows.append({"id": f"mami_{i}", "dataset": "mami", "split": "train", "image_path": image,
                     "text_raw": f"meme {i}", "labels_raw": labels})  # fmt: skip
    for i in range(16):
        rows.append({"id": f"olid_{i}", "dataset": "olid", "split": "train", "image_path": None,
                     "text_raw": f"@USER post {i}", "labels_raw": OLID_OFF if i % 2 else OLID_NOT})  # fmt: skip
    write_jsonl(step2 / "data_manifest.jsonl", rows)


def args(root: Path, out: str, *extra: str) -> list[str]:
    return [
        "--manifest", str(root / "Step_2" / "data_manifest.jsonl"), "--output-dir", str(root / out / "shards"),
        "--label-taxonomy", str(root / out / "label_taxonomy.json"), "--splits", str(root / out / "splits.json"),
        "--workers", "1", "--min-shards", "2", *extra,
    ]  # fmt: skip


def edit_taxonomy(path: Path) -> None:
    """Two known rule changes: MAMI's misogynous memes target `gender` instead of `women`, and
    OLID's NOT tweets say nothing about offensiveness (null instead of 0)."""
    doc = json.loads(path.read_text())
    doc["datasets"]["mami"]["labels"]["target_group"]["map"]["1"] = ["gender"]
    doc["datasets"]["olid"]["labels"]["offensive"]["map"]["NOT"] = None
    path.write_text(json.dumps(doc, indent=1))


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> Path:
    """first/: a pack; the taxonomy edited and first re-packed at one path (Step_3), once with
    --no-reuse (then moved to encoded/) and once reusing (left at Step_3)."""

    def build(root: Path) -> None:
        write_inputs(root / "Step_2")
        assert main(args(root, "first")) == 0
        for extra in (("--no-reuse",), ()):
            repack(root, *extra)
            if extra:
                (root / "Step_3").rename(root / "encoded")

    return built_once(tmp_path_factory, "repacks", build)


def repack(root: Path, *extra: str, earlier: str = "first", edit: bool = True) -> int:
    """A copy of an earlier pack at root/Step_3, the taxonomy edited, packed again."""
    shutil.copytree(root / earlier, root / "Step_3")
    if edit:
        edit_taxonomy(root / "Step_3" / "label_taxonomy.json")
    return main(args(root, "Step_3", *extra))


def stats_of(folder: Path) -> dict:
    return json.loads((folder / "stats.json").read_text())


def test_a_relabel_repack_reuses_every_image_and_writes_the_same_bytes(packs: Path):
    reused, encoded = stats_of(packs / "Step_3"), stats_of(packs / "encoded")
    checked = reused["reuse"].pop("checked")  # how many shards were closed a tick before the cache: timing
    assert reused["reuse"] == {"from": str(packs / "Step_3" / "shards"), "reused": MEMES, "encoded": 0}
    assert 0 <= checked <= MEMES
    assert encoded["reuse"] == {"from": None, "reused": 0, "encoded": MEMES, "checked": 0}
    ours, theirs = digests(packs / "Step_3"), digests(packs / "encoded")
    assert ours == theirs and len(ours) > 20  # every file: shards, catalog, card, report, stats (less timings)
    assert not (packs / "Step_3" / "shards" / ".previous").exists()  # the earlier pack is gone once done


def expected_transitions(root: Path) -> dict:
    rows = [json.loads(line) for line in (root / "Step_2" / "data_manifest.jsonl").read_text().splitlines()]
    misogynous = sum(1 for r in rows if r["dataset"] == "mami" and r["labels_raw"]["misogynous"] == 1)
    olid_not = sum(1 for r in rows if r["dataset"] == "olid" and r["labels_raw"]["subtask_a"] == "NOT")
    return {
        "target_group": {"mami": {"[women] -> [gender]": misogynous}},
        "offensive": {"olid": {"0 -> null": olid_not}},
    }


def test_diff_names_exactly_the_label_changes(packs: Path, tmp_path: Path, capsys):
    from packer.diff import main as diff

    assert diff([str(packs / "first"), str(packs / "Step_3"), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    got = {
        f: {d: {t: e["count"] for t, e in ts.items()} for d, ts in per.items()} for f, per in result["labels"].items()
    }
    assert got == expected_transitions(packs)
    ids = result["labels"]["offensive"]["olid"]["0 -> null"]["examples"]
    assert ids == sorted(f"olid_{i}" for i in range(0, 16, 2))[:5]
    assert result["added"]["count"] == result["removed"]["count"] == 0 and result["split_moves"] == {}
    assert result["texts_changed"]["count"] == result["images_changed"]["count"] == 0
    # The same comparison is in the re-pack's own report.
    assert stats_of(packs / "Step_3")["since_previous_pack"]["labels"] == result["labels"]
    assert 'id="since-previous"' in (packs / "Step_3" / "report.html").read_text()
    # Terminal table, and the page; the same packs compare equal (exit 0).
    page = tmp_path / "diff.html"
    assert main(["diff", str(packs / "first"), str(packs / "Step_3"), "--html", str(page)]) == 1
    table = capsys.readouterr().out
    assert "DIFFERENT" in table and "  mami target_group: [women] -> [gender]: 20" in table
    assert "<!-- packer diff -->" in page.read_text() and "[women] -&gt; [gender]" in page.read_text()
    assert main(["diff", str(packs / "Step_3"), str(packs / "encoded"), "--html", str(page)]) == 0  # replaces it
    assert "SAME" in capsys.readouterr().out
    foreign = tmp_path / "notes.html"
    foreign.write_text("mine")
    assert main(["diff", str(packs / "first"), str(packs / "Step_3"), "--html", str(foreign)]) == 2
    assert foreign.read_text() == "mine"
    assert main(["diff", str(tmp_path), str(packs / "Step_3")]) == 2


def test_diff_reports_added_removed_moved_and_changed_text(packs: Path, tmp_path: Path, capsys):
    root = tmp_path
    shutil.copytree(packs / "Step_2", root / "Step_2")
    manifest = root / "Step_2" / "data_manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = [r for r in rows if r["id"] != "olid_3"]  # removed
    rows[0]["text_raw"] = "a new caption"  # mami_0: text changed
    rows[1]["labels_raw"] = None  # mami_1: unlabelled now: removed, dropped
    rows.append({"id": "olid_99", "dataset": "olid", "split": "test", "text_raw": "new", "labels_raw": OLID_OFF})
    write_jsonl(manifest, rows)
    pins = json.loads((packs / "first" / "splits.json").read_text())
    moved = next(i for i, s in pins.items() if s == "train" and i.startswith("mami_") and i not in ("mami_0", "mami_1"))
    pins[moved] = "val"
    (root / "Step_3").mkdir()
    (root / "Step_3" / "splits.json").write_text(json.dumps(pins))
    assert main(args(root, "Step_3")) in (0, 1)
    capsys.readouterr()
    assert main(["diff", str(packs / "first"), str(root / "Step_3"), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert {r: e["examples"] for r, e in result["added"]["by_reason"].items()} == {"not in the old pack": ["olid_99"]}
    assert {r: e["examples"] for r, e in result["removed"]["by_reason"].items()} == {
        "dropped: unlabelled": ["mami_1"],
        "not in the new pack": ["olid_3"],
    }
    assert result["split_moves"] == {"train -> val": {"count": 1, "examples": [moved]}}
    assert result["texts_changed"]["examples"] == ["mami_0"] and result["images_changed"]["count"] == 0


def test_a_changed_image_or_setting_or_damaged_shard_is_encoded_again(packs: Path, tmp_path: Path):
    root = tmp_path
    shutil.copytree(packs / "Step_2", root / "Step_2")
    shutil.copytree(packs / "first", root / "first")
    manifest = root / "Step_2" / "data_manifest.jsonl"
    manifest.write_text(manifest.read_text().replace(str(packs / "Step_2"), str(root / "Step_2")))
    # Every image moved to another folder: found by its bytes. One rotated (new bytes): encoded.
    image = root / "Step_2" / "images" / "m1.jpg"
    Image.open(image).rotate(90).save(image, quality=90)
    assert repack(root, "--no-reuse") == 0
    fresh = digests(root / "Step_3")
    shutil.rmtree(root / "Step_3")
    assert repack(root) == 0
    reuse = stats_of(root / "Step_3")["reuse"]
    reuse.pop("checked")
    assert reuse == {"from": str(root / "Step_3" / "shards"), "reused": MEMES - 1, "encoded": 1}
    assert digests(root / "Step_3") == fresh
    shutil.rmtree(root / "Step_3")
    # A damaged earlier shard (a flipped byte in one JPEG): that image is encoded again too.
    catalog = pl.read_parquet(root / "first" / "shards" / "samples.parquet").filter(
        (pl.col("series") == "images") & (pl.col("id") != "mami_1")
    )
    row = catalog.row(0, named=True)
    shard = root / "first" / "shards" / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["offset"] + 512 + 200] ^= 0xFF  # inside the sample's first member (its jpg), past the header
    shard.write_bytes(bytes(data))
    assert repack(root) == 0
    assert stats_of(root / "Step_3")["reuse"]["reused"] == MEMES - 2
    assert digests(root / "Step_3") == fresh
    shutil.rmtree(root / "Step_3")
    # Another --image-size: nothing matches.
    assert repack(root, "--image-size", "256") == 0
    assert stats_of(root / "Step_3")["reuse"]["reused"] == 0


def test_the_stat_cache_stands_for_unchanged_files_and_a_touched_file_is_hashed(packs: Path, tmp_path: Path):
    """`.sources.parquet` holds every image source file's size, mtime, inode and digest as packed;
    while they are unchanged (and not racily close to the cache's own mtime) the recorded digest is
    trusted without reading the file; a touched or racily modified file is hashed."""
    first = packs / "first" / "shards"
    catalog = pl.read_parquet(first / "samples.parquet")
    cache = pl.read_parquet(first / ".sources.parquet").filter(pl.col("source_path").is_not_null())
    assert "source_mtime_ns" not in catalog.columns and "source_inode" not in catalog.columns
    images = catalog.filter(pl.col("series") == "images")
    assert sorted(cache["source_path"]) == sorted(images["source_path"]) and len(cache) == MEMES
    for row in cache.iter_rows(named=True):
        st = Path(row["source_path"]).stat()
        recorded = (row["source_size"], row["source_mtime_ns"], row["source_inode"])
        assert recorded == (st.st_size, st.st_mtime_ns, st.st_ino)
        assert row["source_sha256"] == hashlib.sha256(Path(row["source_path"]).read_bytes()).hexdigest()
    encoder = images["encoder"][0]
    # A copy of the earlier pack's catalog and shards whose cache says one file holds other bytes:
    # while that file's size, mtime and inode are unchanged the cache is believed (it cannot match).
    earlier = tmp_path / "earlier"
    shutil.copytree(first, earlier, ignore=shutil.ignore_patterns(".sources.parquet"))
    lied, kept = cache["source_path"][0], cache["source_path"][1]
    touched = tmp_path / "touched.jpg"
    shutil.copy2(kept, touched)
    stale = cache.filter(pl.col("source_path") == kept).with_columns(source_path=pl.lit(str(touched)))
    stale = stale.with_columns(source_mtime_ns=pl.col("source_mtime_ns") - 10**9)  # as if touched since
    lie = cache.with_columns(
        source_sha256=pl.when(pl.col("source_path") == lied).then(pl.lit("0" * 64)).otherwise(pl.col("source_sha256"))
    )
    pl.concat([lie, stale]).write_parquet(earlier / ".sources.parquet")
    newest = max(Path(p).stat().st_mtime_ns for p in cache["source_path"])
    paths = [lied, kept, str(touched)]
    for cache_mtime, racy in ((newest + RACY_NS + 10**9, False), (newest + RACY_NS // 2, True)):
        os.utime(earlier / ".sources.parquet", ns=(cache_mtime, cache_mtime))
        found = match_images(earlier, encoder, paths, workers=1)["image_path"].to_list()
        # A racily clean file is hashed (then it matches); the touched copy is hashed by its size.
        assert sorted(found) == sorted([lied, kept, str(touched)] if racy else [kept, str(touched)])
    # Another encoder, or no cache at all (every candidate is then hashed).
    assert match_images(earlier, "other", paths, workers=1).is_empty()
    (earlier / ".sources.parquet").unlink()
    assert sorted(match_images(earlier, encoder, paths, workers=1)["image_path"]) == sorted(paths)


def test_a_reused_jpeg_is_hashed_unless_its_shard_is_as_the_earlier_pack_left_it(packs: Path, tmp_path: Path):
    """The stat cache records every shard's size and mtime as the pack left it; a shard found so
    (and closed a tick before the cache) is trusted, its JPEGs taken unhashed; a touched, re-sized
    or linked shard, or one racily close to the cache, has every JPEG hashed against the catalog."""
    earlier = tmp_path / "earlier"
    shutil.copytree(packs / "first" / "shards", earlier)  # copy2: mtimes kept, as a rename keeps them
    catalog = pl.read_parquet(earlier / "samples.parquet")
    cache, _ = stat_cache(earlier)
    recorded = pl.read_parquet(earlier / SOURCES).filter(pl.col("shard").is_not_null())
    names = sorted(catalog["shard"].unique())
    assert sorted(recorded["shard"]) == names and len(names) >= 4
    for name, size, mtime in recorded.select("shard", "shard_size", "shard_mtime_ns").iter_rows():
        st = (earlier / name).stat()
        assert (st.st_size, st.st_mtime_ns) == (size, mtime)
    newest = max(recorded["shard_mtime_ns"])
    assert newest % 10**9, "this filesystem keeps sub-second mtimes (the 0.1 s tick applies)"
    assert sorted(trusted_shards(earlier, cache, newest + FINE_RACY_NS + 1)) == names
    racy = newest + FINE_RACY_NS // 2  # a cache written within a tick of the last shard: not trusted
    old_enough = [n for n, m in recorded.select("shard", "shard_mtime_ns").iter_rows() if m < racy - FINE_RACY_NS]
    assert sorted(trusted_shards(earlier, cache, racy)) == sorted(old_enough) and len(old_enough) < len(names)
    later = newest + RACY_NS
    touched, relinked = [n for n in names if n.split("/")[1].startswith("shard-")][:2]
    os.utime(earlier / touched, ns=(later, later + 1))
    (earlier / relinked).rename(earlier / (relinked + ".moved"))
    (earlier / relinked).symlink_to(earlier / (relinked + ".moved"))
    assert sorted(trusted_shards(earlier, cache, later)) == sorted(set(names) - {touched, relinked})
    # The trust reaches the workers through the matches: every image path knows its shard's verdict.
    images = catalog.filter(pl.col("series") == "images")
    matches = match_images(earlier, images["encoder"][0], images["source_path"].to_list(), workers=1)
    verdict = {r["image_path"]: r["reuse"]["trusted"] for r in matches.iter_rows(named=True)}
    expected = {p: s not in (touched, relinked) for p, s in images.select("source_path", "shard").iter_rows()}
    assert verdict == expected
    # End to end: a re-pack over a pack whose cache is older than its shards by a tick hashes nothing.
    root = tmp_path / "run"
    shutil.copytree(packs / "Step_2", root / "Step_2")
    shutil.copytree(packs / "first", root / "Step_3")
    manifest = root / "Step_2" / "data_manifest.jsonl"
    manifest.write_text(manifest.read_text().replace(str(packs / "Step_2"), str(root / "Step_2")))
    cache = root / "Step_3" / "shards" / SOURCES
    os.utime(cache, ns=(newest + RACY_NS, newest + RACY_NS))
    assert main(args(root, "Step_3")) == 0
    assert stats_of(root / "Step_3")["reuse"] == {
        "from": str(root / "Step_3" / "shards"), "reused": MEMES, "encoded": 0, "checked": 0
    }  # fmt: skip


def test_reuse_from_a_pilot_gives_the_full_run_its_images(packs: Path, tmp_path: Path):
    root = tmp_path
    shutil.copytree(packs / "Step_2", root / "Step_2")
    manifest = root / "Step_2" / "data_manifest.jsonl"
    manifest.write_text(manifest.read_text().replace(str(packs / "Step_2"), str(root / "Step_2")))
    assert main(args(root, "pilot", "--examples-limit", "20")) == 0
    pilot_images = pl.read_parquet(root / "pilot" / "shards" / "samples.parquet").filter(pl.col("series") == "images")
    expected, _ = run_aside([sys.executable, "-m", "packer", *args(root, "Step_3")], root / "Step_3")
    # A link in the pilot's shards is never followed: that shard's images are encoded.
    first = root / "pilot" / "shards" / pilot_images["shard"][0]
    linked = [s for s in pilot_images["shard"].to_list() if s == pilot_images["shard"][0]]
    shutil.move(first, root / "aside.tar")
    first.symlink_to(root / "aside.tar")
    done = subprocess.run([sys.executable, "-m", "packer", *args(root, "Step_3", "--reuse-from", str(root / "pilot"))],
                          cwd=root, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    reuse = stats_of(root / "Step_3")["reuse"]
    assert reuse["reused"] == len(pilot_images) - len(linked) and reuse["from"] == str(root / "pilot" / "shards")
    assert f"images: {reuse['reused']} reused, {MEMES - reuse['reused']} encoded" in done.stdout
    assert digests(root / "Step_3") == expected
    assert main(args(root, "x", "--reuse-from", str(root / "Step_2"))) == 2  # not a pack: exit 2, nothing written
    assert not (root / "x").exists()


@pytest.mark.slow  # a run killed and resumed
def test_a_killed_reusing_repack_resumes_to_the_same_bytes(corpus: Path, tmp_path: Path):
    out = tmp_path / "Step_3"
    assert subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True).returncode == 0
    before = tmp_path / "before"
    shutil.copytree(out, before)
    edit_taxonomy(out / "label_taxonomy.json")
    expected, _ = run_aside(command(corpus, out, "--no-reuse"), out)
    shutil.copytree(before, out)
    edit_taxonomy(out / "label_taxonomy.json")
    workers = kill_when(command(corpus, out), tmp_path, lambda pid: any((out / "shards").glob("*/*.tar.tmp")))
    assert workers is not None and (out / "shards" / ".previous" / "samples.parquet").is_file()
    rerun = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "reused" in rerun.stdout and digests(out) == expected
    assert not (out / "shards" / ".previous").exists()


def test_show_prints_an_example_and_writes_its_image(pilot: Path, tmp_path: Path):
    catalog = pl.read_parquet(pilot / "shards" / "samples.parquet")
    row = catalog.filter(pl.col("series") == "images").row(0, named=True)
    done = subprocess.run(
        [sys.executable, "-m", "packer", "show", row["id"], "--pack", str(pilot), "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"id: {row['id']}" in done.stdout and f"split: {row['split']}" in done.stdout
    assert f"shard: {row['shard']}, sample {row['index']}, bytes {row['offset']}.." in done.stdout
    written = tmp_path / f"{row['key']}.jpg"
    assert f"image written: {written}" in done.stdout
    with open(pilot / "shards" / row["shard"], "rb") as shard:
        shard.seek(row["offset"])
        from packer.catalog import parse_sample

        assert written.read_bytes() == parse_sample(shard.read(row["size"]))[1]["jpg"]
    clip = catalog.filter(pl.col("series") == "video").row(0, named=True)
    assert main(["show", clip["key"], "--pack", str(pilot), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{clip['key']}.f07.jpg").is_file()
    missing = subprocess.run([sys.executable, "-m", "packer", "show", row["id"] + "x", "--pack", str(pilot)],
                             capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and f"nearest ids: {row['id']}" in missing.stderr
    assert ROOT.is_dir()


def test_a_relabel_repack_of_the_pilot_decodes_no_clip_frame(pilot: Path, tmp_path: Path):
    """The pilot (12 clips) re-packed with an edited HateMM rule: every clip's frames are the earlier
    pack's (reused: none decoded), and the pack is the same bytes as a pack that decodes them all."""
    from conftest import sample_args

    step2 = pilot.parent / "Step_2"

    def pack(out: Path, *extra: str) -> dict:
        flags = [a for a in sample_args(step2, out, *extra) if a not in ("--shard-maxcount", "16")]
        assert main(flags) == 0
        return stats_of(out)

    for name in ("Step_3", "encoded"):
        shutil.copytree(pilot, tmp_path / name)
        path = tmp_path / name / "label_taxonomy.json"
        doc = json.loads(path.read_text())
        doc["datasets"]["hatemm"]["labels"]["target_group"]["cases"][1]["then"]["map"]["jews"] = ["religion"]
        path.write_text(json.dumps(doc, indent=1))
    reused = pack(tmp_path / "Step_3")["reuse"]
    assert (reused["clips_reused"], reused["clips_decoded"]) == (12, 0)
    encoded = pack(tmp_path / "encoded", "--no-reuse")["reuse"]
    assert (encoded["clips_reused"], encoded["clips_decoded"]) == (0, 12)
    # Every file the same (the card names its folder; stats.json less its reuse counts and timings).
    ours = digests(tmp_path / "Step_3", anywhere=True)
    theirs = digests(
        tmp_path / "encoded",
        anywhere=True,
        replace={"`encoded`": "`Step_3`", "encoded/": "Step_3/", '"encoded"': '"Step_3"'},
    )
    assert ours == theirs
    assert sum("/video-" in k for k in ours) >= 2
    # The edited rule took: HateMM's clips about Jews now target `religion`, not `jewish`.
    clips = pl.read_parquet(tmp_path / "Step_3" / "shards" / "samples.parquet").filter(pl.col("dataset") == "hatemm")
    assert clips.filter(pl.col("target_group").list.contains("religion")).height > 0
    assert clips.filter(pl.col("target_group").list.contains("jewish")).height == 0
