"""Every documented flag, through the command line, changes what it says it changes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import MAMI, Workspace
from PIL import Image

from packer.cli import main


def members(ws: Workspace, suffix: str) -> dict[str, bytes]:
    """Every member of every shard ending in `suffix`, by member name."""
    out = {}
    for shard in sorted((ws.out / "shards").glob("*/*.tar")):
        with tarfile.open(shard) as tar:
            out.update({m.name: tar.extractfile(m).read() for m in tar if m.name.endswith(suffix)})
    return out


def splits_of(ws: Workspace) -> dict[str, str]:
    return json.loads((ws.out / "splits.json").read_text())


def olid_posts(ws: Workspace, n: int, split: str | None = "train") -> None:
    for i in range(n):
        ws.add(f"olid_{i}", "olid", split, {"subtask_a": "OFF" if i % 4 == 0 else "NOT"}, text=f"post {i}")


def test_stats_flag_places_stats_card_report_and_failures(ws, tmp_path):
    ws.add("mami_train_0", "mami", "train", MAMI, image=ws.image("a.jpg"))
    ws.add("mami_train_1", "mami", "train", {}, text="no label")  # dropped: a failures.jsonl line
    elsewhere = tmp_path / "runs" / "first.json"
    assert ws.run("--stats", str(elsewhere)) == 0
    assert json.loads(elsewhere.read_text())["packed_examples"] == 1
    for name in ("README.md", "report.html", "failures.jsonl"):
        assert (elsewhere.parent / name).is_file() and not (ws.out / name).exists(), name
    assert [json.loads(line)["id"] for line in (elsewhere.parent / "failures.jsonl").read_text().splitlines()] == [
        "mami_train_1"
    ]
    assert not (ws.out / "stats.json").exists()


def test_keep_unlabelled(ws):
    ws.add("mami_train_0", "mami", "train", MAMI, text="labelled")
    ws.add("mami_train_1", "mami", "train", {}, text="no label at all")
    assert ws.run() == 0 and set(splits_of(ws)) == {"mami_train_0"}
    assert ws.stats["reasons"]["dropped"] == {"unlabelled": 1}
    assert ws.run("--keep-unlabelled") == 0 and set(splits_of(ws)) == {"mami_train_0", "mami_train_1"}


def test_image_size_and_jpeg_quality(ws):
    image = Image.effect_noise((500, 300), 60).convert("RGB")
    path = ws.images / "noise.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    ws.add("mami_train_0", "mami", "train", MAMI, image=str(path))
    sizes = {}
    for size, quality in ((64, 95), (128, 95), (128, 20)):
        assert ws.run("--image-size", str(size), "--jpeg-quality", str(quality), "--fresh") == 0
        (data,) = members(ws, ".jpg").values()
        assert Image.open(io.BytesIO(data)).size == (size, size)
        sizes[size, quality] = len(data)
    assert sizes[128, 20] < sizes[128, 95] / 2 and sizes[64, 95] < sizes[128, 95]


def test_ocr_min_conf(ws):
    ws.add("mami_train_0", "mami", "train", MAMI, image=ws.image("a.jpg"), text="cap")
    lines = [
        {"text": "SURE", "conf": 0.97, "bbox": [0, 0, 10, 10]},
        {"text": "MAYBE", "conf": 0.7, "bbox": [20, 0, 30, 10]},
    ]
    ws.ocr_rows.append({"id": "mami_train_0", "ocr": {"lines": lines}})
    for flag, expected in (("0.5", "SURE MAYBE"), ("0.9", "SURE")):
        assert ws.run("--ocr-min-conf", flag, "--fresh") == 0
        (txt,) = members(ws, ".txt").values()
        assert txt.decode() == f"[OCR] {expected} [/OCR] [CAP] cap [/CAP] <lang=en>"


@pytest.mark.parametrize(("ratio", "val"), [("0.1", 40), ("0.5", 200)])
def test_val_ratio_carves_val_from_train(ws, ratio, val):
    olid_posts(ws, 400)
    assert ws.run("--val-ratio", ratio) == 0
    assert ws.stats["splits"]["val"]["examples"] == val and ws.stats["splits"]["train"]["examples"] == 400 - val


def test_split_ratios_where_a_dataset_has_no_split(ws):
    olid_posts(ws, 400, split=None)
    assert ws.run("--split-ratios", "0.5,0.25,0.25") == 0
    assert {s: ws.stats["splits"][s]["examples"] for s in ("train", "val", "test")} == {
        "train": 200,
        "val": 100,
        "test": 100,
    }


def test_seed_changes_the_assignment_and_only_it(ws):
    olid_posts(ws, 400)
    assert ws.run("--seed", "1", shards="s1") == 0
    first = splits_of(ws)
    (ws.out / "splits.json").unlink()  # no pins: the second run assigns afresh
    assert ws.run("--seed", "2", shards="s2") == 0
    second = splits_of(ws)
    val = {s: {i for i, sp in d.items() if sp == "val"} for s, d in (("1", first), ("2", second))}
    assert len(val["1"]) == len(val["2"]) == 40 and val["1"] != val["2"]


def test_max_image_pixels(ws):
    ws.add("mami_train_0", "mami", "train", MAMI, image=ws.image("big.jpg", size=(600, 400)))
    ws.add("mami_train_1", "mami", "train", MAMI, image=ws.image("small.jpg", size=(100, 100)))
    assert ws.run("--max-image-pixels", "100000") == 1  # 1 of 2 failed
    assert {f["id"]: f["reason"] for f in ws.failures()} == {"mami_train_0": "image_too_large"}
    assert set(splits_of(ws)) == {"mami_train_1"}


def test_a_manifest_with_a_utf8_bom_is_an_input_error_naming_it(ws, capsys):
    ws.add("mami_train_0", "mami", "train", MAMI, text="x")
    ws.write()
    ws.manifest.write_bytes(b"\xef\xbb\xbf" + ws.manifest.read_bytes())
    assert main(ws.args()) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ws.manifest}: line 1: ") and "UTF-8 BOM" in err
    assert not Path(ws.out).exists()
