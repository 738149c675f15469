"""vl-convert, the report's chart renderer, in a process of its own during a run.

vl-convert's JavaScript engine takes 0.4-0.9 s to start, and it holds the GIL all that time: started
in the parent, it stops the parent's own work (with one worker, the encoding itself). So a run
starts it in a child process (`ChartEngine`) beside the image stage, where it starts on a spare
core, and the report's charts are drawn there: one JSON line per chart spec in on its stdin, one
JSON line with the SVG (or vl-convert's error) out. The child ends when its stdin closes, so it
never outlives the run, even a killed one. Anything amiss with it (it cannot start, dies, answers
nonsense) and the charts are drawn in the parent as before: the same library and the same SVG,
only slower. `python -m packer.report` draws in-process, and so does every later run of a process
that packs more than once (html.ReportWarmer): its engine, once started there, stays warm.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import vl_convert

ANSWER_TIMEOUT = 120.0  # seconds for the engine to start and draw one chart
WARM_SPEC = {"data": {"values": [{"a": 1}]}, "mark": "bar", "encoding": {"x": {"field": "a", "type": "quantitative"}}}


def draw(spec: dict[str, Any]) -> dict[str, str]:
    """One chart, as the child answers it: {"svg": ...} or {"error": vl-convert's message}."""
    try:
        return {"svg": vl_convert.vegalite_to_svg(spec)}
    except ValueError as exc:
        return {"error": str(exc)}


class ChartEngine:
    """vl-convert running in a child process; `draw` falls back to this process when the child
    cannot answer."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child (it starts vl-convert's engine at once); returns without waiting."""
        if self.child is not None:
            return
        # This file run as a script: it imports vl-convert and nothing of packer (nor Polars).
        try:
            self.child = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except (OSError, ValueError):  # no interpreter to run (an embedded Python): draw here
            self.child = None

    def draw(self, spec: dict[str, Any]) -> dict[str, str]:
        child = self.child
        if child is not None and child.stdin is not None and child.stdout is not None:
            try:
                child.stdin.write(json.dumps(spec, ensure_ascii=True).encode("ascii") + b"\n")
                child.stdin.flush()
                # One line per spec: nothing is left buffered between answers, so select sees the next.
                if not select.select([child.stdout], [], [], ANSWER_TIMEOUT)[0]:
                    raise OSError("vl-convert's process did not answer")
                answer = json.loads(child.stdout.readline())
                if isinstance(answer, dict) and set(answer) <= {"svg", "error"} and len(answer) == 1:
                    return answer
            except (OSError, ValueError):
                pass
            self.close()  # it could not answer: this process draws from now on
        return draw(spec)

    def close(self) -> None:
        """End the child (it exits when its stdin closes) and wait for it."""
        child, self.child = self.child, None
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The child: start the engine, then answer each spec line until the input ends."""
    draw(WARM_SPEC)
    for line in source:
        sink.write(json.dumps(draw(json.loads(line)), ensure_ascii=True).encode("ascii") + b"\n")
        sink.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
