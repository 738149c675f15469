"""--backend dask: the image stage on a real distributed.LocalCluster (2 worker processes), output
byte-identical to loky's, surviving a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import built_once, command, digests, sample_args

pytestmark = [pytest.mark.heavy, pytest.mark.xdist_group(name="dask")]  # a cluster, and module fixtures

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (make install adds it)")


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules between its tests
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield c, client


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules between its tests
def sample(packed):
    """The built-in sample's Step_2 (all eight datasets, some broken images), as conftest made it."""
    return packed.parent / "Step_2"


def sample_command(step2, out, *extra):
    return [sys.executable, "-m", "packer", *sample_args(step2, out, *extra)]


@pytest.fixture(scope="session")
def loky(sample, tmp_path_factory) -> dict[str, str]:
    """The digests (`digests(..., anywhere=True)`) of the sample packed by loky: the reference of
    every Dask run of it, packed once."""

    def build(root):
        out = root / "Step_3"
        done = subprocess.run(sample_command(sample, out), cwd=root, capture_output=True, text=True)
        assert done.returncode in (0, 1), done.stderr  # 1: the sample's broken images (one check)
        (root / "digests.json").write_text(json.dumps(digests(out, anywhere=True)))

    return json.loads((built_once(tmp_path_factory, "sample-loky", build) / "digests.json").read_text())


def test_dask_cluster_output_is_byte_identical_to_loky(sample, loky, cluster, tmp_path):
    out = tmp_path / "Step_3"
    command = sample_command(sample, out, "--backend", "dask", "--scheduler", cluster[0].scheduler_address)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    assert "packer: image stage on dask, 2 worker thread(s)" in done.stdout
    assert digests(out, anywhere=True) == loky and any(k.endswith("shard-00000.tar") for k in loky)
    out.rename(out.with_name("by-address"))
    # $DASK_SCHEDULER_ADDRESS names the cluster as --scheduler does (a small pack: the bytes are tested above).
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": cluster[0].scheduler_address}
    command = sample_command(sample, out, "--backend", "dask", "--examples-limit", "24")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode in (0, 1), done.stderr
    assert f"at {cluster[0].scheduler_address}" in done.stdout
    assert json.loads((out / "stats.json").read_text())["total_examples"] == 24


def test_dask_without_an_address_starts_a_local_cluster(sample, loky, tmp_path):
    out = tmp_path / "Step_3"
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run(
        sample_command(sample, out, "--backend", "dask"), cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode in (0, 1), done.stderr
    assert "at a local cluster" in done.stdout and digests(out, anywhere=True) == loky


def test_a_killed_dask_worker_costs_a_retry_not_the_run(corpus, corpus_pack, cluster, tmp_path):
    c, client = cluster
    out = tmp_path / "Step_3"
    proc = subprocess.Popen(command(corpus, out, "--backend", "dask", "--scheduler", c.scheduler_address),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    journal = out / "shards" / ".run" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_text().count('{"chunk"') >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    # The victim is a worker holding tasks at the moment it dies.
    held: dict = {}
    while not any(held.values()):
        held = client.processing()
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    address = next(a for a, keys in sorted(held.items()) if keys)
    victim_keys = set(held[address])
    victim = client.run(os.getpid, workers=[address])[address]
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert digests(out, anywhere=True) == corpus_pack
    # Each task the victim held left it (processing -> released) and was computed again elsewhere.
    log = client.run_on_scheduler(
        lambda dask_scheduler: [(t.key, t.start, t.finish) for t in dask_scheduler.transition_log]
    )
    released = {k for k, start, finish in log if k in victim_keys and start == "processing" and finish != "memory"}
    redone = {k for k, start, finish in log if k in released and finish == "memory"}
    assert released and redone == released, (victim_keys, released, redone)
    # The nanny restarted the worker: the cluster is whole again.
    client.wait_for_workers(2, timeout=30)
    assert victim not in client.run(os.getpid).values()


def test_backend_dask_without_distributed_is_one_line_exit_2(tmp_path):
    script = (
        "import sys; sys.modules['distributed'] = None\n"  # as if dask[distributed] were not installed
        "from packer.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "dataset": "olid", "labels_raw": {"subtask_a": "NOT"}}) + "\n")
    args = [
        "--manifest",
        str(manifest),
        "--output-dir",
        str(tmp_path / "o"),
        "--label-taxonomy",
        str(tmp_path / "t.json"),
    ]
    args += ["--splits", str(tmp_path / "s.json"), "--backend", "dask"]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    assert done.returncode == 2
    assert (
        done.stderr
        == "error: --backend dask needs Dask's distributed scheduler: pip install -e '.[dask]' (make install does)\n"
    )


def small_manifest(folder, relative: bool) -> list[str]:
    """Two MAMI memes with their images under `folder`, paths relative to it or absolute."""
    from PIL import Image

    rows = []
    for i in range(2):
        path = folder / "imgs" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (40 * i, 100, 200)).save(path)
        image = str(path.relative_to(folder)) if relative else str(path)
        labels = {"misogynous": 1, "shaming": 0, "stereotype": 1, "objectification": 0, "violence": 0}
        rows.append({"id": f"mami_train_{i}", "dataset": "mami", "split": "train", "image_path": image,
                     "labels_raw": labels, "text_raw": "t"})  # fmt: skip
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [sys.executable, "-m", "packer", "--manifest", "m.jsonl", "--output-dir", "o/shards",
            "--label-taxonomy", "o/t.json", "--splits", "o/s.json", "--backend", "dask"]  # fmt: skip


def test_a_worker_that_cannot_read_the_images_is_exit_2_naming_it(cluster, tmp_path):
    """The manifest's paths are relative to where packer runs; the cluster's workers run elsewhere."""
    c, _ = cluster
    cmd = small_manifest(tmp_path, relative=True) + ["--scheduler", c.scheduler_address]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: dask worker tcp://")
    assert "cannot read 2 of 2 sampled images (e.g. imgs/0.jpg)" in done.stderr
    assert not (tmp_path / "o" / "stats.json").exists()


@pytest.mark.parametrize(
    ("site", "message"),
    [
        # Another Pillow version, working: named with both builds.
        ("import PIL.Image\nPIL.__version__ = '0.0.0-other'\n", "'Pillow': '0.0.0-other'"),
        # A Pillow whose version no longer matches its compiled core: it cannot load at all.
        ("import PIL\nPIL.__version__ = '0.0.0-other'\n", "a dask worker cannot run packer's image code"),
    ],
)
def test_a_worker_with_another_pillow_is_exit_2_naming_it(tmp_path, site, message):
    """A real worker process whose Pillow differs (a sitecustomize sets its version)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(site)
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as c:
        env = {**os.environ, "PYTHONPATH": str(fake)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", c.scheduler_address, "--nthreads", "1",
             "--no-nanny"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with distributed.Client(c) as client:
                client.wait_for_workers(1, timeout=60)
            cmd = small_manifest(tmp_path, relative=False) + ["--scheduler", c.scheduler_address]
            done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        finally:
            worker.kill()
            worker.wait()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr
    assert "start the workers from the same environment" in done.stderr
