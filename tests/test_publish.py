"""Publishing to a bucket, against a real S3 server (SeaweedFS, started here on 127.0.0.1) behind
the tests' fault-injecting proxy: a complete, verified pack under faults; kill -9 and resume; never
a manifest with a missing object; a re-publish with fewer shards; a foreign prefix and a second
publisher refused; permanent errors ended at once without a credential in sight; and the readers
(webdataset, `datasets`, show, diff) reading the published pack."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import MAMI, MAMI_NOT, ROOT, doc_blocks
from s3server import (
    KEY,
    READ_KEY,
    READ_SECRET,
    SECRET,
    FaultProxy,
    S3Server,
    new_bucket,
    objects,
)

from packer.cli import main

# One server for the session; the tests that read the one published pilot share a worker
# (`on_the_published_pilot`), the others spread over the workers.
pytestmark = [pytest.mark.heavy]
on_the_published_pilot = pytest.mark.xdist_group(name="s3-published")

FAST = json.dumps({"config_kwargs": {"read_timeout": 1, "connect_timeout": 1}})  # a stall is a timeout in 1 s
SKIPPED = {".packer", ".lock", ".sources.parquet", "RUN_INCOMPLETE"}


def local_tree(step3: Path) -> dict[str, str]:
    """What a publish must upload, found independently of packer: every file of the pack but its
    run state (marker, lock, stat cache) -> SHA-256."""
    out = {}
    for path in sorted(step3.rglob("*")):
        relative = path.relative_to(step3).as_posix()
        if (
            path.is_file()
            and path.name not in SKIPPED
            and not relative.startswith(("shards/.run/", "shards/.previous/"))
        ):
            out[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def bucket_tree(s3: S3Server, bucket: str, prefix: str) -> dict[str, str]:
    client, out = s3.client(), {}
    for key in objects(s3, bucket, prefix):
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
        out[key] = hashlib.sha256(body).hexdigest()
    return out


def manifest_of(s3: S3Server, bucket: str, prefix: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return json.loads(s3.client().get_object(Bucket=bucket, Key=f"{prefix}/published.json")["Body"].read())
    except ClientError:
        return None


def publish(step3: Path, url: str, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["publish", str(step3), url, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def counts(out: str) -> dict[str, int]:
    """The summary line's counts: {'objects': N, 'uploaded': N, 'unchanged': N, 'removed': N}."""
    import re

    line = next(line for line in out.splitlines() if line.startswith("packer: published"))
    found = dict((w, int(n)) for n, w in re.findall(r"(\d+) (objects|uploaded|unchanged|removed)", line))
    return found


@pytest.fixture(scope="session")
def published(pilot, s3, tmp_path_factory):
    """The pilot published to s3://packs/pilot through the proxy with 20% of requests faulted
    (503 SlowDown, resets before and after the store saw them, stalls past the read timeout)."""
    new_bucket(s3, "packs")
    faults = FaultProxy(s3.endpoint.removeprefix("http://"), seed=1, rate=0.12, stall=1.1)
    env = {**os.environ, **s3.env(faults.endpoint)}
    cmd = [sys.executable, "-m", "packer.publish", str(pilot), "s3://packs/pilot", "--storage-options", FAST]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    faults.close()
    return done, dict(faults.counts)


# -- the publish itself -------------------------------------------------------------------------


@on_the_published_pilot
def test_a_publish_under_faults_ends_complete_and_verified(published, pilot, s3):
    done, faults = published
    assert done.returncode == 0, done.stderr
    assert all(faults.get(kind, 0) >= 3 for kind in ("503", "reset", "lost", "stall")), faults
    line = done.stdout.strip().splitlines()[-1]
    assert "retries (" in line and "complete: s3://packs/pilot/published.json" in line
    local = local_tree(pilot)
    remote = bucket_tree(s3, "packs", "pilot")
    # The same tree as the local pack (shards, indexes, catalog, .nv-meta, card, report, stats,
    # splits, taxonomy, failures), byte for byte, plus the prefix's marker and the manifest.
    assert set(remote) == set(local) | {".packer", "published.json"}
    assert {k: remote[k] for k in local} == local
    assert any(k.startswith("shards/.nv-meta/") for k in local) and "shards/train/shard-00015.tar.idx" in local
    manifest = manifest_of(s3, "packs", "pilot")
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(local) and manifest["objects"] == len(local)
    on_store = objects(s3, "packs", "pilot")
    for path, entry in listed.items():
        assert entry["sha256"] == local[path] and on_store[path] == (entry["size"], entry["etag"]), path
    assert not s3.client().list_multipart_uploads(Bucket="packs").get("Uploads")
    for text in (done.stdout, done.stderr, json.dumps(manifest)):
        assert SECRET not in text and KEY not in text


