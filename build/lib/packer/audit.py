"""The leakage audit and the balance report over the final rows (what was actually packed).

Leakage: for every pair of splits, the images (same bytes), normalised texts and near-duplicate
images (dHash within --near-dup-bits) that occur in both, in total and per dataset, with up to
20 example id pairs (the copy in the less protected split first). Exact duplicates dropped are
listed per dataset and source split. Diagnostics are not audited: they are never trained on.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .config import SPLITS, UNIFIED_FIELDS
from .splits import assigned_by_packer, split_priority

MAX_EXAMPLES = 20
BANDS = 4  # dHash split into 4 bands of 16 bits: two hashes within 3 bits agree on at least one band
BAND_BITS = 16
BUCKET_MAX = 2000  # a band value shared by more images (flat regions, blank caption bars) is skipped
BALANCE_POINTS = 5.0
BALANCE_MIN_EXAMPLES = 30  # a split smaller than this is too small to judge a share on


def _pair_report(pairs: pl.DataFrame, counted: str) -> dict[str, Any]:
    """pairs: split_a (more protected), split_b, dataset_a, dataset_b, id_a, id_b, and the `counted` column."""
    report: dict[str, Any] = {}
    if pairs.is_empty():
        return report
    pairs = pairs.with_columns(
        pair=pl.format("{}/{}", "split_b", "split_a"),
        datasets=pl.when(pl.col("dataset_a") == pl.col("dataset_b"))
        .then(pl.col("dataset_a"))
        .otherwise(
            pl.concat_str(
                pl.min_horizontal("dataset_a", "dataset_b"), pl.lit("+"), pl.max_horizontal("dataset_a", "dataset_b")
            )
        ),
    ).sort("pair", "datasets", "id_b", "id_a")
    for (pair,), part in pairs.group_by("pair", maintain_order=True):
        entry: dict[str, Any] = {"shared": part[counted].n_unique(), "by_dataset": {}}
        for (datasets,), sub in part.group_by("datasets", maintain_order=True):
            examples = sub.unique(counted, keep="first", maintain_order=True).head(MAX_EXAMPLES)
            entry["by_dataset"][datasets] = {
                "shared": sub[counted].n_unique(),
                "examples": [[b, a] for b, a in examples.select("id_b", "id_a").iter_rows()],
            }
        report[pair] = entry
    return report


def _exact_pairs(rows: pl.DataFrame, key: str) -> pl.DataFrame:
    """One row per (key, split, dataset) of each shared key, joined to the same key in a more protected split."""
    present = rows.filter(pl.col(key).is_not_null() & (pl.col(key) != ""))
    first = present.sort("row").unique([key, "split", "dataset"], keep="first", maintain_order=True)
    shared = first.filter(pl.col("split").n_unique().over(key) > 1).select(key, "split", "prio", "dataset", "id")
    joined = shared.join(shared, on=key, suffix="_b").filter(pl.col("prio") < pl.col("prio_b"))
    return joined.rename({"split": "split_a", "dataset": "dataset_a", "id": "id_a"})


def _near_pairs(rows: pl.DataFrame, bits: int) -> pl.DataFrame:
    """Packed images in different splits whose dHashes differ in at most `bits` bits (not the same bytes)."""
    images = rows.filter(pl.col("dhash").is_not_null()).select(
        "id", "split", "prio", "dataset", "dhash", pl.col("image_key").fill_null("")
    )
    bands = pl.concat(
        [
            images.with_columns(
                band_no=pl.lit(b, pl.Int8),
                band=(pl.col("dhash") // (1 << (BAND_BITS * b))) % (1 << BAND_BITS),
            )
            for b in range(BANDS)
        ]
    )
    bands = bands.filter(
        (pl.len().over("band_no", "band") <= BUCKET_MAX) & (pl.col("split").n_unique().over("band_no", "band") > 1)
    )
    joined = bands.join(bands, on=["band_no", "band"], suffix="_b").filter(
        (pl.col("prio") < pl.col("prio_b"))
        & (pl.col("image_key") != pl.col("image_key_b"))
        & (pl.col("dhash").xor(pl.col("dhash_b")).bitwise_count_ones() <= bits)
    )
    joined = joined.unique(["id", "id_b"])
    return joined.rename({"split": "split_a", "dataset": "dataset_a", "id": "id_a"})


def leakage(rows: pl.DataFrame, near_bits: int) -> dict[str, Any]:
    packed = rows.filter((pl.col("status") == "packed") & pl.col("split").is_in(list(SPLITS))).with_columns(
        prio=split_priority()
    )
    images = _pair_report(_exact_pairs(packed, "image_key"), "image_key")
    texts = _pair_report(_exact_pairs(packed, "norm_text"), "norm_text")
    near = _pair_report(_near_pairs(packed, near_bits), "id_b")  # counted: the copies in the less protected split
    dups = (
        rows.filter(pl.col("reason") == "duplicate")
        .group_by("dataset", "source_split")
        .len()
        .sort("dataset", "source_split")
    )
    dropped: dict[str, dict[str, int]] = {}
    for dataset, source, n in dups.iter_rows():
        dropped.setdefault(dataset, {})[str(source)] = n
    return {
        "images_in_two_splits": sum(e["shared"] for e in images.values()),
        "texts_in_two_splits": sum(e["shared"] for e in texts.values()),
        "near_duplicate_images_across_splits": sum(e["shared"] for e in near.values()),
        "images": images,
        "texts": texts,
        "near_duplicate_images": {"max_bits": near_bits, "hash": "dHash 64-bit of the packed image", **near},
        "exact_duplicates_dropped": dropped,
        "cross_split_copies_dropped": rows.filter(pl.col("reason").str.starts_with("cross_split_copy")).height,
    }


def assigned_leaks(rows: pl.DataFrame) -> int:
    """Images or texts that sit in two splits among the rows packer assigned, within a dataset."""
    assigned = rows.filter((pl.col("status") == "packed") & assigned_by_packer())
    leaks = 0
    for key in ("image_key", "norm_text"):
        present = assigned.filter(pl.col(key).is_not_null() & (pl.col(key) != ""))
        leaks += present.group_by("dataset", key).agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).height
    return leaks


def _shares(part: pl.DataFrame, judged: bool, report: dict[str, Any]) -> dict[str, Any]:
    """Each class's share per split vs its share over `part`, in points; judged ones update `report`."""
    sizes = dict(part.group_by("split").len().iter_rows())
    entry: dict[str, Any] = {
        "judged": judged,
        "split_ratio": {s: round(n / part.height, 4) for s, n in sorted(sizes.items())},
        "split_sizes": dict(sorted(sizes.items())),
        "judged_splits": sorted(s for s, n in sizes.items() if judged and n >= BALANCE_MIN_EXAMPLES),
    }
    for field in UNIFIED_FIELDS:
        values = part.select("split", pl.col(field).cast(pl.String).fill_null("null").alias("v"))
        overall = dict(values.group_by("v").len().iter_rows())
        per = dict(((s, v), n) for s, v, n in values.group_by("split", "v").len().iter_rows())
        field_report: dict[str, dict[str, float]] = {}
        for split, n_split in sorted(sizes.items()):
            for v, n_all in sorted(overall.items()):
                deviation = round(abs(100.0 * per.get((split, v), 0) / n_split - 100.0 * n_all / part.height), 2)
                field_report.setdefault(v, {})[split] = deviation
                if judged and n_split >= BALANCE_MIN_EXAMPLES:
                    report["judged"] += 1
                    report["max_deviation_points"] = max(report["max_deviation_points"], deviation)
                    report["ok"] = report["ok"] and deviation <= BALANCE_POINTS
        entry[field] = field_report
    return entry


