"""Step_3/README.md: a Hugging Face dataset card.

Its YAML declares a config per shard series, `images` (the `shard-*.tar` series), `text` (the
`text-*.tar` series) and, in a pack with clips, `video` (`video-*.tar`), with their data files per
split and the features of every sample member, so that
`datasets.load_dataset("Step_3", "images", split="train")` reads the shards with no other argument
(the features are declared, not inferred from the first samples, whose JSON nulls cannot tell an
integer from a list). Below the YAML, for people: what the data is, its counts and how to read it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup

from ..config import DIAGNOSTICS, SPLITS, UNIFIED_FIELDS, Taxonomy
from ..guard import CARD_MARKER, inert
from ..shards import SERIES_KINDS, SERIES_NAMES, TEXT_SERIES, VIDEO_SERIES, write_atomic

MARKER = CARD_MARKER  # the card's first body line (guard.py recognises packer's cards by it)
CONFIGS = {name: series for series, name in SERIES_NAMES.items()}

# Aux types of the taxonomy (config.AUX_TYPES) as dataset-card features.
AUX_FEATURES: dict[str, dict[str, Any]] = {
    "int": {"dtype": "int64"},
    "str": {"dtype": "string"},
    "list[int]": {"sequence": "int64"},
    "list[str]": {"sequence": "string"},
    "list[list[int]]": {"sequence": {"sequence": "int64"}},
    "time_spans": {"sequence": {"sequence": "float64"}},
}


class PlainDumper(yaml.SafeDumper):
    """Writes repeated parts (the aux features of both configs) in full: no YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def card_path(stats_path: Path) -> Path:
    return stats_path.parent / "README.md"


def _feature(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **spec}


def _struct(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"struct": [_feature(name, spec) for name, spec in fields.items()]}


def aux_features(taxonomy: Taxonomy) -> dict[str, dict[str, Any]]:
    """The union of every dataset's aux fields (config.validate_taxonomy keeps their types consistent)."""

    def one(spec: dict[str, Any]) -> dict[str, Any]:
        if "object" in spec:
            return _struct({k: one(v) for k, v in spec["object"].items()})
        return AUX_FEATURES[spec.get("type", "str")]

    union: dict[str, dict[str, Any]] = {}
    for block in taxonomy.datasets.values():
        for name, spec in block.get("aux", {}).items():
            union.setdefault(name, one(spec))
    return dict(sorted(union.items()))


def video_features() -> dict[str, dict[str, Any]]:
    """A video sample's JSON besides the image's: the clip's facts and its kept speech."""
    number, integer, string = {"dtype": "float64"}, {"dtype": "int64"}, {"dtype": "string"}
    video = {
        "duration": number,
        "fps": number,
        "width": integer,
        "height": integer,
        "codec": string,
        "rotation": integer,
        "middle_time": number,
        "frame_times": {"sequence": "float64"},
    }
    segment = [_feature(n, spec) for n, spec in {"start": number, "end": number, "text": string}.items()]
    dropped = {"silence": integer, "repetition": integer, "empty": integer}
    asr = {"language": string, "segments": {"list": segment}, "dropped": _struct(dropped)}
    return {"video": _struct(video), "asr": _struct(asr)}


def sample_features(taxonomy: Taxonomy, with_image: bool, frames: int = 0) -> list[dict[str, Any]]:
    """The members of one sample as the webdataset builder yields them: key, url, jpg, txt, json;
    with `frames`, a video sample's fNN.jpg too (every frame an image column)."""
    labels = {
        "abuse_hate": {"dtype": "int64"},
        "offensive": {"dtype": "int64"},
        "target_type": {"dtype": "string"},
        "target_group": {"sequence": "string"},
    }
    assert set(labels) == set(UNIFIED_FIELDS)
    string = {"dtype": "string"}
    doc = {
        "id": string,
        "key": string,
        "dataset": string,
        "split": string,
        "source_split": string,
        "labels": _struct(labels),
        "aux": _struct(aux_features(taxonomy)),
        "lang": string,
        "image": _struct({"orig_width": {"dtype": "int64"}, "orig_height": {"dtype": "int64"}, "orig_format": string}),
    }
    if frames:
        doc.update(video_features())
    members = {"__key__": string, "__url__": string}
    members.update({f"f{i:02d}.jpg": {"dtype": "image"} for i in range(frames)})
    if with_image:
        members["jpg"] = {"dtype": "image"}
    members["json"] = _struct(doc)
    members["txt"] = string
    return [_feature(name, spec) for name, spec in members.items()]


