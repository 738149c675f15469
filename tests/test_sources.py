"""Raw adapters on files in each release's documented format, then packed by packer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_jpeg, summed

from packer.sources import Options, SourceError, convert
from packer.sources import main as sources_main


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def pack(ws, *converted, images: bool = True, exit_code: int = 0) -> dict:
    """Pack the adapters' rows (and OCR) in the workspace; create the image files they name."""
    for result in converted:
        ws.rows += result.rows
        ws.ocr_rows += result.ocr
    if images:
        for row in ws.rows:
            if row["image_path"] and not Path(row["image_path"]).exists():
                make_jpeg(Path(row["image_path"]), size=(40, 30), colour=(len(row["id"]) * 7 % 255, 90, 20))
    assert ws.run("--include-diagnostics") == exit_code
    return ws.stats


# -- Hateful Memes ------------------------------------------------------------
def test_hateful_memes_integer_and_padded_ids_and_fine_grained_merge(tmp_path, ws):
    raw = tmp_path / "hm"
    write(
        raw / "train.jsonl",
        '{"id":8291,"img":"img\\/08291.png","label":1,"text":"a in train"}\n'
        '{"id": "01235", "img": "img/01235.png", "label": 0, "text": "b"}\n',
    )
    write(raw / "dev_seen.jsonl", '{"id":8291,"img":"img\\/08291.png","label":1,"text":"a"}\n')
    write(raw / "dev_unseen.jsonl", '{"id": "08291", "img": "img/08291.png", "label": 1, "text": "a"}\n')
    write(raw / "test_seen.jsonl", '{"id":77,"img":"img\\/00077.png","text":"unlabelled"}\n')
    fine = tmp_path / "fine"
    write(
        fine / "train.json",
        '{"id":8291,"set_name":"train","img":"img/08291.png","text":"a",'
        '"gold_hate":["not_hateful"],"gold_pc":["race"],"gold_attack":["mocking"],"pc":"None","attack":"None"}\n'
        '{"id":1235,"gold_hate":["not_hateful"],"gold_pc":["pc_empty"],"gold_attack":["attack_empty"]}\n',
    )
    result = convert("hateful_memes", raw, [raw], Options(fine_grained=fine))
    ids = [r["id"] for r in result.rows]
    assert ids == [
        "hateful_memes_train_08291",
        "hateful_memes_train_01235",
        "hateful_memes_dev_seen_08291",
        "hateful_memes_dev_unseen_08291",
        "hateful_memes_test_seen_00077",
    ]
    first = result.rows[0]
    assert first["labels_raw"] == {
        "label": 1,
        "gold_hate": ["not_hateful"],
        "gold_pc": ["race"],
        "gold_attack": ["mocking"],
        "pc": "None",
        "attack": "None",
    }
    assert first["image_path"] == str((raw / "img" / "08291.png").resolve())
    assert result.rows[4]["labels_raw"] == {}
    stats = pack(ws, result)
    hm = stats["datasets"]["hateful_memes"]
    # dev_seen and dev_unseen hold the same meme: packed once, in the first of them.
    assert stats["reasons"]["dropped"] == {"duplicate": 1, "unlabelled": 1}
    assert hm["counts"] == {"gold_hate_disagrees_with_label": {"train": 1}}
    assert summed(stats, "hateful_memes", "abuse_hate") == {"0": 1, "1": 2}  # the base label wins
    assert summed(stats, "hateful_memes", "target_group") == {"race": 1, "[]": 1, "null": 1}


# -- MAMI ---------------------------------------------------------------------
MAMI_HEADER = "file_name\tmisogynous\tshaming\tstereotype\tobjectification\tviolence\tText Transcription\n"


