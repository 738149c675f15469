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
from conftest import command, digests, run_aside, sample_args

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (make install adds it)")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield c, client


@pytest.fixture(scope="module")
def sample(packed):
    """The built-in sample's Step_2 (all eight datasets, some broken images), as conftest made it."""
    return packed.parent / "Step_2"


def sample_command(step2, out, *extra):
    return [sys.executable, "-m", "packer", *sample_args(step2, out, *extra)]


def test_dask_cluster_output_is_byte_identical_to_loky(sample, cluster, tmp_path):
    out = tmp_path / "Step_3"
    loky, _ = run_aside(sample_command(sample, out), out)
    on_cluster, done = run_aside(
        sample_command(sample, out, "--backend", "dask", "--scheduler", cluster[0].scheduler_address), out
    )
    assert "packer: image stage on dask, 2 worker thread(s)" in done.stdout
    assert on_cluster == loky and any(k.endswith("shard-00000.tar") for k in loky)
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": cluster[0].scheduler_address}
    done = subprocess.run(
        sample_command(sample, out, "--backend", "dask"), cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert cluster[0].scheduler_address in done.stdout and digests(out) == loky


def test_dask_without_an_address_starts_a_local_cluster(sample, tmp_path):
    out = tmp_path / "Step_3"
    loky, _ = run_aside(sample_command(sample, out), out)
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run(
        sample_command(sample, out, "--backend", "dask"), cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode in (0, 1), done.stderr
    assert "at a local cluster" in done.stdout and digests(out) == loky


def test_a_killed_dask_worker_costs_a_retry_not_the_run(corpus, cluster, tmp_path):
    c, client = cluster
    out = tmp_path / "Step_3"
    expected, _ = run_aside(command(corpus, out), out)
    proc = subprocess.Popen(command(corpus, out, "--backend", "dask", "--scheduler", c.scheduler_address),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    journal = out / "shards" / ".run" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_text().count('{"chunk"') >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    victim = sorted(client.run(os.getpid).values())[0]
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert digests(out) == expected
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
