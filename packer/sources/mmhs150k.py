"""MMHS150K (Gomez et al., 2020): MMHS150K_GT.json, the splits/*_ids.txt lists, and the img_txt files as OCR."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, SourceError, find_file, manifest_row, read_json

MMHS_SPLITS = ("train", "val", "test")


def mmhs150k(raw: Path, images: Images, options: Options) -> Converted:
    gt_path = find_file(raw, ["MMHS150K_GT.json"], "MMHS150K_GT.json")
    gt = read_json(gt_path)
    if not isinstance(gt, dict):
        raise SourceError(f"{gt_path}: expected an object of tweet id -> annotation")
    split_of: dict[str, str] = {}
    for split in MMHS_SPLITS:
        path = find_file(raw, [f"{split}_ids.txt"], f"splits/{split}_ids.txt", required=False)
        if path is None:
            continue
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            if line.strip():
                split_of[line.strip()] = split
    txt_dir = next((p for p in sorted(raw.rglob("img_txt")) if p.is_dir()), None)
    txt_names = {p.name for p in txt_dir.iterdir()} if txt_dir else set()
    rows, ocr = [], []
    for tweet_id, ann in gt.items():
        if not isinstance(ann, dict) or not isinstance(ann.get("labels"), list):
            raise SourceError(f"{gt_path}: tweet {tweet_id}: field 'labels': expected a list of 3 codes")
        split = split_of.get(tweet_id)
        image = images.path(f"{tweet_id}.jpg")
        labels = {"labels": ann["labels"], "labels_str": ann.get("labels_str")}
        row = manifest_row("mmhs150k", split, tweet_id, image, ann.get("tweet_text"), labels)
        rows.append(row)
        if f"{tweet_id}.json" in txt_names:
            text = read_json(txt_dir / f"{tweet_id}.json").get("img_text", "")
            lines = [{"text": text}] if text and text.strip() else []
            ocr.append(
                {"id": row["id"], "dataset": "mmhs150k", "split": split, "image_path": image, "ocr": {"lines": lines}}
            )
    unsplit = sum(1 for r in rows if r["split"] is None)
    notes = [f"{len(ocr)} img_txt files as OCR"] + (
        [f"{unsplit} tweets in no *_ids.txt (split null)"] if unsplit else []
    )
    return Converted(rows, ocr, notes)


DATASETS = [Dataset("mmhs150k", mmhs150k, image_dirs=("img_resized", "."))]
