"""Raw adapters: a dataset's original release files -> the Step-2 manifest (and OCR) of INPUTS.md.

    python -m packer.sources DATASET RAW_DIR [--images DIR ...] -o data_manifest.jsonl

Each adapter reads the files as the dataset's authors released them, checks their shape (columns,
JSON, ids) and names the file, line and field of anything it cannot read. Label *values* are
passed on verbatim under their original names: whether a value maps is the taxonomy's business,
so an odd value becomes a failed example at packing, with its reason, never a crash here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import InputError
from .guard import inert

csv.field_size_limit(sys.maxsize)


class SourceError(InputError):
    """A raw release file that cannot be read as its format says."""


# -- reading the release files ------------------------------------------------
def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file (".json" files too)."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise SourceError(f"{path}: line {number}: not valid JSON: nested too deeply") from None
            if not isinstance(obj, dict):
                raise SourceError(f"{path}: line {number}: expected a JSON object")
            yield number, obj


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise SourceError(f"{path}: not valid JSON: nested too deeply") from None


@dataclass
class Table:
    """A delimited file read with its header: rows as dicts, with their line numbers."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]

    def need(self, *names: str) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise SourceError(f"{self.path}: line 1: missing column(s) {missing}; the header has {self.columns}")

    def has(self, name: str) -> bool:
        return name in self.columns


def read_table(
    path: Path,
    delimiter: str = ",",
    quoted: bool = True,
    header: list[str] | None = None,
    renames: dict[str, str] | None = None,
) -> Table:
    """A CSV/TSV file: UTF-8 with or without BOM, LF, CRLF or lone-CR line ends.

    `header` gives the column names of a file without a header line (a first line that is the
    header anyway is skipped). `renames` maps alternative column names to the canonical ones.
    """
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        lines = [(reader.line_num, row) for row in reader]
    lines = [(n, r) for n, r in lines if any(cell.strip() for cell in r)]
    if not lines:
        raise SourceError(f"{path}: the file is empty")
    names = [c.strip() for c in lines[0][1]]
    if header is not None and not set(header) & set(names):
        names, body = list(header), lines
    else:
        body = lines[1:]
    if renames:
        names = [renames.get(n, n) for n in names]
    rows = []
    for number, cells in body:
        if len(cells) != len(names):
            raise SourceError(f"{path}: line {number}: {len(cells)} fields where the header has {len(names)} ({names})")
        rows.append((number, dict(zip(names, cells))))
    return Table(path, names, rows)


def find_file(root: Path, names: Iterable[str], what: str, required: bool = True) -> Path | None:
    """The first of `names` found in `root` or below it (shallowest first)."""
    for name in names:
        hits = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0]
    if required:
        raise SourceError(f"{root}: no {what} (looked for {', '.join(names)})")
    return None


def int_or_text(value: str) -> int | str | None:
    """A label cell as released: "0" -> 0, "" -> None, anything else verbatim."""
    value = value.strip()
    if value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


# -- images -------------------------------------------------------------------
@dataclass
class Images:
    """Where the image files are: the first of `dirs` holding the file, else the first dir."""

    dirs: list[Path]
    missing: int = 0
    found: int = 0
    _listing: dict[Path, set[str]] = field(default_factory=dict)

    def _names(self, folder: Path) -> set[str]:
        if folder not in self._listing:
            self._listing[folder] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        return self._listing[folder]

    def path(self, relative: str, prefer: tuple[str, ...] = ()) -> str | None:
        """The file `relative` names; `prefer` are sub-folders tried first in each folder (a
        release whose splits re-use file names in separate folders, like MAMI's TRAINING/ and test/)."""
        if not relative or not self.dirs:
            return None
        rel = Path(relative.replace("\\", "/"))
        for folder in self.dirs:
            for sub in (*prefer, ""):
                for candidate in (folder / sub / rel, folder / sub / rel.name):
                    if candidate.name in self._names(candidate.parent):
                        self.found += 1
                        return str(candidate.resolve())
        self.missing += 1
        return str((self.dirs[0] / (prefer[0] if prefer else "") / rel).resolve())


def manifest_row(
    dataset: str, split: str | None, example_id: str, image: str | None, text: str | None, labels: dict
) -> dict:
    return {
        "id": f"{dataset}_{split if split is not None else 'nosplit'}_{example_id}",
        "dataset": dataset,
        "split": split,
        "image_path": image,
        "text_raw": text,
        "labels_raw": labels,
    }


@dataclass(frozen=True)
class Options:
    fine_grained: Path | None = None  # hateful_memes: the fine-grained annotations folder
    test_labels: Path | None = None  # mami: the file holding the test labels


