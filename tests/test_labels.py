"""The default taxonomy, compiled to expressions, on small frames: one case per mapping rule."""

from __future__ import annotations

import json

import polars as pl
import pytest

from packer.config import InputError, load_taxonomy, validate_taxonomy
from packer.labels import apply_labels

TAX = load_taxonomy(None)


def unify(dataset: str, labels: dict) -> dict:
    frame = pl.DataFrame({"dataset": [dataset], "labels_raw": [json.dumps(labels)]})
    out = apply_labels(frame, TAX).collect().row(0, named=True)
    out["aux"] = json.loads(out.pop("aux_json")) if out["aux_json"] is not None else None
    return out


def labels_of(out: dict) -> tuple:
    return out["abuse_hate"], out["offensive"], out["target_type"], out["target_group"]


@pytest.mark.parametrize(
    "labels, expected",
    [
        ({"label": 1}, (1, None, None, None)),
        ({"label": 0}, (0, None, None, None)),
        ({"label": 1, "gold_pc": ["race", "sex"], "gold_attack": ["mocking"]}, (1, None, "group", "gender|race")),
        ({"label": 0, "gold_pc": ["pc_empty"]}, (0, None, "none", "")),
        ({}, (None, None, None, None)),
    ],
)
def test_hateful_memes(labels, expected):
    assert labels_of(unify("hateful_memes", labels)) == expected


def test_hateful_memes_aux_attack():
    assert unify("hateful_memes", {"label": 1, "gold_attack": ["mocking", "slurs"]})["aux"] == {
        "attack": ["mocking", "slurs"]
    }


def test_mami_keeps_sub_labels_and_maps_women():
    out = unify("mami", {"misogynous": 1, "shaming": 0, "stereotype": 1, "objectification": 0, "violence": 1})
    assert labels_of(out) == (1, None, "group", "women")
    assert out["aux"] == {"misogyny": {"shaming": 0, "stereotype": 1, "objectification": 0, "violence": 1}}
    out = unify("mami", {"misogynous": 0, "shaming": 1, "stereotype": 0, "objectification": 0, "violence": 0})
    assert labels_of(out) == (0, None, "none", "")
    assert out["aux"]["misogyny"]["shaming"] == 1


@pytest.mark.parametrize(
    "codes, expected",
    [
        ([1, 1, 0], (1, None, "group", "race")),
        ([2, 2, 2], (1, None, "group", "gender")),
        ([1, 2, 0], (1, None, "group", None)),  # hate, but no code named twice
        ([0, 3, 0], (0, None, "none", "")),
        ([4, 5, 4], (1, None, "group", "religion")),
    ],
)
def test_mmhs150k_votes(codes, expected):
    out = unify("mmhs150k", {"labels": codes})
    assert labels_of(out) == expected
    assert out["aux"] == {"annotator_labels": codes}


@pytest.mark.parametrize(
    "value, expected",
    [
        ("not_offensive", (0, 0)),
        ("slight", (None, 1)),
        ("very_offensive", (None, 1)),
        ("hateful_offensive", (1, 1)),
        (" Hateful_Offensive ", (1, 1)),
        ("Not Offensive", (0, 0)),
    ],
)
def test_memotion1_offensive(value, expected):
    out = unify("memotion1", {"offensive": value, "overall_sentiment": "very_positive"})
    assert (out["abuse_hate"], out["offensive"]) == expected
    assert out["target_type"] is None and out["target_group"] is None


def test_memotion1_semeval_column_names_and_aux():
    out = unify(
        "memotion1",
        {
            "Humour": "Very_Funny",
            "Sarcasm": "general",
            "Offensive": "slight",
            "Motivational": "not_motivational",
            "Overall_Sentiment": "very_negative",
        },
    )
    assert out["offensive"] == 1
    assert out["aux"] == {
        "sentiment": "very_negative",
        "sentiment3": "negative",
        "humour": "very_funny",
        "sarcasm": "general",
        "motivational": "not_motivational",
    }
    assert out["label_error"] is None


def test_memotion_corrupted_sentiment_fails_with_reason():
    out = unify("memotion1", {"offensive": "slight", "overall_sentiment": "positivechandler_Friday-Mood-AF.jpg"})
    assert out["label_error"].startswith("unmapped label memotion1.overall_sentiment/Overall_Sentiment")


def test_memotion2():
    out = unify(
        "memotion2",
        {
            "offensive": "hateful_offensive",
            "overall_sentiment": "positive",
            "sarcastic": "very_sarcastic",
            "humour": "funny",
            "motivational": "motivational",
        },
    )
    assert (out["abuse_hate"], out["offensive"]) == (1, 1)
    assert out["aux"]["sentiment3"] == "positive" and out["aux"]["sarcasm"] == "very_sarcastic"


def annotators(*pairs):
    return [{"label": lab, "annotator_id": i, "target": t} for i, (lab, t) in enumerate(pairs)]


