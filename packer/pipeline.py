"""One way through: load -> plan -> execute -> report."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from .catalog import CATALOG, build_catalog, sample_facts, write_catalog
from .config import (
    DIAGNOSTICS,
    SPLITS,
    InputError,
    OutputError,
    PackConfig,
    Taxonomy,
    default_taxonomy_text,
    is_former_default,
    load_taxonomy,
)
from .diff import compare_catalogs, load_catalog, read_failures
from .energon import remove_meta, write_meta, write_tar_indexes
from .execute import ImageSettings, execute
from .guard import (
    INCOMPLETE,
    INCOMPLETE_TEXT,
    PREVIOUS,
    SPLIT_DIRS,
    SPLIT_FILE,
    WORK_FILE,
    OutputLock,
    check_images_outside,
    check_no_link,
    check_no_overlap,
    check_owned_file,
    check_shard_folder,
    inert,
    remove_owned,
    remove_previous,
)
from .images import fingerprint
from .objects import Objects, stage, worker_options
from .plan import (
    Plan,
    build_plan,
    iter_chunks,
    ordered_samples,
    read_pinned,
    samples_to_pack,
    shard_starts,
    splits_document,
)
from .pool import Pool
from .previous import (
    SOURCES,
    clip_encoder_identity,
    earlier_pack,
    encoder_identity,
    located,
    match_clips,
    match_images,
    reuse_of,
    write_stat_cache,
)
from .previous import counts as reuse_counts
from .publish import ROOT_FILES, Publisher, pack_files, summary_line
from .report import build_stats, final_rows, summary, write_card, write_failures, write_stats
from .report.card import card_path
from .report.html import ReportWarmer, build_report
from .report.stats import json_bytes
from .shards import write_atomic, write_shard_index
from .state import Progress, RunState, difference, file_digest, identity, images_digest, text_digest
from .storage import is_url, parse_options
from .video import VideoSettings


def guided_chunks(workers: int, largest: int) -> Callable[[int], int]:
    """Samples per pool task, given how many are still to hand out ("guided" scheduling): a quarter
    of each worker's share of the rest, at most `largest`, at least 4 (below that the per-task
    cost, pickling and a chunk file, would start to show). Tasks shrink towards the end, so the
    cores finish within a few images of each other, a pilot of a few hundred examples included."""
    return lambda remaining: max(4, min(largest, remaining // (4 * workers)))


def output_paths(config: PackConfig) -> dict[str, Path]:
    """Every path a run writes, by what it is (the split and taxonomy files are read and rewritten)."""
    out_dir = config.stats.parent
    return {
        "output folder": config.output_dir,
        "stats file": config.stats,
        "dataset card": card_path(config.stats),
        "report": out_dir / "report.html",
        "failures log": config.failures_log,
        "incomplete note": out_dir / INCOMPLETE,
        "splits file": config.splits,
        "label taxonomy": config.label_taxonomy,
    }


def check_outputs(config: PackConfig) -> None:
    """Before anything changes: the run may write every output path (guard.py), or InputError."""
    outputs = output_paths(config)
    files = {"manifest": config.manifest, "OCR file": config.ocr, "ASR file": config.asr}
    inputs = {name: path for name, path in files.items() if isinstance(path, Path)}  # not a URL
    check_no_overlap(outputs, inputs)
    check_shard_folder(config.output_dir)
    for name, kind, flag in (
        ("stats file", "stats", "--stats"),
        ("dataset card", "card", "--stats / --output-dir"),
        ("report", "report", "--stats"),
        ("failures log", "failures", "--stats"),
        ("incomplete note", "incomplete", "--stats"),
    ):
        check_owned_file(outputs[name], kind, flag)
    for name in ("splits file", "label taxonomy"):  # the user's files, read and rewritten by design
        check_no_link(outputs[name].with_name(outputs[name].name + ".tmp"))
        if outputs[name].exists() and not outputs[name].is_file():  # a dangling link is replaced, not followed
            raise InputError(f"{outputs[name]}: the {name} exists and is not a regular file (a folder, a pipe?)")


def run(config: PackConfig) -> tuple[int, dict[str, Any]]:
    """Pack; returns (exit code, stats). Raises InputError (exit 2) before writing anything, and
    OutputError (exit 3) when the output cannot be written."""
    # Before anything starts or changes: the outputs are packer's to write, and this run is the
    # folder's only writer.
    check_outputs(config)
    objects = Objects(parse_options(config.storage_options))  # s3:// inputs (nothing is asked until one is read)
    # --publish: the prefix is checked (packer's or empty, the store reachable) and its lock taken
    # before anything changes here or there.
    publisher = Publisher(config.publish, config.storage_options) if config.publish else None
    if publisher is not None:
        publisher.open_in_background()  # its requests overlap the planning; waited for before writing
    lock = OutputLock(config.output_dir)
    try:
        lock.acquire()
        pool = Pool(config.backend, config.workers, config.scheduler)
    except (InputError, OutputError):
        lock.undo()
        if publisher is not None:
            publisher.close()
        raise
    # The report's chart engine and templates are readied while the images are encoded
    # (ReportWarmer): never while the parent plans.
    warmer = ReportWarmer()
    try:
        with tempfile.TemporaryDirectory(prefix="packer-inputs-") as staging:
            config = stage_inputs(config, objects, Path(staging))
            return _run(config, pool, warmer, publisher, objects)
    except (InputError, OutputError) as exc:
        # A clean stop: what started during planning is shut down before exiting, and an input
        # error leaves nothing behind that this run created (the chart engine ends in `finally`).
        exc.args = (config.named(str(exc)),)  # an input file's URL, not its local copy
        pool.close()
        if isinstance(exc, InputError) or (publisher is not None and not publisher.opened):
            lock.undo()  # nothing was written: the prefix was refused or unreachable (exit 2 or 3)
        raise
    finally:
        warmer.close()
        lock.release()
        pool.finish()
        if publisher is not None:
            publisher.close()  # a no-op once it finished; else pending uploads stop and the lock goes


def stage_inputs(config: PackConfig, objects: Objects, folder: Path) -> PackConfig:
    """The configuration with each input file given as a URL read from a local copy in `folder`."""
    copies: dict[str, Path] = {}
    for field, name in (("manifest", "manifest"), ("ocr", "OCR file"), ("asr", "ASR file")):
        url = getattr(config, field)
        if isinstance(url, str):
            copies[field] = stage(url, folder / f"{field}.jsonl", name, objects)
    if not copies:
        return config
    staged = tuple((str(copies[f]), getattr(config, f)) for f in copies)
    return replace(config, **copies, staged=staged)


def _run(
    config: PackConfig,
    pool: Pool,
    warmer: ReportWarmer,
    publisher: Publisher | None = None,
    objects: Objects | None = None,
) -> tuple[int, dict[str, Any]]:
    objects = objects or Objects()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    taxonomy_path = config.label_taxonomy
    taxonomy_text = taxonomy_path.read_bytes() if taxonomy_path.is_file() else None
    if taxonomy_text is not None and is_former_default(taxonomy_text):
        print(
            f"packer: {inert(str(taxonomy_path))} is an earlier packer's default, unedited: "
            "replaced by this version's default",
            file=sys.stderr,
        )
        taxonomy_text = None
    taxonomy = load_taxonomy(taxonomy_path if taxonomy_text is not None else None)
    taxonomy_text = taxonomy_text if taxonomy_text is not None else default_taxonomy_text().encode()
    state = RunState(config.output_dir)
    previous = None if config.fresh else state.load()
    pins = config.splits.read_bytes() if config.splits.is_file() else None
    if previous and pins is not None and previous.get("splits_written") == text_digest(pins):
        # The interrupted run had already rewritten splits.json: its input pins are in the state.
        pins = state.saved_pins()
    pinned = read_pinned(config.splits, pins)
    timings["load"] = time.perf_counter() - start

    start = time.perf_counter()
    plan = build_plan(config, taxonomy, pinned, partial(fingerprint, workers=config.workers, objects=objects))
    # The image and video files to read (the safety checks, the resume identity and the workers' check).
    ok = plan.rows.filter(pl.col("status") == "ok")
    image_paths = pl.concat([ok["image_path"], ok["video_path"]]).drop_nulls().to_list()
    check_images_outside(output_paths(config), [p for p in image_paths if not is_url(p)])
    ident = identity(
        config.to_json(),
        file_digest(config.manifest),
        file_digest(config.ocr),
        text_digest(taxonomy_text),
        text_digest(pins),
        images_digest(image_paths, config.workers, objects),
        file_digest(config.asr),
    )
    progress = resume_point(state, previous, ident)
    # The pack this run replaces (compared with in report.html; reused unless --no-reuse), or --reuse-from's.
    replaced = earlier_pack(config.output_dir, None)
    earlier = None if config.no_reuse else earlier_pack(config.output_dir, config.reuse_from)
    if earlier is not None and config.reuse_from is not None and earlier.resolve() == config.output_dir.resolve():
        raise InputError(f"{config.reuse_from}: --reuse-from names this run's own pack: a re-pack reuses it as it is")
    encoder = encoder_identity(config.image_size, config.jpeg_quality, config.max_image_pixels)
    images_only = ok["image_path"].drop_nulls().to_list()
    matches = match_images(earlier, encoder, images_only, config.workers, objects) if earlier is not None else None
    clip_encoder = clip_encoder_identity(encoder, config.video_frames, config.max_video_seconds)
    clips_only = ok["video_path"].drop_nulls().to_list()
    clips = match_clips(earlier, clip_encoder, clips_only, config.workers, objects) if earlier is not None else None
    timings["plan"] = time.perf_counter() - start
    if publisher is not None:
        publisher.wait_open()  # the prefix is packer's, and this run holds its lock

    # Inputs are valid: from here on, outputs are written.
    try:
        reuse = Reuse(earlier, matches, encoder, replaced, clips, clip_encoder)
        code, stats = write_run(
            config,
            taxonomy,
            plan,
            image_paths,
            state,
            ident,
            pins,
            progress,
            pool,
            warmer,
            timings,
            reuse,
            publisher,
            objects,
        )
    except OSError as exc:
        where = exc.filename or config.output_dir
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}; rerun the same command to resume") from None
    finally:
        state.close()
    if publisher is not None:
        # The pack is complete here: the rest of it goes up in order, published.json last.
        try:
            print(summary_line(publisher.finish(published_files(config))))
        except OSError as exc:
            raise OutputError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
        except OutputError as exc:
            raise OutputError(
                f"the pack is complete in {config.stats.parent}, but publishing failed: {exc}; "
                f"finish it with: pack-examples publish {config.stats.parent} {config.publish}"
            ) from None
    return code, stats


def published_files(config: PackConfig) -> dict[str, Path]:
    """The pack's tree as published: the shards folder, and the files beside stats.json by their
    published names (splits.json and label_taxonomy.json wherever --splits and --label-taxonomy put them)."""
    beside = {
        "label_taxonomy.json": config.label_taxonomy,
        "splits.json": config.splits,
        "README.md": card_path(config.stats),
        "report.html": config.stats.parent / "report.html",
        "failures.jsonl": config.failures_log,
        "stats.json": config.stats,
    }
    assert set(beside) == set(ROOT_FILES)
    return pack_files(config.output_dir, beside)


def resume_point(state: RunState, previous: dict[str, Any] | None, ident: dict[str, Any]) -> Progress | None:
    """What an interrupted run of the same identity finished; None (and one line why) to start fresh."""
    if previous is None:
        return None
    why = difference(previous["identity"], ident)
    progress = None if why else state.progress()
    if why is None and progress is None:
        why = "a shard the previous run finished is missing or was changed"
    if why:
        print(f"packer: starting fresh: {inert(why)}")
    return progress


def write_run(
    config: PackConfig,
    taxonomy: Taxonomy,
    plan: Plan,
    image_paths: list[str],
    state: RunState,
    ident: dict[str, Any],
    pins: bytes | None,
    progress: Progress | None,
    pool: Pool,
    warmer: ReportWarmer,
    timings: dict[str, float],
    reuse: Reuse | None = None,
    publisher: Publisher | None = None,
    objects: Objects | None = None,
) -> tuple[int, dict[str, Any]]:
    reuse = reuse or Reuse(None, None, None, None)
    objects = objects or Objects()
    remote = any(is_url(p) for p in image_paths)
    out_dir = config.stats.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    here = config.output_dir.resolve()
    if progress is None and reuse.replaced is not None and reuse.replaced.resolve() == here:
        # The pack this run replaces is read while the new one is written: its shards, catalog and
        # failures log wait in .previous/ until the run is complete.
        reuse.replaced = keep_previous(config)
        if reuse.earlier is not None and reuse.earlier.resolve() == here:
            reuse.earlier = reuse.replaced
    # Nothing stale looks valid: a previous run's verdict goes first, and the folder says it is incomplete.
    write_atomic(out_dir / INCOMPLETE, INCOMPLETE_TEXT.encode("utf-8"))
    for stale in (config.stats, card_path(config.stats), out_dir / "report.html", config.failures_log):
        stale.unlink(missing_ok=True)
    # The catalog and energon's metadata describe the shards: rewritten once they are all done.
    (config.output_dir / CATALOG).unlink(missing_ok=True)
    (config.output_dir / SOURCES).unlink(missing_ok=True)
    remove_meta(config.output_dir)
    if not config.label_taxonomy.is_file() or is_former_default(config.label_taxonomy.read_bytes()):
        write_atomic(config.label_taxonomy, default_taxonomy_text().encode("utf-8"))
    if progress is None:
        for split in SPLIT_DIRS:
            remove_owned(config.output_dir / split, SPLIT_FILE)
        state.begin(ident, pins, keep_journal=False)
        progress = Progress()
    else:
        drop_unfinished(config.output_dir, progress)
        state.begin(ident, pins, keep_journal=True)
        print(f"packer: resuming: {progress.kept_shards} finished shards kept")

    video = VideoSettings(config.video_frames, config.max_video_seconds, config.video_timeout)
    storage = worker_options(config.storage_options) if remote else None
    settings = ImageSettings(config.image_size, config.jpeg_quality, config.max_image_pixels, video, storage)
    total = samples_to_pack(plan.rows) - sum(len(o) for o in progress.outcomes.values())
    start = time.perf_counter()
    pool.ready()
    cpu = time.process_time()
    # The workers are checked on files and on objects the plan found (a missing one fails alone).
    pool.check_workers([p for p in image_paths if not is_url(p) or objects.known.get(p) is not None], storage)
    print(f"packer: image stage on {pool.describe()}")
    samples = ordered_samples(plan.rows)  # sorted once: for the shard cuts and the chunks alike
    samples = reuse_of(
        samples,
        located(reuse.matches, reuse.earlier) if reuse.matches is not None else None,
        located(reuse.clips, reuse.earlier) if reuse.clips is not None else None,
    )
    samples = with_object_sizes(samples, objects.known if remote else {})
    result = execute(
        iter_chunks(samples, guided_chunks(pool.workers, config.chunk_size), progress.start),
        total,
        config.output_dir,
        settings,
        pool,
        config.shard_maxcount,
        config.shard_maxsize,
        shard_starts(samples, config.min_shards, config.shard_maxcount),
        state,
        progress,
        # Once the first results are back, the workers have tasks queued (or, with one worker, the
        # parent is encoding): the report's fixed costs run beside them.
        on_first_result=warmer.start,
        on_shard=(lambda path: publisher.early(f"shards/{path.relative_to(config.output_dir)}", path))
        if publisher is not None
        else None,
    )
    warmer.join()
    timings["images_and_shards"] = time.perf_counter() - start
    # The parent's own CPU meanwhile (task specs, results, shard cutting, the journal): the work
    # every worker shares, which bounds how many workers one parent can feed.
    timings["images_and_shards_parent_cpu"] = time.process_time() - cpu - warmer.cpu
    for split in (*SPLITS, *([DIAGNOSTICS] if config.include_diagnostics else [])):
        listed = [(Path(s.path).name, s.examples) for s in result.shards if s.split == split]
        write_shard_index(config.output_dir / split, listed)
    start = time.perf_counter()
    packed = {o.id: o.nbytes for o in result.outcomes if o.status == "packed"}
    facts = sample_facts(result.outcomes, reuse.encoder, reuse.clip_encoder)
    catalog = build_catalog(samples, packed, result.shards, facts)
    write_tar_indexes(config.output_dir, catalog, result.shards)
    write_meta(config.output_dir, result.shards, dict.fromkeys(s.split for s in result.shards))
    write_catalog(config.output_dir, catalog)
    timings["catalog"] = time.perf_counter() - start

    start = time.perf_counter()
    rows = final_rows(plan.rows, result)
    write_failures(config, rows)
    # The state learns what splits.json will hold before it is rewritten: a rerun that finds it
    # there takes its input pins from the state, wherever the run died.
    splits_doc = json_bytes(splits_document(rows))
    state.splits_written(text_digest(splits_doc))
    write_atomic(config.splits, splits_doc)
    stats = build_stats(config, rows, result, plan.manifest_rows, plan.ocr_orphans, timings, plan.asr_orphans)
    origin = reuse.earlier.parent if reuse.earlier is not None and reuse.earlier.name == PREVIOUS else reuse.earlier
    stats["reuse"] = {"from": str(origin) if origin else None, **reuse_counts(result.outcomes)}
    previous = config.output_dir / PREVIOUS
    if (previous / CATALOG).is_file():
        # What changed since the pack this run replaces (report.html, "Since the previous pack").
        stats["since_previous_pack"] = compare_catalogs(
            load_catalog(previous),
            read_failures(previous / "failures.jsonl"),
            catalog,
            read_failures(config.failures_log),
            "the previous pack",
            "this pack",
        )
    # The pack's fingerprint: a digest of every shard's name and digest (made of its samples' content digests).
    listing = "".join(f"{s.name} {s.sha256}\n" for s in result.shards)
    fingerprint = text_digest(listing)[:16]
    write_card(stats, taxonomy, config.output_dir, config.stats, fingerprint)
    build_report(out_dir, config.output_dir, config.report_sample, config.seed, stats, catalog, warmer.draw)
    warmer.close()
    timings["report"] = time.perf_counter() - start
    stats["seconds"]["report"] = round(timings["report"], 3)
    write_stat_cache(config.output_dir, catalog, result.outcomes, [s.name for s in result.shards])
    # The very last step marks the run complete: stats.json renamed into place.
    (out_dir / INCOMPLETE).unlink(missing_ok=True)
    write_stats(config, stats)
    state.remove()
    remove_previous(config.output_dir)
    print(summary(stats))
    return (0 if all(stats["checks"].values()) else 1), stats


def with_object_sizes(samples: pl.DataFrame, known: dict[str, Any]) -> pl.DataFrame:
    """The samples with `object_size`: each s3:// image's or clip's size as the plan found it."""
    sizes = pl.DataFrame(
        {"media": list(known), "object_size": [f.st_size if f is not None else None for f in known.values()]},
        schema={"media": pl.String, "object_size": pl.Int64},
    )
    media = pl.coalesce("video_path", "image_path").alias("media")
    return samples.with_columns(media).join(sizes, on="media", how="left", maintain_order="left").drop("media")


