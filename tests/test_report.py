"""report.html: built by every run and by `python -m packer.report`, checked in a real headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import MAMI

from packer.report.__main__ import main as report_main


class Cells(HTMLParser):
    """The text of every table cell, per table id, and every <img> src."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.table: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            self.tables.setdefault(self.table or "", [])
        elif tag == "tr" and self.table is not None:
            self.tables[self.table].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.table is not None:
            self.tables[self.table][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def parse(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text(encoding="utf-8"))
    return cells


def test_report_numbers_equal_stats(packed):
    stats = json.loads((packed / "stats.json").read_text())
    page = parse(packed / "report.html")
    rows = {r[0]: r[1:] for r in page.tables["split-counts"][1:]}
    for split, e in stats["splits"].items():
        assert rows[split] == [str(e[k]) for k in ("examples", "image_examples", "text_examples", "shards", "bytes")]
    checks = {r[0]: r[1] for r in page.tables["checks"][1:]}
    assert checks == {name: "PASS" if ok else "FAIL" for name, ok in stats["checks"].items()}
    reasons = {(r[0], r[1]): int(r[2]) for r in page.tables["reasons"][1:]}
    assert reasons == {(s, k): n for s in ("dropped", "failed") for k, n in stats["reasons"][s].items()}
    datasets = {r[0]: [int(x) for x in r[1:5]] for r in page.tables["dataset-counts"][1:]}
    assert datasets == {d: [e["rows"], e["packed"], e["dropped"], e["failed"]] for d, e in stats["datasets"].items()}
    # Contact sheets: up to 48 per split, each image the packed 384x384 JPEG itself.
    text = (packed / "report.html").read_text()
    sheets = re.findall(r'<div class="sheet" id="sheet-(\w+)">', text)
    assert sheets == ["train", "val", "test", "diagnostics"]
    jpegs = {}  # every packed JPEG, by key, as the shards hold it
    for shard in packed.glob("shards/*/*.tar"):  # images, and clips' middle frames
        with tarfile.open(shard) as tar:
            jpegs.update({m.name.split(".")[0]: tar.extractfile(m).read() for m in tar if m.name.count(".") == 1
                          and m.name.endswith(".jpg")})  # fmt: skip
    for split in sheets:
        sheet = text.split(f'id="sheet-{split}">', 1)[1].split("<h3>", 1)[0].split("<script>", 1)[0]
        cards = re.findall(r'<div class="card" data-key="([^"]+)">\s*(?:<img class="sensitive" src="([^"]+)")?', sheet)
        expected = min(48, stats["splits"][split]["examples"])
        assert len(cards) == expected, (split, len(cards))
        for key, src in cards:
            if key in jpegs:
                assert src.startswith("data:image/jpeg;base64,")
                assert base64.b64decode(src.split(",", 1)[1]) == jpegs[key], key
            else:
                assert src == ""  # a text-only example


def test_report_rebuilds_from_the_folder_byte_identical(packed, tmp_path, capsys):
    copy = tmp_path / "Step_3"
    shutil.copytree(packed, copy)
    first = (copy / "report.html").read_bytes()
    (copy / "report.html").unlink()
    assert report_main([str(copy)]) == 0
    assert (copy / "report.html").read_bytes() == first
    assert report_main([str(tmp_path / "nowhere")]) == 2
    assert "stats.json: not found" in capsys.readouterr().err


def test_leakage_pairs_are_shown_side_by_side(ws):
    shared = ws.image("shared.jpg", colour=(10, 200, 10))
    ws.add("hateful_memes_train_1", "hateful_memes", "train", {"label": 1}, image=shared, text="one caption")
    ws.add("hateful_memes_test_seen_1", "hateful_memes", "test_seen", {"label": 0}, image=shared, text="other words")
    for i in range(8):
        ws.add(
            f"mami_train_{i}", "mami", "train", MAMI, image=ws.image(f"m{i}.jpg", colour=(i * 30, 0, 0)), text=f"m{i}"
        )
    assert ws.run() in (0, 1)
    html = (ws.out / "report.html").read_text()
    pairs = html.split('<div class="pair">')[1:]
    pair = pairs[0].split("<h2>")[0]
    assert "same image" in pair and "train/test" in pair and len(pairs) == 1 + 4  # 1 same image, 4 near-duplicates
    assert pair.count("data:image/jpeg;base64,") == 2
    assert "hateful_memes_train_1" in pair and "hateful_memes_test_seen_1" in pair


@pytest.mark.parametrize("example_id", ["plain_id-1", "memotion1_train_10_year.jpg", "a/b c", "é" * 3, "x" * 90])
def test_leakage_pairs_are_found_in_the_shards_by_the_keys_the_plan_gave(ws, example_id):
    # Ids with dots, slashes, spaces, non-ASCII or over 80 characters get a hashed key in the shards.
    shared = ws.image("shared.jpg", colour=(10, 200, 10))
    ws.add(example_id, "hateful_memes", "train", {"label": 1}, image=shared, text="one caption")
    ws.add("hateful_memes_test_seen_1", "hateful_memes", "test_seen", {"label": 0}, image=shared, text="other words")
    assert ws.run() in (0, 1)
    page = html.unescape((ws.out / "report.html").read_text())
    pair = page.split('<div class="pair">')[1].split("<h2>")[0]
    assert "same image" in pair and example_id in pair and "not found in the shards" not in pair
    assert pair.count("data:image/jpeg;base64,") == 2


def chromium_driver():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them as root)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.mark.heavy  # a browser
def test_report_renders_in_headless_chromium_offline(packed, tmp_path):
    stats = json.loads((packed / "stats.json").read_text())
    browser = chromium_driver()
    try:
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
        )
        browser.get((packed / "report.html").resolve().as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
        )
        charts = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure.chart svg'))"
            ".map(s => [s.getBoundingClientRect().width, s.querySelectorAll('path, rect').length]);"
        )
        verdict = browser.execute_script("return document.getElementById('verdict').textContent;")
        rows = browser.execute_script(
            "return Array.from(document.querySelectorAll('#split-counts tr')).slice(1)"
            ".map(r => Array.from(r.cells).map(c => c.textContent.trim()));"
        )
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    shown = sum(1 for split in ("train", "val", "test") if stats["splits"][split]["image_examples"])
    assert len(images) >= shown and all(ok and w == 384 and h == 384 for ok, w, h in images), images
    # Split sizes, 4 class shares, reasons, and the clips' durations (the sample has clips).
    assert len(charts) == 7 and all(width > 100 and marks > 5 for width, marks in charts), charts
    assert verdict.startswith("FAIL") == (not all(stats["checks"].values()))
    assert {r[0]: int(r[1]) for r in rows} == {s: e["examples"] for s, e in stats["splits"].items()}
    assert errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.heavy  # a browser