@dataclass
class Converted:
    rows: list[dict]
    ocr: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- Hateful Memes ------------------------------------------------------------
HM_SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
HM_FINE_FILES = {"train": "train.json", "dev_seen": "dev_seen.json", "dev_unseen": "dev_unseen.json"}
HM_FINE_TEST = "test.jsonl"  # the fine-grained release's (unlabelled) test file holds test_seen
HM_NOT_LABELS = ("id", "img", "text", "set_name")


def hm_key(value: Any, path: Path, number: int) -> int:
    """Hateful Memes ids are integers, released as 8291 or as the zero-padded string "08291"."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SourceError(f"{path}: line {number}: field 'id': expected an integer id, got {value!r}") from None


def read_fine_grained(folder: Path) -> dict[tuple[str, int], dict]:
    found: dict[tuple[str, int], dict] = {}
    files = {**HM_FINE_FILES, "test_seen": HM_FINE_TEST}
    for split, name in files.items():
        path = folder / name
        if not path.is_file():
            continue
        for number, obj in read_jsonl(path):
            labels = {k: v for k, v in obj.items() if k not in HM_NOT_LABELS}
            found[(split, hm_key(obj.get("id"), path, number))] = labels
    return found


def hateful_memes(raw: Path, images: Images, options: Options) -> Converted:
    fine_dir = options.fine_grained or (raw if (raw / "train.json").is_file() else None)
    fine = read_fine_grained(fine_dir) if fine_dir else {}
    rows, merged = [], 0
    present = [s for s in HM_SPLITS if (raw / f"{s}.jsonl").is_file()]
    if not present:
        raise SourceError(f"{raw}: none of {[s + '.jsonl' for s in HM_SPLITS]}")
    for split in present:
        path = raw / f"{split}.jsonl"
        for number, obj in read_jsonl(path):
            key = hm_key(obj.get("id"), path, number)
            img = obj.get("img")
            if not isinstance(img, str):
                raise SourceError(f"{path}: line {number}: field 'img': expected a path like 'img/08291.png'")
            labels = {"label": obj["label"]} if obj.get("label") is not None else {}
            extra = fine.get((split, key))
            if extra is not None:
                labels.update(extra)
                merged += 1
            rows.append(manifest_row("hateful_memes", split, f"{key:05d}", images.path(img), obj.get("text"), labels))
    notes = [f"fine-grained annotations merged into {merged} rows"] if fine_dir else []
    return Converted(rows, notes=notes)


# -- MAMI ---------------------------------------------------------------------
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


# -- MMHS150K -----------------------------------------------------------------
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


# -- Memotion 1.0 and 2.0 -----------------------------------------------------
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


# -- HateXplain ---------------------------------------------------------------
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


# -- OLID ---------------------------------------------------------------------
OLID_TASKS = ("subtask_a", "subtask_b", "subtask_c")
OLID_NULL = "NULL"


def olid_tsv(path: Path) -> Table:
    return read_table(path, delimiter="\t", quoted=False)


def olid(raw: Path, images: Images, options: Options) -> Converted:
    train = olid_tsv(find_file(raw, ["olid-training-v1.0.tsv", "olid-training-v1.tsv"], "OLID training tsv"))
    train.need("id", "tweet", *OLID_TASKS)
    rows = [
        manifest_row("olid", "train", r["id"], None, r["tweet"], {t: r[t] for t in OLID_TASKS}) for _, r in train.rows
    ]
    notes = []
    test_path = find_file(raw, ["testset-levela.tsv"], "OLID test tsv", required=False)
    if test_path is not None:
        test = olid_tsv(test_path)
        test.need("id", "tweet")
        gold = {}
        for level, task in zip("abc", OLID_TASKS):
            path = find_file(raw, [f"labels-level{level}.csv"], f"labels-level{level}.csv", required=False)
            table = read_table(path, header=["id", "label"]) if path else None
            if table is not None:
                table.need("id", "label")
            gold[task] = {r["id"].strip(): r["label"].strip() for _, r in table.rows} if table else {}
        for _, r in test.rows:
            ident = r["id"].strip()
            labels = {t: gold[t].get(ident, OLID_NULL) for t in OLID_TASKS} if gold["subtask_a"] else {}
            rows.append(manifest_row("olid", "test", ident, None, r["tweet"], labels))
        notes.append(f"test: {len(test.rows)} tweets, level-a labels for {len(gold['subtask_a'])}")
    return Converted(rows, notes=notes)


# -- HateCheck ----------------------------------------------------------------
HATECHECK_FIELDS = ("functionality", "case_id", "label_gold", "target_ident", "direction")


def hatecheck(raw: Path, images: Images, options: Options) -> Converted:
    table = read_table(find_file(raw, ["test_suite_cases.csv"], "HateCheck test_suite_cases.csv"))
    table.need("test_case", *HATECHECK_FIELDS)
    rows = []
    for _, r in table.rows:
        labels = {k: r[k] if r[k].strip() else None for k in HATECHECK_FIELDS}
        labels["case_id"] = int_or_text(r["case_id"])
        rows.append(manifest_row("hatecheck", "test", r["case_id"].strip(), None, r["test_case"], labels))
    return Converted(rows)


# -- command line -------------------------------------------------------------
Adapter = Callable[[Path, Images, Options], Converted]
ADAPTERS: dict[str, Adapter] = {
    "hateful_memes": hateful_memes,
    "mami": mami,
    "mmhs150k": mmhs150k,
    "memotion1": lambda raw, images, options: memotion(MEMOTION1, raw, images),
    "memotion2": lambda raw, images, options: memotion(MEMOTION2, raw, images),
    "hatexplain": hatexplain,
    "olid": olid,
    "hatecheck": hatecheck,
}
# Where each release keeps its images, relative to RAW_DIR, when --images is not given.
DEFAULT_IMAGE_DIRS = {
    "hateful_memes": ["."],
    "mami": ["."],
    "mmhs150k": ["img_resized", "."],
    "memotion1": ["images", "memotion_dataset_7k/images", "."],
    "memotion2": ["images", "train_images", "val_images", "test_images", "."],
}


def convert(dataset: str, raw: Path, images: list[Path] | None = None, options: Options = Options()) -> Converted:
    """Convert one dataset's release folder; `images` are the folders to look for image files in."""
    if dataset not in ADAPTERS:
        raise SourceError(f"unknown dataset {dataset!r}: one of {sorted(ADAPTERS)}")
    if not raw.is_dir():
        raise SourceError(f"{raw}: not a folder")
    dirs = images if images else [raw / d for d in DEFAULT_IMAGE_DIRS.get(dataset, [])]
    locator = Images(dirs)
    result = ADAPTERS[dataset](raw, locator, options)
    # A release that lists an example twice (Memotion 1.0 does) keeps both rows under distinct ids;
    # packing then drops the copy as an exact duplicate, with its reason.
    seen: Counter[str] = Counter()
    repeats = []
    for row in result.rows:
        seen[row["id"]] += 1
        if seen[row["id"]] > 1:
            row["id"] = f"{row['id']}#{seen[row['id']]}"
            repeats.append(row["id"])
    if repeats:
        result.notes.append(f"{len(repeats)} rows repeat an earlier row's id, renamed: {repeats[:3]}")
    if locator.missing:
        result.notes.append(f"{locator.missing} of {locator.missing + locator.found} image files not found")
    return result


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m packer.sources", description="Turn a dataset's original release files into a Step-2 manifest."
    )
    parser.add_argument("dataset", choices=sorted(ADAPTERS))
    parser.add_argument("raw_dir", type=Path, help="the folder holding the release's annotation files")
    parser.add_argument("--images", type=Path, action="append", help="a folder with the image files (repeatable)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the manifest to write (JSON lines)")
    parser.add_argument(
        "--ocr-out", type=Path, help="OCR JSONL for datasets that ship OCR (default: ocr.jsonl beside -o)"
    )
    parser.add_argument("--fine-grained", type=Path, help="hateful_memes: the fine-grained annotations folder")
    parser.add_argument("--test-labels", type=Path, help="mami: the file with the test labels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = Options(fine_grained=args.fine_grained, test_labels=args.test_labels)
        result = convert(args.dataset, args.raw_dir, args.images, options)
    except InputError as exc:
        print(f"error: {inert(exc)}", file=sys.stderr)
        return 2
    write_jsonl(args.output, result.rows)
    splits = Counter(str(r["split"]) for r in result.rows)
    wrote = f"{args.dataset}: {len(result.rows)} rows -> {args.output} ({dict(sorted(splits.items()))})"
    print(inert(wrote), file=sys.stderr)
    if result.ocr:
        ocr_out = args.ocr_out or args.output.with_name("ocr.jsonl")
        write_jsonl(ocr_out, result.ocr)
        print(f"{args.dataset}: {len(result.ocr)} OCR rows -> {ocr_out}", file=sys.stderr)
    for note in result.notes:
        print(f"  {inert(note)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
