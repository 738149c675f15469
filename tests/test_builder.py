"""The manifest as the users' own Step-2 builder writes it (INPUTS.md section 1b): bare labels,
null labels, the builder's split names. Every row ends packed, dropped or failed with its reason;
no single row stops a run."""

from __future__ import annotations

import json

import pytest
from conftest import MAMI, MAMI_NOT, Workspace, tiny_png

ANNOTATORS_HATE = [
    {"label": "hatespeech", "annotator_id": 1, "target": ["African"]},
    {"label": "hatespeech", "annotator_id": 2, "target": ["African", "Women"]},
    {"label": "offensive", "annotator_id": 3, "target": ["None"]},
]
ANNOTATORS_NORMAL = [
    {"label": "normal", "annotator_id": 4, "target": ["None"]},
    {"label": "normal", "annotator_id": 5, "target": ["None"]},
    {"label": "offensive", "annotator_id": 6, "target": ["Women"]},
]
UNDECIDED = [
    {"label": "hatespeech", "annotator_id": 1, "target": ["Arab"]},
    {"label": "offensive", "annotator_id": 2, "target": ["None"]},
    {"label": "normal", "annotator_id": 3, "target": ["None"]},
]


def labels_of(ws: Workspace) -> dict[str, dict]:
    """id -> the packed sample's .json, read from the shards with webdataset."""
    import webdataset as wds

    out = {}
    for tar in sorted((ws.out / "shards").rglob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            doc = json.loads(sample["json"])
            out[doc["id"]] = doc
    return out


def test_bare_and_null_labels_pack(ws):
    """The builder's documented example line packs as it is, beside the original object form."""
    a = ws.add("hateful_memes_train_42953", "hateful_memes", "train", 0, ws.image("42953.png", colour=(1, 2, 3)))
    a["text_raw"] = "its their character not their color that matters"
    ws.add("hateful_memes_train_1", "hateful_memes", "train", 1, ws.image("1.png", colour=(9, 2, 3)))
    ws.add("hateful_memes_train_2", "hateful_memes", "train", {"label": 1, "gold_pc": ["race"]}, ws.image("2.png"))
    ws.add("hateful_memes_test_3", "hateful_memes", "test", None, ws.image("3.png", colour=(5, 5, 5)))
    ws.add("hatexplain_1", "hatexplain", "train", ANNOTATORS_HATE, text="a post")
    ws.add("hatexplain_2", "hatexplain", "val", ANNOTATORS_NORMAL, text="another post")
    ws.add("hatexplain_3", "hatexplain", "unsplit", UNDECIDED, text="undecided post")
    ws.add("hatexplain_4", "hatexplain", "test", {"annotators": ANNOTATORS_NORMAL}, text="object form")
    ws.add("mami_test_9.jpg", "mami", "test", None, ws.image("m9.jpg", colour=(7, 70, 7)))
    row = ws.add("mami_test_10.jpg", "mami", "test", MAMI, ws.image("m10.jpg", colour=(7, 7, 70)))
    del row["labels_raw"]  # absent, like null
    ws.add("olid_test_1", "olid", "test", {"subtask_a": "OFF"}, text="@USER you")
    ws.add("olid_test_2", "olid", "test", None, text="@USER unlabelled")
    assert ws.run() == 0
    stats = ws.stats
    assert (stats["packed_examples"], stats["dropped_examples"], stats["failed_examples"]) == (7, 5, 0)
    docs = labels_of(ws)
    assert docs["hateful_memes_train_42953"]["labels"]["abuse_hate"] == 0
    assert docs["hateful_memes_train_1"]["labels"]["abuse_hate"] == 1
    assert docs["hateful_memes_train_2"]["labels"] == {
        "abuse_hate": 1,
        "offensive": None,
        "target_type": "group",
        "target_group": ["race"],
    }
    assert docs["hatexplain_1"]["labels"] == {
        "abuse_hate": 1,
        "offensive": 1,
        "target_type": "group",
        "target_group": ["black"],
    }
    assert docs["hatexplain_2"]["labels"]["target_type"] == "none"
    assert docs["hatexplain_4"]["split"] == "test"
    reasons = {f["id"]: (f["status"], f["reason"]) for f in ws.failures()}
    assert reasons == {
        "hateful_memes_test_3": ("dropped", "unlabelled"),
        "hatexplain_3": ("dropped", "undecided"),
        "mami_test_9.jpg": ("dropped", "unlabelled"),
        "mami_test_10.jpg": ("dropped", "unlabelled"),
        "olid_test_2": ("dropped", "unlabelled"),
    }
    assert docs["olid_test_1"]["labels"] == {
        "abuse_hate": None,
        "offensive": 1,
        "target_type": None,
        "target_group": None,
    }


def test_keep_unlabelled_packs_null_labels_as_null(ws):
    """A null labels_raw says nothing: kept, its every label is null (MAMI's rules would otherwise
    read a missing `misogynous` as 'none')."""
    ws.add("mami_test_1.jpg", "mami", "test", None, ws.image("m1.jpg"))
    ws.add("mami_test_2.jpg", "mami", "test", MAMI_NOT, ws.image("m2.jpg", colour=(1, 1, 1)))
    assert ws.run("--keep-unlabelled") == 0
    docs = labels_of(ws)
    assert docs["mami_test_1.jpg"]["labels"] == dict.fromkeys(
        ("abuse_hate", "offensive", "target_type", "target_group")
    )
    assert docs["mami_test_2.jpg"]["labels"]["target_type"] == "none"


@pytest.mark.parametrize(
    ("dataset", "value", "reason"),
    [
        ("hateful_memes", 2, "unmapped label hateful_memes.label: '2'"),
        ("hateful_memes", "yes", "unmapped label hateful_memes.label: 'yes'"),
        ("hateful_memes", [0], "unmapped label hateful_memes.label: '[0]'"),
        ("mami", 1, "labels_raw: a bare value '1' where dataset mami needs an object of its fields"),
        ("hatexplain", [1, 2], "unreadable labels_raw.annotators: [1,2]"),
        ("hatexplain", "hatespeech", "labels_raw: a bare value 'hatespeech' where dataset hatexplain needs a list"),
    ],
)
def test_a_bare_value_the_rules_cannot_read_fails_its_row_alone(ws, dataset, value, reason):
    ws.add(f"{dataset}_train_bad", dataset, "train", value, ws.image("bad.jpg", colour=(3, 4, 5)))
    ws.add("mami_train_ok", "mami", "train", MAMI, ws.image("ok.jpg", colour=(200, 1, 1)))
    assert ws.run() == 1
    failed = [f for f in ws.failures() if f["status"] == "failed"]
    assert [f["id"] for f in failed] == [f"{dataset}_train_bad"]
    assert failed[0]["reason"].startswith(reason) or reason in failed[0]["reason"], failed[0]["reason"]
    assert ws.stats["packed_examples"] == 1


def test_what_still_stops_a_run(ws, capsys):
    """Exit 2 stays for what makes the file unreadable: a missing dataset, named by line and field."""
    ws.add("olid_train_1", "olid", "train", None, text="x")
    ws.rows.append({"id": "olid_train_2", "split": "train", "labels_raw": 0})
    assert ws.run() == 2
    err = capsys.readouterr().err
    assert "line 2: field 'dataset': missing (required)" in err
    assert not (ws.out / "stats.json").exists()


def test_the_builders_split_names(ws, capsys):
    """Hateful Memes' Kaggle dev/test; `unsplit` and null assigned 80/10/10; memotion1 with `train`
    on every row assigned 80/10/10; each mapping said in stats.json and on the console."""
    for i in range(10):
        ws.add(f"hateful_memes_dev_{i}", "hateful_memes", "dev", i % 2, tiny_png(ws.images / f"hm_dev{i}.png"), f"d{i}")
        ws.add(f"hateful_memes_test_{i}", "hateful_memes", "test", None, tiny_png(ws.images / f"hm_t{i}.png"))
    offensive = ["not_offensive", "slight", "very_offensive", "hateful_offensive"]
    for i in range(400):
        labels = {
            "humour": "funny",
            "sarcasm": "general",
            "offensive": offensive[i % 4],
            "motivational": "not_motivational",
            "overall_sentiment": "positive",
        }
        ws.add(f"memotion1_img_{i}.jpg", "memotion1", "train", labels, tiny_png(ws.images / f"mo{i}.png"), f"m{i}")
    for i in range(300):
        split = "unsplit" if i % 2 else None
        ws.add(f"hatexplain_u{i}", "hatexplain", split, ANNOTATORS_HATE if i % 3 else ANNOTATORS_NORMAL, text=f"p {i}")
    assert ws.run() == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    stats = ws.stats
    mapping = stats["split_mapping"]
    assert mapping["hateful_memes"]["dev"] == {
        "to": "val",
        "rows": 10,
        "packed": {"val": 10},
        "dropped": {},
        "failed": {},
    }
    assert mapping["hateful_memes"]["test"] == {
        "to": "test",
        "rows": 10,
        "packed": {},
        "dropped": {"unlabelled": 10},
        "failed": {},
    }
    memotion = mapping["memotion1"]["train"]
    assert memotion["to"] == "assigned 80/10/10" and memotion["rows"] == 400
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(memotion["packed"][split] / 400 - share) <= 0.03, memotion
    hatexplain = mapping["hatexplain"]
    assert set(hatexplain) == {"null", "unsplit"}
    assert {v["to"] for v in hatexplain.values()} == {"assigned 80/10/10"}
    assigned = {
        s: hatexplain["null"]["packed"].get(s, 0) + hatexplain["unsplit"]["packed"].get(s, 0)
        for s in "train val test".split()
    }
    assert sum(assigned.values()) == 300
    assert all(abs(assigned[s] / 300 - r) <= 0.03 for s, r in (("train", 0.8), ("val", 0.1), ("test", 0.1))), assigned
    assert "  memotion1      train -> assigned 80/10/10: 400 rows, 400 packed (train " in out
    assert "  hateful_memes  test -> test: 10 rows, 0 packed, 10 dropped (unlabelled 10)" in out
    assert all(stats["checks"].values())
    html = (ws.out / "report.html").read_text()
    assert 'id="split-mapping"' in html and "assigned 80/10/10" in html


def test_memotion1_with_its_test_rows_keeps_train_carve_and_test(ws):
    for i in range(40):
        split = "test" if i < 10 else "train"
        labels = {"offensive": "not_offensive" if i % 2 else "hateful_offensive"} if split == "train" else None
        ws.add(f"memotion1_{split}_{i}.jpg", "memotion1", split, labels, tiny_png(ws.images / f"m{i}.png"), f"t{i}")
    assert ws.run() == 0
    mapping = ws.stats["split_mapping"]["memotion1"]
    assert mapping["train"]["to"] == "train + carved val (10%)"
    assert mapping["test"]["to"] == "test" and mapping["test"]["dropped"] == {"unlabelled": 10}


def test_an_unknown_split_fails_its_row_and_says_which_names_are_known(ws):
    ws.add("olid_x_1", "olid", "validation", {"subtask_a": "NOT"}, text="a")
    ws.add("olid_train_1", "olid", "train", {"subtask_a": "NOT"}, text="b")
    assert ws.run() == 1
    (failure,) = ws.failures()
    assert failure["reason"] == (
        "unknown split 'validation' for dataset olid; known splits test, train, unsplit (or null)"
    )
    assert ws.stats["split_mapping"]["olid"]["validation"]["to"] == "no split"


def test_a_row_packer_assigns_follows_its_groups_dataset_split(ws):
    """An unsplit HateXplain post whose text is also a test post goes to test with it (TAXONOMY.md:
    rows that share a text go to one split), whatever its hash says."""
    for i in range(40):
        ws.add(f"hatexplain_t{i}", "hatexplain", "test", ANNOTATORS_NORMAL, text=f"shared post {i}")
        ws.add(f"hatexplain_u{i}", "hatexplain", "unsplit", ANNOTATORS_NORMAL, text=f"shared  Post {i}")
    assert ws.run() == 0
    docs = labels_of(ws)
    assert {docs[f"hatexplain_u{i}"]["split"] for i in range(40)} == {"test"}
    assert ws.stats["split_mapping"]["hatexplain"]["unsplit"]["joined_their_groups_split"] == 40
    assert ws.stats["leakage"]["texts_in_two_splits"] == 0


def without_hatemm() -> dict:
    """The default label_taxonomy.json of the version before videos: the current one less HateMM
    (and less Multilingual HateCheck, which came later still)."""
    from packer.config import default_taxonomy_text

    doc = json.loads(default_taxonomy_text())
    doc["datasets"].pop("hatemm")
    doc["datasets"].pop("mhc")
    return doc


def previous_default() -> bytes:
    """The default label_taxonomy.json of the version before the builder's shapes were read: the
    current one less HateMM, `bare_labels`, `assign_when_missing` and Hateful Memes' dev/test."""
    doc = without_hatemm()
    for block in doc["datasets"].values():
        block.pop("bare_labels", None)
        block.pop("assign_when_missing", None)
    hm = doc["datasets"]["hateful_memes"]["splits"]
    hm["val"].remove("dev")
    hm["test"].remove("test")
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()


def test_an_unedited_older_default_taxonomy_is_replaced_an_edited_one_kept(ws, capsys):
    """`make pilot` over an older sample: its Step_3/label_taxonomy.json is the older default,
    which would fail the builder's bare labels; packer wrote it and nobody edited it, so it is
    replaced. A file a user edited is the user's: read as it is, never rewritten."""
    from packer.config import default_taxonomy_text, is_former_default

    old = previous_default()
    assert is_former_default(old) and not is_former_default(default_taxonomy_text().encode())
    # The default before Multilingual HateCheck is a former default too.
    before_mhc = json.loads(default_taxonomy_text())
    before_mhc["datasets"].pop("mhc")
    assert is_former_default((json.dumps(before_mhc, indent=1, ensure_ascii=False) + "\n").encode())
    # The default before videos (HateMM) is a former default too.
    assert is_former_default((json.dumps(without_hatemm(), indent=1, ensure_ascii=False) + "\n").encode())
    ws.out.mkdir(parents=True)
    (ws.out / "label_taxonomy.json").write_bytes(old)
    ws.add("hateful_memes_train_1", "hateful_memes", "train", 1, ws.image("1.png"))
    assert ws.run() == 0
    assert (ws.out / "label_taxonomy.json").read_text() == default_taxonomy_text()
    assert "is an earlier packer's default, unedited: replaced" in capsys.readouterr().err

    edited = old.replace(b'"version": 1', b'"version": 1, "note": "mine"')
    (ws.out / "label_taxonomy.json").write_bytes(edited)
    assert ws.run() == 1  # the edited file has no bare_labels: the row fails, with the fix named
    assert (ws.out / "label_taxonomy.json").read_bytes() == edited
    (failure,) = ws.failures()
    assert "names no bare_labels field" in failure["reason"]


def test_the_readmes_mapping_lines_are_the_pilots(pilot):
    """The split-mapping lines the README shows are what `make pilot` prints for the built-in sample."""
    from conftest import doc_blocks

    from packer.report.stats import mapping_lines

    (block,) = [b for b in doc_blocks("text") if "dev -> val" in b]
    printed = mapping_lines(json.loads((pilot / "stats.json").read_text())["split_mapping"])
    assert block.splitlines() and all(line in printed for line in block.splitlines()), printed