def test_report_warns_blurs_and_keeps_wide_charts_inside_the_page(packed):
    browser = chromium_driver()
    try:
        browser.get((packed / "report.html").resolve().as_uri())
        note = browser.find_element("id", "content-note")
        note_shown, note_text = note.is_displayed(), note.text
        first_image = "document.querySelector('#sheet-train img')"
        blurred = browser.execute_script(f"return getComputedStyle({first_image}).filter;")
        browser.execute_script(f"{first_image}.click();")
        clicked = browser.execute_script(f"return getComputedStyle({first_image}).filter;")
        others = browser.execute_script(
            "return Array.from(document.querySelectorAll('img.sensitive')).slice(1)"
            ".map(i => getComputedStyle(i).filter);"
        )
        browser.find_element("id", "reveal-all").click()
        revealed = browser.execute_script(
            "return Array.from(document.querySelectorAll('img.sensitive')).map(i => getComputedStyle(i).filter);"
        )
        page_width = browser.execute_script("return document.documentElement.clientWidth;")
        boxes = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure.chart'))"
            ".map(f => [f.getBoundingClientRect().right, f.scrollWidth, f.clientWidth]);"
        )
        cards = browser.execute_script(
            "return Array.from(document.querySelectorAll('#sheet-val .card')).map(c =>"
            " [c.querySelector('.split').textContent, c.querySelector('.source-split').textContent]);"
        )
    finally:
        browser.quit()
    assert note_shown and "hateful" in note_text
    assert blurred.startswith("blur(") and clicked == "none"
    assert others and all(f.startswith("blur(") for f in others)
    assert revealed and set(revealed) == {"none"}
    assert boxes and all(right <= page_width + 1 for right, _, _ in boxes), (page_width, boxes)
    assert any(scroll > client for _, scroll, client in boxes)  # the wide target_group chart scrolls in its box
    assert cards and all(split == "val" and source.startswith("(source split: ") for split, source in cards)