@dataclass
class Reuse:
    """The earlier pack a run reuses (its shards folder), its images matched to this run's, the
    digest of this run's image settings, the pack this run replaces (reused or not, it is compared
    with: report.html's "Since the previous pack"), and the earlier pack's clips matched to this
    run's with the digest of this run's clip settings."""

    earlier: Path | None
    matches: pl.DataFrame | None
    encoder: str | None
    replaced: Path | None = None  # the pack in the output folder this run replaces
    clips: pl.DataFrame | None = None  # its clips matched to this run's (by their files' facts)
    clip_encoder: str | None = None


def keep_previous(config: PackConfig) -> Path:
    """Move the pack in the output folder aside into `.previous/` (stat cache and catalog first,
    then each split folder, each a rename) with a copy of its failures log; returns that folder."""
    previous = config.output_dir / PREVIOUS
    previous.mkdir(exist_ok=True)
    if (config.output_dir / SOURCES).is_file():
        os.replace(config.output_dir / SOURCES, previous / SOURCES)
    os.replace(config.output_dir / CATALOG, previous / CATALOG)
    if config.failures_log.is_file():
        write_atomic(previous / "failures.jsonl", config.failures_log.read_bytes())
    for split in SPLIT_DIRS:
        folder = config.output_dir / split
        if folder.is_dir() and not folder.is_symlink() and not (previous / split).exists():
            os.replace(folder, previous / split)
    return previous


def drop_unfinished(shard_root: Path, progress: Progress) -> None:
    """Before a resume: remove what the dead run left half-written (temporary shards and chunk
    files) and shards it renamed but did not journal (they are written again, byte for byte)."""
    kept = {Path(s.path).name for shards in progress.closed.values() for s in shards}
    remove_owned(shard_root / ".chunks", WORK_FILE)
    for split in SPLIT_DIRS:
        remove_owned(shard_root / split, SPLIT_FILE, keep=kept)
