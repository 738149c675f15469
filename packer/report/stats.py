"""stats.json, failures.jsonl, the acceptance checks and the human summary."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from ..audit import assigned_leaks, balance, largest_groups, leakage
from ..config import DIAGNOSTICS, SPLITS, UNIFIED_FIELDS, PackConfig
from ..execute import ExecutionResult
from ..guard import inert
from ..shards import SERIES_KINDS, write_atomic
from ..splits import FOLLOW, HASH_NAME
from ..text import ASR_DROPS

MAX_FAILURE_RATE = 0.005


def final_rows(rows: pl.DataFrame, result: ExecutionResult) -> pl.DataFrame:
    """Every selected row with its final status: packed, dropped or failed, and why."""
    outcomes = pl.DataFrame(
        {
            "id": [o.id for o in result.outcomes],
            "w_status": [o.status for o in result.outcomes],
            "w_reason": [o.reason for o in result.outcomes],
            "w_detail": [o.detail for o in result.outcomes],
            "dhash": [o.dhash for o in result.outcomes],
            "video_facts": [json.dumps(o.video) if o.video is not None else None for o in result.outcomes],
        },
        schema={
            "id": pl.String,
            "w_status": pl.String,
            "w_reason": pl.String,
            "w_detail": pl.String,
            "dhash": pl.UInt64,
            "video_facts": pl.String,
        },
    )
    joined = rows.join(outcomes, on="id", how="left", maintain_order="left")
    ok = pl.col("status") == "ok"
    return joined.with_columns(
        status=pl.when(ok).then(pl.col("w_status").fill_null("failed")).otherwise("status"),
        reason=pl.when(ok).then(pl.col("w_reason")).otherwise("reason"),
        detail=pl.when(ok).then(pl.col("w_detail")),
        stage=pl.when(ok & (pl.col("w_status") == "failed")).then(pl.lit("image")).otherwise("stage"),
    ).drop("w_status", "w_reason", "w_detail")


def reason_category() -> pl.Expr:
    return pl.col("reason").str.split(": ").list.first()


def label_counts(packed: pl.DataFrame) -> dict[str, Any]:
    """split -> dataset -> field -> value -> count, nulls counted as "null", [] as "[]"."""
    out: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
    for field in UNIFIED_FIELDS:
        if field == "target_group":
            value = (
                pl.when(pl.col(field).is_null())
                .then(pl.lit(["null"]))
                .when(pl.col(field) == "")
                .then(pl.lit(["[]"]))
                .otherwise(pl.col(field).str.split("|"))
            )
            table = packed.select("split", "dataset", value.alias("v")).explode("v")
        else:
            table = packed.select("split", "dataset", pl.col(field).cast(pl.String).fill_null("null").alias("v"))
        counts = table.group_by("split", "dataset", "v").len().sort("split", "dataset", "v")
        for split, dataset, v, n in counts.iter_rows():
            out[split][dataset].setdefault(field, {})[v] = n
    return json.loads(json.dumps(out))


def list_value_counts(rows: pl.DataFrame, column: str, by: str | None = None) -> dict[str, dict[str, Any]]:
    """dataset -> value [-> `by` value] -> how many rows list that value in a List(String) column."""
    keys = ["dataset", "value"] + ([by] if by else [])
    table = (
        rows.filter(pl.col(column).list.len() > 0)
        .select("dataset", pl.col(column).alias("value"), *([pl.col(by).fill_null("null")] if by else []))
        .explode("value")
        .group_by(keys)
        .len()
        .sort(keys)
    )
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for *key, n in table.iter_rows():
        if by:
            out[key[0]].setdefault(key[1], {})[key[2]] = n
        else:
            out[key[0]][key[1]] = n
    return out


def dataset_report(rows: pl.DataFrame) -> dict[str, Any]:
    """Per dataset, what it contributed: row outcomes, nulls per unified field among the packed
    examples, source targets that fell back to `other`, and the source oddities of the taxonomy's
    `counts` per source split (over every input row of the dataset, packed or not)."""
    other = list_value_counts(rows, "other_targets")
    quirks = list_value_counts(rows, "quirks", by="source_split")
    report: dict[str, Any] = {}
    for (dataset,), part in rows.sort("dataset").group_by("dataset", maintain_order=True):
        packed = part.filter(pl.col("status") == "packed")
        outcomes = dict(part.group_by("status").len().iter_rows())
        report[dataset] = {
            "rows": part.height,
            **{k: outcomes.get(k, 0) for k in ("packed", "dropped", "failed")},
            "null_counts": {f: int(packed[f].null_count()) for f in UNIFIED_FIELDS},
            "other_targets": other.get(dataset, {}),
            "counts": quirks.get(dataset, {}),
        }
    return report


def mapping_target(mode: str | None, split: str | None, config: PackConfig) -> str:
    """What a source split became, in words: a split, a carve, or packer's assignment."""
    if mode in ("assign", FOLLOW):
        return "assigned " + "/".join(f"{100 * r:g}" for r in config.split_ratios)
    if mode == "carve":
        return f"train + carved val ({100 * config.val_ratio:g}%)"
    if mode in ("source", "diagnostics"):
        return str(split)
    return "no split"


