"""Compile label_taxonomy.json into Polars expressions: raw labels -> unified labels.

Every raw field arrives as a String column `raw.<field>`: scalars as their text ("1", "OFF"),
nested values as JSON text. A rule of the taxonomy becomes a `Compiled`: the value, and the
reasons why a row fails (a value outside the mapping) or is dropped (no majority).
target_group travels as one string, its sorted groups joined by "|" ("" is "known: none"),
and becomes a list only in the worker's JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any

import polars as pl

from .config import LABEL_ORDER, Taxonomy

GROUP_SEP = "|"
DROP_PREFIX = "drop:"
ANNOTATOR_DTYPE = pl.List(pl.Struct({"label": pl.String, "target": pl.List(pl.String)}))
AUX_DTYPES = {
    "list[int]": pl.List(pl.Int64),
    "list[str]": pl.List(pl.String),
    "list[list[int]]": pl.List(pl.List(pl.Int64)),
}
LABEL_DTYPES = {"abuse_hate": pl.Int8, "offensive": pl.Int8, "target_type": pl.String, "target_group": pl.String}


def raw_col(field: str) -> str:
    return f"raw.{field}"


@dataclass(frozen=True)
class Compiled:
    value: pl.Expr
    error: pl.Expr | None = None  # String reason where the row fails, else null
    drop: pl.Expr | None = None  # String reason where the row is dropped by policy, else null
    other: pl.Expr | None = None  # List(String): source targets that fell back to "other"


def encode_value(label: str, value: Any) -> Any:
    """A taxonomy value in the internal form of its unified field."""
    if value is None:
        return None
    if label == "target_group":
        groups = value if isinstance(value, list) else [value]
        return GROUP_SEP.join(sorted(set(groups)))
    return value


def first_not_null(exprs: list[pl.Expr | None]) -> pl.Expr:
    present = [e for e in exprs if e is not None]
    return pl.coalesce(present) if present else pl.lit(None, pl.String)


def named_at_least(ballots: pl.Expr, min_votes: int) -> pl.Expr:
    """The distinct values of a list that occur at least `min_votes` times (nulls never count)."""
    return ballots.list.eval(pl.element().drop_nulls().filter(pl.len().over(pl.element()) >= min_votes)).list.unique()


def majority(ballots: pl.Expr, min_votes: int) -> pl.Expr:
    """The one value named at least `min_votes` times, or null when none (or a tie) is."""
    winners = named_at_least(ballots, min_votes)
    return pl.when(winners.list.len() == 1).then(winners.list.first())


def normalized_group_string(pieces: pl.Expr) -> pl.Expr:
    """List of encoded group strings -> one sorted, deduplicated "|"-joined string."""
    flat = pieces.list.join(GROUP_SEP).str.split(GROUP_SEP)
    return flat.list.eval(pl.element().filter(pl.element() != "")).list.unique().list.sort().list.join(GROUP_SEP)


class DatasetCompiler:
    """Turns one dataset block of the taxonomy into expressions over the raw columns."""

    def __init__(self, name: str, block: dict[str, Any], raw_kinds: dict[str, str]):
        self.name = name
        self.block = block
        self.raw_kinds = raw_kinds
        self.null_strings = block.get("null_strings", [])
        # Work shared by several rules (decoded JSON, ballots, majorities) is computed once, as
        # temporary columns in three stages, each stage reading only the ones before it.
        self.stages: list[dict[str, pl.Expr]] = [{}, {}, {}]
        self.read_as_text: set[str] = set()  # raw fields some rule reads as text
        self.decoded: dict[str, dict[str, pl.DataType]] = {}  # field -> stage-0 column -> dtype

    def prepared(self, stage: int, name: str, expr: pl.Expr) -> pl.Expr:
        self.stages[stage].setdefault(name, expr.alias(name))
        return pl.col(name)

    # -- raw access -------------------------------------------------------
    def scalar(self, fields: str | list[str], normalize: str | None = None) -> pl.Expr:
        names = fields if isinstance(fields, list) else [fields]
        self.read_as_text.update(names)
        # An empty cell (a CSV converted as "") says nothing, like null.
        expr = pl.coalesce([pl.col(raw_col(n)).replace("", None) for n in names])
        if self.null_strings:
            expr = pl.when(expr.is_in(self.null_strings)).then(None).otherwise(expr)
        if normalize == "snake":
            expr = expr.str.strip_chars().str.to_lowercase().str.replace_all(r"[\s\-]+", "_")
        return expr

    def split_scalar(self, field: str, pattern: str, normalize: str | None) -> pl.Expr:
        """A text cell naming several values ("Blacks, Jews") as the list of its trimmed, non-empty
        pieces, cut where `pattern` matches; lower-cased with normalize "lower"."""
        piece = pl.element().str.strip_chars()
        if normalize == "lower":
            piece = piece.str.to_lowercase()
        pieces = self.scalar(field).str.replace_all(pattern, "\x1f").str.split("\x1f").list.eval(piece)
        return pieces.list.eval(pl.element().filter(pl.element() != ""))

    def time_spans(self, field: str) -> pl.Expr:
        """A text holding [start, end] pairs of HH:MM:SS (or MM:SS) stamps, as HateMM's
        hate_snippet "[['00:00:34', '00:01:24']]", -> [[34.0, 84.0]]; a lone last stamp is left out."""
        stamps = self.scalar(field).str.extract_all(r"\d+(?::\d+){1,2}(?:\.\d+)?")
        whole = pl.when(pl.element().str.count_matches(":") == 1).then("0:" + pl.element()).otherwise(pl.element())
        hours = whole.str.extract(r"^(\d+):", 1).cast(pl.Float64)
        minutes = whole.str.extract(r"^\d+:(\d+):", 1).cast(pl.Float64)
        secs = whole.str.extract(r":([0-9.]+)$", 1).cast(pl.Float64)
        seconds = stamps.list.head(stamps.list.len() - stamps.list.len() % 2).list.eval(
            (hours * 3600 + minutes * 60 + secs).cast(pl.String)
        )
        pairs = seconds.list.join(",").str.replace_all(r"([^,]+),([^,]+)(,|$)", "[$1,$2]$3")
        return pl.concat_str(pl.lit("["), pairs, pl.lit("]")).str.json_decode(pl.List(pl.List(pl.Float64)))

    def json_list(self, field: str, dtype: pl.DataType) -> pl.Expr:
        text = pl.col(raw_col(field))
        # Decode only well-formed lists: json_decode fails the whole frame otherwise.
        guarded = pl.when(text.str.starts_with("[")).then(text)
        name = f"_json.{field}.{dtype}"
        self.decoded.setdefault(field, {})[name] = dtype
        return self.prepared(0, name, guarded.str.json_decode(dtype))

    def votes(self, field: str, key: str | None) -> pl.Expr:
        if self.raw_kinds[field] == "annotators":
            key = key or "label"
            ballots = self.json_list(field, ANNOTATOR_DTYPE).list.eval(pl.element().struct.field(key))
            return self.prepared(1, f"_votes.{field}.{key}", ballots)
        return self.json_list(field, pl.List(pl.String))

    def majority_of(self, field: str, key: str | None, min_votes: int, each: dict | None = None) -> pl.Expr:
        """The majority ballot, each ballot first mapped through `each` when given (computed once)."""
        ballots = self.votes(field, key)
        if each is not None and all(k == v for k, v in each.items()):
            ballots = ballots.list.eval(pl.element().filter(pl.element().is_in(list(each))))  # fast path
        elif each is not None:
            ballots = ballots.list.eval(pl.element().replace_strict(list(each), list(each.values()), default=None))
        name = f"_major.{field}.{key}.{min_votes}.{json.dumps(each, sort_keys=True)}"
        return self.prepared(2, name, majority(ballots, min_votes))

    # -- rules ------------------------------------------------------------
    def unmapped(self, label: str, field: Any, src: pl.Expr) -> pl.Expr:
        name = field if isinstance(field, str) else "/".join(field)
        return pl.format(f"unmapped label {self.name}.{name}: '{{}}'", src)

    def map_scalar(self, label: str, rule: dict, src: pl.Expr, field: Any) -> Compiled:
        mapping = rule["map"]
        keys = list(mapping)
        dtype = LABEL_DTYPES[label]
        value = src.replace_strict(
            keys, [encode_value(label, v) for v in mapping.values()], default=None, return_dtype=dtype
        )
        unknown = src.is_not_null() & ~src.is_in(keys)
        error = other = None
        if rule.get("unknown", "fail") == "other":
            value = pl.when(unknown).then(pl.lit("other")).otherwise(value)
            other = pl.when(unknown).then(pl.concat_list([src]))
        else:
            error = pl.when(unknown).then(self.unmapped(label, field, src))
        if "if_missing" in rule:
            value = pl.when(src.is_null()).then(pl.lit(encode_value(label, rule["if_missing"]), dtype)).otherwise(value)
        return Compiled(value, error=error, other=other)

    def map_groups(self, rule: dict, sources: pl.Expr, field: str) -> Compiled:
        """A list of source targets -> the encoded target_group string."""
        mapping = rule["map"]
        keys = list(mapping)
        encoded = [encode_value("target_group", v) for v in mapping.values()]
        pieces = sources.list.eval(pl.element().replace_strict(keys, encoded, default="other", return_dtype=pl.String))
        value = normalized_group_string(pieces)
        unknown = sources.list.eval(pl.element().filter(~pl.element().is_in(keys)))
        if rule.get("unknown", "fail") == "other":
            return Compiled(value, other=pl.when(unknown.list.len() > 0).then(unknown))
        error = pl.when(unknown.list.len() > 0).then(self.unmapped("target_group", field, unknown.list.join(",")))
        return Compiled(value, error=error)

    def vote(self, label: str, rule: dict) -> Compiled:
        field = rule["vote"]
        each = rule.get("each")
        ballots = self.votes(field, rule.get("key"))
        error = None
        if each is not None:
            bad = ballots.list.eval(pl.element().filter(~pl.element().is_in(list(each))))
            error = pl.when(bad.list.len() > 0).then(self.unmapped(label, field, bad.list.join(",")))
        winner = self.majority_of(field, rule.get("key"), rule.get("min_votes", 2), each)
        mapped = self.map_scalar(label, rule, winner, field)
        no_majority = ballots.is_not_null() & winner.is_null()
        outcome = rule.get("no_majority")
        drop = None
        value = mapped.value
        if isinstance(outcome, str) and outcome.startswith(DROP_PREFIX):
            drop = pl.when(no_majority).then(pl.lit(outcome[len(DROP_PREFIX) :]))
        elif outcome is not None:
            value = pl.when(no_majority).then(pl.lit(encode_value(label, outcome))).otherwise(value)
        return Compiled(value, error=first_not_null([error, mapped.error]), drop=drop, other=mapped.other)

    def vote_set(self, rule: dict) -> Compiled:
        field = rule["vote_set"]
        per_voter = self.json_list(field, ANNOTATOR_DTYPE).list.eval(
            pl.element().struct.field(rule.get("key", "target")).list.unique()
        )
        named = per_voter.list.eval(pl.element().explode().drop_nulls())
        return self.map_groups(rule, named_at_least(named, rule.get("min_votes", 2)), field)

    def condition(self, cond: dict, done: dict[str, Compiled]) -> pl.Expr:
        if "any" in cond:
            return reduce(lambda a, b: a | b, [self.condition(c, done).fill_null(False) for c in cond["any"]])
        if "all" in cond:
            return self.all_of(cond["all"], done)
        if "label" in cond:
            value = done[cond["label"]].value
            if cond.get("nonempty"):
                return value.is_not_null() & (value != "")
            return value.is_in([encode_value(cond["label"], v) for v in cond["in"]])
        if "vote" in cond:
            return self.majority_of(cond["vote"], cond.get("key"), cond.get("min_votes", 2)).is_in(cond["in"])
        if "has" in cond:
            return (
                self.json_list(cond["field"], pl.List(pl.String)).list.eval(pl.element().is_in(cond["has"])).list.any()
            )
        src = self.scalar(cond["field"], cond.get("normalize"))
        if cond.get("present"):
            return src.is_not_null()
        return src.is_in(cond["in"])

    def all_of(self, conds: list[dict], done: dict[str, Compiled]) -> pl.Expr:
        return reduce(lambda a, b: a & b, [self.condition(c, done).fill_null(False) for c in conds])

    def quirks(self, done: dict[str, Compiled]) -> pl.Expr | None:
        """The names of the `counts` entries this row matches (source oddities worth counting)."""
        counts = self.block.get("counts", {})
        if not counts:
            return None
        hits = [pl.when(self.all_of(conds, done)).then(pl.lit(name)) for name, conds in counts.items()]
        return pl.concat_list(hits).list.drop_nulls()

    def cases(self, label: str, rule: dict, done: dict[str, Compiled]) -> Compiled:
        dtype = LABEL_DTYPES[label]
        value: Any = pl.lit(encode_value(label, rule.get("else")), dtype)
        errors: list[pl.Expr] = []
        others: list[pl.Expr] = []
        taken = pl.lit(False)
        branches = []
        for case in rule["cases"]:
            cond = self.all_of(case["when"], done)
            then = case["then"]
            if isinstance(then, dict):
                sub = self.compile_rule(label, then, done)
                branches.append((cond, sub.value))
                if sub.error is not None:
                    errors.append(pl.when(~taken & cond).then(sub.error))
                if sub.other is not None:  # source targets that fell back to "other", counted
                    others.append(pl.when(~taken & cond).then(sub.other))
            else:
                branches.append((cond, pl.lit(encode_value(label, then), dtype)))
            taken = taken | cond
        for cond, then in reversed(branches):
            value = pl.when(cond).then(then).otherwise(value)
        other = pl.coalesce(others) if others else None
        return Compiled(value, error=first_not_null(errors) if errors else None, other=other)

    def compile_rule(self, label: str, rule: Any, done: dict[str, Compiled]) -> Compiled:
        if rule is None:
            return Compiled(pl.lit(None, LABEL_DTYPES[label]))
        if "cases" in rule:
            return self.cases(label, rule, done)
        if "vote" in rule:
            return self.vote(label, rule)
        if "vote_set" in rule:
            return self.vote_set(rule)
        if "set" in rule and "split_on" in rule:
            return self.map_groups(
                rule, self.split_scalar(rule["set"], rule["split_on"], rule.get("normalize")), rule["set"]
            )
        if "set" in rule:
            return self.map_groups(rule, self.json_list(rule["set"], pl.List(pl.String)), rule["set"])
        src = self.scalar(rule["field"], rule.get("normalize"))
        return self.map_scalar(label, rule, src, rule["field"])

    # -- aux --------------------------------------------------------------
    def aux_value(self, name: str, spec: dict) -> tuple[pl.Expr, pl.Expr | None]:
        if "object" in spec:
            parts = [self.aux_value(k, v) for k, v in spec["object"].items()]
            return pl.struct([p[0] for p in parts]).alias(name), first_not_null([p[1] for p in parts])
        kind = spec.get("type", "str")
        field = spec["field"]
        if kind == "time_spans":
            return self.time_spans(field).alias(name), None
        if kind in AUX_DTYPES:
            return self.json_list(field, AUX_DTYPES[kind]).alias(name), None
        src = self.scalar(field, spec.get("normalize"))
        error = None
        if "map" in spec:
            keys = list(spec["map"])
            error = pl.when(src.is_not_null() & ~src.is_in(keys)).then(self.unmapped(name, field, src))
            src = src.replace_strict(keys, list(spec["map"].values()), default=None)
        if kind == "int":
            src = src.cast(pl.Int64, strict=False)
        return src.cast(pl.Int64 if kind == "int" else pl.String).alias(name), error

    def aux(self) -> tuple[pl.Expr, pl.Expr | None]:
        specs = self.block.get("aux", {})
        if not specs:
            return pl.lit("{}"), None
        parts = [self.aux_value(k, v) for k, v in specs.items()]
        return pl.struct([p[0] for p in parts]).struct.json_encode(), first_not_null([p[1] for p in parts])

    # -- the whole block ---------------------------------------------------
    def extract(self, part: pl.DataFrame) -> tuple[pl.DataFrame, set[str]]:
        """The raw fields out of the labels_raw JSON text, and the stage-0 columns this already made.

        Fast path: one typed struct decode gives the scalars as text and each list field directly
        in the type its rules decode it to. A value of another shape makes that decode fail for the
        whole part; then every field is taken as text, one by one, so only its row fails.
        """
        fields = self.block.get("raw_fields", {})
        typed: dict[str, pl.DataType] = {}
        names: dict[str, str] = {}
        text_only: list[str] = []
        for field, kind in fields.items():
            wanted = self.decoded.get(field, {})
            if kind == "scalar":
                typed[field], names[field] = pl.String, raw_col(field)
            elif len(wanted) == 1 and field not in self.read_as_text:
                ((column, dtype),) = wanted.items()
                typed[field], names[field] = dtype, column
            else:
                text_only.append(field)
        # A typed decode would wrap a lone value in a list ("None" -> ["None"]): any row whose list
        # field holds something else than a list or null takes the slow path, where it fails alone.
        lists = [f for f, dtype in typed.items() if dtype != pl.String]
        if lists:
            odd = [
                pl.col("labels_raw").str.contains(rf'"{re.escape(f)}"\s*:\s*(?:[^\[\sn]|n(?:[^u]|$))') for f in lists
            ]
            if part.select(pl.any_horizontal(odd).any()).item():
                return extract_raw(part, fields), set()
        if typed:
            struct = pl.col("labels_raw").str.json_decode(pl.Struct(typed))
            try:
                part = part.with_columns(struct.struct.rename_fields([names[f] for f in typed]).struct.unnest())
            except pl.exceptions.ComputeError:
                return extract_raw(part, fields), set()
        part = part.with_columns(
            pl.col("labels_raw").str.json_path_match(f"$['{f}']").alias(raw_col(f)) for f in text_only
        )
        return part, {names[f] for f in typed if names[f] != raw_col(f)}

    def guard_lists(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.Expr]]:
        """List fields still held as JSON text whose values do not all fit their type (`[false]`
        where annotator objects belong) would fail the decode of every row: such a value is nulled
        and its row fails, naming the field and the value. Checked by one decode per field; values
        are looked at one by one only when that decode fails."""
        errors = []
        for field, wanted in self.decoded.items():
            column = raw_col(field)
            if column not in frame.columns:
                continue
            text = pl.col(column)
            for dtype in wanted.values():
                try:
                    frame.select(pl.when(text.str.starts_with("[")).then(text).str.json_decode(dtype))
                    continue
                except pl.exceptions.ComputeError:
                    pass
                values = frame[column].to_list()
                bad = [v is not None and v.startswith("[") and not fits(v, dtype) for v in values]
                frame = frame.with_columns(
                    pl.Series(column, [None if b else v for v, b in zip(values, bad)], pl.String),
                    pl.Series(
                        f"_shape.{field}",
                        [f"unreadable labels_raw.{field}: {v[:200]}" if b else None for v, b in zip(values, bad)],
                        pl.String,
                    ),
                )
                errors.append(pl.col(f"_shape.{field}"))
                break
        return frame, errors

    def apply(self, part: pl.DataFrame) -> pl.LazyFrame:
        """The block's output columns. Each unified field is materialised before the next is
        computed, so a rule that reads an earlier field (cases with `label`) reads a column."""
        done: dict[str, Compiled] = {}
        steps: list[list[pl.Expr]] = []
        errors, drops, others = [], [], []
        for label in LABEL_ORDER:
            c = self.compile_rule(label, self.block["labels"][label], done)
            step = [c.value.cast(LABEL_DTYPES[label]).alias(label)]
            for kind, expr, sink in (("error", c.error, errors), ("drop", c.drop, drops), ("other", c.other, others)):
                if expr is not None:
                    step.append(expr.alias(f"_{kind}.{label}"))
                    sink.append(pl.col(f"_{kind}.{label}"))
            steps.append(step)
            done[label] = Compiled(pl.col(label))
        aux, aux_error = self.aux()
        quirks = self.quirks(done)
        extracted, made = self.extract(part)
        extracted, shape_errors = self.guard_lists(extracted)
        errors = [*shape_errors, *errors]
        for column in made:
            del self.stages[0][column]
        frame = extracted.lazy()
        temporary = [c for c in extracted.columns if c.startswith("raw.") or c.startswith("_shape.")] + list(made)
        for stage in self.stages:
            if stage:
                frame = frame.with_columns(*stage.values())
        for step in steps:
            frame = frame.with_columns(*step)
        outputs = [
            aux.alias("aux_json"),
            first_not_null([*errors, aux_error]).alias("label_error"),
            first_not_null(drops).alias("label_drop"),
            (pl.concat_list(others) if others else pl.lit(None, STRINGS)).cast(STRINGS).alias("other_targets"),
            (quirks if quirks is not None else pl.lit(None, STRINGS)).cast(STRINGS).alias("quirks"),
        ]
        temporary += [name for stage in self.stages for name in stage]
        temporary += [e.meta.output_name() for step in steps for e in step[1:]]
        return frame.with_columns(*outputs).drop(temporary)


STRINGS = pl.List(pl.String)


def fits(text: str, dtype: pl.DataType) -> bool:
    """Whether a JSON text decodes to `dtype` (lists, structs, strings, integers; null anywhere)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False

    def check(v: Any, t: pl.DataType) -> bool:
        if v is None:
            return True
        if isinstance(t, pl.List):
            return isinstance(v, list) and all(check(x, t.inner) for x in v)
        if isinstance(t, pl.Struct):
            return isinstance(v, dict) and all(check(v.get(f.name), f.dtype) for f in t.fields)
        if t == pl.String:
            return isinstance(v, str)
        if t == pl.Int64:
            return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
        return False

    return check(value, dtype)


