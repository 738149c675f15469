"""Memotion 1.0 (SemEval-2020 Task 8) and Memotion 2.0: one CSV format, two releases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common import Converted, Dataset, Images, SourceError, find_file, manifest_row, read_table


@dataclass(frozen=True)
class MemotionFormat:
    dataset: str
    labels: tuple[str, ...]
    files: dict[str, tuple[str, ...]]  # split -> candidate file names
    image_columns: tuple[str, ...] = ("image_name", "Image_name", "Image_Name", "image")
    id_columns: tuple[str, ...] = ()
    text_columns: tuple[str, ...] = ("text_corrected", "Corrected_text", "corrected_text", "text_ocr")
    text_columns += ("OCR_extracted_text", "ocr_text", "text")


MEMOTION1 = MemotionFormat(
    "memotion1",
    ("humour", "sarcasm", "offensive", "motivational", "overall_sentiment"),
    {
        "train": ("labels.csv", "data_7000_new.csv", "data_7000.csv", "data_*.csv", "memotion_dataset_7k.csv"),
        "test": ("Meme_groundTruth.csv", "2000_testdata.csv", "Raw_testdata.csv", "test*.csv"),
    },
)
MEMOTION2 = MemotionFormat(
    "memotion2",
    ("humour", "sarcastic", "offensive", "motivational", "overall_sentiment"),
    {"train": ("memotion_train.csv",), "val": ("memotion_val.csv",), "test": ("memotion_test.csv",)},
    id_columns=("Id", "id", "ID"),
)


def pick(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def memotion(fmt: MemotionFormat, raw: Path, images: Images) -> Converted:
    rows, notes = [], []
    for split, names in fmt.files.items():
        path = find_file(raw, names, f"{fmt.dataset} {split} file", required=split == "train")
        if path is None:
            continue
        table = read_table(path)
        image_col = pick(table.columns, fmt.image_columns)
        id_col = pick(table.columns, fmt.id_columns) or image_col
        if id_col is None:
            raise SourceError(f"{path}: line 1: no image or id column (one of {fmt.image_columns + fmt.id_columns})")
        # Column names vary in case across releases (Humour vs humour): labels keep the file's names.
        label_cols = [c for c in table.columns if c.strip().lower() in fmt.labels]
        texts = [c for c in fmt.text_columns if c in table.columns]
        for number, r in table.rows:
            ident = r[id_col].strip()
            if not ident:
                raise SourceError(f"{path}: line {number}: field '{id_col}': empty")
            name = r[image_col].strip() if image_col else f"{ident}.jpg"
            text = next((r[c] for c in texts if r[c].strip()), None)
            labels = {c: r[c] for c in label_cols if r[c].strip()}
            rows.append(manifest_row(fmt.dataset, split, ident, images.path(name), text, labels))
        notes.append(f"{split}: {len(table.rows)} rows from {path.name}, labels {label_cols or 'none'}")
    return Converted(rows, notes=notes)


DATASETS = [
    Dataset(
        "memotion1",
        lambda raw, images, options: memotion(MEMOTION1, raw, images),
        image_dirs=("images", "memotion_dataset_7k/images", "."),
    ),
    Dataset(
        "memotion2",
        lambda raw, images, options: memotion(MEMOTION2, raw, images),
        image_dirs=("images", "train_images", "val_images", "test_images", "."),
    ),
]
