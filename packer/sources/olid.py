"""OLID (OffensEval 2019): the training TSV, and the test tweets with their label files per subtask."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, Table, find_file, manifest_row, read_table

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


DATASETS = [Dataset("olid", olid)]
