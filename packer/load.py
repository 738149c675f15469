"""Read the manifest and the OCR file as LazyFrames with explicit schemas.

Polars reads the JSON lines; when it refuses a file, `locate_bad_line` reads it again in Python to
name the line and the field, so the fast path pays nothing for the error messages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from .config import InputError, Taxonomy
from .guard import inert

REQUIRED = {"id": str, "dataset": str}
OPTIONAL_STR = ("split", "image_path", "video_path", "text_raw", "lang")

OCR_LINE = pl.Struct({"text": pl.String, "conf": pl.Float64, "bbox": pl.String})
OCR_SCHEMA = {"id": pl.String, "ocr": pl.Struct({"lines": pl.List(OCR_LINE)})}
# Step 2B's speech file: Whisper-style segments per clip (INPUTS.md section 4); the quality fields
# may be absent (tools other than Whisper).
ASR_NUMBERS = ("start", "end", "avg_logprob", "no_speech_prob", "compression_ratio")
ASR_SEGMENT = pl.Struct(
    {**{n: pl.Float64 for n in ASR_NUMBERS[:2]}, "text": pl.String, **{n: pl.Float64 for n in ASR_NUMBERS[2:]}}
)
ASR_SCHEMA = {
    "id": pl.String,
    "asr": pl.Struct({"language": pl.String, "duration": pl.Float64, "segments": pl.List(ASR_SEGMENT)}),
}


def manifest_schema(taxonomy: Taxonomy) -> dict[str, pl.DataType]:
    # labels_raw is read as its JSON text (4x faster than a struct of every dataset's fields);
    # each dataset extracts its own fields from it (labels.DatasetCompiler.apply).
    raw = pl.String
    return {
        "id": pl.String,
        "dataset": pl.String,
        "split": pl.String,
        "image_path": pl.String,
        "video_path": pl.String,
        "text_raw": pl.String,
        "labels_raw": raw,
        "lang": pl.String,
    }


def _check_line(obj: Any, required: dict[str, type], optional: tuple[str, ...]) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for name, kind in required.items():
        if obj.get(name) is None:
            return f"field '{name}': missing (required)"
        if not isinstance(obj[name], kind):
            return f"field '{name}': expected {kind.__name__}, got {type(obj[name]).__name__}"
    for name in optional:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            return f"field '{name}': expected string or null, got {type(obj[name]).__name__}"
    return None


def _not_json(name: str) -> Any:
    """Python's json reads NaN and Infinity; JSON (and Polars) do not."""
    raise ValueError(f"{name} is not a JSON value")


