"""Write a Step-2 style sample: manifest, OCR file and meme-like images for all eight datasets.

Most rows are in the shapes the users' own Step-2 builder writes (docs/inputs.md, "The Step-2
builder's manifest"): Hateful Memes with the Kaggle mirror's train/dev/test and a bare 0/1 label
(null in test), HateXplain's bare annotator list with `unsplit` rows, MAMI and OLID test rows with
null labels, Memotion 1.0 with `train` on every row, Memotion 2.0's label-less test rows in a folder
with a space in its name, MMHS150K's `unsplit`. Some rows keep the original-release forms (Hateful
Memes' dev_seen/dev_unseen twins with fine-grained labels, HateXplain objects, OLID's three
subtasks, HateCheck). A few images are broken on purpose (truncated, empty, not an image, missing).
HateMM: --clips small real clips (H.264 MP4, VP9 WebM, MPEG-4 Matroska, odd sizes, one with a display
rotation) in Step 1's hate_videos/ and non_hate_videos/ folders, with manifest rows in INPUTS.md's
shape and Step 2B's Whisper-style `asr.jsonl` for most of them (some segments silence or
repetition loops that the filters drop). Deterministic for a given --seed.

    python scripts/make_sample_data.py --out sample/Step_2 [--per-dataset 60] [--clips 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import av
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


# (container suffix, codec, pixel format): what PyAV's own FFmpeg writes everywhere.
CLIP_KINDS = (("mp4", "libx264", "yuv420p"), ("webm", "libvpx-vp9", "yuv420p"), ("mkv", "mpeg4", "yuv420p"))
HATEMM_TARGETS = ("Blacks", "Jews", "Muslims", "Women", "Jews, Blacks", "LGBTQ", "Others")


def write_clip(
    path: Path,
    codec: str = "libx264",
    size: tuple[int, int] = (96, 64),
    seconds: float = 2.0,
    fps: int = 8,
    seed: int = 0,
    gop: int | None = None,
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
    audio: bool = False,
    video: bool = True,
) -> Path:
    """A real clip: a coloured field with a square that moves across its middle third (frame i's
    square sits at i / (frames - 1) of the free width, so a frame's time can be read off its
    pixels) under a band of random stripes (so that clips differ to the near-duplicate audit),
    optionally an AAC track (or only one: video=False) and a display rotation (counter-clockwise
    degrees)."""
    rng = random.Random(seed)
    width, height = size
    background = tuple(rng.randrange(40, 200) for _ in range(3))
    square = tuple(255 - c for c in background)
    stripes = Image.new("RGB", (width, max(1, height // 3)), background)
    x = 0
    while x < width:
        step = rng.randrange(2, max(3, width // 4))
        ImageDraw.Draw(stripes).rectangle(
            [x, 0, x + step - 1, height], fill=tuple(rng.randrange(256) for _ in range(3))
        )
        x += step
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        sound = container.add_stream("aac", rate=16000) if audio else None
        frames = max(1, round(seconds * fps)) if video else 0
        if video:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            if gop:
                stream.codec_context.gop_size = gop
            if rotation is not None:
                stream.set_display_rotation(rotation)
        side = max(2, height // 3)
        for i in range(frames):
            image = Image.new("RGB", size, background)
            image.paste(stripes, (0, 0))
            x = (width - side) * i // max(1, frames - 1)
            ImageDraw.Draw(image).rectangle([x, height // 3, x + side - 1, height // 3 + side - 1], fill=square)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode() if video else ():
            container.mux(packet)
        if sound is not None:
            silence = av.AudioFrame(format="fltp", layout="mono", samples=1024)
            silence.sample_rate = 16000
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            for k in range(int(seconds * 16000 / 1024)):
                silence.pts = k * 1024
                for packet in sound.encode(silence):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def asr_segments(rng: random.Random, seconds: float) -> list[dict]:
    """Whisper-style segments, unsorted, some that its filters drop (silence, a repetition loop)."""
    segments = []
    start = 0.0
    while start < seconds - 0.3:
        end = min(seconds, start + rng.uniform(0.3, 0.8))
        kind = rng.random()
        segment = {"start": round(start, 2), "end": round(end, 2), "text": " " + sentence(rng, 4)}
        if kind < 0.15:
            segment.update(avg_logprob=-1.4, no_speech_prob=0.91, compression_ratio=1.1)  # silence
        elif kind < 0.25:
            segment.update(text=" la la la la la la", avg_logprob=-0.4, no_speech_prob=0.05, compression_ratio=3.1)
        else:
            segment.update(avg_logprob=-0.3, no_speech_prob=0.02, compression_ratio=1.4)
        segments.append(segment)
        start = end
    rng.shuffle(segments)
    return segments


def hatemm_clips(out: Path, count: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """HateMM as Step 1 keeps it (clips in hate_videos/ and non_hate_videos/) and Step 2's rows for
    it, with Step 2B's ASR rows for about two clips in three."""
    manifest, asr = [], []
    root = out / "videos"
    for n in range(count):
        hate = n % 3 == 0
        suffix, codec, pix_fmt = CLIP_KINDS[n % len(CLIP_KINDS)]
        even = codec != "libvpx-vp9"  # H.264 and MPEG-4 in 4:2:0 need even sizes; VP9 takes odd ones
        width, height = rng.randrange(48, 112), rng.randrange(32, 80)
        size = (width - width % 2, height - height % 2) if even else (width | 1, height | 1)
        seconds = rng.choice((1.5, 2.0, 3.0))
        name = f"{'hate' if hate else 'non_hate'}_video_{n}.{suffix}"
        path = root / ("hate_videos" if hate else "non_hate_videos") / name
        rotation = 90 if n == 1 else None
        write_clip(path, codec, size, seconds, 8, seed=n, gop=4, rotation=rotation, pix_fmt=pix_fmt)
        labels = {
            "label": "Hate" if hate else "Non Hate",
            "hate_snippet": "[['00:00:00', '00:00:01']]" if hate else "",
            "target": rng.choice(HATEMM_TARGETS) if hate else "",
        }
        row_id = f"hatemm_{name}"
        manifest.append(
            {
                "id": row_id,
                "dataset": "hatemm",
                "split": None,
                "image_path": None,
                "video_path": str(path.resolve()),
                "text_raw": None,
                "labels_raw": labels,
            }
        )
        if n % 3 != 2:
            asr.append(
                {
                    "id": row_id,
                    "dataset": "hatemm",
                    "split": None,
                    "video_path": str(path.resolve()),
                    "asr": {
                        "language": "en",
                        "language_probability": 0.97,
                        "duration": seconds,
                        "segments": asr_segments(rng, seconds),
                    },
                }
            )
    return manifest, asr


