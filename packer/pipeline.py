"""One way through: load -> plan -> execute -> report."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .config import DIAGNOSTICS, SPLITS, PackConfig, default_taxonomy_text, load_taxonomy
from .execute import ImageSettings, execute, fingerprint, warm_pool
from .plan import build_plan, iter_chunks, read_pinned, samples_to_pack, splits_document
from .report import build_stats, final_rows, summary, write_card, write_json, write_outputs
from .report.card import card_path, check_card_path
from .report.html import build_report
from .shards import write_shard_index


def guided_chunks(workers: int, largest: int) -> Callable[[int], int]:
    """Samples per pool task, given how many are still to hand out ("guided" scheduling): a quarter
    of each worker's share of the rest, at most `largest`, at least 4 (below that the per-task
    cost, pickling and a chunk file, would start to show). Tasks shrink towards the end, so the
    cores finish within a few images of each other, a pilot of a few hundred examples included."""
    return lambda remaining: max(4, min(largest, remaining // (4 * workers)))


def run(config: PackConfig) -> tuple[int, dict[str, Any]]:
    """Pack; returns (exit code, stats). Raises InputError (exit 2) before writing anything."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pool_ready = warm_pool(config.workers)
    taxonomy_path = config.label_taxonomy
    taxonomy = load_taxonomy(taxonomy_path if taxonomy_path.is_file() else None)
    pinned = read_pinned(config.splits)
    check_card_path(card_path(config.stats))
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    plan = build_plan(config, taxonomy, pinned, partial(fingerprint, workers=config.workers))
    timings["plan"] = time.perf_counter() - start

    # Inputs are valid: from here on, outputs are written.
    if not taxonomy_path.is_file():
        taxonomy_path.parent.mkdir(parents=True, exist_ok=True)
        taxonomy_path.write_text(default_taxonomy_text(), encoding="utf-8")
    for split in (*SPLITS, DIAGNOSTICS):
        shutil.rmtree(config.output_dir / split, ignore_errors=True)
    start = time.perf_counter()
    settings = ImageSettings(config.image_size, config.jpeg_quality, config.max_image_pixels)
    total = samples_to_pack(plan.rows)
    pool_ready()
    result = execute(
        iter_chunks(plan.rows, guided_chunks(config.workers, config.chunk_size)),
        total,
        config.output_dir,
        settings,
        config.workers,
        config.shard_maxcount,
        config.shard_maxsize,
    )
    timings["images_and_shards"] = time.perf_counter() - start
    for split in (*SPLITS, *([DIAGNOSTICS] if config.include_diagnostics else [])):
        listed = [(Path(s.path).name, s.examples) for s in result.shards if s.split == split]
        write_shard_index(config.output_dir / split, listed)

    start = time.perf_counter()
    rows = final_rows(plan.rows, result)
    write_json(config.splits, splits_document(rows))
    stats = build_stats(config, rows, result, plan.manifest_rows, plan.ocr_orphans, timings)
    timings["report"] = time.perf_counter() - start
    stats["seconds"]["report"] = round(timings["report"], 3)
    write_outputs(config, stats, rows)
    write_card(stats, taxonomy, config.output_dir, config.stats)
    build_report(config.stats.parent, config.output_dir, config.report_sample, config.seed)
    print(summary(stats))
    return (0 if all(stats["checks"].values()) else 1), stats
