"""The report's charts: Vega-Lite specs built from stats.json, rendered to inline SVG by
vl-convert (no JavaScript in the page)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import markupsafe
import vl_convert

from ..config import DIAGNOSTICS

SPLIT_COLOURS = {"train": "#4c78a8", "val": "#f58518", "test": "#54a24b", DIAGNOSTICS: "#b279a2"}


# Characters XML (hence SVG) cannot hold: vl-convert aborts the process on them. Characters beyond
# the BMP too: its label truncation can cut one in half (a lone surrogate), which fails the chart.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff\U00010000-\U0010ffff]")


def label(text: str, width: int = 40) -> str:
    """A chart label: a dataset, class or reason name as any input may spell it, made safe for SVG."""
    text = NOT_XML.sub("\ufffd", text)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


class ChartWarmer:
    """Starts vl-convert's JavaScript engine (0.3-0.5 s) on a thread, once, when `start()` is
    called: the pipeline calls it while the pool's workers encode images. The engine holds the GIL
    while it starts, so it is never started while the parent plans (the pool's start waits for the
    plan) nor with one worker (the parent encodes then, and the report starts the engine itself)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.cpu = 0.0  # CPU seconds the engine's start took (left out of the parent's shared work)

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._warm, name="warm-charts", daemon=True)
            self.thread.start()

    def _warm(self) -> None:
        # The whole process's CPU over the start: the engine's own threads included, and the
        # parent's Python work stands still meanwhile (the engine holds the GIL).
        start = time.process_time()
        spec = {
            "data": {"values": [{"a": 1}]},
            "mark": "bar",
            "encoding": {"x": {"field": "a", "type": "quantitative"}},
        }
        vl_convert.vegalite_to_svg(spec)
        self.cpu = time.process_time() - start

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def vega_svg(spec: dict[str, Any]) -> str:
    """The chart as inline SVG; a chart vl-convert cannot draw becomes a line saying so (the
    numbers are in the tables beside it), never a failed run."""
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "config": {"view": {"stroke": None}}, **spec}
    try:
        return vl_convert.vegalite_to_svg(spec)
    except ValueError as exc:
        return str(markupsafe.escape(f"(this chart could not be drawn: {str(exc).splitlines()[0]})"))


def class_share_rows(stats: dict[str, Any], field_name: str) -> list[dict[str, Any]]:
    rows = []
    for split, datasets in stats["labels"].items():
        for dataset, fields in datasets.items():
            counts = fields.get(field_name, {})
            total = sum(counts.values())
            for value, n in counts.items():
                share = 100 * n / total if total else 0.0
                rows.append(
                    {
                        "split": label(split),
                        "dataset": label(dataset),
                        "class": label(value),
                        "share": round(share, 2),
                        "n": n,
                    }
                )
    return rows


def class_share_chart(stats: dict[str, Any], field_name: str) -> str:
    """One small bar chart per dataset: each class's share of the split (nulls are a class of their own)."""
    rows = class_share_rows(stats, field_name)
    splits = [label(s) for s in stats["splits"] if any(r["split"] == label(s) for r in rows)]
    return vega_svg(
        {
            "title": f"{field_name}: share of each class per split (%)",
            "data": {"values": rows},
            "facet": {"field": "dataset", "type": "nominal", "title": None},
            "columns": 4,
            "spec": {
                "width": {"step": 12},
                "height": 110,
                "mark": {"type": "bar", "tooltip": True},
                "encoding": {
                    "x": {"field": "class", "type": "nominal", "title": None, "axis": {"labelAngle": -40}},
                    "xOffset": {"field": "split", "type": "nominal", "sort": splits},
                    "y": {"field": "share", "type": "quantitative", "title": "%", "scale": {"domain": [0, 100]}},
                    "color": {
                        "field": "split",
                        "sort": splits,
                        "scale": {"domain": splits, "range": [SPLIT_COLOURS.get(s, "#999") for s in splits]},
                    },
                },
            },
            "resolve": {"scale": {"x": "independent"}},
        }
    )


def split_size_chart(stats: dict[str, Any]) -> str:
    rows = [
        {"split": label(split), "kind": kind, "examples": entry[f"{kind}_examples"]}
        for split, entry in stats["splits"].items()
        for kind in ("image", "text")
    ]
    return vega_svg(
        {
            "title": "examples per split",
            "data": {"values": rows},
            "width": 420,
            "height": 140,
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "y": {"field": "split", "type": "nominal", "sort": [label(s) for s in stats["splits"]], "title": None},
                "x": {"field": "examples", "type": "quantitative", "stack": "zero"},
                "color": {"field": "kind", "scale": {"domain": ["image", "text"], "range": ["#4c78a8", "#9ecae9"]}},
            },
        }
    )


def reason_chart(reasons: list[dict[str, Any]]) -> str | None:
    if not reasons:
        return None
    return vega_svg(
        {
            "title": "dropped and failed examples by reason",
            "data": {
                "values": [{"reason": label(r["reason"], 60), "status": r["status"], "n": r["n"]} for r in reasons]
            },
            "width": 420,
            "height": {"step": 18},
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "y": {"field": "reason", "type": "nominal", "sort": "-x", "title": None},
                "x": {"field": "n", "type": "quantitative", "title": "examples"},
                "color": {
                    "field": "status",
                    "scale": {"domain": ["dropped", "failed"], "range": ["#bab0ac", "#e45756"]},
                },
            },
        }
    )