def _split_ratios(part: pl.DataFrame, expected: dict[str, float], report: dict[str, Any]) -> dict[str, Any]:
    """The share each split got of a pool packer assigned, against the share asked for: a split
    that got nothing (one group swallowed the pool) fails here, where class shares cannot see it."""
    sizes = dict(part.group_by("split").len().iter_rows())
    judged = part.height >= BALANCE_MIN_EXAMPLES
    got = {s: round(sizes.get(s, 0) / part.height, 4) for s in expected}
    deviation = {s: round(abs(100.0 * (got[s] - share)), 2) for s, share in expected.items()}
    ok = not judged or all(d <= BALANCE_POINTS for d in deviation.values())
    if judged:
        report["ratios_judged"] += len(deviation)
        report["ok"] = report["ok"] and ok
        if not ok:
            report["ratio_failures"].append(
                {"dataset": part["dataset"][0], "rows": part.height, "expected": expected, "got": got}
            )
    return {"rows": part.height, "judged": judged, "ok": ok, "expected": expected, "got": got, "points": deviation}


def balance(packed: pl.DataFrame, val_ratio: float, split_ratios: tuple[float, float, float]) -> dict[str, Any]:
    """Per dataset and field: each class's share in each split vs its share over the pool; and the
    share each split got of the pools packer assigned vs the share asked for.

    Splits packer assigned (val carved from a train, 80/10/10) are judged against +-5 points;
    dataset-defined splits are reported the same way but decide nothing.
    """
    report: dict[str, Any] = {
        "max_deviation_points": 0.0,
        "judged": 0,
        "ratios_judged": 0,
        "ok": True,
        "ratio_failures": [],
        "datasets": {},
    }
    assigned = assigned_by_packer()
    expected = {
        "carve": {"train": round(1 - val_ratio, 4), "val": val_ratio},
        "assign": dict(zip(SPLITS, split_ratios)),
    }
    for (dataset,), part in packed.sort("dataset").group_by("dataset", maintain_order=True):
        entry: dict[str, Any] = {}
        mine = part.filter(assigned)
        if mine.height:
            entry["assigned"] = _shares(mine, True, report)
            entry["assigned"]["split_ratio_check"] = {
                mode: _split_ratios(pool_rows, expected[mode], report)
                for (mode,), pool_rows in mine.sort("assign_mode").group_by("assign_mode", maintain_order=True)
            }
        if part.filter(pl.col("assign_mode") == "source").height:
            # Reported over all the dataset's splits, its own among them; never judged.
            entry["all_splits"] = _shares(part, False, report)
        report["datasets"][dataset] = entry
    return report


