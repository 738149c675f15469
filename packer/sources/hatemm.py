"""HateMM (Das et al., 2023): BitChute clips in `hate_videos/` and `non_hate_videos/`, labelled in
`HateMM_annotation.csv` (video_file_name, label Hate / Non Hate, hate_snippet, target).

Each clip becomes one manifest row with `video_path` (INPUTS.md section 4): id `hatemm_<file name>`,
no split (HateMM defines none: packer assigns 80/10/10), `labels_raw` the row's label,
hate_snippet and target as strings, verbatim. A clip in a folder that the CSV does not list is
added with the label its folder stands for (the release's folders are its labels), and counted.
"""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, SourceError, find_file, read_table

FOLDERS = {"hate_videos": "Hate", "non_hate_videos": "Non Hate"}
CLIP_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")


def video_row(name: str, path: str | None, labels: dict[str, str]) -> dict:
    return {
        "id": f"hatemm_{name}",
        "dataset": "hatemm",
        "split": None,
        "image_path": None,
        "video_path": path,
        "text_raw": None,
        "labels_raw": labels,
    }


def hatemm(raw: Path, images: Images, options: Options) -> Converted:
    table = read_table(find_file(raw, ["HateMM_annotation.csv"], "HateMM annotation file HateMM_annotation.csv"))
    table.need("video_file_name", "label")
    rows, listed = [], set()
    for number, r in table.rows:
        name = r["video_file_name"].strip()
        if not name:
            raise SourceError(f"{table.path}: line {number}: field 'video_file_name': empty")
        labels = {"label": r["label"], "hate_snippet": r.get("hate_snippet", ""), "target": r.get("target", "")}
        rows.append(video_row(name, images.path(name), labels))
        listed.add(name)
    extra = 0
    for folder in images.dirs:
        label = FOLDERS.get(folder.name)
        if label is None or not folder.is_dir():
            continue
        for clip in sorted(folder.iterdir()):
            if clip.suffix.lower() in CLIP_SUFFIXES and clip.name not in listed:
                rows.append(
                    video_row(clip.name, str(clip.resolve()), {"label": label, "hate_snippet": "", "target": ""})
                )
                listed.add(clip.name)
                extra += 1
    notes = [f"{extra} clips not in the annotation file, labelled by their folder"] if extra else []
    return Converted(rows, notes=notes)


DATASETS = [Dataset("hatemm", hatemm, tuple(FOLDERS))]