@on_the_published_pilot
def test_a_second_publish_of_the_same_pack_uploads_nothing(published, pilot, s3, env, capsys):
    before = objects(s3, "packs", "pilot")
    code, out, err = publish(pilot, "s3://packs/pilot", capsys)
    assert code == 0, err
    assert counts(out) == {"objects": len(before) - 1, "uploaded": 0, "unchanged": len(before) - 1, "removed": 0}
    assert objects(s3, "packs", "pilot") == before


def completeness_watch(s3: S3Server, bucket: str, prefix: str, stop: threading.Event, seen: list) -> None:
    """Whenever published.json is there, every object it lists is there with its size and ETag."""
    while not stop.is_set():
        manifest = manifest_of(s3, bucket, prefix)
        if manifest is not None:
            listing = objects(s3, bucket, prefix)
            missing = [f["path"] for f in manifest["files"] if listing.get(f["path"]) != (f["size"], f["etag"])]
            seen.append(missing)
        else:
            seen.append(None)
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_at_any_point_resumes_to_the_same_objects_and_no_manifest_ever_lies(ws, s3, env, capsys, tmp_path):
    """The prefix first holds a complete pack (8 shards a series); the publish of a re-pack with 4
    over it is killed twice (early in the shards, then later), resumed, and must end with exactly
    the objects of an uninterrupted publish of it. A watcher checks the manifest all along."""
    new_bucket(s3, "killed")
    before = shutil.copytree(small_pack(ws, "--min-shards", "8"), tmp_path / "before")
    step3 = small_pack(ws, "--min-shards", "4")
    assert publish(step3, "s3://killed/reference", capsys)[0] == 0
    code, out, err = publish(before, "s3://killed/p", capsys)
    assert code == 0, err
    proxy = FaultProxy(s3.endpoint.removeprefix("http://"), delay=0.1)
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=completeness_watch, args=(s3, "killed", "p", stop, seen), daemon=True)
    watcher.start()
    try:
        cmd = [sys.executable, "-m", "packer.publish", str(step3), "s3://killed/p"]
        environment = {**os.environ, **s3.env(proxy.endpoint)}
        start = set(objects(s3, "killed", "p").items())
        for changed_enough in (2, 12):
            running = subprocess.Popen(cmd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while len(set(objects(s3, "killed", "p").items()) - start) < changed_enough:
                assert running.poll() is None and time.monotonic() < deadline, running.communicate()
                time.sleep(0.02)
            running.send_signal(signal.SIGKILL)
            running.wait()
            assert manifest_of(s3, "killed", "p") is None  # killed mid-way: the pack says it is incomplete
            assert ".packer-publish.lock" in objects(s3, "killed", "p")  # left behind by the dead run
        code, out, err = publish(step3, "s3://killed/p", capsys)
    finally:
        stop.set()
        watcher.join()
        proxy.close()
    assert code == 0, err
    assert "taking over a lock left by pid" in out  # this host, a process that is gone
    resumed = counts(out)
    assert 0 < resumed["uploaded"] < resumed["objects"] - 12 and resumed["removed"] > 0
    assert objects(s3, "killed", "p") == objects(s3, "killed", "reference")  # the uninterrupted publish's objects
    assert not s3.client().list_multipart_uploads(Bucket="killed").get("Uploads")
    assert [] in seen and None in seen  # the watcher saw the complete pack before and after, and the gap
    assert all(missing in (None, []) for missing in seen), [m for m in seen if m][:1]


def small_pack(ws, *flags: str) -> Path:
    """24 MAMI memes and 12 OLID posts, packed with `flags` (the rows are added on the first call)."""
    for i in range(24 if not ws.rows else 0):
        ws.add(f"mami_{i}", "mami", "train" if i % 4 else "test", MAMI if i % 2 else MAMI_NOT,
               image=ws.image(f"m{i}.jpg", colour=(i * 9, 40, 200 - i * 5)), text=f"meme {i}")  # fmt: skip
    for i in range(12 if len(ws.rows) == 24 else 0):
        ws.add(f"olid_{i}", "olid", "train", {"subtask_a": "OFF" if i % 2 else "NOT"}, text=f"@USER post {i}")
    assert ws.run(*flags) in (0, 1)
    return ws.out


def test_a_republish_with_fewer_shards_leaves_no_stale_shard(ws, s3, env, capsys):
    new_bucket(s3, "fewer")
    step3 = small_pack(ws, "--min-shards", "6")
    code, out, err = publish(step3, "s3://fewer/p", capsys)
    assert code == 0, err
    many = {k for k in objects(s3, "fewer", "p") if k.endswith(".tar")}
    taxonomy_before = objects(s3, "fewer", "p")["label_taxonomy.json"]
    small_pack(ws, "--min-shards", "2")  # the same inputs re-packed over the same folder
    code, out, err = publish(step3, "s3://fewer/p", capsys)
    assert code == 0, err
    left = objects(s3, "fewer", "p")
    few = {k for k in left if k.endswith(".tar")}
    assert few < many and len(few) >= 2
    manifest = manifest_of(s3, "fewer", "p")
    assert set(left) == {f["path"] for f in manifest["files"]} | {".packer", "published.json"}
    assert counts(out)["removed"] == len(many - few) + len({k for k in many - few if k.endswith(".tar")})  # + .idx
    assert counts(out)["unchanged"] >= 1 and left["label_taxonomy.json"] == taxonomy_before
    assert local_tree(step3) == {k: v for k, v in bucket_tree(s3, "fewer", "p").items() if k in local_tree(step3)}


def test_a_prefix_holding_objects_packer_did_not_publish_is_refused_and_untouched(ws, s3, env, capsys):
    new_bucket(s3, "foreign")
    client = s3.client()
    for key in ("data/raw/images/0001.jpg", "data/notes.txt"):
        client.put_object(Bucket="foreign", Key=key, Body=b"irreplaceable")
    before = objects(s3, "foreign")
    step3 = small_pack(ws)
    code, out, err = publish(step3, "s3://foreign/data", capsys)
    assert code == 2
    assert "s3://foreign/data/notes.txt" in err and "s3://foreign/data/raw/images/0001.jpg" in err
    assert "did not publish" in err and len(err.strip().splitlines()) == 1
    assert objects(s3, "foreign") == before  # no lock, no marker, nothing
    # A prefix packer published into, with a foreign object added later, is refused as well.
    code, out, err = publish(step3, "s3://foreign/mine", capsys)
    assert code == 0, err
    client.put_object(Bucket="foreign", Key="mine/shards/train/my-notes.txt", Body=b"mine")
    code, out, err = publish(step3, "s3://foreign/mine", capsys)
    assert code == 2 and "s3://foreign/mine/shards/train/my-notes.txt" in err


def test_a_second_publisher_is_refused_while_the_first_runs(ws, s3, env, capsys, tmp_path):
    new_bucket(s3, "two")
    step3 = small_pack(ws)
    copy = shutil.copytree(step3, tmp_path / "copy")  # the same pack from another folder (each holds its own lock)
    proxy = FaultProxy(s3.endpoint.removeprefix("http://"), delay=0.05)
    try:
        first = subprocess.Popen(
            [sys.executable, "-m", "packer.publish", str(step3), "s3://two/p"],
            env={**os.environ, **s3.env(proxy.endpoint)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while ".packer-publish.lock" not in objects(s3, "two", "p"):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        code, out, err = publish(copy, "s3://two/p", capsys)
        assert code == 2
        assert f"another packer publish (pid {first.pid} on " in err and "--break-lock" in err
        out_first, err_first = first.communicate(timeout=120)
    finally:
        proxy.close()
    assert first.returncode == 0, err_first
    assert ".packer-publish.lock" not in objects(s3, "two", "p") and manifest_of(s3, "two", "p") is not None


def test_a_lock_from_another_host_is_honoured_until_broken(ws, s3, env, capsys):
    new_bucket(s3, "stale")
    step3 = small_pack(ws)
    holder = {"host": "trainer-7\x1b[31m", "pid": 4242, "since": "2026-12-01T00:00:00Z", "token": "x"}
    s3.client().put_object(Bucket="stale", Key="p/.packer-publish.lock", Body=json.dumps(holder).encode())
    code, out, err = publish(step3, "s3://stale/p", capsys)
    assert code == 2 and "pid 4242 on trainer-7\\x1b[31m" in err and "\x1b" not in err
    assert manifest_of(s3, "stale", "p") is None and set(objects(s3, "stale", "p")) == {".packer-publish.lock"}
    code, out, err = publish(step3, "s3://stale/p", capsys, "--break-lock")
    assert code == 0, err
    assert "taking over" in out and ".packer-publish.lock" not in objects(s3, "stale", "p")


def test_permanent_errors_end_at_once_with_exit_3_and_no_credential(ws, s3, env, capsys, proxy):
    new_bucket(s3, "perm")
    step3 = small_pack(ws)
    env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    cases = {
        "wrong secret": ("s3://perm/p", {"AWS_SECRET_ACCESS_KEY": SECRET + "-wrong"}),
        "no such bucket": ("s3://no-such-bucket-here/p", {}),
        "read-only identity": ("s3://perm/p", {"AWS_ACCESS_KEY_ID": READ_KEY, "AWS_SECRET_ACCESS_KEY": READ_SECRET}),
    }  # fmt: skip
    for what, (url, variables) in cases.items():
        for name, value in variables.items():
            env.setenv(name, value)
        proxy.requests.clear()
        code, out, err = publish(step3, url, capsys)
        assert code == 3, (what, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {url.rsplit('/', 1)[0]}"), (what, err)
        assert SECRET not in err + out and "reader-secret" not in err + out
        assert len(proxy.requests) <= 4, (what, proxy.requests)  # no retries of a permanent answer
        for name in variables:
            env.setenv(name, s3.env()[name])
    assert objects(s3, "perm") == {}
    env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    code, out, err = publish(step3, "s3://perm/p", capsys)
    assert code == 3 and "s3://perm/p" in err and len(err.strip().splitlines()) == 1


def noise_pack(ws) -> Path:
    """One image shard over 5 MiB (36 noise images at quality 95): a multipart upload."""
    from PIL import Image

    for i in range(36):
        path = ws.images / f"n{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.effect_noise((384, 384), 80 + i).convert("RGB").save(path, compress_level=1)
        ws.add(f"mami_{i}", "mami", "train", MAMI if i % 2 else MAMI_NOT, image=str(path))
    assert ws.run("--min-shards", "1") in (0, 1)
    return ws.out


def test_a_large_shard_goes_up_in_parts_and_a_failed_multipart_upload_is_aborted(ws, s3, env, capsys, proxy):
    new_bucket(s3, "parts")
    step3 = noise_pack(ws)
    shard = step3 / "shards/train/shard-00000.tar"
    assert shard.stat().st_size > 5 << 20
    env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    proxy.deny = lambda method, path: method == "PUT" and "partNumber=2" in path
    code, out, err = publish(step3, "s3://parts/p", capsys, "--part-size", str(5 << 20))
    assert code == 3 and "s3://parts/p/shards/train/shard-00000.tar" in err and "AccessDenied" in err
    assert not s3.client().list_multipart_uploads(Bucket="parts").get("Uploads")  # aborted, not left
    assert "shards/train/shard-00000.tar" not in objects(s3, "parts", "p") and manifest_of(s3, "parts", "p") is None
    proxy.deny = None
    proxy.rate, proxy.kinds = 0.1, ("503", "reset", "lost")  # and the parts survive faults,
    completions = []  # the completion's answer lost: its retry meets "no such upload", the object is there
    proxy.lose = lambda m, p: m == "POST" and "uploadId=" in p and (completions.append(p) or len(completions) == 1)
    code, out, err = publish(step3, "s3://parts/p", capsys, "--part-size", str(5 << 20), "--storage-options", FAST)
    assert code == 0, err
    assert len(completions) >= 2  # the lost completion, and its retry
    data = shard.read_bytes()
    parts = [data[i : i + (5 << 20)] for i in range(0, len(data), 5 << 20)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    assert objects(s3, "parts", "p")["shards/train/shard-00000.tar"] == (len(data), expected)
    body = s3.client().get_object(Bucket="parts", Key="p/shards/train/shard-00000.tar")["Body"].read()
    assert body == data


def test_pack_with_publish_uploads_shards_as_they_close_and_writes_the_same_pack(ws, s3, env, capsys, tmp_path):
    new_bucket(s3, "during")
    credentials = json.dumps({"key": KEY, "secret": SECRET})
    step3 = small_pack(ws, "--publish", "s3://during/p", "--min-shards", "3", "--storage-options", credentials)
    out, err = capsys.readouterr()
    assert "packer: published s3://during/p" in out, err
    assert SECRET not in out + err
    for path in [*step3.rglob("*"), *ws.root.rglob("*.json*")]:  # no output, state or log holds the secret
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    assert local_tree(step3) == {
        k: v for k, v in bucket_tree(s3, "during", "p").items() if k not in (".packer", "published.json")
    }
    stats = json.loads((step3 / "stats.json").read_text())
    assert "publish" not in stats["config"] and "storage_options" not in stats["config"]
    # A URL or storage options that cannot work: exit 2 before anything is written here or there.
    other = tmp_path / "elsewhere"
    bad_options = ["--publish", "s3://during/p", "--storage-options", '{"secret": 1, "bogus": 2}']
    for flags in (["--publish", "ftp://during/p"], bad_options, ["--publish", "s3://k:s@during/p"]):
        code = main(ws.args(*flags, "--workers", "1", shards=str(other / "shards")))
        assert code == 2 and not other.exists()
    assert "k:s" not in capsys.readouterr().err


# -- reading it back ----------------------------------------------------------------------------


@on_the_published_pilot
def test_the_documented_bucket_snippets_read_every_published_example(published, pilot, env, tmp_path, monkeypatch):
    """Every ```python s3 block of the docs, in order, in one namespace, against s3://packs/pilot."""
    blocks = doc_blocks("python s3")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/outputs.md", "exec"), namespace)
    stats = json.loads((pilot / "stats.json").read_text())
    assert namespace["manifest"]["complete"] is True
    assert sorted(namespace["ids"]) == sorted(json.loads((pilot / "splits.json").read_text()))  # every packed example
    assert {s: len(d) for s, d in namespace["images"].items()} == {
        s: stats["splits"][s]["image_examples"] for s in ("train", "val", "test")
    }
    loaded = namespace["loaded"]
    read = [
        doc["id"] for name in ("images", "text", "video") for split in loaded[name].values() for doc in split["json"]
    ]
    assert sorted(read) == sorted(namespace["ids"])  # datasets reads every published example too
    diagnostics = [doc["id"] for doc in loaded["diagnostics"]["diagnostics"]["json"]]  # the card's diagnostics config
    assert sorted(diagnostics) == sorted(i for i, s in json.loads((pilot / "splits.json").read_text()).items()
                                         if s == "diagnostics")  # fmt: skip


@on_the_published_pilot
def test_show_and_diff_read_the_published_pack(published, pilot, env, tmp_path, capsys):
    import polars as pl

    catalog = pl.read_parquet(pilot / "shards/samples.parquet")
    wanted = catalog.filter(pl.col("series") == "video")["id"][0]
    assert main(["show", wanted, "--pack", str(pilot), "--out", str(tmp_path / "local")]) == 0
    local = capsys.readouterr().out
    assert main(["show", wanted, "--pack", "s3://packs/pilot", "--out", str(tmp_path / "remote")]) == 0
    remote = capsys.readouterr().out
    assert local.replace(str(tmp_path / "local"), "X") == remote.replace(str(tmp_path / "remote"), "X")
    frames = sorted(p.name for p in (tmp_path / "remote").iterdir())
    assert len(frames) == 9 and all(
        (tmp_path / "local" / f).read_bytes() == (tmp_path / "remote" / f).read_bytes() for f in frames
    )
    assert main(["diff", str(pilot), "s3://packs/pilot"]) == 0
    assert "same" in capsys.readouterr().out.lower()
    assert main(["show", "x", "--pack", "s3://packs/nothing-here"]) == 2
    assert "no published.json" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_publish_prints_its_rates_and_ratios(s3, tmp_path):
    """scripts/bench_publish.py on a tiny corpus, against the session's server (packer and the plain
    loop; the other libraries' uploads are left out here): the rates, and the two ratios."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench_publish.py"), "--images", "2", "--repeat", "1", "--no-libraries",
         "--endpoint", s3.endpoint, "--work", str(tmp_path / "work"), "--cache", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **s3.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["upload_mb_per_s"]) == {"packer publish", "botocore loop"}
    assert all(rate > 0 for rate in result["upload_mb_per_s"].values())
    assert result["corpus_images"] == 6 and result["objects"] > 10
    assert result["publish_vs_plain_loop"] > 0 and result["pack_with_publish_vs_pack"] > 0
    assert "x the plain botocore loop" in done.stdout and "x the pack alone" in done.stdout
