"""Split assignment as Polars expressions over a stable, seeded hash.

`polars-hash`'s xxhash64 is used rather than `Expr.hash`, whose values change between Polars
versions: the same input and seed give the same splits.json on any machine.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import polars_hash as plh

from .config import DIAGNOSTICS, SPLITS, UNIFIED_FIELDS, UNSPLIT

HASH_NAME = "polars-hash xxhash64 of '<seed>:<value>'"
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2, DIAGNOSTICS: 3}
PRIORITY_SPLIT = {v: k for k, v in SPLIT_PRIORITY.items()}
FOLLOW = "follow"  # the mode of a row without a split that joined its group's dataset-defined split


def stable_hash(expr: pl.Expr, seed: int) -> pl.Expr:
    """A UInt64 hash of a string column, stable across Polars versions and machines."""
    return plh.concat_str(pl.lit(f"{seed}:"), expr).nchash.xxhash64()


def unit_interval(expr: pl.Expr, seed: int) -> pl.Expr:
    return stable_hash(expr, seed).cast(pl.Float64) / 2.0**64


def dataset_split(name: str, block: dict[str, Any] | None) -> list[pl.Expr]:
    """For one dataset's rows: `split` (train/val/test/diagnostics, or null where packer assigns
    it), `assign_mode` (source, carve, assign, diagnostics) and `split_error`.

    A row has no split of its own (mode `assign`, 80/10/10) when its source split is null, `unsplit`
    or one of the block's `unsplit` names, and every row of the dataset has none when no row carries
    one of the block's `assign_when_missing` splits (Memotion 1.0 from the Kaggle 7k release says
    `train` on every row: without the SemEval test rows, its rows are assigned)."""
    src = pl.col("source_split")
    none = pl.lit(None, pl.String)
    if block is None:  # not in the taxonomy: the row fails on its labels already
        return [none.alias("split"), none.alias("assign_mode"), none.alias("split_error")]
    if block.get("diagnostics"):
        return [
            pl.lit(DIAGNOSTICS).alias("split"),
            pl.lit("diagnostics").alias("assign_mode"),
            none.alias("split_error"),
        ]
    splits = block.get("splits", {})
    names = [s for group in splits.values() for s in group]
    targets = [t for t, group in splits.items() for _ in group]
    unsplit = [*UNSPLIT, *block.get("unsplit", [])]
    no_split = src.is_null() | src.is_in(unsplit)
    if block.get("assign_when_missing"):
        no_split = no_split | ~src.is_in(block["assign_when_missing"]).any()
    mapped = pl.when(~no_split).then(src.replace_strict(names, targets, default=None, return_dtype=pl.String))
    carve = block.get("carve_val_from")
    mode = (
        pl.when(no_split)
        .then(pl.lit("assign"))
        .when(src == carve if carve else pl.lit(False))
        .then(pl.lit("carve"))
        .when(mapped.is_not_null())
        .then(pl.lit("source"))
    )
    known = ", ".join([*sorted(names), *unsplit]) or "none"
    error = pl.when(~no_split & mapped.is_null()).then(
        pl.format(f"unknown split '{{}}' for dataset {name}; known splits {known} (or null)", src)
    )
    return [mapped.alias("split"), mode.alias("assign_mode"), error.alias("split_error")]


def assigned_by_packer() -> pl.Expr:
    """Rows whose split packer chose (val carved from a train, or 80/10/10), not the dataset."""
    return pl.col("assign_mode").is_in(["carve", "assign"])


def pool() -> pl.Expr:
    """The source split a row's split is assigned within ("~" where the dataset gives none)."""
    return (
        pl.when(pl.col("assign_mode").is_in(["assign", FOLLOW]))
        .then(pl.lit("~"))
        .otherwise(pl.coalesce(pl.col("source_split"), pl.lit("~")))
    )


def connected_groups(frame: pl.DataFrame) -> pl.Series:
    """A group id per row: rows sharing an image (same bytes) or a normalised text, transitively:
    the connected components of the graph whose edges are shared images and texts, exactly.

    Every row starts as its own group (its row number). A round gives each row the smallest group
    id among the rows that share its text, then its image, then jumps pointers: a row's group id is
    a row number, and that row's own group id is as small or smaller (g <- g[g], to a fixpoint), so
    ids travel down a chain in doubling steps instead of one link per round. Rounds repeat until
    nothing changes, with no round limit: ids only decrease, so this ends, and at the end every
    text and image group holds one id, which is constant on each component and, coming from a row
    of it, unique to it. A chain of k links settles in about log2(k) rounds.
    """
    text = pl.when(pl.col("norm_text") != "").then(pl.col("norm_text"))
    work = frame.select(g=pl.int_range(pl.len(), dtype=pl.Int64), t=text, i=pl.col("image_key"))
    while True:
        step = work.with_columns(g=pl.when(pl.col("t").is_not_null()).then(pl.col("g").min().over("t")).otherwise("g"))
        step = step.with_columns(g=pl.when(pl.col("i").is_not_null()).then(pl.col("g").min().over("i")).otherwise("g"))
        g = step["g"]
        while True:
            jumped = g.gather(g)
            if jumped.equals(g):
                break
            g = jumped
        step = step.with_columns(g=g)
        if step["g"].equals(work["g"]):
            return step["g"]
        work = step


