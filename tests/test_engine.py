"""The report's chart engine in a process of its own (packer/report/engine.py): it draws exactly
what vl-convert draws in-process, a run never waits on a dead one, and it never outlives its parent
or its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import MAMI, Workspace

from packer.cli import main as pack
from packer.report.charts import split_size_chart, vega_svg
from packer.report.engine import ChartEngine, draw

STATS = {
    "splits": {"train": {"image_examples": 7, "text_examples": 2}, "val": {"image_examples": 1, "text_examples": 0}}
}
BAD_SPEC = {"data": {"values": [{"a": 1}]}, "mark": "no-such-mark", "encoding": {}}


def engine_children(parent: int) -> list[int]:
    """Live processes whose parent is `parent` and which run engine.py."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and b"engine.py" in cmdline:
            found.append(int(entry.name))
    return found


def test_the_engine_process_draws_what_vl_convert_draws_here():
    engine = ChartEngine()
    engine.start()
    try:
        assert engine.child is not None and engine.child.poll() is None
        assert split_size_chart(STATS, engine.draw) == split_size_chart(STATS)
        assert split_size_chart(STATS).startswith("<svg")
        # vl-convert's error comes back as the same line in the page.
        answer = engine.draw(BAD_SPEC)
        assert set(answer) == {"error"} and answer == draw(BAD_SPEC)
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
    engine_pid = int(parent.stdout.readline())
    assert engine_pid in engine_children(parent.pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{engine_pid}").exists():
        status = Path(f"/proc/{engine_pid}/stat").read_text() if Path(f"/proc/{engine_pid}").exists() else ""
        if status.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            break
        assert time.monotonic() < deadline, "the engine process outlived its killed parent"
        time.sleep(0.05)


def test_a_pack_leaves_no_engine_process_behind_and_its_report_has_the_charts(tmp_path):
    ws = Workspace(tmp_path)
    for i in range(6):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI, image=ws.image(f"m{i}.jpg"))
    ws.write()
    assert pack(ws.args("--workers", "1")) == 0
    assert engine_children(os.getpid()) == []
    page = (ws.out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 5 and "could not be drawn" not in page