def split_mapping(rows: pl.DataFrame, config: PackConfig) -> dict[str, dict[str, Any]]:
    """dataset -> source split ("null" where the row has none) -> what it was mapped to, its rows,
    how many were packed into each split, and the rows dropped and failed by reason: every row of
    every source split is accounted for here."""
    table = rows.select(
        "dataset",
        "split",
        "status",
        source=pl.col("source_split").fill_null("null"),
        mode="assign_mode",
        reason=reason_category(),
    )
    out: dict[str, dict[str, Any]] = {}
    for (dataset, source), part in table.sort("dataset", "source").group_by("dataset", "source", maintain_order=True):
        modes = part.select("mode", "split").unique().iter_rows()
        described = sorted({mapping_target(mode, split, config) for mode, split in modes})
        packed = part.filter(pl.col("status") == "packed").group_by("split").len()
        entry: dict[str, Any] = {
            "to": " | ".join(described),
            "rows": part.height,
            "packed": {s: n for s, n in sorted(packed.iter_rows(), key=lambda r: SPLIT_ORDER.get(r[0], 9))},
        }
        followed = part.filter(pl.col("mode") == FOLLOW).height
        if followed:  # rows without a split that joined a shared image's or text's dataset-defined split
            entry["joined_their_groups_split"] = followed
        for status in ("dropped", "failed"):
            reasons = part.filter(pl.col("status") == status).group_by("reason").len()
            entry[status] = dict(reasons.sort(["len", "reason"], descending=[True, False]).iter_rows())
        out.setdefault(dataset, {})[source] = entry
    return out


SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}