def test_mami_bom_tabs_quotes_and_test_labels_in_a_headerless_file(tmp_path, ws):
    raw = tmp_path / "mami"
    write(
        raw / "TRAINING" / "training.csv",
        "\ufeff" + MAMI_HEADER + '1.jpg\t0\t0\t0\t0\t1\t"Quote" - said he\n'
        "2.jpg\t1\t0\t1\t0\t0\tWOMEN IN THE KITCHEN\n",
    )
    write(raw / "test" / "Test.csv", "file_name\tText Transcription\n15236.jpg\tSINGLES GROUPS\n15805.jpg\tDAIRY?\n")
    write(raw / "test_labels.txt", "15236.jpg\t0\t0\t0\t0\t0\r\n15805.jpg\t1\t0\t1\t1\t0\r\n")
    result = convert("mami", raw)
    assert [r["id"] for r in result.rows] == [
        "mami_train_1.jpg",
        "mami_train_2.jpg",
        "mami_test_15236.jpg",
        "mami_test_15805.jpg",
    ]
    assert result.rows[0]["text_raw"] == '"Quote" - said he'  # unquoted TSV: quotes are text
    assert result.rows[0]["image_path"] == str((raw / "TRAINING" / "1.jpg").resolve())
    assert result.rows[3]["labels_raw"] == {
        "misogynous": 1,
        "shaming": 0,
        "stereotype": 1,
        "objectification": 1,
        "violence": 0,
    }
    assert result.rows[3]["text_raw"] == "DAIRY?"
    stats = pack(ws, result)
    assert stats["datasets"]["mami"]["counts"] == {"sub_type_but_not_misogynous": {"train": 1}}
    assert stats["packed_examples"] == 4


def test_mami_test_labels_under_renamed_columns(tmp_path):
    raw = tmp_path / "mami"
    write(raw / "training.csv", MAMI_HEADER + "1.jpg\t0\t0\t0\t0\t0\tx\n")
    write(
        raw / "tib_split" / "test.tsv",
        "file_name\tlabel\tshaming\tstereotype\tobjectification\tviolence\ttext\n"
        "15805.jpg\t1\t0\t1\t1\t0\tSO, IF YOU'RE A FEMINIST\n",
    )
    rows = convert("mami", raw).rows
    assert rows[1]["labels_raw"]["misogynous"] == 1 and rows[1]["text_raw"] == "SO, IF YOU'RE A FEMINIST"


def test_mami_missing_column_and_short_row_name_file_and_line(tmp_path):
    raw = tmp_path / "mami"
    path = write(raw / "training.csv", "file_name\tmisogynous\tText Transcription\n1.jpg\t0\tx\n")
    with pytest.raises(SourceError, match=rf"{path}: line 1: missing column\(s\) \['shaming'"):
        convert("mami", raw)
    write(raw / "training.csv", MAMI_HEADER + "1.jpg\t0\t0\t0\t0\t0\tx\n2.jpg\t1\t0\n")
    with pytest.raises(SourceError, match=r"training.csv: line 3: 3 fields where the header has 7"):
        convert("mami", raw)


# -- MMHS150K -----------------------------------------------------------------
def test_mmhs150k_gt_splits_and_img_txt_as_ocr(tmp_path, ws):
    raw = tmp_path / "MMHS150K"
    gt = {
        "1114679353714016256": {
            "img_url": "u",
            "labels": [4, 1, 3],
            "tweet_text": "@x no majority",
            "labels_str": ["Religion", "Racist", "Homophobe"],
        },
        "1063020048816660480": {
            "img_url": "u",
            "labels": [2, 2, 0],
            "tweet_text": "sexist",
            "labels_str": ["Sexist", "Sexist", "NotHate"],
        },
        "1108927368075374593": {
            "img_url": "u",
            "labels": [0, 0, 0],
            "tweet_text": "fine",
            "labels_str": ["NotHate"] * 3,
        },
    }
    write(raw / "MMHS150K_GT.json", json.dumps(gt))
    write(raw / "splits" / "train_ids.txt", "1114679353714016256\n1063020048816660480\n")
    write(raw / "splits" / "test_ids.txt", "1108927368075374593\n")
    write(raw / "img_txt" / "1063020048816660480.json", '{"img_text": "GET BACK TO THE KITCHEN"}')
    for tweet in gt:
        make_jpeg(raw / "img_resized" / f"{tweet}.jpg", size=(50, 50))
    result = convert("mmhs150k", raw)
    assert [r["split"] for r in result.rows] == ["train", "train", "test"]
    assert result.ocr == [
        {
            "id": "mmhs150k_train_1063020048816660480",
            "dataset": "mmhs150k",
            "split": "train",
            "image_path": str((raw / "img_resized" / "1063020048816660480.jpg").resolve()),
            "ocr": {"lines": [{"text": "GET BACK TO THE KITCHEN"}]},
        }
    ]
    stats = pack(ws, result)
    assert stats["ocr"]["with_ocr"] == 1
    assert summed(stats, "mmhs150k", "abuse_hate") == {"1": 2, "0": 1}
    assert summed(stats, "mmhs150k", "target_group") == {"null": 1, "gender": 1, "[]": 1}


