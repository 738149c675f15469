"""A large manifest for timing the plan: every dataset's labels_raw in its release shape.

python scripts/plan_manifest.py --rows 1000000 --out .cache/plan/data_manifest.jsonl

Rows are text-only (image_path null) so that planning, not image hashing, is what is timed.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WORDS = "the a meme women men people when you they said dog cat work monday coffee happy sad why not".split()
TARGETS = ["African", "Women", "Islam", "Jewish", "None", "Homosexual", "Refugee", "Other", "Asian"]


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))


def labels_for(dataset: str, rng: random.Random) -> tuple[str | None, dict]:
    if dataset == "hateful_memes":
        return rng.choice(["train", "dev_seen", "test_seen"]), {"label": rng.randint(0, 1), "gold_pc": ["race"]}
    if dataset == "mami":
        return rng.choice(["train", "test"]), {
            k: rng.randint(0, 1) for k in ("misogynous", "shaming", "stereotype", "objectification", "violence")
        }
    if dataset == "mmhs150k":
        codes = [rng.choice([0, 0, 1, 2, 3]) for _ in range(3)]
        return rng.choice(["train", "val", "test"]), {"labels": codes, "labels_str": ["x"] * 3}
    if dataset == "memotion1":
        return rng.choice(["train", "test"]), {
            "Humour": "funny",
            "Sarcasm": "general",
            "Offensive": rng.choice(["not_offensive", "slight", "hateful_offensive"]),
            "Motivational": "not_motivational",
            "Overall_Sentiment": "positive",
        }
    if dataset == "hatexplain":
        annotators = [
            {
                "label": rng.choice(["hatespeech", "offensive", "normal"]),
                "annotator_id": i,
                "target": [rng.choice(TARGETS)],
            }
            for i in range(3)
        ]
        return rng.choice(["train", "val", "test"]), {"annotators": annotators, "rationales": [], "post_tokens": ["x"]}
    if dataset == "olid":
        a = rng.choice(["NOT", "OFF"])
        return rng.choice(["train", "test"]), {
            "subtask_a": a,
            "subtask_b": "TIN" if a == "OFF" else "NULL",
            "subtask_c": "IND" if a == "OFF" else "NULL",
        }
    return None, {"label": rng.randint(0, 1)}  # a dataset with no splits: packer assigns 80/10/10


def write_manifest(path: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    datasets = ["hateful_memes", "mami", "mmhs150k", "memotion1", "hatexplain", "olid"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for i in range(rows):
            dataset = datasets[i % len(datasets)]
            split, labels = labels_for(dataset, rng)
            row = {
                "id": f"{dataset}_{split}_{i}",
                "dataset": dataset,
                "split": split,
                "image_path": None,
                "text_raw": text(rng),
                "labels_raw": labels,
            }
            out.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=Path(".cache/plan/data_manifest.jsonl"))
    args = p.parse_args()
    write_manifest(args.out, args.rows)
    print(f"{args.rows} rows -> {args.out}")


if __name__ == "__main__":
    main()
