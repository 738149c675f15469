"""HateCheck (Röttger et al., 2021): the functional tests CSV (packed as the diagnostics split)."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, find_file, int_or_text, manifest_row, read_table

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


DATASETS = [Dataset("hatecheck", hatecheck)]
