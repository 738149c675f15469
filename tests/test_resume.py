"""Crash safety: a run killed with SIGKILL at any point resumes to byte-identical output; nothing
stale looks valid meanwhile; workers die with the parent; output faults exit 3 and resume."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MAMI, alive, children, command, digests, run_aside
from PIL import Image

pytestmark = pytest.mark.slow  # whole runs killed and resumed


def kill_when(cmd: list[str], cwd: Path, ready, timeout: float = 60, env: dict | None = None) -> set[int]:
    """Start `cmd` (in `env`), SIGKILL it as soon as `ready(its pid)` is true; returns the workers it had."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + timeout
    workers: set[int] = set()
    while not ready(proc.pid):
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline
        workers |= children(proc.pid)
        time.sleep(0.005)
    workers |= children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return workers


def reference(corpus: Path, out: Path) -> dict[str, str]:
    """The output of an uninterrupted run at `out` (every check passing), moved aside."""
    expected, done = run_aside(command(corpus, out), out)
    assert done.returncode == 0, done.stderr
    return expected


def same_as(out: Path, corpus_pack: dict[str, str]) -> bool:
    """Whether the pack at `out` is, byte for byte, the corpus packed without a break elsewhere."""
    return digests(out, anywhere=True) == corpus_pack


def finished_shards(out: Path) -> dict[str, tuple[int, int]]:
    """The shards the journal records as complete, with their inode and mtime: a shard kept by a
    resume keeps both; one encoded again is a new file (written to a temporary name, renamed)."""
    path = out / "shards" / ".run" / "journal.jsonl"
    shards = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith('{"shard"'):
            try:
                shard = json.loads(line)["shard"]["path"]
            except ValueError:  # the line the kill cut short
                continue
            st = Path(shard).stat()
            shards[shard] = (st.st_ino, st.st_mtime_ns)
    return shards


def journal_lines(out: Path, kind: str) -> int:
    path = out / "shards" / ".run" / "journal.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.startswith(f'{{"{kind}"')) if path.exists() else 0


