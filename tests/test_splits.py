"""Group-aware, stratified, pinned splits, and the leakage audit, on real packed runs."""

from __future__ import annotations

import hashlib
import html
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import MAMI, MAMI_NOT, Workspace
from PIL import Image

from packer.splits import connected_groups


# The tests of the 2,000-row MAMI run share a worker, where its fixture is built once; a run of
# that size (and two more of it in the stability test) is slow for the edit loop.
def ON_MAMI_RUN(test):
    return pytest.mark.slow(pytest.mark.xdist_group(name="splits")(test))


def noise_image(path: Path, seed: str, size: int = 12) -> str:
    """A small image of pseudo-random pixels: distinct bytes and distinct dHash per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size * size * 3 // 32 + 1))
    Image.frombytes("RGB", (size, size), raw[: size * size * 3]).resize((96, 96)).save(path, "PNG")
    return str(path)


def mami_corpus(ws: Workspace, n: int, prefix: str = "m") -> dict[str, list[str]]:
    """n MAMI rows without a split: 30% misogynous, 9% in groups of three sharing one image
    (different texts), 3% exact duplicates of another row (same bytes, text re-cased and re-spaced)."""
    groups: dict[str, list] = {"triples": [], "duplicates": []}
    for i in range(n):
        ident = f"{prefix}{i:05d}"
        labels = MAMI if i % 10 < 3 else MAMI_NOT
        text = f"meme number {ident} says something"
        if i % 100 < 9:  # groups of three consecutive rows share the image of the first
            first = i - i % 100 + (i % 100) // 3 * 3
            image = str(ws.images / f"{prefix}{first:05d}.png")
            if first == i:
                noise_image(Path(image), ident)
                groups["triples"].append([])
            groups["triples"][-1].append(ident)
        else:
            image = noise_image(ws.images / f"{ident}.png", ident)
        ws.add(ident, "mami", None, labels, image=image, text=text)
        if i % 100 in (50, 51, 52):  # 3%: the same meme again, text with other case and spacing
            copy = ws.images / f"{ident}_copy.png"
            shutil.copyfile(image, copy)
            ws.add(
                f"{ident}_dup", "mami", None, labels, image=str(copy), text=f"  MEME number {ident}   SAYS something "
            )
            groups["duplicates"].append(f"{ident}_dup")
    return groups


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules between its tests
def mami_run(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("mami"))
    groups = mami_corpus(ws, 2000)
    assert ws.run("--workers", "2") == 0
    return ws, groups


def split_of(ws: Workspace) -> dict[str, str]:
    """splits.json is {"<id>": split} (OUTPUTS.md)."""
    doc = json.loads((ws.out / "splits.json").read_text())
    assert set(doc.values()) <= {"train", "val", "test"}
    return doc


@ON_MAMI_RUN
def test_each_class_80_10_10_within_3_points(mami_run):
    ws, _ = mami_run
    splits = split_of(ws)
    by_class: dict[str, Counter] = {"pos": Counter(), "neg": Counter()}
    for row in ws.rows:
        if row["id"] in splits:
            by_class["pos" if row["labels_raw"]["misogynous"] else "neg"][splits[row["id"]]] += 1
    for counts in by_class.values():
        total = sum(counts.values())
        shares = {s: 100 * counts[s] / total for s in ("train", "val", "test")}
        assert abs(shares["train"] - 80) <= 3 and abs(shares["val"] - 10) <= 3 and abs(shares["test"] - 10) <= 3
    assert ws.stats["balance"]["ok"] and ws.stats["balance"]["max_deviation_points"] <= 3


@ON_MAMI_RUN
def test_no_image_or_text_in_two_splits_and_duplicates_packed_once(mami_run):
    ws, groups = mami_run
    stats, splits = ws.stats, split_of(ws)
    # Every member of every linked triple is packed (none of them is a duplicate), all in one split.
    assert sum(1 for triple in groups["triples"] for x in triple if x in splits) == 180
    for triple in groups["triples"]:
        assert len({splits[x] for x in triple}) == 1, triple
    assert stats["reasons"]["dropped"] == {"duplicate": 60}
    dropped = {f["id"] for f in ws.failures() if f["reason"] == "duplicate"}
    # One of each pair is dropped: the original or its copy, never both.
    assert all((d in dropped) != (d.removesuffix("_dup") in dropped) for d in groups["duplicates"])
    assert stats["packed_examples"] == 2000
    leak = stats["leakage"]
    assert (leak["images_in_two_splits"], leak["texts_in_two_splits"]) == (0, 0)
    assert stats["checks"]["no_image_or_text_in_two_assigned_splits"]


@ON_MAMI_RUN
def test_same_input_same_splits_and_new_rows_move_no_old_id(mami_run, tmp_path):
    ws, _ = mami_run
    first = (ws.out / "splits.json").read_bytes()
    again = Workspace(tmp_path / "again")
    again.rows = ws.rows
    assert again.run("--workers", "1") == 0
    assert (again.out / "splits.json").read_bytes() == first

    grown = Workspace(tmp_path / "grown")
    grown.rows = list(ws.rows)  # the new rows' images go in its own folder: the run's stays as it is
    old = split_of(ws)
    mami_corpus(grown, 500, prefix="n")  # 25% new rows
    # A new row re-using an old meme's image joins the old meme's split.
    pinned_id = next(i for i in old if i.startswith("m"))
    old_image = next(r["image_path"] for r in ws.rows if r["id"] == pinned_id)
    grown.add("joiner", "mami", None, MAMI_NOT, image=old_image, text="a new caption on an old meme")
    grown.out.mkdir(parents=True)
    shutil.copyfile(ws.out / "splits.json", grown.out / "splits.json")
    assert grown.run("--workers", "2") == 0
    new = split_of(grown)
    assert {i: new[i] for i in old} == old
    assert new["joiner"] == old[pinned_id]
    assert sum(1 for i in new if i.startswith("n") and not i.endswith("_dup")) == 500


def test_connected_groups_follow_shared_images_and_texts_transitively():
    frame = pl.DataFrame(
        {
            "norm_text": ["a", "b", "b", "c", "", ""],
            "image_key": ["x", "x", "y", "y", None, None],
        }
    )
    groups = connected_groups(frame).to_list()
    assert groups[:4] == [0, 0, 0, 0] and groups[4] != groups[5]


def reference_components(texts: list[str], images: list[str | None]) -> list[int]:
    """Union-find, the test's oracle: the smallest row of each row's component."""
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple[str, str], int] = {}
    for row, keys in enumerate(zip(texts, images)):
        for kind, key in zip(("t", "i"), keys):
            if key:
                other = first.setdefault((kind, key), row)
                a, b = find(row), find(other)
                parent[max(a, b)] = min(a, b)
    return [find(r) for r in range(len(texts))]


def chain(n: int) -> tuple[list[str], list[str | None]]:
    """Row k shares its caption with row k+1 when k is even, its image when k is odd: one chain."""
    texts = [f"caption {k // 2 * 2}" if k % 2 == 0 else f"caption {(k - 1) // 2 * 2}" for k in range(n)]
    images = [f"img{(k + 1) // 2}" for k in range(n)]
    return texts, images


@pytest.mark.parametrize("n", [2, 3, 400, 401, 5000])
def test_connected_groups_are_exact_on_long_chains(n):
    texts, images = chain(n)
    shuffled = list(range(n))
    random.Random(n).shuffle(shuffled)  # the chain's order is not the rows' order
    texts, images = [texts[i] for i in shuffled], [images[i] for i in shuffled]
    groups = connected_groups(pl.DataFrame({"norm_text": texts, "image_key": images})).to_list()
    assert groups == reference_components(texts, images) and set(groups) == {0}


def test_connected_groups_are_exact_on_stars_and_random_graphs():
    star_t = ["hub"] * 300 + [f"leaf {k}" for k in range(300)]
    star_i = [f"s{k}" for k in range(300)] * 2
    groups = connected_groups(pl.DataFrame({"norm_text": star_t, "image_key": star_i})).to_list()
    assert set(groups) == {0}
    rng = random.Random(7)
    for size in (50, 500, 3000):
        texts = [f"t{rng.randrange(size)}" if rng.random() < 0.7 else "" for _ in range(size)]
        images = [f"i{rng.randrange(size)}" if rng.random() < 0.7 else None for _ in range(size)]
        groups = connected_groups(pl.DataFrame({"norm_text": texts, "image_key": images})).to_list()
        assert groups == reference_components(texts, images)


def test_a_400_row_chain_lands_in_one_split(ws):
    texts, images = chain(400)
    # Distinct sizes: tiny one-colour JPEGs of close colours can encode to the same bytes.
    files = {key: ws.image(f"{key}.jpg", size=(16 + int(key[3:]), 16)) for key in set(images)}
    for k in range(400):
        ws.add(f"mami_train_{k}", "mami", "train", MAMI_NOT, image=files[images[k]], text=texts[k])
    for k in range(200):
        ws.add(f"mami_train_solo_{k}", "mami", "train", MAMI_NOT, text=f"solo {k}")
    assert ws.run("--near-dup-bits", "0") in (0, 1)
    splits = split_of(ws)
    assert len({splits[f"mami_train_{k}"] for k in range(400)}) == 1
    assert ws.stats["checks"]["no_image_or_text_in_two_assigned_splits"]


# -- the leakage audit on dataset-defined splits --------------------------------------------
def hm(label: int) -> dict:
    return {"label": label}


def test_audit_reports_shared_images_texts_and_near_duplicates(ws):
    shared_image = noise_image(ws.images / "shared.png", "shared")
    near = ws.images / "near.jpg"
    Image.open(noise_image(ws.images / "orig.png", "orig")).resize((90, 90)).save(near, "JPEG", quality=70)
    ws.add("hm_train_1", "hateful_memes", "train", hm(1), image=shared_image, text="first caption")
    ws.add("hm_test_1", "hateful_memes", "test_seen", hm(0), image=shared_image, text="another caption")
    ws.add(
        "hm_train_2", "hateful_memes", "train", hm(0), image=noise_image(ws.images / "t2.png", "t2"), text="Same Text"
    )
    ws.add(
        "hm_val_2", "hateful_memes", "dev_seen", hm(0), image=noise_image(ws.images / "v2.png", "v2"), text="same  text"
    )
    ws.add("hm_train_3", "hateful_memes", "train", hm(1), image=str(ws.images / "orig.png"), text="near one")
    ws.add("hm_test_3", "hateful_memes", "test_unseen", hm(1), image=str(near), text="near two")
    for i in range(20):
        ws.add(
            f"hm_train_x{i}", "hateful_memes", "train", hm(i % 2), image=noise_image(ws.images / f"x{i}.png", f"x{i}")
        )
    assert ws.run() == 0
    leak = ws.stats["leakage"]
    assert leak["images"] == {
        "train/test": {
            "shared": 1,
            "by_dataset": {"hateful_memes": {"shared": 1, "examples": [["hm_train_1", "hm_test_1"]]}},
        }
    }
    assert leak["texts"]["train/val"]["by_dataset"]["hateful_memes"]["examples"] == [["hm_train_2", "hm_val_2"]]
    assert leak["near_duplicate_images"]["train/test"]["by_dataset"]["hateful_memes"]["examples"] == [
        ["hm_train_3", "hm_test_3"]
    ]
    assert leak["near_duplicate_images_across_splits"] == 1
    assert ws.stats["packed_examples"] == 26 and ws.stats["checks"]["no_image_or_text_in_two_assigned_splits"]

    assert ws.run("--cross-split", "drop-images", shards="dropped") == 0
    assert {f["id"]: f["reason"] for f in ws.failures()} == {
        "hm_train_1": "cross_split_copy: its image is also in test"
    }
    assert ws.run("--cross-split", "drop", shards="dropped") == 0
    stats = ws.stats
    reasons = {f["id"]: f["reason"] for f in ws.failures()}
    assert reasons == {
        "hm_train_1": "cross_split_copy: its image is also in test",
        "hm_train_2": "cross_split_copy: its text is also in val",
    }
    assert stats["leakage"]["cross_split_copies_dropped"] == 2
    assert (stats["leakage"]["images_in_two_splits"], stats["leakage"]["texts_in_two_splits"]) == (0, 0)


def test_balance_reports_dataset_defined_splits_without_judging_them(ws):
    for i in range(40):
        ws.add(f"hm_train_{i}", "hateful_memes", "train", hm(1), text=f"t{i}")
        ws.add(f"hm_test_{i}", "hateful_memes", "test_seen", hm(0), text=f"s{i}")
    assert ws.run() == 0  # a 100-point imbalance between dataset-defined splits decides nothing
    entry = ws.stats["balance"]["datasets"]["hateful_memes"]["all_splits"]
    assert entry["judged"] is False and entry["abuse_hate"]["1"] == {"test": 50.0, "train": 50.0}
    assert entry["split_ratio"] == {"test": 0.5, "train": 0.5}


def test_a_group_that_swallows_a_dataset_fails_the_balance_check_and_is_named(ws):
    # One shared caption links every row: val (10% asked) gets none, which class shares cannot see.
    for i in range(100):
        ws.add(f"mami_train_{i}", "mami", "train", MAMI if i % 2 else MAMI_NOT, text="The Same   caption")
    assert ws.run() == 1
    stats = ws.stats
    assert not stats["checks"]["assigned_splits_balanced_within_5_points"]
    (failure,) = stats["balance"]["ratio_failures"]
    assert failure == {
        "dataset": "mami",
        "rows": 100,
        "expected": {"train": 0.9, "val": 0.1},
        "got": {"train": 1.0, "val": 0.0},
    }
    (group,) = stats["balance"]["largest_groups"]
    assert (group["size"], group["split"], group["share_of_dataset"]) == (100, "train", 1.0)
    assert (group["linking_text"], group["rows_sharing_text"]) == ("the same caption", 100)
    page = html.unescape((ws.out / "report.html").read_text())
    assert "got {'train': 1.0, 'val': 0.0} of 100 rows" in page and 'text "the same caption" (100 rows)' in page
    ratios = page[page.index('id="split-ratios"') :].split("</table>")[0]
    assert "train 90.0% val 10.0%" in ratios and "train 100.0% val 0.0%" in ratios and ">FAIL<" in ratios


def test_split_ratios_are_judged_where_packer_assigns(ws):
    for i in range(200):
        ws.add(f"olid_{i}", "olid", None, {"subtask_a": "OFF" if i % 4 == 0 else "NOT"}, text=f"post {i}")
    assert ws.run() == 0
    check = ws.stats["balance"]["datasets"]["olid"]["assigned"]["split_ratio_check"]["assign"]
    assert check["judged"] and check["ok"] and check["expected"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert all(points <= 5 for points in check["points"].values())
