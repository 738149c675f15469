"""Write a Step-2 style sample: manifest, OCR file and meme-like images for all eight datasets.

Most rows are in the shapes the users' own Step-2 builder writes (docs/inputs.md, "The Step-2
builder's manifest"): Hateful Memes with the Kaggle mirror's train/dev/test and a bare 0/1 label
(null in test), HateXplain's bare annotator list with `unsplit` rows, MAMI and OLID test rows with
null labels, Memotion 1.0 with `train` on every row, Memotion 2.0's label-less test rows in a folder
with a space in its name, MMHS150K's `unsplit`. Some rows keep the original-release forms (Hateful
Memes' dev_seen/dev_unseen twins with fine-grained labels, HateXplain objects, OLID's three
subtasks, HateCheck). A few images are broken on purpose (truncated, empty, not an image, missing).
Deterministic for a given --seed.

    python scripts/make_sample_data.py --out sample/Step_2 [--per-dataset 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, features

WORDS = (
    "when you finally understand the meme so true nobody cares about this one weird trick "
    "everyone else me trying to explain my code at work on monday morning"
).split()
HATEXPLAIN_TARGETS = [
    "African",
    "Arab",
    "Asian",
    "Women",
    "Men",
    "Homosexual",
    "Islam",
    "Jewish",
    "Refugee",
    "Other",
    "None",
    "Economic",
    "Disability",
    "Hispanic",
    "Caucasian",
    "Indian",
]


def sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, n)))


def meme_image(rng: random.Random, width: int, height: int, mode: str) -> tuple[Image.Image, list[dict]]:
    """A 'photo' of smooth random colour fields with shapes and two caption bands; returns the OCR
    lines drawn on it. Each image differs (distinct perceptual hashes), as real memes do."""
    fields = Image.frombytes("RGB", (5, 4), bytes(rng.randrange(256) for _ in range(60)))
    colour = fields.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(colour)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        draw.ellipse(
            [x0, y0, x0 + rng.randint(20, width // 3), y0 + rng.randint(20, height // 3)],
            fill=tuple(rng.randrange(256) for _ in range(3)),
        )
    lines = []
    for top in (int(height * 0.05), int(height * 0.85)):
        text = sentence(rng, 6).upper()
        draw.text((width // 10, top), text, fill=(255, 255, 255))
        lines.append(
            {
                "text": text,
                "conf": round(rng.uniform(0.3, 1.0), 3),
                "bbox": [[width // 10, top], [width // 2, top], [width // 2, top + 12], [width // 10, top + 12]],
            }
        )
    if mode == "RGBA":
        image = colour.convert("RGBA")
        image.putalpha(Image.linear_gradient("L").resize((width, height)))
        return image, lines
    if mode == "P":  # the fast quantizer: the adaptive one took 0.3 s per image
        return colour.quantize(64, method=Image.Quantize.FASTOCTREE), lines
    if mode == "L":
        return colour.convert("L"), lines
    return colour, lines


def save_image(rng: random.Random, folder: Path, name: str, index: int) -> tuple[str, list[dict]]:
    width, height = rng.randint(400, 1600), rng.randint(400, 1600)
    kind = index % 10
    if kind in (0, 1, 2, 3, 4):
        image, lines = meme_image(rng, width, height, "RGB")
        path = folder / f"{name}.jpg"
        exif = Image.Exif()
        if kind == 1:
            exif[0x0112] = 6  # rotated 90 degrees
        image.save(path, "JPEG", quality=85, progressive=(kind == 2), exif=exif.tobytes())
    elif kind == 5:
        image, lines = meme_image(rng, width, height, "RGBA")
        path = folder / f"{name}.png"
        image.save(path, compress_level=1)
    elif kind == 6:
        image, lines = meme_image(rng, width, height, "P")
        path = folder / f"{name}.png"
        image.save(path, compress_level=1)
    elif kind == 7:
        image, lines = meme_image(rng, width, height, "L")
        path = folder / f"{name}.png"
        image.save(path, compress_level=1)
    elif kind == 8:
        image, lines = meme_image(rng, width, height, "P")
        path = folder / f"{name}.gif"
        image.save(path)
    else:
        image, lines = meme_image(rng, width, height, "RGB")
        fmt = "WEBP" if features.check("webp") else "BMP"
        path = folder / f"{name}.{fmt.lower()}"
        image.save(path, fmt, **({"method": 0} if fmt == "WEBP" else {}))
    return str(path.resolve()), lines


def broken_images(folder: Path) -> list[str]:
    good = Image.new("RGB", (500, 500), (200, 30, 30))
    truncated = folder / "broken_truncated.jpg"
    good.save(truncated, "JPEG")
    truncated.write_bytes(truncated.read_bytes()[:300])
    empty = folder / "broken_empty.png"
    empty.write_bytes(b"")
    not_image = folder / "broken_not_image.jpg"
    not_image.write_text("this is not an image\n")
    missing = folder / "broken_missing.jpg"
    return [str(p.resolve()) for p in (truncated, empty, not_image, missing)]


def labels_for(dataset: str, rng: random.Random, split: str) -> object:
    """`labels_raw` as the Step-2 builder writes it for `split` (a bare value, a list, or null)."""
    if dataset == "hateful_memes":
        if split == "test":
            return None  # the Kaggle mirror's test.jsonl has no labels
        if split in ("train", "dev"):
            return rng.choice([0, 1])  # the builder writes the bare label
        labels: dict = {"label": rng.choice([0, 1])}  # the original release's object, fine-grained
        hateful = labels["label"] == 1
        labels["gold_hate"] = ["hateful" if hateful else "not_hateful"]
        labels["gold_pc"] = (
            rng.sample(["race", "religion", "sex", "nationality", "disability"], rng.randint(1, 2))
            if hateful
            else ["pc_empty"]
        )
        labels["gold_attack"] = ["mocking"] if hateful else ["attack_empty"]
        return labels
    if dataset == "mami":
        if split == "test" and rng.random() < 0.2:
            return None  # no line in test_labels.txt
        m = rng.choice([0, 1])
        return {
            "misogynous": m,
            **{k: (rng.choice([0, 1]) if m else 0) for k in ("shaming", "stereotype", "objectification", "violence")},
        }
    if dataset == "mmhs150k":
        codes = [rng.choice([0, 0, 0, 1, 2, 3, 4, 5]) for _ in range(3)]
        names = ["NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate"]
        return {"labels": codes, "labels_str": [names[c] for c in codes]}
    if dataset == "memotion1":
        # The Kaggle 7k labels.csv: lower-case columns; case and spaces of values vary in the wild.
        offensive = rng.choice(["not_offensive", "slight", "very_offensive", "hateful_offensive", "Not_Offensive "])
        return {
            "humour": rng.choice(["funny", "not_funny", "very_funny", "hilarious"]),
            "sarcasm": rng.choice(["general", "not_sarcastic"]),
            "offensive": offensive,
            "motivational": rng.choice(["motivational", "not_motivational"]),
            "overall_sentiment": rng.choice(["very_negative", "negative", "neutral", "positive", "very_positive"]),
        }
    if dataset == "memotion2":
        based_on = {"classification_based_on": rng.choice(["image", "text", "both"])}
        if split == "test":
            return based_on  # the builder's test rows hold only this: no labels
        return {
            "humour": rng.choice(["funny", "not_funny"]),
            "sarcastic": rng.choice(["not_sarcastic", "very_sarcastic"]),
            "offensive": rng.choice(["not_offensive", "slight", "hateful_offensive"]),
            "motivational": rng.choice(["motivational", "not_motivational"]),
            "overall_sentiment": rng.choice(["negative", "neutral", "positive"]),
            **based_on,
        }
    if dataset == "hatexplain":
        tokens = sentence(rng).split()
        majority = rng.choice(["hatespeech", "offensive", "normal"])
        labels_ = [majority, majority, rng.choice(["hatespeech", "offensive", "normal"])]
        if split == "unsplit":
            labels_ = ["hatespeech", "offensive", "normal"]  # in no division: the undecided posts
        target = rng.choice(HATEXPLAIN_TARGETS)
        annotators = [
            {"label": lab, "annotator_id": i + 1, "target": ["None"] if lab == "normal" else [target]}
            for i, lab in enumerate(labels_)
        ]
        if rng.random() < 0.8:
            return annotators  # the builder writes the bare list
        return {
            "annotators": annotators,
            "rationales": [[rng.choice([0, 1]) for _ in tokens]] if majority != "normal" else [],
            "post_tokens": tokens,
        }
    if dataset == "olid":
        a = rng.choice(["NOT", "OFF"])
        if split == "test":
            return None if rng.random() < 0.1 else {"subtask_a": a}  # the builder's test rows: level A only
        b = "NULL" if a == "NOT" else rng.choice(["TIN", "UNT"])
        c = rng.choice(["IND", "GRP", "OTH"]) if b == "TIN" else "NULL"
        return {"subtask_a": a, "subtask_b": b, "subtask_c": c}
    target = rng.choice(
        ["women", "trans people", "gay people", "black people", "disabled people", "Muslims", "immigrants", None]
    )
    return {
        "functionality": "derog_neg_emote_h",
        "case_id": rng.randint(1, 4000),
        "label_gold": rng.choice(["hateful", "non-hateful"]),
        "target_ident": target,
        "direction": "general",
    }


# The split names as the builder writes them (the first is the most common).
SPLITS = {
    "hateful_memes": ["train", "dev", "test"],
    "mami": ["train", "test"],
    "mmhs150k": ["train", "val", "test", "unsplit"],
    "memotion1": ["train"],
    "memotion2": ["train", "val", "test"],
    "hatexplain": ["train", "val", "test", "unsplit"],
    "olid": ["train", "test"],
    "hatecheck": ["test"],
}
IMAGE_DATASETS = {"hateful_memes", "mami", "mmhs150k", "memotion1", "memotion2"}


def paddle_lines(lines: list[dict], path: str) -> list[dict]:
    """The lines as the builder's PaddleOCR 3.x writes them: [x1, y1, x2, y2] floats in the pixels
    of a copy whose longest side is at most 1024 px."""
    with Image.open(path) as image:
        scale = min(1.0, 1024 / max(image.size))
    out = []
    for line in lines:
        xs, ys = [p[0] for p in line["bbox"]], [p[1] for p in line["bbox"]]
        box = [round(v * scale, 2) for v in (min(xs), min(ys), max(xs), max(ys))]
        out.append({**line, "bbox": box})
    return out


def example_id(dataset: str, split: str, n: int) -> str:
    """The builder's ids: no split in MMHS150K's and HateXplain's, the image name in Memotion's."""
    if dataset == "memotion1":
        return f"memotion1_image_{n}.jpg"
    if dataset in ("mmhs150k", "hatexplain"):
        return f"{dataset}_{1100000000000000000 + n}"
    return f"{dataset}_{split}_{n:05d}"


def make(out: Path, per_dataset: int, seed: int) -> None:
    rng = random.Random(seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    manifest, ocr = [], []
    broken = broken_images(images)
    image_index = 0
    for dataset, splits in SPLITS.items():
        for n in range(per_dataset):
            split = splits[0] if n < per_dataset * 0.6 else rng.choice(splits)
            row = {
                "id": example_id(dataset, split, n),
                "dataset": dataset,
                "split": split,
                "image_path": None,
                "text_raw": sentence(rng, 14),
                "labels_raw": labels_for(dataset, rng, split),
            }
            if dataset in IMAGE_DATASETS:
                # Memotion 2.0's folders have a space in their name; its test rows may have no image.
                folder = images / "image folder" / f"{split}_images" if dataset == "memotion2" else images
                folder.mkdir(parents=True, exist_ok=True)
                path, lines = save_image(rng, folder, f"{dataset}_{n:05d}", image_index)
                image_index += 1
                row["image_path"] = path
                if dataset == "memotion2" and split == "test" and n % 4 == 0:
                    row["image_path"] = None
                elif rng.random() < 0.9:
                    if rng.random() < 0.8:
                        lines = paddle_lines(lines, path)
                    ocr.append(
                        {
                            "id": row["id"],
                            "dataset": dataset,
                            "split": split,
                            "image_path": path,
                            "ocr": {"lines": lines},
                        }
                    )
            manifest.append(row)
    # The original release ships some memes in both dev_seen and dev_unseen: the same image and text
    # (and its fine-grained labels, as an object).
    for n in range(3):
        twin = next(r for r in manifest if r["dataset"] == "hateful_memes" and r["split"] == "train")
        manifest.remove(twin)
        labels = labels_for("hateful_memes", rng, "dev_seen")
        for split in ("dev_seen", "dev_unseen"):
            manifest.append({**twin, "id": f"hateful_memes_{split}_dup{n}", "split": split, "labels_raw": labels})
    for i, path in enumerate(broken):
        manifest.append(
            {
                "id": f"mami_train_broken{i}",
                "dataset": "mami",
                "split": "train",
                "image_path": path,
                "text_raw": "broken",
                "labels_raw": {"misogynous": 0, "shaming": 0, "stereotype": 0, "objectification": 0, "violence": 0},
            }
        )
    ocr.append({"id": "not_in_manifest", "dataset": "mami", "split": "train", "image_path": None, "ocr": {"lines": []}})
    (out / "data_manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest), encoding="utf-8")
    (out / "ocr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ocr), encoding="utf-8")
    print(f"wrote {len(manifest)} manifest rows, {len(ocr)} OCR rows, images in {images}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-dataset", type=int, default=110)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    make(args.out, args.per_dataset, args.seed)


if __name__ == "__main__":
    main()
