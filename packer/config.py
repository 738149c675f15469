"""The one frozen run configuration and the label taxonomy file's validation."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

UNIFIED_FIELDS = ("abuse_hate", "offensive", "target_type", "target_group")
# target_type is computed last: its rules may look at the other three unified labels.
LABEL_ORDER = ("abuse_hate", "offensive", "target_group", "target_type")
TARGET_TYPES = ("none", "individual", "group", "other")
SPLITS = ("train", "val", "test")
# Source split names that mean "this row has no split" in every dataset (INPUTS.md); a taxonomy
# block may name more under "unsplit". Such rows are assigned 80/10/10 by packer.
UNSPLIT = ("unsplit",)
DIAGNOSTICS = "diagnostics"
RAW_KINDS = ("scalar", "list", "annotators")
# time_spans: a text holding [start, end] pairs of HH:MM:SS (or MM:SS) stamps -> [[seconds, seconds], ...]
AUX_TYPES = ("int", "str", "list[int]", "list[str]", "list[list[int]]", "time_spans")
SET_NORMALIZE = ("lower",)


# PackConfig fields that change how a run executes, never a byte of its output.
# Publishing (where the finished pack goes, and the storage options, which may hold a secret) is among them.
EXECUTION_ONLY = (
    "workers",
    "backend",
    "scheduler",
    "fresh",
    "reuse_from",
    "no_reuse",
    "publish",
    "storage_options",
    "staged",
)


class InputError(Exception):
    """Bad input or usage: the run stops with exit code 2 and writes nothing."""


class OutputError(Exception):
    """The output cannot be written (disk full, no permission): exit code 3. The run's state is
    kept, so that a rerun once the fault is gone resumes it."""


@dataclass(frozen=True)
class PackConfig:
    manifest: Path  # a URL (str) until the run stages it
    ocr: Path | None
    output_dir: Path
    label_taxonomy: Path
    splits: Path
    stats: Path
    examples_limit: int | None = None
    workers: int = 1
    include_diagnostics: bool = False
    keep_unlabelled: bool = False
    shard_maxcount: int = 5000
    min_shards: int = 16  # per series of every split (as far as its examples go): every rank and worker gets data
    shard_maxsize: int = 1_000_000_000
    image_size: int = 384
    jpeg_quality: int = 95
    ocr_min_conf: float = 0.5
    max_image_pixels: int = 89_478_485
    val_ratio: float = 0.1
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    # "report", or "drop-images" / "drop": drop copies of an image (and text) outside its most protected split
    cross_split: str = "report"
    near_dup_bits: int = 3  # dHash Hamming distance at or under which two images are near-duplicates
    chunk_size: int = 64  # the largest pool task, in samples
    report_sample: int = 48  # examples per contact sheet of report.html
    fresh: bool = False  # ignore an interrupted run's state and start over
    backend: str = "loky"  # where the image stage runs: "loky" (this machine) or "dask"
    scheduler: str | None = None  # a Dask scheduler's address (default: a local cluster)
    # Videos (manifest rows with video_path) and their speech (Step 2B's ASR file).
    asr: Path | None = None
    video_frames: int = 8  # evenly spaced frames per clip, besides the middle one
    max_video_seconds: float = 4 * 3600.0  # longer clips fail as video_too_large
    video_timeout: float = 120.0  # seconds of decoding one clip may take before it fails
    asr_max_no_speech: float = 0.6  # a segment with no_speech_prob above this and ...
    asr_min_logprob: float = -1.0  # ... avg_logprob below this is silence (Whisper's own rule)
    asr_max_compression: float = 2.4  # a segment whose compression_ratio is above this is a repetition loop
    # Re-packs: reuse the images an earlier pack encoded (this folder's, or --reuse-from's); the
    # output is the same bytes either way.
    reuse_from: Path | None = None
    no_reuse: bool = False
    # --publish s3://bucket/prefix: each shard uploaded once final, the rest once the pack is complete.
    publish: str | None = None
    storage_options: str | None = None  # s3fs-style JSON (packer.storage), for s3:// inputs and --publish
    # Input files given as s3:// URLs are read from local copies (objects.stage): (copy, URL) pairs.
    # The URLs are what the run records and names in its messages.
    staged: tuple[tuple[str, str], ...] = ()

    @property
    def failures_log(self) -> Path:
        return self.stats.parent / "failures.jsonl"

    def to_json(self) -> dict[str, Any]:
        """What decides the output (recorded in stats.json): not how the run was executed, so that
        runs on any number of workers, on loky or Dask, resumed or not, write the same stats."""
        urls = dict(self.staged)
        return {
            k: urls.get(str(v), str(v)) if isinstance(v, Path) else v
            for k, v in asdict(self).items()
            if k not in EXECUTION_ONLY
        }

    def named(self, text: str) -> str:
        """`text` (a message) with each staged copy's path replaced by its URL."""
        for copy, url in self.staged:
            text = text.replace(copy, url)
        return text


