"""Inputs in a bucket, against a real S3 server (SeaweedFS on 127.0.0.1) behind the tests'
fault-injecting proxy: the corpus read from s3:// paths (and its manifest and ASR file from
s3:// URLs) packs byte for byte as from disk, with loky and on a Dask cluster whose workers
cannot open the local copy; faults lose nothing; kill -9 resumes; a missing object fails alone;
a re-pack reuses what is unchanged and encodes a replaced object again; a wrong credential, a
missing bucket or a scheme packer does not read is refused before anything changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from conftest import MAMI, MAMI_NOT, alive, digests, write_jsonl
from PIL import Image
from s3server import KEY, SECRET, FaultProxy
from test_resume import journal_lines, kill_when

from packer.cli import main

pytestmark = [pytest.mark.heavy]

BUCKET = "inputs"
PREFIX = f"s3://{BUCKET}/corpus/"
FAST = {"config_kwargs": {"read_timeout": 1, "connect_timeout": 1}}  # a stalled request is retried after 1 s


@pytest.fixture(scope="session")
def in_bucket(corpus, s3, tmp_path_factory) -> Path:
    """The corpus's images and clips uploaded under s3://inputs/corpus/, with two manifests: every
    image and clip by URL (`remote.jsonl`, uploaded as corpus/manifest.jsonl beside the ASR file)
    and a mixed one (`mixed.jsonl`, also corpus/mixed.jsonl: every other image local, clips by URL)."""
    from conftest import built_once

    def build(root: Path) -> None:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
        media = [Path(r[f]) for r in rows for f in ("image_path", "video_path") if r.get(f)]

        def put(path: Path) -> None:
            key = f"corpus/{path.relative_to(corpus).as_posix()}"
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

        with ThreadPoolExecutor(8) as threads:
            list(threads.map(put, media))
        remote, mixed = [], []
        for i, row in enumerate(rows):
            urls = {f: row[f].replace(f"{corpus}/", PREFIX) for f in ("image_path", "video_path") if row.get(f)}
            remote.append({**row, **urls})
            mixed.append({**row, **({"image_path": urls["image_path"]} if i % 2 and "image_path" in urls else {})})
            if "video_path" in urls:
                mixed[-1]["video_path"] = urls["video_path"]
        write_jsonl(root / "remote.jsonl", remote)
        write_jsonl(root / "mixed.jsonl", mixed)
        for name, path in (("manifest", root / "remote.jsonl"), ("mixed", root / "mixed.jsonl")):
            client.put_object(Bucket=BUCKET, Key=f"corpus/{name}.jsonl", Body=path.read_bytes())
        client.put_object(Bucket=BUCKET, Key="corpus/asr.jsonl", Body=(corpus / "asr.jsonl").read_bytes())

    return built_once(tmp_path_factory, "bucket-corpus", build)


def pack_command(manifest: str, asr: str, out: Path, *extra: str) -> list[str]:
    """The corpus's pack command (conftest.command) with these input locations."""
    return [
        *(sys.executable, "-m", "packer", "--manifest", manifest, "--asr", asr),
        *("--output-dir", str(out / "shards"), "--label-taxonomy", str(out / "label_taxonomy.json")),
        *("--splits", str(out / "splits.json"), "--workers", "2", "--shard-maxcount", "8"),
        *extra,
    ]


def same_as_disk(out: Path, corpus: Path, corpus_pack: dict[str, str], reference: Path, manifest: str) -> None:
    """The pack at `out`, of the corpus read (in part) from the bucket by `manifest`, is the pack
    of the corpus read from disk: every file byte for byte once each input's location is written
    as the file it was made from (stats.json, the card and the report name the inputs), and the
    catalog equal but for its source paths, which are the URLs."""
    written_as = {manifest: str(corpus / "manifest.jsonl"), PREFIX: f"{corpus}/"}
    found = digests(out, anywhere=True, replace=written_as)
    catalog = "shards/samples.parquet"
    assert {k: v for k, v in found.items() if k != catalog} == {k: v for k, v in corpus_pack.items() if k != catalog}
    mine = pl.read_parquet(out / catalog)
    theirs = pl.read_parquet(reference / catalog)
    assert mine.drop("source_path").equals(theirs.drop("source_path"))
    local = mine["source_path"].str.replace(PREFIX, f"{corpus}/", literal=True)
    assert local.equals(theirs["source_path"]) and mine["source_path"].str.starts_with(PREFIX).sum() > 0


