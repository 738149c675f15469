"""Combined text: OCR reading order, confidence scales, both bbox forms, NFC, whitespace."""

from __future__ import annotations

import polars as pl

from packer.text import clean_text, combined_text, normalized_text, ocr_text


def ocr_frame(rows: list[tuple[str, list[dict]]]) -> pl.LazyFrame:
    line = pl.Struct({"text": pl.String, "conf": pl.Float64, "bbox": pl.String})
    data = [{"id": i, "lines": [{**ln, "bbox": str(ln.get("bbox"))} for ln in lines]} for i, lines in rows]
    return pl.LazyFrame(data, schema={"id": pl.String, "lines": pl.List(line)})


def texts(rows, min_conf=0.5) -> dict[str, str]:
    out = ocr_text(ocr_frame(rows), min_conf).collect()
    return dict(zip(out["id"], out["ocr_text"]))


def poly(x, y, w=50, h=10):
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def test_reading_order_top_to_bottom_then_left_to_right_both_bbox_forms():
    lines = [
        {"text": "bottom", "conf": 0.9, "bbox": [10, 200, 60, 210]},
        {"text": "right", "conf": 0.9, "bbox": poly(300, 12)},  # same row as "left", slightly lower
        {"text": "left", "conf": 0.9, "bbox": poly(10, 10)},
    ]
    assert texts([("a", lines)]) == {"a": "left right bottom"}


def test_low_confidence_lines_dropped_and_percent_scale_detected():
    lines = [{"text": "keep", "conf": 0.8, "bbox": poly(0, 0)}, {"text": "drop", "conf": 0.2, "bbox": poly(0, 50)}]
    assert texts([("a", lines)]) == {"a": "keep"}
    percent = [{"text": "keep", "conf": 80, "bbox": poly(0, 0)}, {"text": "drop", "conf": 20, "bbox": poly(0, 50)}]
    out = ocr_text(ocr_frame([("a", percent)]), 0.5).collect().row(0, named=True)
    assert out["ocr_text"] == "keep"
    assert (out["ocr_lines_kept"], out["ocr_lines_low_conf"]) == (1, 1)


def test_empty_ocr_gives_empty_text():
    assert texts([("a", [])]) == {"a": ""}


def test_combined_text_format_nfc_and_whitespace():
    frame = pl.DataFrame(
        {"ocr": ["HELLO\n  WORLD", None], "cap": ["cafe\u0301   au\tlait", None], "lang": ["fr", "en"]}
    )
    parts = (clean_text(pl.col("ocr")), clean_text(pl.col("cap")), pl.col("lang"))
    out = frame.select(combined_text(*parts)).to_series().to_list()
    assert out[0] == "[OCR] HELLO WORLD [/OCR] [CAP] caf\u00e9 au lait [/CAP] <lang=fr>"
    assert out[1] == "[OCR] [/OCR] [CAP] [/CAP] <lang=en>"


def test_normalized_text_folds_case_and_space():
    frame = pl.DataFrame({"t": ["  Hello   WORLD ", "hello world", "Cafe\u0301"]})
    assert frame.select(normalized_text(clean_text(pl.col("t")))).to_series().to_list() == [
        "hello world",
        "hello world",
        "caf\u00e9",
    ]


def test_polygon_and_box_bboxes_read_end_to_end_from_the_ocr_file(ws):
    """The OCR file as INPUTS.md has it (polygons and [x0, y0, x1, y1] boxes), through the CLI, to the .txt."""
    import tarfile

    from conftest import MAMI

    ws.add("mami_train_0", "mami", "train", MAMI, image=ws.image("a.jpg"), text="caption")
    ws.ocr_rows.append(
        {
            "id": "mami_train_0",
            "ocr": {
                "lines": [
                    {"text": "BOTTOM", "conf": 0.9, "bbox": poly(10, 200)},
                    {"text": "RIGHT", "conf": 0.9, "bbox": [300, 10, 350, 20]},
                    {"text": "LEFT", "conf": 0.9, "bbox": poly(10, 12)},
                    {"text": "faint", "conf": 0.2, "bbox": poly(10, 100)},
                ]
            },
        }
    )
    assert ws.run() == 0
    (shard,) = (ws.out / "shards" / "train").glob("shard-*.tar")
    with tarfile.open(shard) as tar:
        (txt,) = [tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".txt")]
    assert txt == "[OCR] LEFT RIGHT BOTTOM [/OCR] [CAP] caption [/CAP] <lang=en>"