@dataclass(frozen=True)
class Taxonomy:
    """The parsed label_taxonomy.json: one block per dataset (see packer/data/label_taxonomy.json)."""

    target_vocabulary: tuple[str, ...]
    datasets: dict[str, dict[str, Any]] = field(hash=False)
    source: str = ""

    def raw_fields(self) -> dict[str, str]:
        """Every raw field any dataset reads, with its kind (the manifest's labels_raw schema)."""
        fields: dict[str, str] = {}
        for block in self.datasets.values():
            fields.update(block.get("raw_fields", {}))
        return fields

    def diagnostics(self) -> list[str]:
        """The datasets packed only on request, into their own `diagnostics` folder (HateCheck)."""
        return [name for name, block in self.datasets.items() if block.get("diagnostics")]


# SHA-256 of every label_taxonomy.json packer has shipped before this one. A taxonomy file that is
# byte-identical to one of them was written by packer and never edited: a run reads the current
# default in its place and rewrites it, so that an old pilot's file does not hold back new mappings.
FORMER_DEFAULT_TAXONOMIES = frozenset(
    {
        "0b9503991a9f4c7ced3f5b5ecd7f4309ae01c13cb722b4a9a8eedb5877b57bff",
        "fe885e6917688a56dd726faddaf1002cc2b8e1075284b8ac8aee33c13ff63d19",
        "a536999e0c9b043f4948ada9d08231f7d073857d4279aef42067831ef70541ad",
        "acf2f4cddb7ca9d6e1f3b328c77f42d0525ee2b233f13f992dccc75ca79b3fc9",
        "05964025d332a9ffef64734560d7309ee77a8b141e6fbd113ea9b9eec014e796",
    }
)


def is_former_default(data: bytes) -> bool:
    """Whether a taxonomy file is one packer wrote as its default in an earlier version, unedited."""
    return hashlib.sha256(data).hexdigest() in FORMER_DEFAULT_TAXONOMIES


def default_taxonomy_text() -> str:
    return resources.files("packer").joinpath("data/label_taxonomy.json").read_text(encoding="utf-8")


