"""The combined text of a sample, as Polars expressions and LazyFrame steps."""

from __future__ import annotations

import polars as pl


def clean_text(expr: pl.Expr) -> pl.Expr:
    """Unicode NFC, whitespace collapsed to single spaces, trimmed.

    Written for speed on mostly-ASCII text: only non-ASCII strings are normalised, and the regex
    touches runs of 2+ whitespace and single non-space whitespace (the same result as collapsing
    every whitespace run to one space, about 5x faster).
    """
    nfc = pl.when(expr.str.contains(r"[^\x00-\x7f]")).then(expr.str.normalize("NFC")).otherwise(expr)
    return nfc.str.replace_all(r"\s\s+|[^ \S]", " ").str.strip_chars()


def normalized_text(cleaned: pl.Expr) -> pl.Expr:
    """The duplicate-detection form of a `clean_text` result: case-folded (lower-casing keeps NFC)."""
    return cleaned.str.to_lowercase()


def combined_text(ocr_text: pl.Expr, caption: pl.Expr, lang: pl.Expr, asr: pl.Expr | None = None) -> pl.Expr:
    """`[OCR] <ocr> [/OCR] [CAP] <caption> [/CAP] <lang=xx>`, both blocks always present; with
    `asr` (the kept speech, null where the example has no ASR row) an example that has one gets
    `[OCR] .. [/OCR] [ASR] <speech> [/ASR] [CAP] .. [/CAP] <lang=xx>`.

    Every part is already clean (NFC, single spaces, trimmed), so an empty block is `[OCR] [/OCR]`.
    """

    def block(part: pl.Expr) -> pl.Expr:
        return pl.when(part.is_not_null() & (part != "")).then(part + " ")

    def text(*speech: pl.Expr) -> pl.Expr:
        return pl.concat_str(
            pl.lit("[OCR] "),
            block(ocr_text),
            *speech,
            pl.lit("[/OCR] [CAP] ") if not speech else pl.lit("[CAP] "),
            block(caption),
            pl.lit("[/CAP] <lang="),
            clean_text(lang),
            pl.lit(">"),
            ignore_nulls=True,
        )

    if asr is None:
        return text()
    spoken = text(pl.lit("[/OCR] [ASR] "), block(asr), pl.lit("[/ASR] "))
    return pl.when(asr.is_not_null()).then(spoken).otherwise(text())


# Why a speech segment is left out, in the order the reasons are tried (INPUTS.md section 4).
ASR_DROPS = ("silence", "repetition", "empty")


