"""HateXplain (Mathew et al., 2021): dataset.json and post_id_divisions.json."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, SourceError, find_file, manifest_row, read_json


def hatexplain(raw: Path, images: Images, options: Options) -> Converted:
    data_path = find_file(raw, ["dataset.json"], "HateXplain dataset.json")
    div_path = find_file(raw, ["post_id_divisions.json"], "post_id_divisions.json")
    data, divisions = read_json(data_path), read_json(div_path)
    if not isinstance(divisions, dict):
        raise SourceError(f"{div_path}: expected {{'train': [ids], 'val': [ids], 'test': [ids]}}")
    split_of = {pid: split for split, ids in divisions.items() for pid in ids}
    rows = []
    for post_id, post in data.items():
        for name in ("annotators", "post_tokens"):
            if not isinstance(post.get(name), list):
                raise SourceError(f"{data_path}: post {post_id}: field '{name}': expected a list")
        labels = {k: post.get(k) for k in ("annotators", "rationales", "post_tokens")}
        text = " ".join(post["post_tokens"])
        rows.append(manifest_row("hatexplain", split_of.get(post_id), post_id, None, text, labels))
    unknown = set(split_of) - set(data)
    notes = [f"{sum(r['split'] is None for r in rows)} posts in no division (HateXplain's undecided posts)"]
    if unknown:
        notes.append(f"{len(unknown)} ids of {div_path.name} are not in {data_path.name}")
    return Converted(rows, notes=notes)


DATASETS = [Dataset("hatexplain", hatexplain)]
