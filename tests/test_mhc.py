"""Multilingual HateCheck: the adapter on generated release files (in CI) and on the ten real files
of ../shared/realdata/mhc (skipped without them), packed into `diagnostics` with each file's
language; stats.json, the console, report.html and the card's `diagnostics` config by language."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from conftest import REALDATA, Workspace

from packer.sources import SourceError, convert

HEADER = ["mhc_case_id", "functionality", "test_case", "label_gold", "target_ident", "ref_case_id", "ref_templ_id",
          "templ_id", "case_templ", "gender_male", "gender_female", "label_annotated", "label_annotated_maj",
          "disagreement_in_case", "disagreement_in_template"]  # fmt: skip
NO_GENDER = [c for c in HEADER if not c.startswith("gender_")]  # Dutch's and Mandarin's 13 columns


def write_release(folder: Path, language: str, cases: list[tuple[str, str, str, str]], columns=HEADER) -> None:
    """A `hatecheck_cases_final_<language>.csv` of (functionality, test_case, label_gold, target_ident)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"hatecheck_cases_final_{language}.csv", "w", encoding="utf-8", newline="") as handle:
        out = csv.DictWriter(handle, columns)
        out.writeheader()
        for n, (functionality, case, gold, target) in enumerate(cases, start=1):
            row = dict.fromkeys(columns, "")
            row.update(mhc_case_id=f"{language}-{n}", functionality=functionality, test_case=case, label_gold=gold,
                       target_ident=target, templ_id=str(n), label_annotated_maj=gold)  # fmt: skip
            out.writerow(row)


def read_diagnostics(step3: Path) -> list[tuple[str, dict]]:
    """Every packed diagnostics sample as (text, json), read with webdataset."""
    urls = sorted(str(p) for p in (step3 / "shards" / "diagnostics").glob("*.tar"))
    return [(s["txt"].decode("utf-8"), json.loads(s["json"])) for s in wds.WebDataset(urls, shardshuffle=False)]


def test_generated_release_files_pack_with_their_languages(tmp_path, capsys):
    raw = tmp_path / "MHC Final Cases"
    write_release(raw, "german", [("derog_neg_emote_h", "Ich hasse Juden. ", "hateful", "Jews"),
                                  ("derog_neg_emote_h", " Ich hasse Frauen.", "hateful", "women"),
                                  ("ident_pos_nh", "Schwarze Menschen sind toll.", "non-hateful", "Black people"),
                                  ("slur_h", "Ihr Außerirdischen!", "hateful", "aliens")])  # fmt: skip
    write_release(raw, "dutch", [("derog_neg_emote_h", "Ik haat joodse mensen.", "hateful", "jewish people"),
                                 ("counter_quote_nh", "Zeg niet 'ik haat vrouwen'.", "non-hateful", "")],
                  NO_GENDER)  # fmt: skip
    write_release(raw, "mandarin", [("derog_neg_emote_h", "我讨厌外国人。", "hateful", "foreigners")], NO_GENDER)
    converted = convert("mhc", raw, [], None)
    ws = Workspace(tmp_path)
    ws.rows = converted.rows
    assert ws.run("--include-diagnostics") == 0
    console = capsys.readouterr().out
    assert "diagnostics: 7 cases in 3 language(s), 4 functionalities: de 4 (75% hateful), nl 2 (50% hateful), " \
           "zh 1 (100% hateful)" in console  # fmt: skip
    samples = {doc["id"]: (text, doc) for text, doc in read_diagnostics(ws.out)}
    assert sorted(samples) == ["mhc_dutch-1", "mhc_dutch-2", "mhc_german-1", "mhc_german-2", "mhc_german-3",
                               "mhc_german-4", "mhc_mandarin-1"]  # fmt: skip
    text, doc = samples["mhc_german-1"]
    assert text == "[OCR] [/OCR] [CAP] Ich hasse Juden. [/CAP] <lang=de>" and doc["lang"] == "de"
    assert samples["mhc_german-2"][0] == "[OCR] [/OCR] [CAP] Ich hasse Frauen. [/CAP] <lang=de>"
    assert doc["aux"]["functionality"] == "derog_neg_emote_h" and doc["aux"]["language"] == "german"
    assert doc["aux"]["templ_id"] == 1 and doc["aux"]["label_annotated_maj"] == "hateful"
    groups = {i: (d["labels"]["abuse_hate"], d["labels"]["target_type"], d["labels"]["target_group"])
              for i, (_, d) in samples.items()}  # fmt: skip
    assert groups == {
        "mhc_german-1": (1, "group", ["jewish"]),
        "mhc_german-2": (1, "group", ["women"]),
        "mhc_german-3": (0, "group", ["black"]),
        "mhc_german-4": (1, "group", ["other"]),
        "mhc_dutch-1": (1, "group", ["jewish"]),
        "mhc_dutch-2": (0, "none", []),
        "mhc_mandarin-1": (1, "group", ["immigrant"]),
    }
    stats = ws.stats
    assert stats["datasets"]["mhc"]["other_targets"] == {"aliens": 1}
    assert stats["diagnostics"]["by_language"] == {
        "de": {"cases": 4, "hateful": 3, "hateful_share": 0.75},
        "nl": {"cases": 2, "hateful": 1, "hateful_share": 0.5},
        "zh": {"cases": 1, "hateful": 1, "hateful_share": 1.0},
    }
    assert stats["diagnostics"]["by_functionality"]["derog_neg_emote_h"] == {
        "cases": 4, "hateful": 4, "hateful_share": 1.0}  # fmt: skip
    report = (ws.out / "report.html").read_text()
    assert '<td class="l">nl</td><td>2</td><td>1</td><td>50.0%</td>' in report
    # Without --include-diagnostics nothing of it is packed, and every row is counted as dropped.
    assert ws.run("--fresh") == 0
    assert ws.stats["datasets"]["mhc"]["dropped"] == 7 and "diagnostics" not in ws.stats