def mapping_lines(mapping: dict[str, dict[str, Any]]) -> list[str]:
    """One line per dataset and source split: `hateful_memes  dev -> val: 500 rows, 500 packed`."""
    lines = []
    for dataset, sources in mapping.items():
        for source, e in sources.items():
            packed = sum(e["packed"].values())
            line = f"  {dataset:<14} {source} -> {e['to']}: {e['rows']} rows, {packed} packed"
            if len(e["packed"]) > 1 or (e["packed"] and e["to"] not in e["packed"]):
                line += " (" + ", ".join(f"{s} {n}" for s, n in e["packed"].items()) + ")"
            for status in ("dropped", "failed"):
                if e[status]:
                    detail = ", ".join(f"{r} {n}" for r, n in e[status].items())
                    line += f", {sum(e[status].values())} {status} ({detail})"
            lines.append(line)
    return lines


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in ("polars", "polars-hash", "pyarrow", "webdataset", "joblib", "tqdm", "pillow-simd", "Pillow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    from PIL import __version__ as pil_version

    versions["PIL (imported)"] = pil_version
    return versions


def empty_split(video: bool = False) -> dict[str, int]:
    """A split's shard totals: all of them, then per series (shard-*.tar with images, text-*.tar,
    and in a pack with clips video-*.tar)."""
    kinds = ("image_examples", "image_shards", "text_examples", "text_shards")
    kinds += ("video_examples", "video_shards") if video else ()
    return {"examples": 0, "shards": 0, "bytes": 0, **dict.fromkeys(kinds, 0)}


def video_report(rows: pl.DataFrame, asr_orphans: int, config: PackConfig) -> dict[str, Any]:
    """Clips and their speech: video examples per split, frames written, clips failed by reason,
    durations, and ASR coverage (clips with an ASR row, with kept speech, segments kept and
    dropped per filter)."""
    clips = rows.filter(pl.col("video_path").is_not_null())
    packed = clips.filter(pl.col("status") == "packed")
    failed = clips.filter(pl.col("status") == "failed").group_by(reason_category()).len()
    durations = packed["video_facts"].str.json_path_match("$.duration").cast(pl.Float64).drop_nulls().sort().to_list()
    heard = clips.filter("has_asr")
    return {
        "examples": clips.height,
        "packed": packed.height,
        "packed_per_split": dict(packed.group_by("split").len().sort("split").iter_rows()),
        "frames_per_clip": config.video_frames,
        "frames_written": packed.height * (config.video_frames + 1),
        "failed": dict(failed.sort(["len", "reason"], descending=[True, False]).iter_rows()),
        "dropped": clips.filter(pl.col("status") == "dropped").height,
        "clip_seconds": {
            "total": round(sum(durations), 3),
            "min": durations[0] if durations else None,
            "median": durations[len(durations) // 2] if durations else None,
            "max": durations[-1] if durations else None,
        },
        "durations": durations,
        "asr": {
            "clips_with_asr_row": heard.height,
            "clips_without_asr_row": clips.height - heard.height,
            "clips_with_kept_speech": heard.filter(pl.col("asr_kept") > 0).height,
            "segments_kept": int(clips["asr_kept"].sum()),
            "segments_dropped": {r: int(clips[f"asr_{r}"].sum()) for r in ASR_DROPS},
            "asr_rows_without_video_row": asr_orphans,
            "filters": {
                "silence": f"no_speech_prob > {config.asr_max_no_speech:g} "
                f"and avg_logprob < {config.asr_min_logprob:g}",
                "repetition": f"compression_ratio > {config.asr_max_compression:g}",
                "empty": "no text",
            },
        },
    }


def build_stats(
    config: PackConfig,
    rows: pl.DataFrame,
    result: ExecutionResult,
    manifest_rows: int,
    ocr_orphans: int,
    timings: dict[str, float],
    asr_orphans: int = 0,
) -> dict[str, Any]:
    total = rows.height
    counts = dict(rows.group_by("status").len().iter_rows())
    packed_n, dropped_n, failed_n = (counts.get(k, 0) for k in ("packed", "dropped", "failed"))
    packed = rows.filter(pl.col("status") == "packed")
    reasons = {
        status: dict(
            rows.filter(pl.col("status") == status)
            .group_by(reason_category())
            .len()
            .sort(["len", "reason"], descending=[True, False])
            .iter_rows()
        )
        for status in ("dropped", "failed")
    }
    # Clips in the manifest (or an ASR file) make the video counts appear; a pack without has none.
    has_video = bool(rows["video_path"].is_not_null().any()) or config.asr is not None
    per_split: dict[str, Any] = {}
    for shard in result.shards:
        entry = per_split.setdefault(shard.split, empty_split(has_video))
        entry["examples"] += shard.examples
        entry["shards"] += 1
        entry["bytes"] += shard.bytes
        kind = SERIES_KINDS[shard.series]
        entry[f"{kind}_examples"] += shard.examples
        entry[f"{kind}_shards"] += 1
    image_rows = rows.filter(pl.col("image_path").is_not_null())
    splits_of_id = packed.group_by("id").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).height
    failure_rate = failed_n / total if total else 0.0
    bal = balance(packed, config.val_ratio, config.split_ratios)
    if not bal["ok"]:
        bal["largest_groups"] = largest_groups(rows)
    checks = {
        "failure_rate_below_0.5%": failure_rate < MAX_FAILURE_RATE,
        "no_id_in_two_splits": splits_of_id == 0,
        "assigned_splits_balanced_within_5_points": bal["ok"],
        "no_image_or_text_in_two_assigned_splits": assigned_leaks(rows) == 0,
    }
    return {
        "total_examples": total,
        "packed_examples": packed_n,
        "dropped_examples": dropped_n,
        "failed_examples": failed_n,
        "failure_rate": failure_rate,  # failed_examples / total_examples, unrounded (OUTPUTS.md)
        "manifest_rows": manifest_rows,
        "reasons": reasons,
        "splits": {
            s: per_split.get(s, empty_split(has_video)) for s in (*SPLITS, *sorted(set(per_split) - set(SPLITS)))
        },
        "labels": label_counts(packed),
        "datasets": dataset_report(rows),
        "split_mapping": split_mapping(rows, config),
        "ocr": {
            "image_examples": image_rows.height,
            "with_ocr": int(image_rows["has_ocr"].sum()),
            "without_ocr": int((~image_rows["has_ocr"]).sum()),
            "lines_kept": int(rows["ocr_lines_kept"].sum()),
            "lines_low_confidence": int(rows["ocr_lines_low_conf"].sum()),
            "ocr_rows_without_manifest_row": ocr_orphans,
        },
        **({"video": video_report(rows, asr_orphans, config)} if has_video else {}),
        **({"diagnostics": diagnostics_report(packed)} if (packed["split"] == DIAGNOSTICS).any() else {}),
        "duplicates_dropped": int(rows.filter(pl.col("reason") == "duplicate").height),
        "leakage": leakage(rows, config.near_dup_bits),
        "balance": bal,
        "checks": checks,
        "split_hash": HASH_NAME,
        "config": config.to_json(),
        "versions": library_versions(),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }


def diagnostics_report(packed: pl.DataFrame) -> dict[str, Any]:
    """The packed diagnostics (HateCheck, Multilingual HateCheck) per language and per
    functionality (the `functionality` of their aux): cases, hateful cases and the hateful share."""
    cases = packed.filter(pl.col("split") == DIAGNOSTICS).with_columns(
        functionality=pl.col("aux_json").str.json_path_match("$.functionality").fill_null("(none)")
    )

    def table(by: str) -> dict[str, dict[str, Any]]:
        grouped = cases.group_by(by).agg(cases=pl.len(), hateful=(pl.col("abuse_hate") == 1).sum()).sort(by)
        return {
            key: {"cases": n, "hateful": int(h), "hateful_share": round(h / n, 4)}
            for key, n, h in grouped.select(by, "cases", "hateful").iter_rows()
        }

    return {
        "cases": cases.height,
        "languages": cases["lang"].n_unique(),
        "functionalities": cases["functionality"].n_unique(),
        "by_language": table("lang"),
        "by_functionality": table("functionality"),
    }


def write_failures(config: PackConfig, rows: pl.DataFrame) -> None:
    """failures.jsonl: one line per dropped or failed example, in manifest order."""
    problems = rows.filter(pl.col("status") != "packed").sort("row")
    lines = (jsonl_line(r) for r in problems.select("id", "status", "stage", "reason", "detail").iter_rows(named=True))
    write_atomic(config.failures_log, "".join(lines).encode("utf-8"))


# Line separators that JSON leaves raw but line-based readers (str.splitlines) split on.
LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def jsonl_line(doc: Any) -> str:
    """One JSON line, UTF-8 kept readable but with every character a reader may take for a line end escaped."""
    return json.dumps(doc, ensure_ascii=False).translate(LINE_BREAKS) + "\n"


def write_stats(config: PackConfig, stats: dict[str, Any]) -> None:
    """stats.json, to a temporary name and renamed: the mark of a complete run, written last."""
    write_atomic(config.stats, (json.dumps(stats, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def summary(stats: dict[str, Any]) -> str:
    lines = [
        f"packed {stats['packed_examples']} / {stats['total_examples']} examples "
        f"(dropped {stats['dropped_examples']}, failed {stats['failed_examples']}, "
        f"failure rate {100 * stats['failure_rate']:.2f}%)",
    ]
    for split, entry in stats["splits"].items():
        clips = (
            f", {entry['video_examples']} clips in {entry['video_shards']} video shards"
            if "video_examples" in entry
            else ""
        )
        lines.append(
            f"  {split:<12} {entry['examples']:>8} examples ({entry['image_examples']} with an image in "
            f"{entry['image_shards']} image shards, {entry['text_examples']} text-only in {entry['text_shards']} "
            f"text shards{clips})  {entry['bytes']:>12} bytes"
        )
    for status in ("dropped", "failed"):
        for reason, n in stats["reasons"][status].items():
            lines.append(f"  {status} {n:>6}  {reason}")
    lines.append("  source splits:")
    lines += mapping_lines(stats["split_mapping"])
    ocr = stats["ocr"]
    lines.append(
        f"  OCR: {ocr['with_ocr']}/{ocr['image_examples']} image examples, {ocr['lines_kept']} lines kept, "
        f"{ocr['lines_low_confidence']} low-confidence, "
        f"{ocr['ocr_rows_without_manifest_row']} OCR rows without manifest row"
    )
    if "video" in stats:
        lines += video_lines(stats["video"])
    if "diagnostics" in stats:
        diag = stats["diagnostics"]
        shares = ", ".join(
            f"{lang} {e['cases']} ({e['hateful_share']:.0%} hateful)" for lang, e in diag["by_language"].items()
        )
        lines.append(
            f"  diagnostics: {diag['cases']} cases in {diag['languages']} language(s), "
            f"{diag['functionalities']} functionalities: {shares}"
        )
    reuse = stats.get("reuse")
    if reuse and reuse.get("from"):
        clips = (
            f"; clips: {reuse['clips_reused']} reused, {reuse['clips_decoded']} decoded"
            if "clips_reused" in reuse
            else ""
        )
        lines.append(
            f"  images: {reuse['reused']} reused, {reuse['encoded']} encoded (from {reuse['from']}); "
            f"{reuse.get('checked', 0)} reused JPEGs hashed to check them (the rest are in unchanged shards){clips}"
        )
    leak = stats["leakage"]
    by_pair = ", ".join(f"{pair} {entry['shared']}" for pair, entry in leak["images"].items())
    lines.append(
        f"  leakage: {leak['images_in_two_splits']} images ({by_pair or 'none'}), "
        f"{leak['texts_in_two_splits']} texts and {leak['near_duplicate_images_across_splits']} near-duplicate "
        f"images in two splits; {leak['cross_split_copies_dropped']} cross-split copies dropped"
    )
    for name, ok in stats["checks"].items():
        lines.append(f"  check {name}: {'PASS' if ok else 'FAIL'}")
    # Reasons quote input values: every control character is shown escaped, never sent to the terminal.
    return "\n".join(inert(line) for line in lines)


def video_lines(video: dict[str, Any]) -> list[str]:
    """The console's lines about clips and speech."""
    failed = ", ".join(f"{r} {n}" for r, n in video["failed"].items()) or "none"
    asr = video["asr"]
    dropped = ", ".join(f"{r} {n}" for r, n in asr["segments_dropped"].items())
    return [
        f"  videos: {video['packed']}/{video['examples']} clips packed, {video['frames_written']} frames written "
        f"({video['frames_per_clip']} + the middle one per clip), {video['clip_seconds']['total']:.0f} s of video; "
        f"failed: {failed}",
        f"  ASR: {asr['clips_with_asr_row']}/{video['examples']} clips with an ASR row, "
        f"{asr['clips_with_kept_speech']} with kept speech; {asr['segments_kept']} segments kept, dropped: {dropped}; "
        f"{asr['asr_rows_without_video_row']} ASR rows without a video row",
    ]


def json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def output_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of an output folder, stats.json without its timings and reuse counts:
    what two runs of the same inputs and flags share (any worker count, loky or Dask, resumed or
    not, reusing an earlier pack's images or not)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".sources.parquet":  # the stat cache: mtimes, inodes
            data = path.read_bytes()
            if path.name == "stats.json":
                doc = json.loads(data)
                doc.pop("seconds")
                doc.pop("reuse", None)  # how the images were come by, not what they are
                data = json.dumps(doc).encode()  # key order kept: it is part of the bytes
            out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out
