"""The shards folder as Megatron-Energon loads it, as packed (no `energon prepare`): the real
megatron-energon 7.x in its own venv (.cache/energon-venv, built by the first test that needs it,
or by `make energon`), every split of both series at world size 1
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

ENERGON_VENV = ROOT / ".cache" / "energon-venv"
READER = Path(__file__).with_name("energon_reader.py")

pytestmark = [
    pytest.mark.heavy,  # a venv of its own
    pytest.mark.xdist_group(name="energon"),  # one worker: the venv is built (if need be) and loaded once
]


@pytest.fixture(scope="session")
def energon_python() -> Path:
    """The energon venv's Python: PACKER_ENERGON_PYTHON if set, else .cache/energon-venv, built
    here when it is missing or was made for other requirements (scripts/side_venv.py; the group is
    scheduled first, so the build overlaps the other worker's tests)."""
    if os.environ.get("PACKER_ENERGON_PYTHON"):
        python = Path(os.environ["PACKER_ENERGON_PYTHON"])
        if not python.is_file():
            pytest.skip(f"megatron-energon's venv is not here ({python})")
        return python
    from side_venv import ensure_extra

    try:
        ensure_extra(ENERGON_VENV, "energon")
    except (subprocess.CalledProcessError, OSError) as exc:
        why = f"{exc} {getattr(exc, 'stderr', None) or ''}"[-2000:]  # an OSError has no stderr
        pytest.skip(f"megatron-energon's venv could not be built ({ENERGON_VENV}): {why}")
    return ENERGON_VENV / "bin" / "python"


def energon(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(python.with_name("energon")), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)  # fmt: skip


def load_all(python: Path, jobs: list[tuple[Path, str, str, int, list[str]]]) -> list[dict]:
    """Each job (root, split config, dataset config, world size, parts) loaded as a training job
    does, all by one process of the energon venv (one interpreter and torch import for them all)."""
    spec = json.dumps([[str(root), *rest] for root, *rest in jobs])
    done = subprocess.run([str(python), str(READER), "--jobs", spec], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


SERIES_CONFIGS = [
    ("split.yaml", ["images"]),
    ("split.text.yaml", ["text"]),
    ("split.video.yaml", ["video"]),
    ("split.all.yaml", ["images", "text", "video"]),
]
PARTS = {
    # Every split a part; diagnostics (HateCheck, text only) has no image shards: `[]` in split.yaml.
    split_config: ["train", "val", "test", *(["diagnostics"] if "text" in series else [])]
    for split_config, series in SERIES_CONFIGS
}
TYPED = [
    ("split.all.yaml", "dataset.text.yaml", 1, ["val"]),
    ("split.yaml", "dataset.image_abuse_hate.yaml", 1, ["test"]),
]


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules between its tests
def loaded(energon_python: Path, pilot: Path) -> dict[tuple, dict]:
    """What every rank of every load the tests below check got: all loaded at once."""
    jobs = [(split_config, "dataset.yaml", world, PARTS[split_config]) for split_config in PARTS for world in (1, 2)]
    jobs += TYPED
    results = load_all(energon_python, [(pilot / "shards", *job) for job in jobs])
    return {(split, dataset, world, tuple(parts)): got for (split, dataset, world, parts), got in zip(jobs, results)}


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("split_config, series", SERIES_CONFIGS)
def test_every_split_loads_once_across_ranks(pilot: Path, loaded, world: int, split_config: str, series: list[str]):
    shards = pilot / "shards"
    catalog = pl.read_parquet(shards / "samples.parquet")
    stats = json.loads((pilot / "stats.json").read_text())
    assert list(stats["splits"]) == ["train", "val", "test", "diagnostics"]
    parts = [p for p in stats["splits"] if len(catalog.filter((pl.col("split") == p) & pl.col("series").is_in(series)))]
    assert parts == PARTS[split_config]
    got = loaded[split_config, "dataset.yaml", world, tuple(parts)]
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


def test_typed_configs_load_and_pass_energon_lint(energon_python: Path, pilot: Path, loaded):
    shards = pilot / "shards"
    catalog = pl.read_parquet(shards / "samples.parquet")
    texts = loaded["split.all.yaml", "dataset.text.yaml", 1, ("val",)]["val"]["0"]
    val = catalog.filter(pl.col("split") == "val")
    assert len(texts) == len(val)
    for key, text in texts[:20]:  # TextSample.text is the sample's .txt member, whole
        row = val.filter(pl.col("key") == key).row(0, named=True)
        from packer.catalog import parse_sample

        with open(shards / row["shard"], "rb") as handle:
            handle.seek(row["offset"])
            assert text == parse_sample(handle.read(row["size"]))[1]["txt"].decode("utf-8")
    labelled = loaded["split.yaml", "dataset.image_abuse_hate.yaml", 1, ("test",)]["test"]["0"]
    test = catalog.filter((pl.col("split") == "test") & (pl.col("series") == "images"))
    labels = dict(zip(test["key"], test["abuse_hate"]))
    assert len(labelled) == len(test)
    assert all(label == labels[key] and shape == [3, 384, 384] for key, (label, shape) in labelled)
    assert {label for _, (label, _) in labelled} >= {0, 1}
    # Four lints at once (each its own energon process): three pass; the image config on the text
    # series fails, since lint does check the samples.
    lints = {
        ("dataset.text.yaml", "split.all.yaml"): 0,
        ("dataset.image_abuse_hate.yaml", "split.yaml"): 0,
        ("dataset.image_abuse_hate.yaml", "split.video.yaml"): 0,  # a clip's middle frame is its jpg
        ("dataset.image_abuse_hate.yaml", "split.text.yaml"): 1,
    }
    cli = str(energon_python.with_name("energon"))
    running = {
        configs: subprocess.Popen(
            [cli, "lint", str(shards), "--dataset-config", configs[0], "--split-config", configs[1]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for configs in lints
    }
    for configs, proc in running.items():
        out, err = proc.communicate(timeout=600)
        assert (proc.returncode != 0) == bool(lints[configs]), (configs, out[-2000:], err[-2000:])


def readme_block(fence: str, needle: str) -> str:
    """The one ```<fence> block of README.md and docs/ that holds `needle`."""
    found = [b for b in doc_blocks(fence) if needle in b]
    assert len(found) == 1, needle
    return found[0]


def test_readme_energon_snippet_runs_in_energons_venv(energon_python: Path, pilot: Path, tmp_path: Path):
    """The README's energon block, as written, from a folder holding Step_3 (as the other snippets)."""
    (tmp_path / "Step_3").symlink_to(pilot, target_is_directory=True)
    code = readme_block("python", "megatron.energon") + "\nimport json\nprint(json.dumps(texts))\n"
    done = subprocess.run([str(energon_python), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last_rank = json.loads(done.stdout.strip().splitlines()[-1])
    catalog = pl.read_parquet(pilot / "shards" / "samples.parquet").filter(pl.col("split") == "val")
    assert 0 < len(last_rank) < len(catalog)  # rank 1 of 2: part of val, both series


def test_metadata_is_what_energon_prepare_writes(energon_python: Path, pilot: Path, tmp_path: Path):
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
    done = energon(energon_python, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    idx = sorted(p.relative_to(ours) for p in ours.glob("*/*.tar.idx"))
    assert idx == sorted(p.relative_to(theirs) for p in theirs.glob("*/*.tar.idx"))
    assert len(idx) == len(list(ours.glob("*/*.tar")))
    for name in idx:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    for name in (".info.json", "split.yaml", "dataset.yaml"):
        assert (ours / ".nv-meta" / name).read_bytes() == (theirs / ".nv-meta" / name).read_bytes(), name
