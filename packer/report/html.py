"""Step_3/report.html: one self-contained page to judge a pack by eye.

The verdict (every check of stats.json, and why), the class shares per split and dataset as
charts (charts.py), failures and drops by reason with examples, OCR coverage, the leakage audit
with the pairs side by side, and a contact sheet per split: a seeded sample of packed examples
read back from the shards themselves (samples.py, by byte offset; it never reads every shard).
This module assembles the page. Built from an output folder alone, so `python -m packer.report
Step_3` rebuilds it for any earlier pack.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import markupsafe
import polars as pl
from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from ..audit import BALANCE_POINTS
from ..config import DIAGNOSTICS, SPLITS, UNIFIED_FIELDS
from ..guard import REPORT_MARKER
from ..plan import safe_key
from ..shards import write_atomic
from . import engine
from .card import card_template, dataset_counts
from .charts import Draw, class_share_chart, duration_chart, reason_chart, split_size_chart
from .engine import ChartEngine
from .samples import contact_sheet, locate, read

PAIRS_SHOWN = 4  # leakage pairs shown side by side, per kind
REASON_EXAMPLES = 3


# Every text the page shows is cut to this many characters, with the number left out said: the
# shards keep the whole text, and the page stays bounded whatever the input holds.
TEXT_SHOWN = 2000


def bounded(value: Any) -> Any:
    """The template's finalize: every value it prints, cut to TEXT_SHOWN characters (markup the
    code built itself, the charts and image URIs, is exempt)."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup) and len(value) > TEXT_SHOWN:
        return f"{value[:TEXT_SHOWN]}\u2026 [{len(value) - TEXT_SHOWN} more characters]"
    return value


# -- sections -----------------------------------------------------------------------------------


def verdict(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check of stats.json with a line saying why it passed or failed."""
    leak = stats["leakage"]
    bal = stats["balance"]
    why = {
        "failure_rate_below_0.5%": f"{stats['failed_examples']} of {stats['total_examples']} examples failed "
        f"({100 * stats['failure_rate']:.2f}%; the limit is 0.5%)",
        "no_id_in_two_splits": f"{stats['packed_examples']} packed ids, each checked to sit in one split",
        "assigned_splits_balanced_within_5_points": f"largest class-share deviation {bal['max_deviation_points']} "
        f"points over {bal['judged']} judged classes, and {bal.get('ratios_judged', 0)} split ratios judged, in the "
        f"splits packer assigned (the limit is 5 points)"
        + "".join(
            f"; {f['dataset']}: asked {f['expected']}, got {f['got']} of {f['rows']} rows"
            for f in bal.get("ratio_failures", [])
        ),
        "no_image_or_text_in_two_assigned_splits": f"{leak['images_in_two_splits']} images and "
        f"{leak['texts_in_two_splits']} texts in two splits overall (dataset-defined splits included)",
    }
    return [{"name": name, "ok": ok, "why": why.get(name, "")} for name, ok in stats["checks"].items()]


def balance_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per dataset and field: the largest deviation of a class share from its overall share, judged or not."""
    rows = []
    for dataset, entry in stats["balance"]["datasets"].items():
        for scope in ("assigned", "all_splits"):
            block = entry.get(scope)
            if not block:
                continue
            judged_splits = block.get("judged_splits", [])
            for field_name in UNIFIED_FIELDS:
                classes = block.get(field_name, {})
                worst = max((d for per_split in classes.values() for d in per_split.values()), default=0.0)
                worst_judged = max(
                    (d for per_split in classes.values() for s, d in per_split.items() if s in judged_splits),
                    default=0.0,
                )
                rows.append(
                    {
                        "dataset": dataset,
                        "scope": scope,
                        "judged": bool(judged_splits),
                        "judged_splits": judged_splits,
                        "field": field_name,
                        "worst": worst,
                        "worst_judged": worst_judged,
                        "ok": worst_judged <= BALANCE_POINTS,
                        "ratio": block["split_ratio"],
                        "sizes": block.get("split_sizes", {}),
                    }
                )
    return rows


def ratio_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per dataset and pool packer assigned (val carved from a train, 80/10/10): the share each
    split got against the share asked for."""
    rows = []
    for dataset, entry in stats["balance"]["datasets"].items():
        for mode, check in entry.get("assigned", {}).get("split_ratio_check", {}).items():
            rows.append(
                {"dataset": dataset, "pool": "val carved from train" if mode == "carve" else "80/10/10", **check}
            )
    return rows


def reasons_with_examples(failures_path: Path) -> list[dict[str, Any]]:
    """failures.jsonl grouped by status and reason (its part before ': '), with a few examples each."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    if failures_path.is_file():
        with open(failures_path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                reason = (row.get("reason") or "").split(": ")[0]
                entry = groups.setdefault((row["status"], reason), {"n": 0, "examples": []})
                entry["n"] += 1
                if len(entry["examples"]) < REASON_EXAMPLES:
                    entry["examples"].append(row)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0], -item[1]["n"], item[0][1]))
    return [{"status": s, "reason": r, **entry} for (s, r), entry in ordered]