def unknown_dataset(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(
        *(pl.lit(None, LABEL_DTYPES[k]).alias(k) for k in LABEL_ORDER),
        aux_json=pl.lit(None, pl.String),
        label_error=pl.format("unknown dataset '{}': not in the label taxonomy", pl.col("dataset")),
        label_drop=pl.lit(None, pl.String),
        other_targets=pl.lit(None, STRINGS),
        quirks=pl.lit(None, STRINGS),
    )


def extract_raw(part: pl.DataFrame, fields: dict[str, str]) -> pl.DataFrame:
    """One String column `raw.<field>` per raw field of a dataset, from the labels_raw JSON text:
    scalars as their text ("1", "OFF"), nested values as their JSON text.

    The scalars come from one struct decode (fast); a value of the wrong shape makes that decode
    fail for the whole part, and then every field is matched one by one, so only its row fails.
    """
    scalars = [f for f, kind in fields.items() if kind == "scalar"]
    nested = [f for f in fields if f not in scalars]
    if scalars:
        struct = pl.col("labels_raw").str.json_decode(pl.Struct({f: pl.String for f in scalars}))
        try:
            part = part.with_columns(struct.struct.rename_fields([raw_col(f) for f in scalars]).struct.unnest())
        except pl.exceptions.ComputeError:
            nested += scalars
    return part.with_columns(
        pl.col("labels_raw").str.json_path_match(f"$['{name}']").alias(raw_col(name)) for name in nested
    )


PerDataset = Callable[[str, "dict[str, Any] | None"], list[pl.Expr]]


# A bare labels_raw that is JSON text of its own (a list, a number, true/false), not a string.
JSON_LITERAL = r"^(?:\[|-?[0-9]|true$|false$)"
UNLABELLED = "_unlabelled"


def labels_object(name: str, block: dict[str, Any]) -> tuple[pl.Expr, pl.Expr]:
    """`labels_raw` as an object of the dataset's raw fields, and the reason a row fails where it
    cannot be one. Polars hands every labels_raw over as text: an object or a list as its JSON, a
    number as its digits, a string as itself. A bare value (the Step-2 builder writes Hateful
    Memes' label as 0/1 and HateXplain's annotators as a bare list) is the block's `bare_labels`
    field; null (or no labels_raw) is no label, read as an empty object and dropped as unlabelled."""
    text = pl.col("labels_raw")
    is_object = text.str.starts_with("{")
    bare = block.get("bare_labels")
    if bare is None:
        value = pl.when(is_object).then(text).otherwise(pl.lit("{}"))
        error = pl.when(text.is_not_null() & ~is_object).then(
            pl.format(
                f"labels_raw: a bare value '{{}}' where dataset {name} needs an object of its fields "
                "(the taxonomy's block names no bare_labels field)",
                text.str.slice(0, 200),
            )
        )
        return value, error
    literal = pl.concat_str([pl.lit("{" + json.dumps(bare) + ":"), text, pl.lit("}")])
    string = pl.struct(text.alias(bare)).struct.json_encode()
    value = (
        pl.when(text.is_null())
        .then(pl.lit("{}"))
        .when(is_object)
        .then(text)
        .when(text.str.contains(JSON_LITERAL))
        .then(literal)
        .otherwise(string)
    )
    error = pl.lit(None, pl.String)
    if block["raw_fields"][bare] != "scalar":  # a list field: a lone value is not wrapped into a list
        error = pl.when(text.is_not_null() & ~is_object & ~text.str.starts_with("[")).then(
            pl.format(
                f"labels_raw: a bare value '{{}}' where dataset {name} needs a list ({bare})", text.str.slice(0, 200)
            )
        )
    return value, error


def label_part(
    name: str | None, part: pl.DataFrame, taxonomy: Taxonomy, per_dataset: PerDataset | None = None
) -> pl.LazyFrame:
    """One dataset's rows with their unified labels, aux JSON and fail/drop reasons (`labels_raw`
    dropped); `per_dataset(name, block)` adds more columns. Rows of a dataset the taxonomy does not
    describe fail; rows with no labels_raw have every label null (unlabelled)."""
    block = taxonomy.datasets.get(name) if name is not None else None
    if block is None:
        lazy = unknown_dataset(part.lazy())
    else:
        value, shape_error = labels_object(name, block)
        part = part.with_columns(pl.col("labels_raw").is_null().alias(UNLABELLED), shape_error.alias("_bare_error"))
        part = part.with_columns(labels_raw=value)
        unlabelled = pl.col(UNLABELLED)
        lazy = (
            DatasetCompiler(name, block, taxonomy.raw_fields())
            .apply(part)
            .with_columns(
                *(pl.when(~unlabelled).then(pl.col(f)).alias(f) for f in LABEL_ORDER),
                *(pl.when(~unlabelled).then(pl.col(c)).alias(c) for c in ("label_drop", "other_targets", "quirks")),
                label_error=pl.coalesce("_bare_error", pl.when(~unlabelled).then(pl.col("label_error"))),
            )
            .drop(UNLABELLED, "_bare_error")
        )
    return (lazy.with_columns(per_dataset(name, block)) if per_dataset else lazy).drop("labels_raw")


def apply_labels(frame: pl.DataFrame, taxonomy: Taxonomy) -> pl.LazyFrame:
    """Every row's labels, one dataset's rows at a time (the plan calls `label_part` per dataset)."""
    parts = frame.partition_by("dataset", as_dict=True, maintain_order=True)
    return pl.concat([label_part(name, part, taxonomy) for (name,), part in parts.items()])