def test_a_mixed_manifest_in_the_bucket_packs_as_from_disk_through_faults_and_a_kill(
    in_bucket, corpus, corpus_pack, corpus_reference, s3, tmp_path
):
    """The mixed manifest and the ASR file read from the bucket, through 10% of requests faulted
    (503, resets, lost answers, stalls past the 1 s read timeout), killed with SIGKILL after 3
    shards and run again: it resumes, and the pack is the pack from disk."""
    faults = FaultProxy(s3.endpoint.removeprefix("http://"), seed=5, rate=0.1, stall=1.1)
    env = {**os.environ, **s3.env(faults.endpoint)}
    out = tmp_path / "Step_3"
    cmd = pack_command(f"{PREFIX}mixed.jsonl", f"{PREFIX}asr.jsonl", out, "--storage-options", json.dumps(FAST))
    try:
        workers = kill_when(cmd, tmp_path, lambda _pid: journal_lines(out, "shard") >= 3, timeout=120, env=env)
        deadline = time.monotonic() + 10
        while alive(workers) and time.monotonic() < deadline:  # the workers exit with their parent
            time.sleep(0.05)
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        faults.close()
    assert done.returncode == 0, done.stderr
    assert "packer: resuming:" in done.stdout
    assert all(faults.counts[kind] > 0 for kind in ("503", "reset", "lost", "stall")), faults.counts
    same_as_disk(out, corpus, corpus_pack, corpus_reference, f"{PREFIX}mixed.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["config"]["manifest"] == f"{PREFIX}mixed.jsonl" and stats["config"]["asr"] == f"{PREFIX}asr.jsonl"
    # The clips were read by ranged requests; each image object was fetched whole.
    gets = [(path, ranged) for (method, path), ranged in zip(faults.requests, faults.ranges) if method == "GET"]
    assert [r for p, r in gets if "/videos/" in p] and all(r for p, r in gets if "/videos/" in p)
    assert any(r is None for p, r in gets if "/images/" in p)


def no_local_copy(root: str):
    """A Dask worker plugin: from its setup on, the worker cannot open a file under `root` (a
    Python audit hook refuses every open there), as a worker on another machine could not."""
    from distributed import WorkerPlugin

    class NoLocalCopy(WorkerPlugin):
        def setup(self, worker) -> None:
            def refuse(event: str, args: tuple) -> None:
                if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                    if os.fsdecode(args[0]).startswith(root):
                        raise PermissionError(f"{args[0]}: not on this worker")

            sys.addaudithook(refuse)

    return NoLocalCopy()


def opens(path: str) -> str:
    try:
        with open(path, "rb"):
            return "opened"
    except PermissionError:
        return "refused"


def test_dask_packs_a_mixed_manifest_then_a_bucket_its_workers_alone_can_reach(
    in_bucket, corpus, corpus_pack, corpus_reference, s3, tmp_path
):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (make install adds it)")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    options = json.dumps({"key": KEY, "secret": SECRET, "endpoint_url": s3.endpoint})  # the tasks carry them
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            dask = ("--backend", "dask", "--scheduler", c.scheduler_address, "--storage-options", options)
            out = tmp_path / "mixed" / "Step_3"
            out.parent.mkdir()
            cmd = pack_command(str(in_bucket / "mixed.jsonl"), str(corpus / "asr.jsonl"), out, *dask)
            done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            assert "image stage on dask, 2 worker thread(s)" in done.stdout
            same_as_disk(out, corpus, corpus_pack, corpus_reference, str(in_bucket / "mixed.jsonl"))

            client.register_plugin(no_local_copy(str(corpus)), name="no-local-copy")
            image = str(corpus / "images" / "m0.jpg")
            assert set(client.run(opens, image).values()) == {"refused"} and opens(image) == "opened"
            # The mixed manifest now fails the workers' check, before the run: exit 2, nothing written.
            out = tmp_path / "refused" / "Step_3"
            out.parent.mkdir()
            cmd = pack_command(str(in_bucket / "mixed.jsonl"), str(corpus / "asr.jsonl"), out, *dask)
            done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 2 and "cannot read" in done.stderr and not (out / "stats.json").exists()

            out = tmp_path / "bucket" / "Step_3"
            out.parent.mkdir()
            cmd = pack_command(f"{PREFIX}manifest.jsonl", f"{PREFIX}asr.jsonl", out, *dask)
            done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            same_as_disk(out, corpus, corpus_pack, corpus_reference, f"{PREFIX}manifest.jsonl")
            assert set(client.run(opens, image).values()) == {"refused"}  # the hook held throughout


# -- a small bucket: missing, replaced and reused objects; refusals ---------------------------------


def bmp(colour: tuple[int, int, int], size=(64, 48)) -> bytes:
    """An uncompressed BMP: every picture of one size is one byte count (a replaced object keeps its size)."""
    import io

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="BMP")
    return out.getvalue()


def small_bucket(s3, name: str, ws) -> list[str]:
    """Six BMP memes in s3://<name>/memes/, and a manifest naming them and one object never uploaded."""
    client = s3.client()
    client.create_bucket(Bucket=name)
    urls = []
    for i in range(6):
        client.put_object(Bucket=name, Key=f"memes/m{i}.bmp", Body=bmp((40 * i, 200 - 30 * i, 90)))
        urls.append(f"s3://{name}/memes/m{i}.bmp")
    for i, url in enumerate([*urls, f"s3://{name}/memes/never-uploaded.bmp"]):
        ws.add(f"mami_{i}", "mami", "train", MAMI if i % 2 else MAMI_NOT, image=url, text=f"meme {i}")
    return urls


