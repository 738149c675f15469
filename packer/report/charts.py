"""The report's charts: Vega-Lite specs built from stats.json, rendered to inline SVG by
vl-convert (no JavaScript in the page), in this process or a run's chart process (engine.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import markupsafe

from ..config import DIAGNOSTICS
from . import engine

SPLIT_COLOURS = {"train": "#4c78a8", "val": "#f58518", "test": "#54a24b", DIAGNOSTICS: "#b279a2"}


# Characters XML (hence SVG) cannot hold: vl-convert aborts the process on them. Characters beyond
# the BMP too: its label truncation can cut one in half (a lone surrogate), which fails the chart.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff\U00010000-\U0010ffff]")


def label(text: str, width: int = 40) -> str:
    """A chart label: a dataset, class or reason name as any input may spell it, made safe for SVG."""
    text = NOT_XML.sub("\ufffd", text)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


Draw = Callable[[dict[str, Any]], dict[str, str]]


def vega_svg(spec: dict[str, Any], draw: Draw = engine.draw) -> str:
    """The chart as inline SVG, drawn by `draw` (vl-convert here, or engine.ChartEngine's process);
    a chart vl-convert cannot draw becomes a line saying so (the numbers are in the tables beside
    it), never a failed run."""
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "config": {"view": {"stroke": None}}, **spec}
    answer = draw(spec)
    if "svg" in answer:
        return answer["svg"]
    first = answer["error"].splitlines()[0] if answer["error"] else "no reason given"
    return str(markupsafe.escape(f"(this chart could not be drawn: {first})"))


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


def class_share_chart(stats: dict[str, Any], field_name: str, draw: Draw = engine.draw) -> str:
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
        },
        draw,
    )


def split_size_chart(stats: dict[str, Any], draw: Draw = engine.draw) -> str:
    rows = [
        {"split": label(split), "kind": kind, "examples": entry[f"{kind}_examples"]}
        for split, entry in stats["splits"].items()
        for kind in ("image", "text", "video")
        if f"{kind}_examples" in entry
    ]
    kinds = ["image", "text", "video"] if "video" in stats else ["image", "text"]
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
                "color": {"field": "kind", "scale": {"domain": kinds, "range": ["#4c78a8", "#9ecae9", "#f58518"]}},
            },
        },
        draw,
    )


def duration_chart(stats: dict[str, Any], draw: Draw = engine.draw) -> str | None:
    """A histogram of the packed clips' durations (seconds), where the pack has clips."""
    durations = stats.get("video", {}).get("durations", [])
    if not durations:
        return None
    return vega_svg(
        {
            "title": "clip durations",
            "data": {"values": [{"seconds": d} for d in durations]},
            "width": 420,
            "height": 140,
            "mark": {"type": "bar", "tooltip": True, "color": "#f58518"},
            "encoding": {
                "x": {"field": "seconds", "type": "quantitative", "bin": {"maxbins": 30}, "title": "seconds"},
                "y": {"aggregate": "count", "type": "quantitative", "title": "clips"},
            },
        },
        draw,
    )


def reason_chart(reasons: list[dict[str, Any]], draw: Draw = engine.draw) -> str | None:
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
        },
        draw,
    )
