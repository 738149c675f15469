"""The default mapping on the datasets' real annotation files (skipped where ../shared is absent)."""

from __future__ import annotations

import csv

import pytest
from conftest import REALDATA, summed

OLID = REALDATA / "olid" / "olid-training-v1.0.tsv"


@pytest.mark.skipif(not OLID.is_file(), reason="../shared/realdata is not here")
def test_olid_training_file_reproduces_published_counts(ws):
    with open(OLID, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            ws.add(
                f"olid_train_{row['id']}",
                "olid",
                "train",
                {k: row[k] for k in ("subtask_a", "subtask_b", "subtask_c")},
                text=row["tweet"],
            )
    assert ws.run() == 0
    stats = ws.stats
    assert stats["packed"] == 13240 and stats["failed"] == 0
    assert summed(stats, "olid", "offensive") == {"0": 8840, "1": 4400}
    types = summed(stats, "olid", "target_type")
    assert (types["individual"], types["group"], types["other"]) == (2407, 1074, 395)
    assert types["none"] == 8840 + 524 and "null" not in types