def test_a_missing_object_fails_alone_and_a_repack_reuses_all_but_a_replaced_object(ws, s3, env, capsys, tmp_path):
    urls = small_bucket(s3, "small", ws)
    assert ws.run() == 1  # one failure in seven is over 0.5%
    failed = ws.failures()
    assert [(f["id"], f["reason"]) for f in failed] == [("mami_6", "image_missing")]
    assert ws.stats["datasets"]["mami"]["packed"] == 6 and ws.stats["reuse"]["encoded"] == 6
    catalog = pl.read_parquet(ws.out / "shards" / "samples.parquet").sort("id")
    assert catalog["source_path"].to_list() == urls

    assert ws.run() == 1  # nothing changed: every image is the earlier pack's
    assert ws.stats["reuse"] | {"from": None} == {"from": None, "reused": 6, "encoded": 0, "checked": 0}

    # m2 replaced by other pixels of the same size: only its ETag tells (its last-modified may be the
    # same second, its size is the same).
    s3.client().put_object(Bucket="small", Key="memes/m2.bmp", Body=bmp((1, 2, 3)))
    assert ws.run() == 1
    assert ws.stats["reuse"] | {"from": None} == {"from": None, "reused": 5, "encoded": 1, "checked": 0}
    repacked = {p.name: p.read_bytes() for p in sorted((ws.out / "shards" / "train").glob("*.tar"))}
    fresh = tmp_path / "fresh"
    assert main(fresh_args(ws, fresh)) == 1
    assert {p.name: p.read_bytes() for p in sorted((fresh / "shards" / "train").glob("*.tar"))} == repacked
    capsys.readouterr()


def fresh_args(ws, out: Path) -> list[str]:
    """The workspace's pack into another Step_3 folder, encoding everything."""
    return [
        *("--manifest", str(ws.manifest), "--ocr", str(ws.ocr), "--output-dir", str(out / "shards")),
        *("--label-taxonomy", str(out / "label_taxonomy.json"), "--splits", str(out / "splits.json")),
        *("--workers", "1", "--no-reuse"),
    ]


def test_wrong_credentials_a_missing_bucket_or_an_unknown_scheme_are_refused_before_the_run(ws, s3, env, capsys):
    small_bucket(s3, "refusals", ws)
    ws.write()
    cases = {
        "a wrong secret": (["--storage-options", json.dumps({"key": KEY, "secret": "wrong"})], "s3://refusals/"),
        "an unknown key": (["--storage-options", json.dumps({"key": "nobody", "secret": SECRET})], "s3://refusals/"),
    }
    for what, (flags, named) in cases.items():
        code = main(ws.args(*flags, "--workers", "1"))
        out, err = capsys.readouterr()
        assert code == 2, what
        assert named in err and len(err.strip().splitlines()) == 1 and "wrong" not in err, (what, err)
        assert not ws.out.exists(), what

    ws.rows[0]["image_path"] = "s3://no-such-bucket/memes/m0.bmp"
    ws.rows[1]["image_path"] = "gs://refusals/memes/m1.bmp"
    ws.write()
    assert main(ws.args("--workers", "1")) == 2
    err = capsys.readouterr().err
    assert "line 2: field 'image_path'" in err and "gs://refusals/memes/m1.bmp" in err and "s3://" in err
    ws.rows[1]["image_path"] = "s3://refusals/memes/m1.bmp"
    ws.write()
    assert main(ws.args("--workers", "1")) == 2
    assert "no-such-bucket" in capsys.readouterr().err and not ws.out.exists()

    manifest = ws.args("--workers", "1")
    manifest[1] = "s3://refusals/no/manifest.jsonl"
    assert main(manifest) == 2
    assert "s3://refusals/no/manifest.jsonl: no such object (the manifest)" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_inputs_prints_both_rates_and_their_ratio(s3, tmp_path):
    """scripts/bench_inputs.py on a tiny corpus, against the session's server: both image stages,
    the server's CPU, the ratio, and the same shards from the bucket as from disk (the script stops
    otherwise)."""
    from conftest import ROOT

    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_inputs.py"), "--images", "2", "--repeat", "1", "--workers", "1",
         "--endpoint", s3.endpoint, "--work", str(tmp_path / "work"), "--cache", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **s3.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["corpus_images"] == 6
    assert result["disk"]["images_per_second"] > 0 and result["bucket"]["images_per_second"] > 0
    assert result["bucket"]["server_cpu_seconds"] > 0 and result["image_stage_bucket_vs_disk"] > 0
    assert "shards identical" in done.stdout