def locate_bad_line(path: Path, required: dict[str, type], optional: tuple[str, ...], checks=None) -> str:
    """The first line of `path` that is not a valid record, as 'file: line N: problem'."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                # Python's json reads past a BOM; Polars and the JSON-lines format do not.
                return f"{path}: line 1: the file starts with a UTF-8 BOM: save it as UTF-8 without one"
            try:
                obj = json.loads(raw, parse_constant=_not_json)
            except RecursionError:
                return f"{path}: line {number}: not valid JSON: nested too deeply"
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
                hint = " (the file starts with a UTF-8 BOM)" if number == 1 and raw.startswith(b"\xef\xbb\xbf") else ""
                return f"{path}: line {number}: not valid JSON: {exc}{hint}"
            problem = _check_line(obj, required, optional) or (checks(obj) if checks else None)
            if problem:
                return f"{path}: line {number}: {problem}"
    return f"{path}: could not be read as JSON lines"


# JSON escapes, read left to right (so `\\\\` is one escape, and the `\\u` after it another):
# a surrogate pair (kept), a lone surrogate (replaced), or any other escape (kept).
ESCAPE = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[dD][89a-fA-F][0-9a-fA-F]{2}|.)", re.S
)
MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def without_lone_surrogates(raw: bytes) -> tuple[bytes, int]:
    """The line with every lone surrogate escape replaced by \\ufffd, and how many there were."""
    count = 0

    def fix(match: re.Match[bytes]) -> bytes:
        nonlocal count
        if len(match.group(0)) == 6 and match.group(0)[1:2] == b"u":
            count += 1
            return rb"\ufffd"
        return match.group(0)

    return ESCAPE.sub(fix, raw), count


def _surrogate_fields(obj: Any, where: str = "") -> list[str]:
    if isinstance(obj, str):
        return [where] if any("\ud800" <= c <= "\udfff" for c in obj) else []
    if isinstance(obj, dict):
        found = [where or "(a key)"] if any(_surrogate_fields(k) for k in obj) else []
        return found + [f for k, v in obj.items() for f in _surrogate_fields(v, f"{where}.{k}" if where else k)]
    if isinstance(obj, list):
        return [f for i, v in enumerate(obj) for f in _surrogate_fields(v, f"{where}[{i}]")]
    return []


def replace_lone_surrogates(path: Path, copy: Path) -> tuple[Path, dict[int, str]]:
    """`path`, or where it holds lone surrogate escapes, a `copy` with each replaced by U+FFFD;
    and per row (as Polars counts them) the reason it fails: the fields that held one."""
    bad: dict[int, str] = {}
    changed = False
    row = 0
    with open(path, "rb") as src, open(copy, "wb") as dst:
        for raw in src:
            if raw.strip():
                fixed, count = without_lone_surrogates(raw) if MAYBE_SURROGATE.search(raw) else (raw, 0)
                if count:
                    try:
                        fields = _surrogate_fields(json.loads(raw))
                    except (ValueError, UnicodeDecodeError, RecursionError):
                        fields = []
                    where = f"field '{fields[0]}'" if fields else "a field"
                    bad[row] = f"invalid_unicode: {where} holds a lone UTF-16 surrogate"
                    raw, changed = fixed, True
                row += 1
            dst.write(raw)
    return (copy if changed else path), bad


def line_numbers(path: Path, rows: list[int]) -> dict[int, int]:
    """Row index (as Polars counts rows: blank lines skipped) -> 1-based line number."""
    wanted = set(rows)
    found: dict[int, int] = {}
    row = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if row in wanted:
                found[row] = number
            row += 1
    return found


def _labels_raw_check(taxonomy: Taxonomy):
    kinds = taxonomy.raw_fields()

    def check(obj: dict) -> str | None:
        labels = obj.get("labels_raw")
        # A bare value or null is read per dataset (labels.labels_object); only an object's fields are checked here.
        for name, value in labels.items() if isinstance(labels, dict) else ():
            kind = kinds.get(name)
            if kind is None or value is None:
                continue
            if kind == "scalar" and isinstance(value, (dict, list)):
                return f"field 'labels_raw.{name}': expected a single value, got {type(value).__name__}"
            if kind in ("list", "annotators") and not isinstance(value, (list, str)):
                return f"field 'labels_raw.{name}': expected a list, got {type(value).__name__}"
        return None

    return check


def scan_manifest(path: Path, taxonomy: Taxonomy) -> pl.LazyFrame:
    """The manifest with `row` (for line numbers); `labels_raw` stays JSON text (any JSON value:
    an object, a bare value or list, or null; labels.labels_object reads it per dataset)."""
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    return pl.scan_ndjson(path, schema=manifest_schema(taxonomy)).with_row_index("row")


def scan_ocr(path: Path | None) -> pl.LazyFrame:
    """OCR rows: id and its list of lines (text, conf, bbox as JSON text)."""
    if path is None:
        return pl.LazyFrame(schema={"id": pl.String, "lines": pl.List(OCR_LINE), "ocr_row": pl.UInt32})
    if not path.is_file():
        raise InputError(f"{path}: OCR file not found")
    frame = pl.scan_ndjson(path, schema=OCR_SCHEMA).with_row_index("ocr_row")
    return frame.select("id", pl.col("ocr").struct.field("lines"), "ocr_row")


def scan_asr(path: Path | None) -> pl.LazyFrame:
    """ASR rows: id, the language Whisper detected and the segments (start, end, text, quality)."""
    if path is None:
        return pl.LazyFrame(
            schema={"id": pl.String, "language": pl.String, "segments": pl.List(ASR_SEGMENT), "asr_row": pl.UInt32}
        )
    if not path.is_file():
        raise InputError(f"{path}: ASR file not found")
    frame = pl.scan_ndjson(path, schema=ASR_SCHEMA).with_row_index("asr_row")
    return frame.select("id", pl.col("asr").struct.field("language"), pl.col("asr").struct.field("segments"), "asr_row")


READ_ERRORS = (pl.exceptions.ComputeError, pl.exceptions.SchemaError, pl.exceptions.InvalidOperationError)


def explain_read_error(manifest: Path, ocr: Path | None, taxonomy: Taxonomy, asr: Path | None = None) -> InputError:
    """Polars refused an input file: find which one, and its first bad line."""
    message = locate_bad_line(manifest, REQUIRED, OPTIONAL_STR, _labels_raw_check(taxonomy))
    if ocr is not None and message.endswith("could not be read as JSON lines"):
        message = locate_bad_line(ocr, {"id": str}, (), _ocr_check)
    if asr is not None and message.endswith("could not be read as JSON lines"):
        message = locate_bad_line(asr, {"id": str}, (), _asr_check)
    return InputError(message)


def check_manifest(frame: pl.DataFrame, path: Path) -> None:
    """Required fields present, or an InputError naming the line."""
    bad = frame.filter(pl.col("id").is_null() | pl.col("dataset").is_null())
    if bad.height:
        raise InputError(locate_bad_line(path, REQUIRED, OPTIONAL_STR))


def repeated_lines(frame: pl.DataFrame, path: Path) -> list[int]:
    """Of these rows (`row`, `id`: every row whose id may be repeated), those whose line is byte for
    byte an earlier line of the same id (its line ending aside): two Step-2 outputs concatenated,
    a builder run twice with `>>`. Rows of one id that differ are left to check_unique_ids."""
    wanted = dict(frame.select("row", "id").iter_rows())
    if not wanted:
        return []
    seen: dict[tuple[str, bytes], int] = {}
    repeats = []
    row = 0
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            if row in wanted:
                line = raw.rstrip(b"\r\n")
                if (wanted[row], line) in seen:
                    repeats.append(row)
                else:
                    seen[wanted[row], line] = row
            row += 1
    return repeats


def check_unique_ids(frame: pl.DataFrame, path: Path) -> None:
    """Ids unique, or an InputError naming the lines of every copy. `frame` may be any subset that
    holds every row whose id could be repeated (the plan passes the rows whose key is repeated)."""
    dupes = frame.filter(pl.col("id").is_duplicated()).sort("row")
    if dupes.height:
        lines = line_numbers(path, dupes["row"].to_list())
        shown = ", ".join(f"'{i}' (line {lines[r]})" for i, r in zip(dupes["id"], dupes["row"]))
        count = dupes["id"].n_unique()
        raise InputError(f"{path}: field 'id': {count} id(s) appear more than once: {shown[:2000]}")


URL = r"^[A-Za-z][A-Za-z0-9+.-]*://"
S3_OBJECT = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/."


def check_locations(frame: pl.DataFrame, path: Path) -> None:
    """Every image_path and video_path given as a URL is an s3://bucket/key URL (any S3-compatible
    store), or an InputError naming the line and the field: a scheme packer does not read would
    otherwise fail every example that names it."""
    from .objects import split_url

    for field in ("image_path", "video_path"):
        value = pl.col(field)
        bad = frame.filter(value.str.contains(URL) & ~value.str.contains(S3_OBJECT)).head(1)
        for row, url in bad.select("row", field).iter_rows():
            try:
                split_url(url)
                problem = f"{inert(url)}: not an s3://bucket/key URL of an object"
            except InputError as exc:
                problem = str(exc)
            line = line_numbers(path, [row]).get(row, "?")
            raise InputError(f"{path}: line {line}: field '{field}': {problem}")


def check_ocr(frame: pl.DataFrame, path: Path | None) -> None:
    if path is not None and frame["id"].null_count():
        raise InputError(locate_bad_line(path, {"id": str}, (), _ocr_check))


def check_asr(frame: pl.DataFrame, path: Path | None) -> None:
    if path is not None and frame["id"].null_count():
        raise InputError(locate_bad_line(path, {"id": str}, (), _asr_check))


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _asr_check(obj: dict) -> str | None:
    asr = obj.get("asr")
    if asr is None:
        return None
    if not isinstance(asr, dict):
        return "field 'asr': expected an object {language, duration, segments}"
    if asr.get("language") is not None and not isinstance(asr["language"], str):
        return "field 'asr.language': expected a string"
    if not _number(asr.get("duration")):
        return "field 'asr.duration': expected a number"
    segments = asr.get("segments")
    if segments is not None and not isinstance(segments, list):
        return "field 'asr.segments': expected a list of {start, end, text, ...}"
    for i, segment in enumerate(segments or []):
        if not isinstance(segment, dict):
            return f"field 'asr.segments[{i}]': expected an object"
        if segment.get("text") is not None and not isinstance(segment["text"], str):
            return f"field 'asr.segments[{i}].text': expected a string"
        for name in ASR_NUMBERS:
            if not _number(segment.get(name)):
                return f"field 'asr.segments[{i}].{name}': expected a number"
    return None


def _ocr_check(obj: dict) -> str | None:
    ocr = obj.get("ocr")
    if ocr is None:
        return None
    if not isinstance(ocr, dict) or not isinstance(ocr.get("lines", []), list):
        return "field 'ocr.lines': expected a list of {text, conf, bbox}"
    for i, line in enumerate(ocr.get("lines") or []):
        if not isinstance(line, dict):
            return f"field 'ocr.lines[{i}]': expected an object"
        if line.get("text") is not None and not isinstance(line["text"], str):
            return f"field 'ocr.lines[{i}].text': expected a string"
        conf = line.get("conf")
        if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float))):
            return f"field 'ocr.lines[{i}].conf': expected a number"
    return None
