"""MAMI (SemEval-2022 Task 5): the training TSV and the test file with its labels (--test-labels)."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, Table, find_file, int_or_text, manifest_row, read_table

MAMI_LABELS = ("misogynous", "shaming", "stereotype", "objectification", "violence")
MAMI_TEXT = "Text Transcription"
MAMI_RENAMES = {"label": "misogynous", "text": MAMI_TEXT, "Text": MAMI_TEXT, "file name": "file_name"}
MAMI_TEST_LABELS = ("test_labels.txt", "test_labels.tsv", "test_labels.csv", "test.tsv")
# Training and test images re-use file names (15001.jpg is in both, different memes): each split
# looks in its own folder first.
MAMI_IMAGE_DIRS = {"train": ("TRAINING", "training", "Training"), "test": ("test", "TEST", "Test")}


def mami_table(path: Path) -> Table:
    # MAMI is TAB-separated and unquoted: transcriptions keep their quote characters verbatim.
    return read_table(path, delimiter="\t", quoted=False, header=["file_name", *MAMI_LABELS], renames=MAMI_RENAMES)


def mami_labels(row: dict[str, str]) -> dict:
    return {k: int_or_text(row[k]) for k in MAMI_LABELS if k in row}


def mami(raw: Path, images: Images, options: Options) -> Converted:
    train = mami_table(find_file(raw, ["training.csv", "Training.csv"], "MAMI training file"))
    train.need("file_name", *MAMI_LABELS, MAMI_TEXT)
    rows = [
        manifest_row(
            "mami",
            "train",
            r["file_name"],
            images.path(r["file_name"], MAMI_IMAGE_DIRS["train"]),
            r[MAMI_TEXT],
            mami_labels(r),
        )
        for _, r in train.rows
    ]
    notes = []
    test_path = find_file(raw, ["test.csv", "Test.csv"], "MAMI test file", required=False)
    label_path = options.test_labels or find_file(raw, MAMI_TEST_LABELS, "MAMI test labels", required=False)
    texts = mami_table(test_path) if test_path else None
    labels = mami_table(label_path) if label_path else None
    if texts is not None:
        texts.need("file_name", MAMI_TEXT)
    if labels is not None:
        labels.need("file_name", *MAMI_LABELS)
    if labels is None and texts is not None and texts.has("misogynous"):
        labels = texts
    by_name = {r["file_name"]: r for _, r in labels.rows} if labels else {}
    text_of = {r["file_name"]: r[MAMI_TEXT] for _, r in texts.rows} if texts else {}
    # The test file's order, then any labelled name it lacks.
    order = list(text_of) + [n for n in by_name if n not in text_of]
    for name in order:
        label_row = by_name.get(name)
        text = text_of.get(name, (label_row or {}).get(MAMI_TEXT))
        row_labels = mami_labels(label_row) if label_row else {}
        rows.append(manifest_row("mami", "test", name, images.path(name, MAMI_IMAGE_DIRS["test"]), text, row_labels))
    if order:
        notes.append(f"test: {len(order)} rows, labels from {labels.path if labels else 'nowhere (unlabelled)'}")
    return Converted(rows, notes=notes)


DATASETS = [Dataset("mami", mami, image_dirs=(".",))]