KILL_POINTS = {
    # Planning, while the pool's workers start (some still importing): before the run writes anything.
    "planning": lambda out, pid: len(children(pid)) >= 2 and not (out / "shards" / ".run").exists(),
    "mid_shard": lambda out, pid: any((out / "shards").glob("*/*.tar.tmp")),
    "between_shards": lambda out, pid: journal_lines(out, "shard") >= 5,
    "writing_outputs": lambda out, pid: (out / "failures.jsonl").exists(),
    # splits.json, an input of the rerun, already rewritten: the rerun takes its pins from the state.
    "splits_rewritten": lambda out, pid: (out / "splits.json").exists(),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_resumes_to_identical_output(corpus, corpus_pack, tmp_path, point):
    out = tmp_path / "Step_3"
    ready = KILL_POINTS[point]
    workers = kill_when(command(corpus, out), tmp_path, lambda pid: ready(out, pid))
    # Nothing stale looks valid, and the workers die with the parent.
    assert not (out / "stats.json").exists()
    if point != "planning":  # planning: the run may be killed just before or just after writing it
        assert (out / "RUN_INCOMPLETE").exists()
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(workers), f"workers alive 10 s after the parent was killed: {alive(workers)}"
    finished = finished_shards(out)
    rerun = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    if point in ("between_shards", "writing_outputs", "splits_rewritten"):  # after the fifth finished shard
        assert len(finished) >= 5
        assert f"packer: resuming: {len(finished)} finished shards kept" in rerun.stdout, rerun.stdout
    # Every shard the dead run finished is kept as it was: the same file, not encoded again.
    now = {shard: (Path(shard).stat().st_ino, Path(shard).stat().st_mtime_ns) for shard in finished}
    assert now == finished
    assert same_as(out, corpus_pack)
    assert not (out / "RUN_INCOMPLETE").exists() and not (out / "shards" / ".run").exists()


def test_changed_input_or_flag_starts_fresh_and_says_why(corpus, tmp_path):
    # This test rewrites an image: its own copy of the corpus, which other tests read meanwhile.
    shared, corpus = corpus, Path(shutil.copytree(corpus, tmp_path / "corpus"))
    manifest = corpus / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace(str(shared / "images"), str(corpus / "images")))
    out = tmp_path / "Step_3"
    expected = reference(corpus, out)
    kill_when(command(corpus, out, "--seed", "5"), tmp_path, lambda _pid: journal_lines(out, "shard") >= 3)
    rerun = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0 and "packer: starting fresh: flags changed: --seed" in rerun.stdout
    assert digests(out) == expected
    kill_when(command(corpus, out), tmp_path, lambda _pid: journal_lines(out, "shard") >= 3)
    assert not (out / "stats.json").exists() and not (out / "README.md").exists()
    assert not (out / "report.html").exists()
    image = corpus / "images" / "m0.jpg"
    original = image.read_bytes()
    try:
        Image.open(image).rotate(90).save(image, quality=90)
        rerun = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert "packer: starting fresh: image or video files changed" in rerun.stdout
        assert digests(out) != expected  # m0.jpg is packed rotated
    finally:
        image.write_bytes(original)
    kill_when(command(corpus, out), tmp_path, lambda _pid: journal_lines(out, "shard") >= 3)
    finished = finished_shards(out)
    assert len(finished) >= 3
    rerun = subprocess.run(command(corpus, out, "--fresh"), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0 and "resuming" not in rerun.stdout
    # --fresh encodes everything again: not one of the finished shards is the same file.
    for shard, (inode, mtime) in finished.items():
        st = Path(shard).stat()
        assert (st.st_ino, st.st_mtime_ns) != (inode, mtime), shard
    # This run replaced a complete pack (the one with m0.jpg rotated): its report and stats.json also
    # say what changed since then (m0's image bytes); every other file is the reference's.
    now = digests(out)
    history = ("report.html", "stats.json")
    assert {k: v for k, v in now.items() if k not in history} == {k: v for k, v in expected.items() if k not in history}
    since = json.loads((out / "stats.json").read_text())["since_previous_pack"]
    assert since["same"] and since["images_changed"]["examples"] == ["mami_train_0"]


def test_a_rerun_with_other_workers_or_stats_flag_resumes(corpus, corpus_pack, tmp_path):
    out = tmp_path / "Step_3"
    kill_when(command(corpus, out), tmp_path, lambda _pid: journal_lines(out, "shard") >= 5)
    finished = finished_shards(out)
    cmd = command(corpus, out, "--stats", str(out / "stats.json"))
    cmd[cmd.index("--workers") + 1] = "1"
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"packer: resuming: {len(finished)} finished shards kept" in rerun.stdout and len(finished) >= 5
    assert {s: (Path(s).stat().st_ino, Path(s).stat().st_mtime_ns) for s in finished} == finished
    assert same_as(out, corpus_pack)


def limited_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_output_fault_exits_3_with_one_message_and_resumes(corpus, corpus_pack, tmp_path):
    out = tmp_path / "Step_3"
    # No file may grow past 3 MB, as on a disk that fills up: a shard of 8 big noise memes does.
    full = subprocess.run(
        command(corpus, out), cwd=tmp_path, capture_output=True, text=True, preexec_fn=limited_file_size(3_000_000)
    )
    assert full.returncode == 3, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "File too large" in lines[0]
    assert not list((out / "shards").glob("*/*.tmp")) and not (out / "stats.json").exists()
    for shard in (out / "shards").glob("*/*.tar"):
        assert shard.stat().st_size < 3_000_000
    rerun = subprocess.run(command(corpus, out), cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert same_as(out, corpus_pack)


def test_unwritable_output_directory_exits_3(corpus, tmp_path):
    (tmp_path / "Step_3").write_text("a file where the output folder belongs")
    run = subprocess.run(command(corpus, tmp_path / "Step_3"), cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 3 and run.stderr.count("\n") == 1 and run.stderr.startswith("error: cannot write")


def test_input_error_prints_only_its_message(tmp_path):
    good = {"id": "a", "dataset": "mami", "split": "train", "image_path": None, "text_raw": "t", "labels_raw": MAMI}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    (tmp_path / "asr.jsonl").write_text("")  # command() passes --asr
    for _ in range(3):  # the pool warming up during planning must not add a traceback, any time
        run = subprocess.run(command(tmp_path, tmp_path / "Step_3"), cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and "manifest.jsonl: line 2" in run.stderr, run.stderr
    assert not (tmp_path / "Step_3").exists()