def parse_json(text: str, source: str, error: type[InputError] = InputError) -> Any:
    """A whole JSON document, or `error` naming `source` and the line (never a traceback, even for
    JSON nested thousands deep)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise error(f"{source}: not valid JSON: nested too deeply") from None


def load_taxonomy(path: Path | None) -> Taxonomy:
    """Read and validate a taxonomy file; `None` reads the packaged default."""
    source = "packer/data/label_taxonomy.json" if path is None else str(path)
    text = default_taxonomy_text() if path is None else path.read_text(encoding="utf-8")
    return validate_taxonomy(parse_json(text, source), source)


def validate_taxonomy(doc: Any, source: str) -> Taxonomy:
    def fail(where: str, msg: str) -> InputError:
        return InputError(f"{source}: {where}: {msg}")

    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), dict):
        raise fail("top level", "needs an object with a 'datasets' object")
    vocab = doc.get("target_vocabulary")
    if not isinstance(vocab, list) or not all(isinstance(v, str) for v in vocab) or "other" not in vocab:
        raise fail("target_vocabulary", "needs a list of strings including 'other'")
    # The class list of target_type (its order gives a model's class indices); optional in older files.
    kinds = doc.get("target_types", list(TARGET_TYPES))
    if not isinstance(kinds, list) or sorted(map(str, kinds)) != sorted(TARGET_TYPES) or len(kinds) != 4:
        raise fail("target_types", f"needs the four target types {list(TARGET_TYPES)} in any order")
    raw_kinds: dict[str, tuple[str, str]] = {}
    aux_types: dict[str, tuple[Any, str]] = {}  # aux name -> (its type, the dataset that set it)
    for name, block in doc["datasets"].items():
        where = f"datasets.{name}"
        if not isinstance(block, dict):
            raise fail(where, "must be an object")
        raw = block.get("raw_fields", {})
        if not isinstance(raw, dict):
            raise fail(f"{where}.raw_fields", "must be an object of field -> kind")
        for fname, kind in raw.items():
            if kind not in RAW_KINDS:
                raise fail(f"{where}.raw_fields.{fname}", f"kind {kind!r} is not one of {RAW_KINDS}")
            if fname in raw_kinds and raw_kinds[fname][0] != kind:
                other = raw_kinds[fname][1]
                raise fail(f"{where}.raw_fields.{fname}", f"kind {kind!r} conflicts with {other!r}")
            raw_kinds[fname] = (kind, name)
        splits = block.get("splits", {})
        if not isinstance(splits, dict) or any(k not in SPLITS for k in splits):
            raise fail(f"{where}.splits", f"keys must be among {SPLITS}")
        if not all(isinstance(names, list) and all(isinstance(s, str) for s in names) for names in splits.values()):
            raise fail(f"{where}.splits", "each split maps to a list of source split names")
        unsplit = block.get("unsplit", [])
        if not isinstance(unsplit, list) or not all(isinstance(s, str) for s in unsplit):
            raise fail(f"{where}.unsplit", "must be a list of source split names")
        sources = [s for names in splits.values() for s in names] + unsplit
        if len(sources) != len(set(sources)) or set(sources) & set(UNSPLIT):
            raise fail(f"{where}.splits", "a source split is listed twice (or as a split and as unsplit)")
        missing = block.get("assign_when_missing", [])
        if not isinstance(missing, list) or not all(isinstance(s, str) and s in sources for s in missing):
            raise fail(f"{where}.assign_when_missing", "must be a list of source split names the block maps")
        bare = block.get("bare_labels")
        if bare is not None and bare not in raw:
            raise fail(f"{where}.bare_labels", f"{bare!r} is not one of the block's raw_fields")
        carve = block.get("carve_val_from")
        if carve is not None and carve not in splits.get("train", []):
            raise fail(f"{where}.carve_val_from", "must name a source split mapped to train")
        labels = block.get("labels")
        if not isinstance(labels, dict) or set(labels) != set(UNIFIED_FIELDS):
            raise fail(f"{where}.labels", f"needs exactly the fields {UNIFIED_FIELDS}")
        for lname, rule in labels.items():
            _check_rule(rule, raw, f"{where}.labels.{lname}", lname, set(vocab), fail)
        aux = block.get("aux", {})
        if not isinstance(aux, dict):
            raise fail(f"{where}.aux", "must be an object")
        _check_aux(aux, raw, f"{where}.aux", fail)
        # One `aux` schema for every dataset: readers (the dataset card's features) see their union.
        for aname, spec in aux.items():
            kind = _aux_type(spec)
            if aname in aux_types and aux_types[aname][0] != kind:
                other = aux_types[aname][1]
                raise fail(f"{where}.aux.{aname}", f"type {kind!r} conflicts with {aux_types[aname][0]!r} in {other}")
            aux_types.setdefault(aname, (kind, name))
        counts = block.get("counts", {})
        if not isinstance(counts, dict):
            raise fail(f"{where}.counts", "must be an object of name -> conditions")
        for cname, conds in counts.items():
            _check_conditions(conds, raw, f"{where}.counts.{cname}", None, fail)
    return Taxonomy(tuple(vocab), doc["datasets"], source)


def _fields_of(spec: Any) -> list[str]:
    return spec if isinstance(spec, list) else [spec]


def _check_values(values: Any, lname: str, vocab: set[str], where: str, fail) -> None:
    for value in values:
        if value is None:
            continue
        if lname in ("abuse_hate", "offensive") and value not in (0, 1):
            raise fail(where, f"{lname} values must be 0, 1 or null, not {value!r}")
        if lname == "target_type" and value not in TARGET_TYPES:
            raise fail(where, f"target_type values must be among {TARGET_TYPES}, not {value!r}")
        if lname == "target_group":
            groups = value if isinstance(value, list) else [value]
            bad = [g for g in groups if g not in vocab]
            if bad:
                raise fail(where, f"{bad} not in target_vocabulary")


def _check_rule(rule: Any, raw: dict, where: str, lname: str, vocab: set[str], fail) -> None:
    if rule is None:
        return
    if not isinstance(rule, dict):
        raise fail(where, "a rule is null or an object")
    if "cases" in rule:
        for i, case in enumerate(rule["cases"]):
            _check_conditions(case.get("when", []), raw, f"{where}.cases[{i}]", lname, fail)
            then = case.get("then")
            if isinstance(then, dict):
                _check_rule(then, raw, f"{where}.cases[{i}].then", lname, vocab, fail)
            else:
                _check_values([then], lname, vocab, f"{where}.cases[{i}].then", fail)
        _check_values([rule.get("else")], lname, vocab, f"{where}.else", fail)
        return
    kinds = [k for k in ("field", "vote", "vote_set", "set") if k in rule]
    if len(kinds) != 1:
        raise fail(where, "a rule has exactly one of field, vote, vote_set, set, cases")
    _need_raw(_fields_of(rule[kinds[0]]), raw, where, fail)
    if not isinstance(rule.get("map"), dict) or not all(isinstance(k, str) for k in rule["map"]):
        raise fail(f"{where}.map", "needs an object from raw value (string) to unified value")
    if rule.get("unknown", "fail") not in ("fail", "other"):
        raise fail(f"{where}.unknown", "is 'fail' or 'other'")
    _check_values(rule["map"].values(), lname, vocab, f"{where}.map", fail)
    if "split_on" in rule:
        # A set read from one text cell ("Blacks, Jews"), cut where the regex matches.
        if kinds != ["set"] or not isinstance(rule["split_on"], str):
            raise fail(f"{where}.split_on", "is a regular expression (a string), on a `set` rule")
        try:
            re.compile(rule["split_on"])
        except re.error as exc:
            raise fail(f"{where}.split_on", f"not a regular expression: {exc}") from None
        if rule.get("normalize", "lower") not in SET_NORMALIZE:
            raise fail(f"{where}.normalize", f"is one of {SET_NORMALIZE} on a split set")


def _check_conditions(conds: Any, raw: dict, where: str, lname: str | None, fail) -> None:
    """A list of conditions: {field, in|present|has}, {label, in|nonempty}, {vote, in}, {any|all: [...]}."""
    if not isinstance(conds, list) or not all(isinstance(c, dict) for c in conds):
        raise fail(where, "conditions are a list of objects")
    for cond in conds:
        for nested in ("any", "all"):
            if nested in cond:
                _check_conditions(cond[nested], raw, f"{where}.{nested}", lname, fail)
        _need_raw([n for k in ("field", "vote") if k in cond for n in _fields_of(cond[k])], raw, where, fail)
        if "label" in cond:
            if cond["label"] not in LABEL_ORDER:
                raise fail(where, f"label {cond['label']!r} is not one of {LABEL_ORDER}")
            if lname is not None and LABEL_ORDER.index(cond["label"]) >= LABEL_ORDER.index(lname):
                raise fail(where, f"{cond['label']} is not computed before {lname}")


def _need_raw(names: list[str], raw: dict, where: str, fail) -> None:
    missing = [n for n in names if n not in raw]
    if missing:
        raise fail(where, f"reads {missing}, which raw_fields does not declare")


def _aux_type(spec: dict) -> Any:
    if "object" in spec:
        return {k: _aux_type(v) for k, v in spec["object"].items()}
    return spec.get("type", "str")


def _check_aux(aux: dict, raw: dict, where: str, fail) -> None:
    for name, spec in aux.items():
        if not isinstance(spec, dict):
            raise fail(f"{where}.{name}", "must be an object")
        if "object" in spec:
            _check_aux(spec["object"], raw, f"{where}.{name}.object", fail)
            continue
        if "field" not in spec:
            raise fail(f"{where}.{name}", "needs 'field' or 'object'")
        _need_raw(_fields_of(spec["field"]), raw, f"{where}.{name}", fail)
        if spec.get("type", "str") not in AUX_TYPES:
            raise fail(f"{where}.{name}.type", f"must be one of {AUX_TYPES}")
