"""The shards folder as Megatron-Energon loads it, as packed (no `energon prepare`): the real
megatron-energon 7.x in its own venv (`make energon`), every split of both series at world size 1
and 2 with 2 DataLoader workers per rank, the typed configs through `energon lint`, and packer's
metadata byte for byte against what `energon prepare` writes for the same shards."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT, doc_blocks

ENERGON_PYTHON = Path(os.environ.get("PACKER_ENERGON_PYTHON") or ROOT / ".cache/energon-venv/bin/python")
READER = Path(__file__).with_name("energon_reader.py")

pytestmark = [
    pytest.mark.heavy,  # a venv of its own
    pytest.mark.skipif(
        not ENERGON_PYTHON.is_file(), reason=f"megatron-energon's venv is not here ({ENERGON_PYTHON}): make energon"
    ),
]


def energon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cli = ENERGON_PYTHON.with_name("energon")
    return subprocess.run([str(cli), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def load(root: Path, split_config: str, dataset_config: str, world: int, parts: list[str]) -> dict:
    done = subprocess.run(
        [str(ENERGON_PYTHON), str(READER), str(root), split_config, dataset_config, str(world), *parts],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize(
    "split_config, series",
    [
        ("split.yaml", ["images"]),
        ("split.text.yaml", ["text"]),
        ("split.video.yaml", ["video"]),
        ("split.all.yaml", ["images", "text", "video"]),
    ],
)
def test_every_split_loads_once_across_ranks(pilot: Path, world: int, split_config: str, series: list[str]):
    shards = pilot / "shards"
    catalog = pl.read_parquet(shards / "samples.parquet")
    stats = json.loads((pilot / "stats.json").read_text())
    assert list(stats["splits"]) == ["train", "val", "test", "diagnostics"]
    # Every split a part; diagnostics (HateCheck, text only) has no image shards: `[]` in split.yaml.
    parts = [p for p in stats["splits"] if len(catalog.filter((pl.col("split") == p) & pl.col("series").is_in(series)))]
    with_diagnostics = "text" in series  # HateCheck is text only
    assert parts == ["train", "val", "test", *(["diagnostics"] if with_diagnostics else [])]
    got = load(shards, split_config, "dataset.yaml", world, parts)
    for part in parts:
        ranks = got[part]
        keys = [[k for k, _ in ranks[str(r)]] for r in range(world)]
        expected = catalog.filter((pl.col("split") == part) & pl.col("series").is_in(series))
        kinds = {"images": "image", "text": "text", "video": "video"}
        wanted = sum(stats["splits"][part][f"{kinds[s]}_examples"] for s in series)
        assert sum(len(k) for k in keys) == wanted == len(expected), (part, [len(k) for k in keys])
        # Every rank gets a sample, where the part has one for each (the pilot's val has 1 clip).
        assert all(keys) or len(expected) < world, (part, "a rank got no sample")
        if world == 2:
            assert not set(keys[0]) & set(keys[1]), part
        assert set().union(*map(set, keys)) == set(expected["key"])
        # The cooker read each sample's own .json: the id travels with its key.
        ids = dict(zip(expected["key"], expected["id"]))
        assert all(ids[k] == v for r in ranks.values() for k, v in r)


def test_typed_configs_load_and_pass_energon_lint(pilot: Path):
    shards = pilot / "shards"
    catalog = pl.read_parquet(shards / "samples.parquet")
    texts = load(shards, "split.all.yaml", "dataset.text.yaml", 1, ["val"])["val"]["0"]
    val = catalog.filter(pl.col("split") == "val")
    assert len(texts) == len(val)
    for key, text in texts[:20]:  # TextSample.text is the sample's .txt member, whole
        row = val.filter(pl.col("key") == key).row(0, named=True)
        from packer.catalog import parse_sample

        with open(shards / row["shard"], "rb") as handle:
            handle.seek(row["offset"])
            assert text == parse_sample(handle.read(row["size"]))[1]["txt"].decode("utf-8")
    labelled = load(shards, "split.yaml", "dataset.image_abuse_hate.yaml", 1, ["test"])["test"]["0"]
    test = catalog.filter((pl.col("split") == "test") & (pl.col("series") == "images"))
    labels = dict(zip(test["key"], test["abuse_hate"]))
    assert len(labelled) == len(test)
    assert all(label == labels[key] and shape == [3, 384, 384] for key, (label, shape) in labelled)
    assert {label for _, (label, _) in labelled} >= {0, 1}
    for dataset_config, split_config in (
        ("dataset.text.yaml", "split.all.yaml"),
        ("dataset.image_abuse_hate.yaml", "split.yaml"),
        ("dataset.image_abuse_hate.yaml", "split.video.yaml"),  # a clip's middle frame is its jpg
    ):
        done = energon("lint", str(shards), "--dataset-config", dataset_config, "--split-config", split_config)
        assert done.returncode == 0, (dataset_config, done.stdout[-2000:], done.stderr[-2000:])
    # The image config on the text series fails lint: lint does check the samples.
    done = energon(
        "lint", str(shards), "--dataset-config", "dataset.image_abuse_hate.yaml", "--split-config", "split.text.yaml"
    )
    assert done.returncode != 0


def readme_block(fence: str, needle: str) -> str:
    """The one ```<fence> block of README.md and docs/ that holds `needle`."""
    found = [b for b in doc_blocks(fence) if needle in b]
    assert len(found) == 1, needle
    return found[0]


def test_readme_energon_snippet_runs_in_energons_venv(pilot: Path, tmp_path: Path):
    """The README's energon block, as written, from a folder holding Step_3 (as the other snippets)."""
    (tmp_path / "Step_3").symlink_to(pilot, target_is_directory=True)
    code = readme_block("python", "megatron.energon") + "\nimport json\nprint(json.dumps(texts))\n"
    done = subprocess.run([str(ENERGON_PYTHON), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last_rank = json.loads(done.stdout.strip().splitlines()[-1])
    catalog = pl.read_parquet(pilot / "shards" / "samples.parquet").filter(pl.col("split") == "val")
    assert 0 < len(last_rank) < len(catalog)  # rank 1 of 2: part of val, both series


def test_metadata_is_what_energon_prepare_writes(pilot: Path, tmp_path: Path):
    """The README's `energon prepare` line (plus the diagnostics part this pack has) on a copy of
    the shards without packer's metadata writes the same bytes packer wrote."""
    ours = pilot / "shards"
    theirs = tmp_path / "Step_3" / "shards"
    shutil.copytree(ours, theirs)
    shutil.rmtree(theirs / ".nv-meta")
    for idx in theirs.glob("*/*.tar.idx"):
        idx.unlink()
    line = readme_block("bash", "energon prepare").strip()
    args = shlex.split(line)[1:] + ["--no-progress", "--split-parts", "diagnostics:diagnostics/shard-.*\\.tar"]
    done = energon(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    idx = sorted(p.relative_to(ours) for p in ours.glob("*/*.tar.idx"))
    assert idx == sorted(p.relative_to(theirs) for p in theirs.glob("*/*.tar.idx"))
    assert len(idx) == len(list(ours.glob("*/*.tar")))
    for name in idx:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    for name in (".info.json", "split.yaml", "dataset.yaml"):
        assert (ours / ".nv-meta" / name).read_bytes() == (theirs / ".nv-meta" / name).read_bytes(), name