def leakage_pairs(stats: dict[str, Any], shard_root: Path, located: pl.DataFrame) -> list[dict[str, Any]]:
    """Up to PAIRS_SHOWN pairs per kind (same image, same text, near-duplicate image), with both samples."""
    leak = stats["leakage"]
    pairs = []
    for kind, title in (("images", "same image"), ("texts", "same text"), ("near_duplicate_images", "near-duplicate")):
        listed = []
        for pair, entry in leak.get(kind, {}).items():
            if not isinstance(entry, dict) or "by_dataset" not in entry:
                continue
            split_b, split_a = pair.split("/")
            for dataset, sub in entry["by_dataset"].items():
                for id_b, id_a in sub["examples"]:
                    listed.append(
                        {"kind": title, "pair": pair, "dataset": dataset, "a": (split_a, id_a), "b": (split_b, id_b)}
                    )
        pairs.extend(listed[:PAIRS_SHOWN])
    ids = sorted({example_id for p in pairs for _, example_id in (p["a"], p["b"])})
    key_of = dict(zip(ids, pl.DataFrame({"id": ids}, schema={"id": pl.String}).select(safe_key())[:, 0]))
    wanted = {(split, key_of[example_id]) for p in pairs for split, example_id in (p["a"], p["b"])}
    rows = located.filter(pl.struct("split", "key").is_in([{"split": s, "key": k} for s, k in wanted]))
    found = {(sample.doc["split"], sample.key): sample for sample in read(shard_root, rows)}
    for p in pairs:
        p["samples"] = [(split, eid, found.get((split, key_of[eid]))) for split, eid in (p["b"], p["a"])]
    return pairs


@functools.cache
def page_environment() -> Environment:
    """The environment of packer's pages (the report, the diff): every value escaped and bounded."""
    return Environment(
        loader=PackageLoader("packer", "templates"), undefined=StrictUndefined, autoescape=True, finalize=bounded
    )


def report_template() -> Template:
    """The page's template, compiled once per process."""
    return page_environment().get_template("report.html.j2")


def diff_template() -> Template:
    """`pack-examples diff --html`'s page, with the report's look."""
    return page_environment().get_template("diff.html.j2")


class ReportWarmer:
    """Readies what the report and the card need before the run has its numbers: vl-convert's
    chart engine in its own process (engine.ChartEngine: 0.4-0.9 s to start, the largest fixed cost
    of a pilot) and the two compiled templates (0.1-0.2 s, on a thread). The pipeline calls `start()`
    once the first results are back, so that both run beside the image stage and never while the
    parent plans (Polars then uses every core); `draw` then draws the report's charts, and `close()`
    ends the engine's process. `cpu` is the thread's CPU (the engine's is its own process's)."""

    def __init__(self) -> None:
        self.engine = ChartEngine()
        self.thread: threading.Thread | None = None
        self.cpu = 0.0

    # The process whose first run started a chart engine process: its later runs (the profiler, the
    # tests, a notebook) draw in-process, where vl-convert's engine, started once, stays warm (20 ms
    # a chart, where a new engine process costs 0.4-0.9 s every run).
    engine_started_in: int | None = None

    def start(self) -> None:
        if self.thread is None:
            if ReportWarmer.engine_started_in != os.getpid():
                ReportWarmer.engine_started_in = os.getpid()
                self.engine.start()
            self.thread = threading.Thread(target=self._compile, name="warm-report", daemon=True)
            self.thread.start()

    def _compile(self) -> None:
        start = time.thread_time()
        report_template()
        card_template()
        self.cpu = time.thread_time() - start

    def draw(self, spec: dict[str, Any]) -> dict[str, str]:
        return self.engine.draw(spec)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def close(self) -> None:
        self.join()
        self.engine.close()


def build_report(
    out_dir: Path,
    shard_root: Path | None = None,
    sample_size: int = 48,
    seed: int = 0,
    stats: dict[str, Any] | None = None,
    catalog_rows: pl.DataFrame | None = None,
    draw: Draw = engine.draw,
) -> Path:
    """Write `<out_dir>/report.html` from the output folder: stats.json (or `stats`, during a run,
    before stats.json is written last), failures.jsonl and the shards, read by offset through
    samples.parquet (or the run's catalog, `catalog_rows`). `draw` draws the charts (vl-convert in
    this process, or a run's ReportWarmer)."""
    if stats is None:
        stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
    if shard_root is None:
        shard_root = out_dir / "shards"
        if not shard_root.is_dir():
            shard_root = Path(stats["config"]["output_dir"])
    located = locate(shard_root, catalog_rows)
    splits = [s for s in (*SPLITS, DIAGNOSTICS) if s in set(located["split"].unique())]
    reasons = reasons_with_examples(out_dir / "failures.jsonl")
    html = report_template().render(
        marker=markupsafe.Markup(REPORT_MARKER),
        stats=stats,
        verdict=verdict(stats),
        passed=all(stats["checks"].values()),
        split_chart=split_size_chart(stats, draw),
        duration_chart=duration_chart(stats, draw),
        class_charts=[(f, class_share_chart(stats, f, draw)) for f in UNIFIED_FIELDS],
        balance=balance_rows(stats),
        ratios=ratio_rows(stats),
        reasons=reasons,
        reason_chart=reason_chart(reasons, draw),
        leakage_pairs=leakage_pairs(stats, shard_root, located),
        sheets=[(split, contact_sheet(shard_root, located, split, sample_size, seed)) for split in splits],
        sample_size=sample_size,
        seed=seed,
        dataset_rows=dataset_counts(stats),
    )
    path = out_dir / "report.html"
    write_atomic(path, html.encode("utf-8"))
    return path