def largest_groups(rows: pl.DataFrame, top: int = 5) -> list[dict[str, Any]]:
    """The largest groups of rows packer assigned (rows linked by shared images and texts, which
    must share a split), with the text and the image that link most of their members: the usual
    cause of a split that got too few rows."""
    assigned = rows.filter((pl.col("status") == "packed") & assigned_by_packer())
    if assigned.height == 0:
        return []
    sizes = (
        assigned.group_by("dataset", "group")
        .agg(size=pl.len(), split=pl.col("split").first(), ids=pl.col("id").head(3))
        .filter(pl.col("size") > 1)
        .sort("size", "dataset", "group", descending=[True, False, False])
        .head(top)
    )
    out = []
    for dataset, group, size, split, ids in sizes.iter_rows():
        members = assigned.filter((pl.col("dataset") == dataset) & (pl.col("group") == group))
        entry: dict[str, Any] = {
            "dataset": dataset,
            "size": size,
            "share_of_dataset": round(size / assigned.filter(pl.col("dataset") == dataset).height, 4),
            "split": split,
            "example_ids": ids,
        }
        for column, name, shown in (("norm_text", "text", "norm_text"), ("image_key", "image", "image_path")):
            linked = members.filter(pl.col(column).is_not_null() & (pl.col(column) != ""))
            if linked.height:
                common = (
                    linked.group_by(column)
                    .agg(n=pl.len(), value=pl.col(shown).first())
                    .sort("n", column, descending=[True, False])
                )
                n, value = common["n"][0], common["value"][0]
                if n > 1:
                    entry[f"linking_{name}"] = value
                    entry[f"rows_sharing_{name}"] = n
        out.append(entry)
    return out