def asr_text(asr: pl.LazyFrame, max_no_speech: float, min_logprob: float, max_compression: float) -> pl.LazyFrame:
    """One row per clip with an ASR row: its kept segments' text in time order (`asr_text`), the
    sample JSON's `asr` as JSON text (`asr_json`: the kept segments with their times, the dropped
    ones counted by reason, the detected language), and the counts.

    A segment is dropped as Whisper drops it: silence where no_speech_prob is above
    `max_no_speech` and avg_logprob below `min_logprob`; a repetition loop where compression_ratio
    is above `max_compression`; and where its text is empty. A quality field that is absent
    drops nothing."""
    first = asr.unique(subset="id", keep="first", maintain_order=True)
    segments = (
        first.select("id", "segments")
        .explode("segments")
        .unnest("segments")
        .filter(pl.col("start").is_not_null() | pl.col("end").is_not_null() | pl.col("text").is_not_null())
        .with_columns(text=clean_text(pl.col("text")))
    )
    silence = (pl.col("no_speech_prob") > max_no_speech) & (pl.col("avg_logprob") < min_logprob)
    repetition = pl.col("compression_ratio") > max_compression
    empty = pl.col("text").is_null() | (pl.col("text") == "")
    reason = (
        pl.when(silence.fill_null(False))
        .then(pl.lit(ASR_DROPS[0]))
        .when(repetition.fill_null(False))
        .then(pl.lit(ASR_DROPS[1]))
        .when(empty)
        .then(pl.lit(ASR_DROPS[2]))
    )
    segments = segments.with_columns(drop=reason)
    kept = (
        segments.filter(pl.col("drop").is_null())
        .sort("id", "start", "end", nulls_last=True, maintain_order=True)
        .group_by("id", maintain_order=True)
        .agg(asr_text=pl.col("text").str.join(" "), kept=pl.struct("start", "end", "text"), asr_kept=pl.len())
    )
    counts = segments.group_by("id").agg(**{f"asr_{r}": (pl.col("drop") == r).sum().cast(pl.UInt32) for r in ASR_DROPS})
    frame = (
        first.select("id", asr_language="language")
        .join(kept, on="id", how="left", maintain_order="left")
        .join(counts, on="id", how="left", maintain_order="left")
        .with_columns(
            pl.col("asr_text").fill_null(""),
            pl.col("asr_kept").fill_null(0).cast(pl.UInt32),
            *(pl.col(f"asr_{r}").fill_null(0) for r in ASR_DROPS),
        )
    )
    dropped = pl.struct(**{r: pl.col(f"asr_{r}") for r in ASR_DROPS})
    segments_kept = pl.col("kept").fill_null(
        pl.lit([], dtype=pl.List(pl.Struct({"start": pl.Float64, "end": pl.Float64, "text": pl.String})))
    )
    doc = pl.struct(language=pl.col("asr_language"), segments=segments_kept, dropped=dropped)
    return frame.with_columns(asr_json=doc.struct.json_encode()).drop("kept")


def ocr_text(ocr: pl.LazyFrame, min_conf: float) -> pl.LazyFrame:
    """One row per OCR'd id: the kept lines in reading order joined by spaces, and line counts.

    Confidences are on 0-1, or on 0-100 for a whole file whose maximum exceeds 1 (Tesseract-style).
    Reading order: lines sorted by the top of their box; a line whose top lies below the previous
    line's vertical centre starts a new row; rows top to bottom, each left to right.
    """
    first = ocr.unique(subset="id", keep="first", maintain_order=True)
    lines = first.select("id", "lines").explode("lines").unnest("lines")
    coords = (
        pl.col("bbox")
        .str.replace_all(r"[\[\]\s]", "")
        .str.split(",")
        .list.eval(pl.element().cast(pl.Float64, strict=False))
    )
    xs = coords.list.gather_every(2)
    ys = coords.list.gather_every(2, offset=1)
    scale = pl.when(pl.col("conf").max() > 1.0).then(100.0).otherwise(1.0)
    lines = lines.with_columns(
        left=xs.list.min(),
        top=ys.list.min(),
        bottom=ys.list.max(),
        conf01=pl.col("conf") / scale,
        text=clean_text(pl.col("text")),
    )
    is_line = pl.col("text").is_not_null() & (pl.col("text") != "")
    kept = is_line & (pl.col("conf01").is_null() | (pl.col("conf01") >= min_conf))
    low = is_line & ~kept
    lines = lines.with_columns(kept=kept, low_conf=low)
    ordered = (
        lines.filter("kept")
        .sort("id", "top", "left", nulls_last=True)
        .with_columns(
            new_row=(pl.col("top") > ((pl.col("top") + pl.col("bottom")) / 2).shift(1).over("id")).fill_null(True)
        )
        .with_columns(row_no=pl.col("new_row").cum_sum().over("id"))
        .sort("id", "row_no", "left", nulls_last=True)
        .group_by("id", maintain_order=True)
        .agg(ocr_text=pl.col("text").str.join(" "))
    )
    counts = lines.group_by("id").agg(ocr_lines_kept=pl.col("kept").sum(), ocr_lines_low_conf=pl.col("low_conf").sum())
    return (
        first.select("id")
        .join(counts, on="id", how="left", maintain_order="left")
        .join(ordered, on="id", how="left", maintain_order="left")
        .with_columns(pl.col("ocr_text").fill_null(""), pl.lit(True).alias("has_ocr"))
    )
