"""Write a Step-2 style sample: manifest, OCR file and meme-like images for all eight datasets.

Labels are in each dataset's ORIGINAL format (../shared/docs/INPUTS.md); a few images are broken
on purpose (truncated, empty, not an image, missing). Deterministic for a given --seed.

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
    if mode == "P":
        return colour.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), lines
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
        image.save(path)
    elif kind == 6:
        image, lines = meme_image(rng, width, height, "P")
        path = folder / f"{name}.png"
        image.save(path)
    elif kind == 7:
        image, lines = meme_image(rng, width, height, "L")
        path = folder / f"{name}.png"
        image.save(path)
    elif kind == 8:
        image, lines = meme_image(rng, width, height, "P")
        path = folder / f"{name}.gif"
        image.save(path)
    else:
        image, lines = meme_image(rng, width, height, "RGB")
        fmt = "WEBP" if features.check("webp") else "BMP"
        path = folder / f"{name}.{fmt.lower()}"
        image.save(path, fmt)
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


def labels_for(dataset: str, rng: random.Random, split: str) -> dict:
    if dataset == "hateful_memes":
        labels: dict = {} if split.startswith("test") and rng.random() < 0.3 else {"label": rng.choice([0, 1])}
        if labels and rng.random() < 0.6:
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
        offensive = rng.choice(["not_offensive", "slight", "very_offensive", "hateful_offensive", "Not_Offensive "])
        keys = (
            ("Humour", "Sarcasm", "Offensive", "Motivational", "Overall_Sentiment")
            if rng.random() < 0.5
            else ("humour", "sarcasm", "offensive", "motivational", "overall_sentiment")
        )
        values = (
            rng.choice(["funny", "not_funny", "very_funny", "hilarious"]),
            rng.choice(["general", "not_sarcastic"]),
            offensive,
            rng.choice(["motivational", "not_motivational"]),
            rng.choice(["very_negative", "negative", "neutral", "positive", "very_positive"]),
        )
        return dict(zip(keys, values))
    if dataset == "memotion2":
        return {
            "humour": rng.choice(["funny", "not_funny"]),
            "sarcastic": rng.choice(["not_sarcastic", "very_sarcastic"]),
            "offensive": rng.choice(["not_offensive", "slight", "hateful_offensive"]),
            "motivational": rng.choice(["motivational", "not_motivational"]),
            "overall_sentiment": rng.choice(["negative", "neutral", "positive"]),
        }
    if dataset == "hatexplain":
        tokens = sentence(rng).split()
        majority = rng.choice(["hatespeech", "offensive", "normal"])
        labels_ = [majority, majority, rng.choice(["hatespeech", "offensive", "normal"])]
        if rng.random() < 0.1:
            labels_ = ["hatespeech", "offensive", "normal"]  # undecided
        target = rng.choice(HATEXPLAIN_TARGETS)
        return {
            "annotators": [
                {"label": lab, "annotator_id": i + 1, "target": ["None"] if lab == "normal" else [target]}
                for i, lab in enumerate(labels_)
            ],
            "rationales": [[rng.choice([0, 1]) for _ in tokens]] if majority != "normal" else [],
            "post_tokens": tokens,
        }
    if dataset == "olid":
        a = rng.choice(["NOT", "OFF"])
        if split == "test":
            return {"subtask_a": a, "subtask_b": None, "subtask_c": None}
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


SPLITS = {
    "hateful_memes": ["train", "dev_seen", "dev_unseen", "test_seen", "test_unseen"],
    "mami": ["train", "test"],
    "mmhs150k": ["train", "val", "test"],
    "memotion1": ["train", "test"],
    "memotion2": ["train", "val", "test"],
    "hatexplain": ["train", "val", "test"],
    "olid": ["train", "test"],
    "hatecheck": ["test"],
}
IMAGE_DATASETS = {"hateful_memes", "mami", "mmhs150k", "memotion1", "memotion2"}


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
            example_id = f"{n:05d}" if dataset != "memotion1" else f"image_{n}.jpg"
            row = {
                "id": f"{dataset}_{split}_{example_id}",
                "dataset": dataset,
                "split": split,
                "image_path": None,
                "text_raw": sentence(rng, 14),
                "labels_raw": labels_for(dataset, rng, split),
            }
            if dataset in IMAGE_DATASETS:
                path, lines = save_image(rng, images, f"{dataset}_{n:05d}", image_index)
                image_index += 1
                row["image_path"] = path
                if rng.random() < 0.9:
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
    # Hateful Memes ships some memes in both dev_seen and dev_unseen: the same image and text.
    for n in range(3):
        twin = next(
            r for r in manifest if r["dataset"] == "hateful_memes" and r["split"] == "train" and r["labels_raw"]
        )
        manifest.remove(twin)
        for split in ("dev_seen", "dev_unseen"):
            manifest.append({**twin, "id": f"hateful_memes_{split}_dup{n}", "split": split})
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