# Multilingual HateCheck's cases as its adapter writes them (packer.sources.mhc): a few per language.
MHC_SAMPLE = {
    "de": ("german", ["Ich hasse {}.", "{} sind wunderbar."], ["Frauen", "Muslime", "Juden"]),
    "fr": ("french", ["Je déteste les {}.", "Les {} sont formidables."], ["femmes", "immigrés", "Juifs"]),
    "zh": ("mandarin", ["我讨厌{}。", "{}很棒。"], ["女人", "穆斯林", "犹太人"]),
}
MHC_TARGETS = ["women", "Muslims", "jews"]


def mhc_cases(rng: random.Random) -> list[dict]:
    """Diagnostics in three languages: a hateful and a non-hateful template per target."""
    rows = []
    for code, (language, templates, names) in MHC_SAMPLE.items():
        n = 0
        for hateful, template in zip((True, False), templates):
            for name, target in zip(names, MHC_TARGETS):
                n += 1
                labels = {
                    "mhc_case_id": f"{language}-{n}",
                    "functionality": "derog_neg_emote_h" if hateful else "ident_pos_nh",
                    "label_gold": "hateful" if hateful else "non-hateful",
                    "target_ident": target,
                    "templ_id": 1 if hateful else 2,
                    "label_annotated_maj": "hateful" if hateful else "non-hateful",
                    "language": language,
                }
                rows.append({"id": f"mhc_{language}-{n}", "dataset": "mhc", "split": "test", "image_path": None,
                             "text_raw": template.format(name), "labels_raw": labels, "lang": code})  # fmt: skip
    return rows


def example_id(dataset: str, split: str, n: int) -> str:
    """The builder's ids: no split in MMHS150K's and HateXplain's, the image name in Memotion's."""
    if dataset == "memotion1":
        return f"memotion1_image_{n}.jpg"
    if dataset in ("mmhs150k", "hatexplain"):
        return f"{dataset}_{1100000000000000000 + n}"
    return f"{dataset}_{split}_{n:05d}"


def make(out: Path, per_dataset: int, seed: int, clips: int = 12) -> None:
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
    videos, asr = hatemm_clips(out, clips, random.Random(seed + 1))
    manifest += videos
    manifest += mhc_cases(random.Random(seed + 2))
    (out / "data_manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest), encoding="utf-8")
    (out / "ocr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ocr), encoding="utf-8")
    (out / "asr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in asr), encoding="utf-8")
    print(f"wrote {len(manifest)} manifest rows ({len(videos)} clips), {len(ocr)} OCR rows, {len(asr)} ASR rows")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-dataset", type=int, default=110)
    p.add_argument("--clips", type=int, default=12, help="HateMM clips (with ASR rows for about 2 in 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    make(args.out, args.per_dataset, args.seed, args.clips)


if __name__ == "__main__":
    main()
