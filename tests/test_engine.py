"""The report's chart engine in a process of its own (packer/report/engine.py): it draws exactly
what vl-convert draws in-process, a run never waits on a dead one, and it never outlives its parent
or its run; a process's later runs draw in-process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import MAMI, Workspace, alive, children

from packer.cli import main as pack
from packer.report.charts import split_size_chart, vega_svg
from packer.report.engine import ChartEngine, draw
from packer.report.html import ReportWarmer

STATS = {
    "splits": {"train": {"image_examples": 7, "text_examples": 2}, "val": {"image_examples": 1, "text_examples": 0}}
}
BAD_SPEC = {"data": {"values": [{"a": 1}]}, "mark": "no-such-mark", "encoding": {}}


def engine_processes(parent: int) -> set[int]:
    """The running processes under `parent` that run engine.py."""
    found = set()
    for pid in alive(children(parent)):
        try:
            if b"engine.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:  # gone meanwhile
            pass
    return found


def test_the_engine_process_draws_what_vl_convert_draws_here():
    engine = ChartEngine()
    engine.start()
    try:
        assert engine.child is not None and engine.child.poll() is None
        assert split_size_chart(STATS, engine.draw) == split_size_chart(STATS)
        assert split_size_chart(STATS).startswith("<svg")
        # vl-convert's error comes back as the same line in the page. (Its JavaScript stack below
        # the message may differ: V8 reports a function it has optimised by a process's earlier
        # charts in other frames, so only the message is compared.)
        answer = engine.draw(BAD_SPEC)
        assert set(answer) == {"error"}
        assert answer["error"].split("\n    at ")[0] == draw(BAD_SPEC)["error"].split("\n    at ")[0]
        assert "Cannot read properties of undefined" in answer["error"]
        assert vega_svg(BAD_SPEC, engine.draw) == vega_svg(BAD_SPEC)
        assert vega_svg(BAD_SPEC).startswith("(this chart could not be drawn: ")
        assert engine.child is not None  # an error answer is an answer: the process stays
    finally:
        engine.close()
    assert engine.child is None


def test_a_dead_engine_process_is_replaced_by_drawing_here():
    engine = ChartEngine()
    engine.start()
    child = engine.child
    assert child is not None
    child.kill()
    child.wait()
    assert split_size_chart(STATS, engine.draw) == split_size_chart(STATS)
    assert engine.child is None  # given up on: the rest is drawn here
    engine.close()


def test_the_engine_process_ends_with_its_parent_killed_by_sigkill(tmp_path):
    script = (
        "import sys, time\n"
        "from packer.report.engine import ChartEngine\n"
        "engine = ChartEngine(); engine.start()\n"
        "print(engine.child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        engine_pid = int(parent.stdout.readline())
        # Seen from /proc as the parent's child running engine.py (polled: under load, a scan of /proc
        # once missed it; a wrong pid or a dead engine still fails here).
        deadline = time.monotonic() + 10
        while engine_pid not in engine_processes(parent.pid):
            assert time.monotonic() < deadline, (engine_pid, children(parent.pid))
            time.sleep(0.05)
    finally:
        os.kill(parent.pid, signal.SIGKILL)  # also when the check failed: no sleeping parent left behind
        parent.wait()
    deadline = time.monotonic() + 30
    while alive({engine_pid}):
        assert time.monotonic() < deadline, "the engine process outlived its killed parent"
        time.sleep(0.05)


def test_a_pack_leaves_no_engine_process_behind_and_its_report_has_the_charts(tmp_path, monkeypatch):
    """A process's first run draws in an engine process, which ends with the run; its later runs
    draw in-process (the engine warm there) and start none: the same charts either way."""
    ws = Workspace(tmp_path)
    for i in range(6):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI, image=ws.image(f"m{i}.jpg"))
    ws.write()
    monkeypatch.setattr(ReportWarmer, "engine_started_in", None)  # as in a process that has not packed yet
    started = []
    monkeypatch.setattr(ChartEngine, "start", lambda self, real=ChartEngine.start: started.append(1) or real(self))
    assert pack(ws.args("--workers", "1")) == 0
    assert started == [1] and engine_processes(os.getpid()) == set()
    first = (ws.out / "report.html").read_text(encoding="utf-8")
    assert first.count("<svg") >= 5 and "could not be drawn" not in first
    assert pack(ws.args("--workers", "1")) == 0  # the same pack again, in this process
    assert started == [1] and engine_processes(os.getpid()) == set()
    again = (ws.out / "report.html").read_text(encoding="utf-8")  # a re-pack: it says what changed
    assert re.findall(r"<svg.*?</svg>", again, re.S) == re.findall(r"<svg.*?</svg>", first, re.S)
