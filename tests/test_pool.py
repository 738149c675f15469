"""packer/pool.py behind its small interface: results in submission order on real worker processes,
every task set up by in_worker, backends listed once (the command's choices come from them), and
a backend that cannot start reported by ready() in the parent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from packer.config import InputError
from packer.pool import BACKENDS, Pool


def slow_square(i: int) -> tuple[int, int, int]:
    """Later tasks finish first (they sleep less): the order must come from submission, not timing."""
    import time

    time.sleep(0.02 * (5 - i % 5))
    return i, i * i, os.getpid()


def test_loky_returns_results_in_submission_order_from_several_processes():
    pool = Pool("loky", 2)
    try:
        pool.ready()
        assert pool.workers == 2 and not pool.ships_bytes
        assert pool.describe() == "loky, 2 worker(s)"
        results = list(pool.map(slow_square, ((i,) for i in range(20)), pre_dispatch="2*n_jobs"))
    finally:
        pool.close()
    assert [(i, sq) for i, sq, _ in results] == [(i, i * i) for i in range(20)]
    pids = {pid for _, _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids  # real worker processes, not the parent


def test_one_loky_worker_runs_the_tasks_in_the_parent():
    pool = Pool("loky", 1)
    pool.ready()
    results = list(pool.map(slow_square, ((i,) for i in range(3)), pre_dispatch="2*n_jobs"))
    pool.finish()  # loky's executor outlives a run: nothing to close
    assert {pid for _, _, pid in results} == {os.getpid()}


def test_the_commands_backend_choices_are_the_pools():
    done = subprocess.run([sys.executable, "-m", "packer", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "{" + ",".join(sorted(BACKENDS)) + "}" in done.stdout.replace("\n", "").replace(" ", "")
    assert set(BACKENDS) == {"loky", "dask"}


@pytest.mark.heavy  # Dask: waits out its connect timeout
def test_a_scheduler_that_cannot_be_reached_is_an_input_error_from_ready():
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (make install adds it)")
    import dask

    # Dask's connect timeout (30 s by default) cut to 2 s: the same refusal, without the wait.
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        pool = Pool("dask", 1, "tcp://127.0.0.1:9")  # the discard port: nothing listens
        with pytest.raises(InputError, match=r"--scheduler tcp://127.0.0.1:9: cannot connect"):
            pool.ready()
    pool.close()