def test_command_line_writes_manifest_and_ocr(tmp_path, capsys):
    raw = tmp_path / "MMHS150K"
    write(raw / "MMHS150K_GT.json", json.dumps({"1": {"labels": [0, 0, 0], "tweet_text": "t"}}))
    write(raw / "img_txt" / "1.json", '{"img_text": "top text"}')
    out = tmp_path / "Step_2" / "data_manifest.jsonl"
    assert sources_main(["mmhs150k", str(raw), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ocr = [json.loads(line) for line in (out.parent / "ocr.jsonl").read_text().splitlines()]
    assert rows[0]["id"] == "mmhs150k_nosplit_1" and rows[0]["split"] is None
    assert ocr[0]["ocr"]["lines"][0]["text"] == "top text"
    assert "1 of 1 image files not found" in capsys.readouterr().err
    write(raw / "MMHS150K_GT.json", '{"1": {"labels": [0, 0, 0]}\n, oops}')
    assert sources_main(["mmhs150k", str(raw), "-o", str(out)]) == 2
    assert "MMHS150K_GT.json: line 2: not valid JSON" in capsys.readouterr().err


# -- Memotion -----------------------------------------------------------------
def test_memotion1_kaggle_labels_case_variants_repeats_and_corrupted_cell(tmp_path, ws):
    raw = tmp_path / "memotion_dataset_7k"
    write(
        raw / "labels.csv",
        ",image_name,text_ocr,text_corrected,humour,sarcasm,offensive,motivational,overall_sentiment\n"
        "0,image_1.jpg,LOOK THERE,LOOK THERE MY FRIEND,Hilarious , general,Not_Offensive,not_motivational,"
        "very_positive\n"
        "1,image_2.jpeg,ocr only,,funny,general,Hateful_Offensive,motivational,negative\n"
        "2,image_2.jpeg,ocr only,,funny,general,Hateful_Offensive,motivational,negative\n"
        '3,image_3.png,"a, b",a b,funny,general,slight,not_motivational,positivechandler_Friday-Mood.jpg\n',
    )
    write(raw / "2000_testdata.csv", "Image_name,Image_URL,OCR_extracted_text,corrected_text\nt_1.jpg,u,x,y\n")
    result = convert("memotion1", raw)
    assert [r["id"] for r in result.rows] == [
        "memotion1_train_image_1.jpg",
        "memotion1_train_image_2.jpeg",
        "memotion1_train_image_2.jpeg#2",
        "memotion1_train_image_3.png",
        "memotion1_test_t_1.jpg",
    ]
    assert result.rows[0]["text_raw"] == "LOOK THERE MY FRIEND" and result.rows[1]["text_raw"] == "ocr only"
    assert result.rows[0]["labels_raw"]["humour"] == "Hilarious "
    assert result.rows[0]["image_path"] == str((raw / "images" / "image_1.jpg").resolve())
    stats = pack(ws, result, exit_code=1)  # 1 failed of 5 is over the 0.5% failure budget
    assert (stats["packed_examples"], stats["dropped_examples"], stats["failed_examples"]) == (2, 2, 1)
    assert stats["reasons"]["dropped"] == {"duplicate": 1, "unlabelled": 1}
    failure = [f for f in ws.failures() if f["status"] == "failed"][0]
    assert failure["id"] == "memotion1_train_image_3.png"
    assert "overall_sentiment" in failure["reason"] and "positivechandler_friday_mood.jpg" in failure["reason"]
    assert summed(stats, "memotion1", "abuse_hate") == {"0": 1, "1": 1}


def test_memotion2_train_and_val(tmp_path, ws):
    raw = tmp_path / "memotion2"
    header = "Id,ocr_text,humour,sarcastic,offensive,motivational,overall_sentiment\n"
    write(raw / "memotion_train.csv", header + "10,HELLO,funny,little_sarcastic,slight,not_motivational,positive\n")
    write(raw / "memotion_val.csv", header + "11,BYE,not_funny,not_sarcastic,not_offensive,motivational,negative\n")
    result = convert("memotion2", raw)
    assert [(r["id"], r["split"]) for r in result.rows] == [
        ("memotion2_train_10", "train"),
        ("memotion2_val_11", "val"),
    ]
    assert result.rows[0]["image_path"].endswith("/memotion2/images/10.jpg")
    stats = pack(ws, result)
    assert summed(stats, "memotion2", "offensive") == {"0": 1, "1": 1}


# -- HateXplain ---------------------------------------------------------------
def annotator(label, *targets):
    return {"label": label, "annotator_id": 1, "target": list(targets)}


def test_hatexplain_divisions_undecided_and_other_targets(tmp_path, ws):
    raw = tmp_path / "Data"
    posts = {
        "1_gab": {
            "post_id": "1_gab",
            "annotators": [
                annotator("hatespeech", "Gay", "Martians"),
                annotator("hatespeech", "Gay", "Martians"),
                annotator("offensive", "None"),
            ],
            "rationales": [[0, 1]],
            "post_tokens": ["some", "post"],
        },
        "2_twitter": {
            "post_id": "2_twitter",
            "annotators": [
                annotator("normal", "None"),
                annotator("offensive", "Women"),
                annotator("hatespeech", "Women"),
            ],
            "rationales": [],
            "post_tokens": ["undecided", "one"],
        },
    }
    write(raw / "dataset.json", json.dumps(posts))
    write(raw / "post_id_divisions.json", json.dumps({"train": ["1_gab"], "val": [], "test": []}))
    result = convert("hatexplain", raw)
    assert [(r["id"], r["split"], r["text_raw"]) for r in result.rows] == [
        ("hatexplain_train_1_gab", "train", "some post"),
        ("hatexplain_nosplit_2_twitter", None, "undecided one"),
    ]
    stats = pack(ws, result)
    assert stats["reasons"]["dropped"] == {"undecided": 1}
    assert stats["datasets"]["hatexplain"]["other_targets"] == {"Martians": 1}
    assert summed(stats, "hatexplain", "target_group") == {"lgbtq": 1, "other": 1}


# -- OLID and HateCheck -------------------------------------------------------
def test_olid_test_labels_with_cr_line_ends_and_null(tmp_path, ws):
    raw = tmp_path / "olid"
    write(
        raw / "olid-training-v1.0.tsv",
        "id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c\r\n"
        '86426\t@USER "She" should ask\tOFF\tUNT\tNULL\r\n90194\t@USER Go home\tOFF\tTIN\tIND\r\n',
    )
    write(raw / "testset-levela.tsv", "id\ttweet\r\n15923\t#WhoIsQ\r\n27014\t#ConstitutionDay\r\n")
    write(raw / "labels-levela.csv", "id,label\r15923,OFF\r\n27014,NOT\r")
    write(raw / "labels-levelb.csv", "15923,TIN\r\n")
    write(raw / "labels-levelc.csv", "id,label\n15923,GRP\n")
    result = convert("olid", raw)
    assert result.rows[0]["text_raw"] == '@USER "She" should ask'
    assert result.rows[2]["labels_raw"] == {"subtask_a": "OFF", "subtask_b": "TIN", "subtask_c": "GRP"}
    assert result.rows[3]["labels_raw"] == {"subtask_a": "NOT", "subtask_b": "NULL", "subtask_c": "NULL"}
    stats = pack(ws, result)
    assert stats["labels"]["test"]["olid"]["target_type"] == {"group": 1, "none": 1}
    assert summed(stats, "olid", "target_type") == {"group": 1, "individual": 1, "none": 2}


def test_hatecheck_cases_go_to_diagnostics(tmp_path, ws):
    raw = tmp_path / "hatecheck"
    write(
        raw / "test_suite_cases.csv",
        ",functionality,case_id,test_case,label_gold,target_ident,direction,focus_words\r\n"
        "0,derog_neg_emote_h,1,I hate women. ,hateful,women,general,hate\r\n"
        '1,ident_neutral_nh,2,"We are Muslims, proud.",non-hateful,Muslims,general,\r\n'
        "2,spell_char_del_h,3,I h ate them,non-hateful,,general,\r\n",
    )
    result = convert("hatecheck", raw)
    assert result.rows[1]["text_raw"] == "We are Muslims, proud."
    assert result.rows[2]["labels_raw"]["target_ident"] is None and result.rows[0]["labels_raw"]["case_id"] == 1
    stats = pack(ws, result)
    assert stats["labels"]["diagnostics"]["hatecheck"]["target_group"] == {"women": 1, "muslim": 1, "[]": 1}


def test_bad_json_line_in_a_release_file_names_file_and_line(tmp_path):
    raw = tmp_path / "hm"
    write(raw / "train.jsonl", '{"id": 1, "img": "img/00001.png", "label": 0, "text": "a"}\n{"id": 2, "img"\n')
    with pytest.raises(SourceError, match=r"train.jsonl: line 2: not valid JSON"):
        convert("hateful_memes", raw)
    write(raw / "train.jsonl", '{"id": "x1", "img": "img/00001.png"}\n')
    with pytest.raises(SourceError, match=r"train.jsonl: line 1: field 'id': expected an integer id"):
        convert("hateful_memes", raw)


def test_written_manifest_is_what_packer_reads(tmp_path):
    raw = tmp_path / "hatecheck"
    write(
        raw / "test_suite_cases.csv",
        "functionality,case_id,test_case,label_gold,target_ident,direction\nf,7,text,hateful,women,general\n",
    )
    out = tmp_path / "m.jsonl"
    assert sources_main(["hatecheck", str(raw), "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == {
        "id": "hatecheck_test_7",
        "dataset": "hatecheck",
        "split": "test",
        "image_path": None,
        "text_raw": "text",
        "labels_raw": {
            "functionality": "f",
            "case_id": 7,
            "label_gold": "hateful",
            "target_ident": "women",
            "direction": "general",
        },
    }


def test_mami_train_and_test_images_with_the_same_name_stay_apart(tmp_path):
    raw = tmp_path / "mami"
    write(raw / "TRAINING" / "training.csv", MAMI_HEADER + "15001.jpg\t0\t0\t0\t0\t0\tTHE CAMEL IS SLEEPING\n")
    write(raw / "test" / "Test.csv", "file_name\tText Transcription\n15001.jpg\tUNDYING FIDELITY\n")
    train_image = make_jpeg(raw / "TRAINING" / "15001.jpg", colour=(1, 2, 3))
    test_image = make_jpeg(raw / "test" / "15001.jpg", colour=(200, 2, 3))
    for images in (None, [raw]):
        rows = convert("mami", raw, images).rows
        assert [r["image_path"] for r in rows] == [str(Path(train_image).resolve()), str(Path(test_image).resolve())]


NINTH = '''"""A toy release: one CSV of (post, text, toxic)."""

from __future__ import annotations

from pathlib import Path

from .common import Converted, Dataset, Images, Options, find_file, manifest_row, read_table


def toxic_posts(raw: Path, images: Images, options: Options) -> Converted:
    table = read_table(find_file(raw, ["posts.csv"], "toxic_posts posts.csv"))
    table.need("post", "text", "toxic")
    return Converted(
        [manifest_row("toxic_posts", "train", r["post"], None, r["text"], {"toxic": r["toxic"]}) for _, r in table.rows]
    )


DATASETS = [Dataset("toxic_posts", toxic_posts)]
'''


def test_a_ninth_dataset_is_one_new_module_and_a_taxonomy_block(tmp_path):
    """In a copy of the package: packer/sources/toxic_posts.py alone makes `python -m packer.sources
    toxic_posts` work, and a taxonomy block makes its examples pack (no other file is edited)."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    shutil.copytree(ROOT / "packer", tmp_path / "code" / "packer", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "code" / "packer" / "sources" / "toxic_posts.py").write_text(NINTH)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "posts.csv").write_text("post,text,toxic\n" + "".join(f"p{i},post number {i},{i % 2}\n" for i in range(40)))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "code")}
    step2 = tmp_path / "Step_2" / "data_manifest.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "packer.sources", "toxic_posts", str(raw), "-o", str(step2)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in step2.read_text().splitlines()]
    assert len(rows) == 40 and rows[1]["id"] == "toxic_posts_train_p1" and rows[1]["labels_raw"] == {"toxic": "1"}
    taxonomy = json.loads((ROOT / "packer" / "data" / "label_taxonomy.json").read_text())
    taxonomy["datasets"]["toxic_posts"] = {
        "raw_fields": {"toxic": "scalar"},
        "splits": {"train": ["train"]},
        "carve_val_from": "train",
        "labels": {
            "abuse_hate": None,
            "offensive": {"field": "toxic", "map": {"0": 0, "1": 1}},
            "target_type": None,
            "target_group": None,
        },
    }
    out = tmp_path / "Step_3"
    out.mkdir()
    (out / "label_taxonomy.json").write_text(json.dumps(taxonomy))
    args = ["--manifest", str(step2), "--output-dir", str(out / "shards")]
    args += ["--label-taxonomy", str(out / "label_taxonomy.json")]
    done = subprocess.run(
        [sys.executable, "-m", "packer", *args, "--splits", str(out / "splits.json"), "--workers", "1"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["packed_examples"] == 40
    # val carved from train (10%, stratified by the mapped labels): 36 + 4.
    assert stats["labels"]["train"]["toxic_posts"]["offensive"] == {"0": 18, "1": 18}
    assert stats["labels"]["val"]["toxic_posts"]["offensive"] == {"0": 2, "1": 2}
