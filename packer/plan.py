"""The plan: manifest + OCR -> labels, text, splits, duplicates, order -> ChunkSpecs.

First every column is built from the inputs, one dataset at a time; then every image file to
pack gets a key equal exactly when its bytes are (execute.fingerprint: a stat, and a hash where
two files share a size; the only I/O the plan needs); then, on a narrow frame of keys, rows that share an
image or a text are grouped, splits assigned, duplicates dropped (and, with --cross-split, copies
in a less protected split), and each split is ordered by a seeded hash of the id. Chunk specs are
made from the result lazily, while the pool runs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import polars_hash as plh

from .config import DIAGNOSTICS, SPLITS, UNIFIED_FIELDS, InputError, PackConfig, Taxonomy
from .labels import label_part
from .load import (
    READ_ERRORS,
    check_asr,
    check_locations,
    check_manifest,
    check_ocr,
    check_unique_ids,
    explain_read_error,
    repeated_lines,
    replace_lone_surrogates,
    scan_asr,
    scan_manifest,
    scan_ocr,
)
from .shards import IMAGE_SERIES, TEXT_SERIES, VIDEO_SERIES
from .specs import SAMPLE_COLUMNS, ChunkSpec
from .splits import assign_splits, connected_groups, cross_split_copy, dataset_split, duplicate_of_kept, stable_hash
from .text import ASR_DROPS, asr_text, clean_text, combined_text, normalized_text, ocr_text

KEY_MAX = 80
# A manifest line that is byte for byte an earlier line (with the same id): dropped, counted.
REPEATED_LINE = "repeated_line"


@dataclass
class Plan:
    rows: pl.DataFrame  # one row per selected manifest row: status ("ok"/"dropped"/"failed"), reason, ...
    manifest_rows: int
    ocr_orphans: int
    asr_orphans: int = 0  # ASR rows whose id is no video example of the manifest


@dataclass
class Inputs:
    """The inputs as the plan reads them: the selected manifest rows, the OCR text and the speech
    per id, and what is counted against the whole manifest."""

    rows: pl.DataFrame
    texts: pl.DataFrame
    speech: pl.DataFrame
    manifest_rows: int
    ocr_orphans: int
    asr_orphans: int


def safe_key() -> pl.Expr:
    """The id made safe for WebDataset: [A-Za-z0-9_-] only; altered or long ids get a hash suffix."""
    sanitized = pl.col("id").str.replace_all(r"[^A-Za-z0-9_\-]", "_")
    suffix = plh.col("id").chash.sha2_256().str.slice(0, 12)
    altered = (sanitized != pl.col("id")) | (pl.col("id").str.len_chars() > KEY_MAX)
    return pl.when(altered).then(pl.format("{}_{}", sanitized.str.slice(0, KEY_MAX), suffix)).otherwise(pl.col("id"))


def limit_examples(frame: pl.LazyFrame, limit: int, seed: int) -> pl.LazyFrame:
    """A deterministic subset of `limit` rows, every dataset in proportion (each gets its first row)."""
    u = stable_hash(pl.col("id"), seed)
    position = (u.rank("ordinal").over("dataset") - 1) / pl.len().over("dataset")
    return frame.with_columns(_p=position, _u=u).sort("_p", "_u").head(limit).sort("row").drop("_p", "_u")


def read_pinned(path: Path, data: bytes | None) -> dict[str, str]:
    """splits.json (`data`, read from `path`), `{"<id>": "train" | "val" | "test" | "diagnostics"}`
    (OUTPUTS.md); the older `{"train": [ids], ...}` is read too. Diagnostics entries pin nothing
    (HateCheck is never split)."""
    if data is None:
        return {}
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON: nested too deeply") from None
    if isinstance(doc, dict) and doc and set(doc) <= set(SPLITS) and all(isinstance(v, list) for v in doc.values()):
        return {i: split for split, ids in doc.items() for i in ids}
    if isinstance(doc, dict):
        bad = next(((i, v) for i, v in doc.items() if v not in (*SPLITS, DIAGNOSTICS)), None)
        if bad is None:
            return {i: split for i, split in doc.items() if split != DIAGNOSTICS}
        raise InputError(f"{path}: id {bad[0]!r}: split {bad[1]!r} is not one of {(*SPLITS, DIAGNOSTICS)}")
    raise InputError(f'{path}: expected {{"<id>": "train" | "val" | "test", ...}}')


def status_columns(config: PackConfig) -> list[pl.Expr]:
    """Each row's status and reason: a repeated line is dropped whatever else it holds; then
    failures before drops."""
    unlabelled = pl.all_horizontal(pl.col(f).is_null() for f in UNIFIED_FIELDS)
    failure = pl.coalesce(
        pl.col("unicode_error"),
        pl.when(pl.col("image_path").is_not_null() & pl.col("video_path").is_not_null()).then(
            pl.lit("both image_path and video_path: an example is an image or a video, not both")
        ),
        pl.col("label_error"),
        pl.col("split_error"),
        pl.when(pl.col("key_repeated")).then(pl.format("key collision: '{}'", pl.col("key"))),
    )
    drop = pl.coalesce(
        pl.when((pl.col("split") == DIAGNOSTICS) & (not config.include_diagnostics)).then(
            pl.lit("diagnostics (not requested)")
        ),
        pl.col("label_drop"),
        pl.when(unlabelled & (not config.keep_unlabelled)).then(pl.lit("unlabelled")),
    )
    repeated = pl.when(pl.col("repeated_line")).then(pl.lit(REPEATED_LINE))
    status = (
        pl.when(pl.col("repeated_line"))
        .then(pl.lit("dropped"))
        .when(failure.is_not_null())
        .then(pl.lit("failed"))
        .when(drop.is_not_null())
        .then(pl.lit("dropped"))
        .otherwise(pl.lit("ok"))
    )
    reason = pl.coalesce(repeated, failure, drop)
    return [status.alias("status"), reason.alias("reason"), pl.lit("plan").alias("stage")]


def load_inputs(config: PackConfig, taxonomy: Taxonomy) -> Inputs:
    """The selected manifest rows (checked), the OCR text and the speech per id, the manifest's row
    count, and the OCR and ASR rows whose id is in no manifest row (counted against the whole
    manifest, not the subset; for ASR, no video row).

    Polars refuses a JSON string holding a lone UTF-16 surrogate (`"\\ud800"`, which JSON allows
    and Unicode does not). Only then are the files read again, with each lone surrogate replaced
    by U+FFFD from a temporary copy; a manifest row that held one fails with the field named."""
    try:
        return _load_inputs(config, taxonomy, config.manifest, config.ocr, config.asr)
    except READ_ERRORS:
        pass
    with tempfile.TemporaryDirectory(prefix="packer-") as tmp:
        manifest, bad_rows = replace_lone_surrogates(config.manifest, Path(tmp) / "manifest.jsonl")
        ocr, _ = replace_lone_surrogates(config.ocr, Path(tmp) / "ocr.jsonl") if config.ocr else (None, {})
        asr, _ = replace_lone_surrogates(config.asr, Path(tmp) / "asr.jsonl") if config.asr else (None, {})
        if not bad_rows and manifest == config.manifest and ocr == config.ocr and asr == config.asr:
            raise explain_read_error(config.manifest, config.ocr, taxonomy, config.asr) from None
        try:
            inputs = _load_inputs(config, taxonomy, manifest, ocr, asr)
        except READ_ERRORS:
            raise explain_read_error(config.manifest, config.ocr, taxonomy, config.asr) from None
    reasons = pl.DataFrame(
        {"row": list(bad_rows), "unicode_error": list(bad_rows.values())},
        schema={"row": pl.UInt32, "unicode_error": pl.String},
    )
    rows = inputs.rows.drop("unicode_error").join(reasons, on="row", how="left", maintain_order="left")
    inputs.rows = rows
    return inputs


def _load_inputs(
    config: PackConfig, taxonomy: Taxonomy, manifest_path: Path, ocr_path: Path | None, asr_path: Path | None
) -> Inputs:
    full = scan_manifest(manifest_path, taxonomy).with_columns(unicode_error=pl.lit(None, pl.String))
    manifest = full
    if config.examples_limit:
        # The limit draws from what this run may pack: diagnostics only when they were asked for.
        eligible = full if config.include_diagnostics else full.filter(~pl.col("dataset").is_in(taxonomy.diagnostics()))
        manifest = limit_examples(eligible, config.examples_limit, config.seed)
    ocr = scan_ocr(ocr_path)
    asr = scan_asr(asr_path)
    speech = asr_text(asr, config.asr_max_no_speech, config.asr_min_logprob, config.asr_max_compression)
    videos = full.filter(pl.col("video_path").is_not_null()).select("id")
    queries = [
        manifest,
        ocr_text(ocr, config.ocr_min_conf),
        ocr.select("id").unique(),
        speech,
        asr.select("id").unique(),
        videos,
    ]
    if config.examples_limit:
        queries.append(full.select("id"))
    rows, texts, ocr_ids, speech_rows, asr_ids, video_ids, *rest = pl.collect_all(queries)
    all_ids = rest[0] if rest else rows.select("id")
    check_manifest(rows, config.manifest)
    check_ocr(ocr_ids, config.ocr)
    check_asr(asr_ids, config.asr)
    if rows.height == 0:
        raise InputError(f"{config.manifest}: no examples (the file has no manifest rows)")
    orphans = ocr_ids.join(all_ids, on="id", how="anti").height
    asr_orphans = asr_ids.join(video_ids, on="id", how="anti").height
    return Inputs(rows, texts, speech_rows, all_ids.height, orphans, asr_orphans)


def build_columns(
    config: PackConfig,
    taxonomy: Taxonomy,
    parts: dict[str | None, pl.DataFrame],
    texts: pl.DataFrame,
    speech: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Labels, text, key, source split and status of every selected row.

    One dataset at a time (each part is released once done), so that the intermediate columns of
    only one dataset are in memory at once."""
    caption = clean_text(pl.col("text_raw"))
    speech = speech if speech is not None else asr_text(scan_asr(None), 0, 0, 0).collect()
    # Speech joins video examples only: an ASR row of an image or text example is an orphan.
    heard = pl.col("video_path").is_not_null() & pl.col("asr_json").is_not_null()

    def build(name: str | None) -> pl.DataFrame:
        part = parts.pop(name).rename({"split": "source_split"})
        lazy = (
            label_part(name, part, taxonomy, dataset_split)
            .join(texts.lazy(), on="id", how="left", maintain_order="left")
            .join(speech.lazy(), on="id", how="left", maintain_order="left")
            .with_columns(
                asr_text=pl.when(heard).then(pl.col("asr_text")),
                asr_json=pl.when(heard).then(pl.col("asr_json")),
                has_asr=heard,
                **{f"asr_{c}": pl.when(heard).then(pl.col(f"asr_{c}")).fill_null(0) for c in ("kept", *ASR_DROPS)},
            )
            .with_columns(
                # An example with speech takes its language from the manifest, else from the ASR.
                lang=pl.coalesce("lang", pl.when(heard).then(pl.col("asr_language")), pl.lit("en")),
                has_ocr=pl.col("has_ocr").fill_null(False),
                ocr_lines_kept=pl.col("ocr_lines_kept").fill_null(0),
                ocr_lines_low_conf=pl.col("ocr_lines_low_conf").fill_null(0),
                caption=caption.fill_null(""),
                key=safe_key(),
            )
            .with_columns(
                text=combined_text(pl.col("ocr_text"), pl.col("caption"), pl.col("lang"), pl.col("asr_text")),
                norm_text=normalized_text(pl.col("caption")),
            )
            .drop("caption", "text_raw", "ocr_text", "asr_text", "asr_language")
        )
        del part
        return lazy.collect(engine="in-memory")

    # Two datasets at a time: Polars releases the GIL, and many of a part's steps use one core.
    # The parts with the most label JSON go first, so that no big one is left alone at the end.
    order = sorted(parts, key=lambda name: -(parts[name]["labels_raw"].str.len_bytes().sum() or 0))
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(build, order))
    rows = pl.concat(done).sort("row").with_columns(key_repeated=pl.col("key").is_duplicated())
    # A repeated id repeats its key: the rows with a repeated key are all that need checking. A line
    # repeated byte for byte (two builder outputs concatenated) is dropped, the first one kept.
    repeats = repeated_lines(rows.filter("key_repeated").select("row", "id"), config.manifest)
    rows = rows.with_columns(repeated_line=pl.col("row").is_in(repeats))
    # Among the other rows, a key still repeated is a repeated id (an input error) or a collision.
    rows = rows.with_columns(
        key_repeated=~pl.col("repeated_line") & pl.col("key").is_duplicated().over("repeated_line")
    )
    check_unique_ids(rows.filter("key_repeated"), config.manifest)
    return rows.with_columns(*status_columns(config)).drop("key_repeated", "repeated_line")