def test_hatexplain_majority_and_targets():
    out = unify(
        "hatexplain",
        {
            "annotators": annotators(
                ("hatespeech", ["African", "Women"]), ("hatespeech", ["African"]), ("offensive", ["Women", "Islam"])
            ),
            "post_tokens": ["a", "b"],
            "rationales": [[0, 1], [1, 1]],
        },
    )
    assert labels_of(out) == (1, 1, "group", "black|women")
    assert out["aux"] == {"rationales": [[0, 1], [1, 1]], "post_tokens": ["a", "b"]}
    out = unify(
        "hatexplain",
        {"annotators": annotators(("offensive", ["Homosexual"]), ("offensive", ["Gay"]), ("normal", ["None"]))},
    )
    assert labels_of(out) == (0, 1, None, "")  # Homosexual and Gay are two different names: neither named twice
    out = unify(
        "hatexplain", {"annotators": annotators(("normal", ["None"]), ("normal", ["None"]), ("offensive", ["Men"]))}
    )
    assert labels_of(out) == (0, 0, "none", "")


def test_hatexplain_undecided_is_dropped_and_unknown_target_is_other():
    out = unify(
        "hatexplain",
        {"annotators": annotators(("hatespeech", ["Martians"]), ("offensive", ["Martians"]), ("normal", ["None"]))},
    )
    assert out["label_drop"] == "undecided"
    out = unify(
        "hatexplain",
        {"annotators": annotators(("hatespeech", ["Martians"]), ("hatespeech", ["Martians"]), ("normal", ["None"]))},
    )
    assert out["target_group"] == "other" and out["other_targets"] == ["Martians"]


@pytest.mark.parametrize(
    "a, b, c, expected",
    [
        ("NOT", "NULL", "NULL", (0, 0, "none", "")),
        ("NOT", None, None, (0, 0, "none", "")),
        ("OFF", "UNT", "NULL", (None, 1, "none", None)),
        ("OFF", "TIN", "IND", (None, 1, "individual", None)),
        ("OFF", "TIN", "GRP", (None, 1, "group", None)),
        ("OFF", "TIN", "OTH", (None, 1, "other", None)),
        ("OFF", None, None, (None, 1, None, None)),
    ],
)
def test_olid(a, b, c, expected):
    out = unify("olid", {"subtask_a": a, "subtask_b": b, "subtask_c": c})
    assert labels_of(out) == expected
    assert out["aux"]["subtasks"]["subtask_a"] == a


@pytest.mark.parametrize(
    "gold, ident, expected",
    [
        ("hateful", "trans people", (1, None, "group", "lgbtq")),
        ("hateful", "Muslims", (1, None, "group", "muslim")),
        ("non-hateful", None, (0, None, "none", "")),
        ("hateful", "aliens", (1, None, "group", "other")),
    ],
)
def test_hatecheck(gold, ident, expected):
    out = unify(
        "hatecheck",
        {"label_gold": gold, "target_ident": ident, "functionality": "f", "case_id": 7, "direction": "general"},
    )
    assert labels_of(out) == expected
    assert out["aux"] == {"functionality": "f", "direction": "general", "case_id": 7}


def test_value_outside_mapping_fails_and_unknown_dataset_fails():
    assert unify("mami", {"misogynous": 2})["label_error"] == "unmapped label mami.misogynous: '2'"
    assert unify("olid", {"subtask_a": "MAYBE"})["label_error"] == "unmapped label olid.subtask_a: 'MAYBE'"
    assert "unknown dataset 'reddit'" in unify("reddit", {})["label_error"]


def test_new_dataset_by_taxonomy_block_only():
    doc = json.loads(
        json.dumps(
            {
                "target_vocabulary": ["women", "other"],
                "datasets": {
                    "toy": {
                        "raw_fields": {"hate": "scalar"},
                        "splits": {},
                        "labels": {
                            "abuse_hate": {"field": "hate", "map": {"yes": 1, "no": 0}},
                            "offensive": None,
                            "target_type": None,
                            "target_group": {"field": "hate", "map": {"yes": ["women"], "no": []}},
                        },
                    }
                },
            }
        )
    )
    tax = validate_taxonomy(doc, "toy.json")
    frame = pl.DataFrame({"dataset": ["toy", "toy"], "labels_raw": ['{"hate": "yes"}', '{"hate": "no"}']})
    out = apply_labels(frame, tax).collect()
    assert out["abuse_hate"].to_list() == [1, 0]
    assert out["target_group"].to_list() == ["women", ""]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"labels": {"abuse_hate": {"field": "x", "map": {"a": 2}}}}, "abuse_hate values must be 0, 1 or null"),
        ({"labels": {"target_group": {"field": "x", "map": {"a": ["martians"]}}}}, "not in target_vocabulary"),
        ({"labels": {"abuse_hate": {"field": "undeclared", "map": {"a": 1}}}}, "which raw_fields does not declare"),
        ({"splits": {"dev": ["dev"]}}, "keys must be among"),
    ],
)
def test_inconsistent_taxonomy_is_an_input_error(patch, message):
    block = {
        "raw_fields": {"x": "scalar"},
        "splits": {},
        "labels": {"abuse_hate": None, "offensive": None, "target_type": None, "target_group": None},
    }
    for key, value in patch.items():
        block[key] = {**block[key], **value} if key == "labels" else value
    with pytest.raises(InputError, match=message):
        validate_taxonomy({"target_vocabulary": ["women", "other"], "datasets": {"toy": block}}, "t.json")