def assign_splits(frame: pl.DataFrame, seed: int, val_ratio: float, ratios: tuple[float, float, float]) -> pl.DataFrame:
    """Fill `split` where packer decides it: carve val from a train, or 80/10/10 where there is none.

    `group` (from `connected_groups`) holds together the rows that share an image or a text. The
    stratum is the dataset plus every unified label (of the group's first member). Within each
    (dataset, pool, stratum) the groups are ordered by hash; a group goes to val/test when its slot
    falls in the first val_ratio (resp. test, then val ratios) of that order, so a group never
    straddles two splits. Pinned ids (from --splits) keep their split, and their group follows them.
    The ordering works on a narrow frame of keys; the wide rows are never sorted.
    """
    group = ["dataset", "pool", "group"]
    strata = [f"s_{f}" for f in UNIFIED_FIELDS]
    keys = frame.select("dataset", "group", "row", "id", *UNIFIED_FIELDS, pool=pool()).with_columns(
        pos=pl.int_range(pl.len(), dtype=pl.UInt32)
    )
    # A group is named by its first member's id, so its hash does not depend on row numbers.
    first = pl.col("pos").min().over(group)
    keys = keys.with_columns(
        *(pl.col(f).gather(first).alias(f"s_{f}") for f in UNIFIED_FIELDS),
        g_u=unit_interval(pl.col("id").gather(first), seed),
    )
    by_stratum = ["dataset", "pool", *strata]
    keys = (
        keys.select("pos", "dataset", "pool", "group", *strata, "g_u", "row")
        .sort("g_u", "row")
        .with_columns(g_pos=pl.int_range(pl.len()).over(by_stratum), n_stratum=pl.len().over(by_stratum))
    )
    # Systematic sampling with a hashed start per stratum, at each group's centre of mass: a big
    # stratum gets each share to within half a group; a stratum of one lands in val/test with the
    # ratios' probability, so many tiny strata still add up to the requested ratios.
    names = [pl.col(c).cast(pl.String).fill_null("~") for c in by_stratum]
    starts = keys.select(by_stratum).unique().with_columns(s_u=unit_interval(pl.concat_str(names, separator="/"), seed))
    keys = keys.join(starts, on=by_stratum, how="left", maintain_order="left", nulls_equal=True).with_columns(
        g_frac=(pl.col("g_pos").min().over(group) + pl.len().over(group) / 2 - 0.5 + pl.col("s_u"))
        / pl.col("n_stratum")
    )
    frame = frame.with_columns(g_frac=keys.sort("pos")["g_frac"])
    test_r, val_r = ratios[2], ratios[1]
    assigned = (
        pl.when(pl.col("assign_mode") == "carve")
        .then(pl.when(pl.col("g_frac") < val_ratio).then(pl.lit("val")).otherwise(pl.lit("train")))
        .when(pl.col("assign_mode") == "assign")
        .then(
            pl.when(pl.col("g_frac") < test_r)
            .then(pl.lit("test"))
            .when(pl.col("g_frac") < test_r + val_r)
            .then(pl.lit("val"))
            .otherwise(pl.lit("train"))
        )
        .otherwise(pl.col("split"))
    )
    # A row packer assigns follows a split its group already has (a row of a dataset-defined split,
    # in any dataset, the most protected of them), so that a shared image or text stays in one split.
    # Such a row's mode becomes `follow`: its split was not drawn, so the balance check leaves it out.
    fixed = pl.when(pl.col("assign_mode") == "source").then(split_priority()).min().over("group")
    follows = (pl.col("assign_mode") == "assign") & fixed.is_not_null()
    mode = pl.col("assign_mode")
    if frame["assign_mode"].is_in(["assign"]).any() and frame["assign_mode"].is_in(["source"]).any():
        assigned = (
            pl.when(follows).then(fixed.replace_strict(PRIORITY_SPLIT, return_dtype=pl.String)).otherwise(assigned)
        )
        mode = pl.when(follows).then(pl.lit(FOLLOW)).otherwise("assign_mode")
    if frame["pinned_split"].null_count() < frame.height:
        pinned_group = pl.col("pinned_split").drop_nulls().first().over(pl.col("dataset"), pool(), pl.col("group"))
        movable = assigned_by_packer()
        assigned = (
            pl.when(pl.col("pinned_split").is_not_null())
            .then(pl.col("pinned_split"))
            .when(movable & pinned_group.is_not_null())
            .then(pinned_group)
            .otherwise(assigned)
        )
    return frame.with_columns(split=assigned, assign_mode=mode).drop("g_frac")


def duplicate_of_kept() -> pl.Expr:
    """True for every exact duplicate but the one kept: same image bytes and normalised text,
    the copy in the most protected split (test, val, train), first in manifest order."""
    key = ["image_key", "norm_text"]
    order = split_priority() * (2**40) + pl.col("row").cast(pl.Int64)
    first = order.min().over(key)
    return pl.col("image_key").is_not_null() & (order != first)


def split_priority() -> pl.Expr:
    return pl.col("split").replace_strict(SPLIT_PRIORITY, default=9, return_dtype=pl.Int32)


def cross_split_copy(texts: bool) -> pl.Expr:
    """With --cross-split drop-images / drop: the reason to drop a row whose image bytes (or, with
    `texts`, normalised text) also sit in a more protected split (test, then val, then train).
    Diagnostics are never compared."""
    in_splits = pl.col("split").is_in(list(SPLITS))
    priority = pl.when(in_splits).then(split_priority())
    reasons = []
    keys = [("image_key", "image")] + ([("norm_text", "text")] if texts else [])
    for key, what in keys:
        present = in_splits & pl.col(key).is_not_null() & (pl.col(key) != "")
        best = pl.when(present).then(priority).min().over(key)
        reasons.append(
            pl.when(present & (priority > best)).then(
                pl.format(f"cross_split_copy: its {what} is also in {{}}", best.replace_strict(PRIORITY_SPLIT))
            )
        )
    return pl.coalesce(reasons)
