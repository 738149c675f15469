"""Command line -> one frozen PackConfig.

Exit codes: 0 (checks pass), 1 (a check failed), 2 (usage or input error), 3 (output cannot be written).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from .config import InputError, OutputError, PackConfig
from .guard import error_exit
from .pool import BACKENDS
from .storage import is_url


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def ratios(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError("three non-negative numbers summing to 1, e.g. 0.8,0.1,0.1")
    return (parts[0], parts[1], parts[2])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pack-examples", description="Pack a manifest and its OCR into WebDataset shards.")
    p.add_argument("--manifest", type=location, required=True, help="Step-2 data_manifest.jsonl (a path or s3:// URL)")
    p.add_argument("--ocr", type=location, default=None, help="Step-2 ocr.jsonl (optional; a path or s3:// URL)")
    p.add_argument("--output-dir", type=Path, required=True, help="shards go to <dir>/{train,val,test}/")
    p.add_argument(
        "--label-taxonomy",
        type=Path,
        required=True,
        help="label_taxonomy.json; the default is written there when it does not exist",
    )
    p.add_argument("--splits", type=Path, required=True, help="splits.json: ids in it keep their split; rewritten")
    p.add_argument(
        "--examples-limit", type=positive_int, default=None, help="deterministic subset, every dataset in proportion"
    )
    p.add_argument("--stats", type=Path, default=None, help="default: stats.json beside the output dir")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    p.add_argument("--include-diagnostics", action="store_true", help="pack HateCheck into <dir>/diagnostics/")
    p.add_argument("--keep-unlabelled", action="store_true", help="pack examples with no label at all")
    p.add_argument("--shard-maxcount", type=positive_int, default=5000)
    p.add_argument(
        "--min-shards",
        type=positive_int,
        default=16,
        help="at least this many shards of equal size per series of every split (as far as its examples go): "
        "world_size x DataLoader workers, so that every rank and worker reads",
    )
    p.add_argument("--shard-maxsize", type=positive_int, default=1_000_000_000, help="bytes")
    p.add_argument("--image-size", type=positive_int, default=384)
    p.add_argument("--jpeg-quality", type=int, choices=range(1, 101), metavar="1..100", default=95)
    p.add_argument("--ocr-min-conf", type=float, default=0.5, help="on the 0-1 scale")
    p.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=89_478_485,
        help="larger images are failed as decompression bombs",
    )
    p.add_argument("--val-ratio", type=float, default=0.1, help="val carved from train where a dataset has none")
    p.add_argument(
        "--split-ratios", type=ratios, default=(0.8, 0.1, 0.1), help="train,val,test where a dataset has no split"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cross-split",
        choices=("report", "drop-images", "drop"),
        default="report",
        help="an image (or text) in two splits: report it (default), or drop the copies outside the most protected "
        "split: drop-images for shared images only, drop for shared images and texts",
    )
    p.add_argument(
        "--near-dup-bits",
        type=int,
        choices=range(0, 4),
        metavar="0..3",
        default=3,
        help="dHash Hamming distance at or under which two packed images count as near-duplicates",
    )
    p.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="loky",
        help="where the image stage runs: loky (this machine, default) or a Dask cluster",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --backend dask: the scheduler (default $DASK_SCHEDULER_ADDRESS, else a local cluster of --workers)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="start over even where an interrupted run of the same inputs could resume"
    )
    video = p.add_argument_group("videos and speech (manifest rows with video_path; Step 2B's ASR file)")
    video.add_argument(
        "--asr", type=location, default=None, help="Step_2B/asr.jsonl: Whisper-style segments per clip (or s3:// URL)"
    )
    video.add_argument(
        "--video-frames",
        type=positive_int,
        default=8,
        help="evenly spaced frames per clip (fNN.jpg), besides the middle one",
    )
    video.add_argument(
        "--max-video-seconds", type=positive_float, default=4 * 3600.0, help="longer clips fail as video_too_large"
    )
    video.add_argument(
        "--video-timeout", type=positive_float, default=120.0, help="seconds of decoding one clip may take"
    )
    video.add_argument(
        "--asr-max-no-speech",
        type=float,
        default=0.6,
        help="a segment is silence when its no_speech_prob is above this and its avg_logprob below --asr-min-logprob",
    )
    video.add_argument("--asr-min-logprob", type=float, default=-1.0)
    video.add_argument(
        "--asr-max-compression",
        type=float,
        default=2.4,
        help="a segment whose compression_ratio is above this is a repetition loop, dropped",
    )
    p.add_argument(
        "--reuse-from",
        type=Path,
        default=None,
        metavar="STEP_3",
        help="take the images another pack encoded with the same settings from its shards (e.g. a pilot before the "
        "full run); a re-pack over an earlier pack reuses that one without this flag",
    )
    p.add_argument("--no-reuse", action="store_true", help="encode every image, reusing nothing of an earlier pack")
    p.add_argument(
        "--publish",
        default=None,
        metavar="URL",
        help="also publish the pack to s3://bucket/prefix: each shard uploaded as soon as it is final, "
        "published.json last (pack-examples publish)",
    )
    p.add_argument(
        "--storage-options",
        default=None,
        metavar="JSON",
        help="for s3:// inputs and --publish: s3fs-style options (key, secret, token, profile, endpoint_url, "
        "client_kwargs, config_kwargs); default: the AWS chain and AWS_ENDPOINT_URL",
    )
    p.add_argument(
        "--report-sample", type=int, default=48, metavar="N", help="examples per split on report.html's contact sheets"
    )
    return p


def location(text: str) -> Path | str:
    """An input file's location: a local path, or a URL as written (a Path would fold its `//`)."""
    return text if is_url(text) else Path(text)


def config_from_args(args: argparse.Namespace) -> PackConfig:
    """Every flag has the name of its PackConfig field; --stats defaults to beside the output dir."""
    values = {f.name: getattr(args, f.name) for f in fields(PackConfig) if hasattr(args, f.name)}
    values["stats"] = args.stats or args.output_dir.resolve().parent / "stats.json"
    return PackConfig(**values)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("diff", "show", "publish"):  # pack-examples diff OLD NEW, show ID, publish STEP_3 URL
        from . import diff, publish, show

        return {"diff": diff, "show": show, "publish": publish}[argv[0]].main(argv[1:])
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from .pipeline import run

    try:
        code, _ = run(config_from_args(args))
    except (InputError, OutputError) as exc:
        return error_exit(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