def build_plan(
    config: PackConfig,
    taxonomy: Taxonomy,
    pinned: dict[str, str],
    fingerprint: Callable[[list[str]], dict[str, str | None]],
) -> Plan:
    inputs = load_inputs(config, taxonomy)
    parts = {name: part for (name,), part in inputs.rows.partition_by("dataset", as_dict=True).items()}
    inputs.rows = pl.DataFrame()
    rows = build_columns(config, taxonomy, parts, inputs.texts, inputs.speech).with_columns(
        media_path=pl.coalesce("image_path", "video_path")
    )

    # Every image (and clip) to pack gets a key equal exactly when its bytes are (see
    # execute.fingerprint): duplicates, groups and the leakage audit all compare images by it, and
    # two clips with the same bytes count as one image does.
    check_locations(rows.filter(pl.col("status") == "ok"), config.manifest)
    to_key = rows.filter(pl.col("media_path").is_not_null() & (pl.col("status") == "ok"))["media_path"]
    image_keys = fingerprint(to_key.to_list()) if to_key.len() else {}
    key_frame = pl.DataFrame(
        {"media_path": list(image_keys), "image_key": list(image_keys.values())},
        schema={"media_path": pl.String, "image_key": pl.String},
    )
    pinned_frame = pl.DataFrame(
        {"id": list(pinned), "pinned_split": list(pinned.values())}, schema={"id": pl.String, "pinned_split": pl.String}
    )
    ok = pl.col("status") == "ok"
    rows = (
        rows.join(pinned_frame, on="id", how="left", maintain_order="left")
        .join(key_frame, on="media_path", how="left", maintain_order="left")
        .with_columns(image_key=pl.when(ok).then(pl.col("image_key")))
    )
    # Groups, splits and duplicates are worked out on a narrow frame of keys; the wide rows are
    # updated once, by row number.
    keys = rows.filter(ok).select(
        "row",
        "id",
        "dataset",
        "source_split",
        "assign_mode",
        "split",
        "norm_text",
        "image_key",
        "pinned_split",
        *UNIFIED_FIELDS,
    )
    keys = keys.with_columns(group=connected_groups(keys))
    keys = assign_splits(keys, config.seed, config.val_ratio, config.split_ratios)
    copy = (
        cross_split_copy(texts=config.cross_split == "drop")
        if config.cross_split != "report"
        else pl.lit(None, pl.String)
    )
    keys = keys.with_columns(drop=pl.when(duplicate_of_kept()).then(pl.lit("duplicate")).otherwise(copy))
    update = keys.select("row", "group", new_split="split", new_mode="assign_mode", drop="drop")
    final = (
        rows.join(update, on="row", how="left", maintain_order="left")
        .with_columns(
            split=pl.when(ok).then(pl.col("new_split")).otherwise(pl.col("split")),
            assign_mode=pl.when(ok).then(pl.col("new_mode")).otherwise(pl.col("assign_mode")),
            reason=pl.coalesce("drop", "reason"),
            status=pl.when(pl.col("drop").is_not_null()).then(pl.lit("dropped")).otherwise(pl.col("status")),
            order=stable_hash(pl.col("id"), config.seed),
        )
        .drop("new_split", "new_mode", "drop", "media_path")
    )
    return Plan(final, inputs.manifest_rows, inputs.ocr_orphans, inputs.asr_orphans)