def test_an_unknown_language_file_or_a_second_copy_is_refused(tmp_path):
    raw = tmp_path / "raw"
    write_release(raw, "klingon", [("slur_h", "x", "hateful", "")])
    with pytest.raises(SourceError, match=r"hatecheck_cases_final_klingon.csv: unknown language 'klingon'"):
        convert("mhc", raw, [], None)
    (raw / "hatecheck_cases_final_klingon.csv").unlink()
    write_release(raw, "german", [("slur_h", "x", "hateful", "")])
    write_release(raw / "copy", "german", [("slur_h", "x", "hateful", "")])
    with pytest.raises(SourceError, match=r"a second german file"):
        convert("mhc", raw, [], None)


def test_the_card_diagnostics_config_loads_and_filters_by_language(pilot, tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed (the loaders extra)")
    stats = json.loads((pilot / "stats.json").read_text())
    rows = datasets.load_dataset(str(pilot), "diagnostics", split="diagnostics", cache_dir=str(tmp_path / "hf"))
    assert len(rows) == stats["splits"]["diagnostics"]["text_examples"]
    by_language = Counter(r["json"]["lang"] for r in rows)
    assert by_language == {lang: e["cases"] for lang, e in stats["diagnostics"]["by_language"].items()}
    assert by_language["de"] == by_language["fr"] == by_language["zh"] == 6  # make_sample_data.py's cases
    german = rows.filter(lambda r: r["json"]["lang"] == "de")
    assert len(german) == 6 and all(r["txt"].endswith("<lang=de>") for r in german)


MHC = REALDATA / "mhc"


@pytest.mark.heavy
@pytest.mark.skipif(not MHC.is_dir(), reason="../shared/realdata is not here")
def test_the_ten_real_files_pack_to_their_published_counts(tmp_path):
    counts = json.loads((MHC / "counts.json").read_text())
    codes = {"arabic": "ar", "dutch": "nl", "french": "fr", "german": "de", "hindi": "hi", "italian": "it",
             "mandarin": "zh", "polish": "pl", "portuguese": "pt", "spanish": "es"}  # fmt: skip
    converted = convert("mhc", MHC, [], None)
    ws = Workspace(tmp_path)
    ws.rows = converted.rows
    assert ws.run("--include-diagnostics", "--workers", "2") == 0
    packed = read_diagnostics(ws.out)
    assert len(packed) == 36582 == sum(counts[lang]["rows"] for lang in codes)
    assert sum(d["labels"]["abuse_hate"] for _, d in packed) == 25511
    assert len({d["aux"]["functionality"] for _, d in packed}) == 34
    for language, code in codes.items():
        mine = [(t, d) for t, d in packed if d["aux"]["language"] == language]
        assert len(mine) == counts[language]["rows"], language
        assert sum(d["labels"]["abuse_hate"] for _, d in mine) == counts[language]["hateful"], language
        assert len({d["aux"]["functionality"] for _, d in mine}) == counts[language]["functionalities"], language
        assert sum(d["labels"]["target_type"] == "none" for _, d in mine) == counts[language]["no_target"], language
        assert all(t.endswith(f"<lang={code}>") and d["lang"] == code for t, d in mine), language
    # The release's cases with outer spaces are packed stripped (and, as every caption, with runs of
    # whitespace inside made one space).
    spaced = {}
    for path in sorted(MHC.glob("hatecheck_cases_final_*.csv")):
        with open(path, encoding="utf-8", newline="") as handle:
            spaced.update({f"mhc_{r['mhc_case_id']}": r["test_case"] for r in csv.DictReader(handle)
                           if r["test_case"] != r["test_case"].strip()})  # fmt: skip
    assert len(spaced) == 157 + 155 + 29 + 15 + 11 + 7
    texts = {d["id"]: t for t, d in packed}
    for case_id, case in spaced.items():
        assert f"[CAP] {' '.join(case.split())} [/CAP]" in texts[case_id], case_id
    by_language = ws.stats["diagnostics"]["by_language"]
    assert {lang: e["cases"] for lang, e in by_language.items()} == {c: counts[n]["rows"] for n, c in codes.items()}
    assert ws.stats["diagnostics"]["functionalities"] == 34