def test_fine_grained_none_strings_are_not_labels():
    # The fine-grained release writes per-annotator pc/attack as the string "None"; a copy that
    # does the same for gold_pc must not invent a target either.
    out = unify("hateful_memes", {"label": 1, "gold_pc": "None", "gold_attack": "None", "pc": "None"})
    assert labels_of(out) == (1, None, None, None) and out["label_error"] is None
    assert out["aux"] == {"attack": None}


@pytest.mark.parametrize(
    "dataset, labels, quirks",
    [
        ("hateful_memes", {"label": 1, "gold_hate": ["not_hateful"]}, ["gold_hate_disagrees_with_label"]),
        ("hateful_memes", {"label": 0, "gold_hate": ["hateful"]}, ["gold_hate_disagrees_with_label"]),
        ("hateful_memes", {"label": 1, "gold_hate": ["hateful"]}, []),
        ("hateful_memes", {"label": 1}, []),
        (
            "mami",
            {**dict.fromkeys(["misogynous", "shaming", "stereotype", "objectification"], 0), "violence": 1},
            ["sub_type_but_not_misogynous"],
        ),
        ("mami", {"misogynous": 1, "shaming": 1}, []),
        ("mami", {"misogynous": 0, "shaming": 0}, []),
        ("olid", {"subtask_a": "NOT"}, None),
    ],
)
def test_counted_source_oddities(dataset, labels, quirks):
    out = unify(dataset, labels)
    assert out["quirks"] == quirks
    if dataset == "hateful_memes":
        assert out["abuse_hate"] == labels["label"]  # the base label wins over gold_hate


def test_counts_conditions_are_validated():
    doc = json.loads(
        json.dumps({"version": 1, "target_vocabulary": list(TAX.target_vocabulary), "datasets": TAX.datasets})
    )
    doc["datasets"]["mami"]["counts"] = {"odd": [{"any": [{"field": "nonexistent", "in": ["1"]}]}]}
    with pytest.raises(InputError, match=r"datasets\.mami\.counts\.odd\.any: reads \['nonexistent'\]"):
        validate_taxonomy(doc, "tax.json")


def test_an_odd_list_value_fails_alone_whatever_path_the_part_takes():
    # Every row well formed: the fast typed decode. One row with a lone string where a list belongs:
    # the part takes the field-by-field path, and only that row is affected.
    good = {"label": 1, "gold_pc": ["race", "sex"], "gold_attack": ["mocking"]}
    for odd in ({"label": 1, "gold_pc": "None"}, {"label": 0, "gold_pc": "race"}):
        frame = pl.DataFrame({"dataset": ["hateful_memes"] * 2, "labels_raw": [json.dumps(good), json.dumps(odd)]})
        out = apply_labels(frame, TAX).collect()
        assert out["target_group"][0] == "gender|race" and out["target_type"][0] == "group"
        assert out["target_group"][1] is None and out["label_error"][0] is None
    frame = pl.DataFrame(
        {
            "dataset": ["hatexplain"] * 2,
            "labels_raw": [
                json.dumps({"annotators": [{"label": "normal", "target": ["None"]}] * 3}),
                json.dumps({"annotators": "hatespeech"}),
            ],
        }
    )
    out = apply_labels(frame, TAX).collect()
    assert out["abuse_hate"].to_list() == [0, None] and out["target_type"][0] == "none"


def test_empty_string_is_missing_like_null():
    # A converter that reads a CSV writes "" for an empty cell: HateCheck's untargeted cases.
    out = unify("hatecheck", {"label_gold": "non-hateful", "target_ident": "", "case_id": "7"})
    assert labels_of(out) == (0, None, "none", "") and out["other_targets"] is None
    assert out["aux"]["case_id"] == 7


def test_a_list_field_of_the_wrong_element_shape_fails_only_its_row(ws):
    good = [{"label": "normal", "annotator_id": 1, "target": ["None"]}] * 3
    ws.add("hatexplain_train_1", "hatexplain", "train", {"annotators": good}, text="fine")
    ws.add("hatexplain_train_2", "hatexplain", "train", {"annotators": [False]}, text="odd")
    ws.add("hatexplain_train_3", "hatexplain", "train", {"annotators": [{"label": 7}]}, text="odder")
    ws.add(
        "hatexplain_train_4",
        "hatexplain",
        "train",
        {"annotators": good},
        text="also fine",
        image="/no/such\x00path.jpg",
    )
    assert ws.run("--workers", "1") == 1
    failed = {f["id"]: f["reason"] for f in ws.failures() if f["status"] == "failed"}
    assert failed["hatexplain_train_2"] == "unreadable labels_raw.annotators: [false]"
    assert failed["hatexplain_train_3"] == 'unreadable labels_raw.annotators: [{"label":7}]'
    assert failed["hatexplain_train_4"].startswith("image_corrupt")
    assert ws.stats["packed_examples"] == 1