def samples_to_pack(rows: pl.DataFrame) -> int:
    return rows.filter(pl.col("status") == "ok").height


def ordered_samples(rows: pl.DataFrame) -> pl.DataFrame:
    """The samples to pack, split after split, each split in its seeded-hash order: a sample's
    position in its split is its index here, counted from the split's first row."""
    order = {s: i for i, s in enumerate((*SPLITS, DIAGNOSTICS))}
    return (
        rows.filter(pl.col("status") == "ok")
        .with_columns(split_rank=pl.col("split").replace_strict(order, return_dtype=pl.Int32), series=series())
        .sort("split_rank", "order", "id")
    )


def series() -> pl.Expr:
    """The shard series of a sample: a clip, an image, or text only."""
    return (
        pl.when(pl.col("video_path").is_not_null())
        .then(pl.lit(VIDEO_SERIES))
        .when(pl.col("image_path").is_not_null())
        .then(pl.lit(IMAGE_SERIES))
        .otherwise(pl.lit(TEXT_SERIES))
    )


def shard_starts(samples: pl.DataFrame, min_shards: int, maxcount: int) -> dict[tuple[str, str], list[int]]:
    """Per (split, series) of `samples` (ordered_samples' frame), the positions in the split's order
    at which a new shard starts (the first shard's start left out).

    A series of n planned examples is cut into k = max(min(min_shards, n), ceil(n / maxcount))
    shards of equal size, within one example: shard i holds its examples floor(i*n/k) up to
    floor((i+1)*n/k). Cut by plan position, the shards are the same whatever the workers, backend
    or resumes; an image that then fails to decode leaves its shard one example short.
    """
    listed = samples.select("split", "series", position=pl.int_range(pl.len()).over("split"))
    starts: dict[tuple[str, str], list[int]] = {}
    for (split, one), part in listed.group_by("split", "series", maintain_order=True):
        positions = part["position"].to_list()
        n = len(positions)
        k = max(min(min_shards, n), -(-n // maxcount))
        starts[split, one] = [positions[i * n // k] for i in range(1, k)]
    return starts


def iter_chunks(
    samples: pl.DataFrame, chunk_size: Callable[[int], int], start: dict[str, int] | None = None
) -> Iterator[ChunkSpec]:
    """The samples to pack (ordered_samples' frame), per split in seeded-hash order, cut into chunks
    of `chunk_size(samples still to hand out)`; a resumed run starts each split at `start[split]`
    (a position in that order).

    A generator: each chunk's columns are taken from the frame when the pool asks for it, so the
    plan never holds a Python object per sample, and the work overlaps with the image stage.
    """
    start = start or {}
    todo = samples.select(*SAMPLE_COLUMNS, *UNIFIED_FIELDS)
    sizes = dict(todo.group_by("split").len().iter_rows())
    remaining = sum(max(0, n - start.get(split, 0)) for split, n in sizes.items())
    for (split,), part in todo.group_by("split", maintain_order=True):
        position, index = start.get(split, 0), 0
        while position < part.height:
            columns = part.slice(position, chunk_size(remaining)).to_dict(as_series=False)
            chunk = ChunkSpec(split, index, position, columns)
            yield chunk
            position, index, remaining = position + len(chunk), index + 1, remaining - len(chunk)


def splits_document(rows: pl.DataFrame) -> dict[str, str]:
    """The splits.json to write: `{"<id>": split}` for every packed example, ids in sorted order."""
    packed = rows.filter(pl.col("status") == "packed").select("id", "split").sort("id")
    return dict(zip(packed["id"], packed["split"]))