def card_metadata(
    stats: dict[str, Any], taxonomy: Taxonomy, shard_root: Path, card_dir: Path, fingerprint: str
) -> dict[str, Any]:
    """The YAML header: a config per shard series that has shards, a data-files pattern per split;
    and a `diagnostics` config, the functional tests alone (HateCheck, Multilingual HateCheck: text
    shards), to filter by `json.lang`."""
    counts = stats["splits"]
    configs, infos = [], []
    frames = stats["config"].get("video_frames", 0)
    wanted = [(name, series, (*SPLITS, DIAGNOSTICS)) for name, series in CONFIGS.items()]
    for name, series, splits in [*wanted, (DIAGNOSTICS, TEXT_SERIES, (DIAGNOSTICS,))]:
        kind = SERIES_KINDS[series]
        files = [
            {"split": split, "path": f"{relative(shard_root / split, card_dir)}/{series}-*.tar"}
            for split in splits
            if counts.get(split, {}).get(f"{kind}_shards", 0) > 0
        ]
        if not files:
            continue
        configs.append({"config_name": name, "data_files": files, **({"default": True} if name == "images" else {})})
        infos.append(
            {
                "config_name": name,
                # `datasets` keys its cache by the card's configs and dataset_info, never by the files the
                # patterns match: the pack's fingerprint (its shards' bytes) makes another pack, in this
                # folder or another one of the same name, another cache entry, never stale rows.
                "description": f"packer pack {fingerprint}",
                "features": sample_features(taxonomy, series != TEXT_SERIES, frames if series == VIDEO_SERIES else 0),
                # Checked by `datasets` once it has read the shards (a changed file cannot load silently).
                "splits": [{"name": f["split"], "num_examples": counts[f["split"]][f"{kind}_examples"]} for f in files],
            }
        )
    meta: dict[str, Any] = {
        "pretty_name": "packer shards",
        "language": ["en"],
        "task_categories": ["image-classification", "text-classification"],
        "tags": ["webdataset", "hate-speech", "memes"],
    }
    if configs:
        meta["configs"] = configs
        meta["dataset_info"] = infos
    return meta


def relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def class_tables(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per unified field, a table: one row per (split, dataset), one column per value."""
    tables = []
    for field in UNIFIED_FIELDS:
        values: set[str] = set()
        rows = []
        for split in stats["splits"]:
            for dataset, fields in sorted(stats["labels"].get(split, {}).items()):
                counts = fields.get(field, {})
                values.update(counts)
                rows.append({"split": split, "dataset": dataset, "counts": counts})
        tables.append({"field": field, "columns": sorted(values), "rows": rows})
    return tables


def dataset_counts(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per dataset: its packed examples per split (from the label counts of one field) and its outcomes."""
    splits = list(stats["splits"])
    out = []
    for dataset, entry in stats["datasets"].items():
        per_split = {}
        for split in splits:
            counts = stats["labels"].get(split, {}).get(dataset, {}).get("abuse_hate", {})
            per_split[split] = sum(counts.values())
        out.append({"name": dataset, "per_split": per_split, **entry})
    return out


# A value that renders as itself in markdown: words of letters and digits joined by _ or -, or a number.
PLAIN = re.compile(r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*|[0-9]+(?:\.[0-9]+)?")
CARD_TEXT_SHOWN = 300


def md_inert(value: Any) -> Any:
    """The card's finalize: every value the template prints that does not render as itself (a
    reason quoting an input value, a dataset or class name) goes into a code span, where markdown
    makes no HTML, link, image, heading or emphasis; control characters are shown escaped, a `|`
    cannot end a table cell, and the text is cut to CARD_TEXT_SHOWN characters."""
    if isinstance(value, (Markup, bool, int, float)) or value is None:
        return value
    text = str(value)
    if PLAIN.fullmatch(text):
        return text
    if len(text) > CARD_TEXT_SHOWN:
        text = f"{text[:CARD_TEXT_SHOWN]}... [{len(text) - CARD_TEXT_SHOWN} more characters]"
    text = inert(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip(" ") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def literal(value: Any) -> Markup:
    """A value inside a code block's Python string literal: escaped as Python reads it back, with no
    backtick (which could close the fence) or pipe (which could end a table cell) left raw."""
    body = json.dumps(str(value), ensure_ascii=True)[1:-1]
    return Markup(body.replace("`", "\\u0060").replace("|", "\\u007c"))


@functools.cache
def card_template() -> Template:
    """The card's template, compiled once per process (report.html.ReportWarmer compiles it while
    the images are encoded)."""
    env = Environment(
        loader=PackageLoader("packer", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=md_inert,
    )
    env.filters["literal"] = literal
    return env.get_template("dataset_card.md.j2")


def render_card(stats: dict[str, Any], taxonomy: Taxonomy, shard_root: Path, card_dir: Path, fingerprint: str) -> str:
    meta = card_metadata(stats, taxonomy, shard_root, card_dir, fingerprint)
    shards = stats["splits"]["train"]["image_shards"]
    return card_template().render(
        yaml_header=Markup(yaml.dump(meta, Dumper=PlainDumper, sort_keys=False, allow_unicode=True, width=1000)),
        train_image_shards="shard-00000.tar" if shards <= 1 else f"shard-{{00000..{shards - 1:05d}}}.tar",
        marker=Markup(MARKER),
        stats=stats,
        configs=[c["config_name"] for c in meta.get("configs", [])],
        shard_dir=relative(shard_root, card_dir),
        card_dir=card_dir.name or str(card_dir),
        class_tables=class_tables(stats),
        datasets=dataset_counts(stats),
        dataset_names=Markup(", ".join(str(md_inert(d)) for d in stats["datasets"])),
    )


def write_card(stats: dict[str, Any], taxonomy: Taxonomy, shard_root: Path, stats_path: Path, fingerprint: str) -> Path:
    """The card; `fingerprint` names the pack (a digest of every shard's name and bytes)."""
    path = card_path(stats_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_card(stats, taxonomy, shard_root, path.parent, fingerprint).encode("utf-8"))
    return path
