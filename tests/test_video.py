"""Videos with speech (HateMM): real clips written with PyAV (H.264 MP4, VP9 WebM with odd sizes,
MPEG-4 Matroska, MJPEG AVI, MOV, a rotated one, one with a sound track, a long one with a long
GOP) and broken ones (audio only, truncated two ways, empty, not a video, missing, a named pipe,
too many pixels, too long), packed with memes, text posts and a Whisper-style ASR file in one run,
and read back with webdataset, wids and `datasets` (energon: tests/test_energon.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import MAMI, MAMI_NOT, ROOT, built_once, digests, make_jpeg, write_jsonl
from PIL import Image

from packer.cli import main
from packer.video import VideoSettings, encode_clip

sys.path.insert(0, str(ROOT / "scripts"))
from make_sample_data import write_clip  # noqa: E402

FRAMES = 8
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
MAX_PIXELS = 100 * 80  # the memes here are smaller; the "enormous" clip is not
OLID = {"subtask_a": "OFF", "subtask_b": "TIN", "subtask_c": "GRP"}


def segment(start: float, end: float, text: str, **quality) -> dict:
    return {"start": start, "end": end, "text": text, **quality}


GOOD = dict(avg_logprob=-0.3, no_speech_prob=0.05, compression_ratio=1.3)
SILENCE = dict(avg_logprob=-1.6, no_speech_prob=0.92, compression_ratio=1.0)
LOOP = dict(avg_logprob=-0.2, no_speech_prob=0.01, compression_ratio=2.9)


def make_clips(folder: Path) -> dict[str, dict]:
    """name -> {path, expected reason (None: packs), how it was written}."""
    clips: dict[str, dict] = {}

    def good(name: str, **kw) -> None:
        clips[name] = {"path": write_clip(folder / name, seed=len(clips), **kw), "reason": None, **kw}

    kinds = [
        ("mp4", {"codec": "libx264"}),
        ("webm", {"codec": "libvpx-vp9", "size": (97, 61)}),
        ("mkv", {"codec": "mpeg4", "size": (64, 48)}),
        ("avi", {"codec": "mjpeg", "pix_fmt": "yuvj420p", "size": (80, 60)}),
        ("mov", {"codec": "libx264", "size": (70, 40)}),
    ]
    for i in range(26):
        suffix, kw = kinds[i % len(kinds)]
        good(f"clip{i:02d}.{suffix}", seconds=1.5 + (i % 4) * 0.5, fps=8, gop=4, **kw)
    good("rotated.mp4", size=(96, 64), seconds=3.0, fps=8, rotation=90)
    good("with_sound.mp4", seconds=2.0, fps=8, audio=True)
    good("long_gop.mp4", size=(96, 64), seconds=12.0, fps=10, gop=250)
    good("one_frame.mp4", seconds=0.125, fps=8)

    def broken(name: str, reason: str, make) -> None:
        path = folder / name
        make(path)
        clips[name] = {"path": path, "reason": reason}

    broken("audio_only.m4a", "video_no_stream", lambda p: write_clip(p, audio=True, seconds=1.0, video=False))
    whole = write_clip(folder / "whole.mp4", seconds=3.0)
    half = whole.read_bytes()[: whole.stat().st_size // 2]
    broken("truncated.mp4", "video_unreadable", lambda p: p.write_bytes(half))
    mkv = write_clip(folder / "whole.mkv", codec="mpeg4", size=(64, 48), seconds=4.0, gop=4)
    broken("truncated.mkv", "video_truncated", lambda p: p.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2]))
    broken("empty.mp4", "video_empty", lambda p: p.write_bytes(b""))
    broken("not_a_video.mp4", "video_unreadable", lambda p: p.write_text("<html>404 not found</html>"))
    broken("missing.mp4", "video_missing", lambda p: None)
    broken("pipe.mp4", "video_not_a_file", lambda p: os.mkfifo(p))
    broken("huge.mp4", "video_too_large", lambda p: write_clip(p, size=(128, 96), seconds=1.0))
    broken("too_long.mkv", "video_too_large", lambda p: write_clip(p, codec="mpeg4", size=(32, 32), seconds=50, fps=1))
    (folder / "whole.mp4").unlink()
    (folder / "whole.mkv").unlink()
    return clips


def asr_row(row_id: str, segments: list[dict], language: str | None = "en") -> dict:
    return {"id": row_id, "dataset": "hatemm", "split": None, "asr": {"language": language, "segments": segments}}


def write_inputs(root: Path, with_clips: bool = True) -> dict:
    """Memes (MAMI), text posts (OLID) and, with_clips, the HateMM clips with an ASR file."""
    step2 = root / "Step_2"
    rows, asr = [], []
    for i in range(24):
        path = make_jpeg(step2 / "images" / f"m{i}.jpg", size=(60 + i, 50), colour=(10 * i, 100, 200 - 5 * i))
        labels = MAMI if i % 3 else MAMI_NOT
        rows.append({"id": f"mami_{i}", "dataset": "mami", "split": "train", "image_path": path,
                     "text_raw": f"meme {i}", "labels_raw": labels})  # fmt: skip
    for i in range(20):
        rows.append({"id": f"olid_{i}", "dataset": "olid", "split": "train", "image_path": None,
                     "text_raw": f"@USER post {i}", "labels_raw": OLID if i % 2 else {"subtask_a": "NOT"}})  # fmt: skip
    clips = make_clips(step2 / "videos") if with_clips else {}
    for n, (name, clip) in enumerate(clips.items()):
        hate = n % 2 == 0
        labels = {
            "label": "Hate" if hate else "Non Hate",
            "hate_snippet": "[['00:00:01', '00:00:02'], ['00:01:05', '00:01:10']]" if hate else "",
            "target": "Jews, Blacks" if n % 4 == 0 else ("Martians" if hate else ""),
        }
        row = {"id": f"hatemm_{name}", "dataset": "hatemm", "split": None, "image_path": None,
               "video_path": str(clip["path"]), "text_raw": None, "labels_raw": labels}  # fmt: skip
        if name == "clip01.webm":
            row["lang"] = "de"  # the manifest's language wins over the ASR's
        rows.append(row)
    if with_clips:
        asr = [
            # Unsorted, with a silence, a repetition loop, an empty text and a segment with no quality fields.
            asr_row(
                "hatemm_clip00.mp4",
                [
                    segment(1.0, 1.4, " second part", **GOOD),
                    segment(0.0, 0.9, " First  part", **GOOD),
                    segment(1.4, 1.6, " hmm", **SILENCE),
                    segment(1.6, 2.0, " go go go go", **LOOP),
                    segment(2.0, 2.1, "  ", **GOOD),
                    segment(0.9, 1.0, " bare"),
                ],
            ),
            asr_row("hatemm_clip01.webm", [segment(0.0, 1.0, " hallo", **GOOD)], language="fr"),
            asr_row("hatemm_clip02.mkv", [segment(0.0, 1.0, " bonjour", **GOOD)], language="fr"),
            asr_row("hatemm_clip03.avi", []),  # VAD found no speech
            asr_row("hatemm_clip04.mov", [segment(0.0, 1.0, " only silence", **SILENCE)]),
            asr_row("hatemm_rotated.mp4", [segment(0.5, 1.5, " turned", **GOOD)]),
            asr_row("hatemm_truncated.mkv", [segment(0.0, 1.0, " lost", **GOOD)]),
            asr_row("mami_3", [segment(0.0, 1.0, " not a clip", **GOOD)]),  # an image example: an orphan
            asr_row("hatemm_nowhere.mp4", [segment(0.0, 1.0, " no such row", **GOOD)]),  # an orphan
        ]
    write_jsonl(step2 / "data_manifest.jsonl", rows)
    write_jsonl(step2 / "asr.jsonl", asr)
    return clips


def pack_args(root: Path, out: str, *extra: str, asr: bool = True) -> list[str]:
    step2 = root / "Step_2"
    return [
        "--manifest", str(step2 / "data_manifest.jsonl"), *(["--asr", str(step2 / "asr.jsonl")] if asr else []),
        "--output-dir", str(root / out / "shards"), "--label-taxonomy", str(root / out / "label_taxonomy.json"),
        "--splits", str(root / out / "splits.json"), "--max-image-pixels", str(MAX_PIXELS),
        "--max-video-seconds", "40", "--min-shards", "2", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """The mixed manifest packed on 2 workers (Step_3) and on 1 (Step_3_one); the same manifest
    without its clips, packed without --asr (Step_3_no_clips, in its own root: no_clips/)."""

    def build(root: Path) -> None:
        clips = write_inputs(root)
        (root / "clips.json").write_text(json.dumps({k: {"reason": v["reason"]} for k, v in clips.items()}))
        assert main(pack_args(root, "Step_3", "--workers", "2")) == 1  # 9 broken clips are over 0.5%
        assert main(pack_args(root, "Step_3_one", "--workers", "1")) == 1
        write_inputs(root / "no_clips", with_clips=False)
        assert main(pack_args(root / "no_clips", "Step_3", "--workers", "2", asr=False)) == 0
        Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS  # the one-worker run set this process's bound

    return built_once(tmp_path_factory, "videos", build)


def video_samples(shards: Path) -> dict[str, dict]:
    """Every sample of every video shard, by id: its members' bytes."""
    out = {}
    for tar_path in sorted(shards.glob("*/video-*.tar")):
        with tarfile.open(tar_path) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for info in tar:
                key, _, ext = info.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(info).read()
        for m in members.values():
            out[json.loads(m["json"])["id"]] = m
    return out


def test_clips_pack_with_their_frames_and_broken_ones_fail_with_reasons(videos: Path):
    clips = json.loads((videos / "clips.json").read_text())
    stats = json.loads((videos / "Step_3" / "stats.json").read_text())
    good = [n for n, c in clips.items() if c["reason"] is None]
    assert len(clips) >= 30 and len(good) == 30
    video = stats["video"]
    assert video["examples"] == len(clips) and video["packed"] == len(good)
    expected_failures: dict[str, int] = {}
    for c in clips.values():
        if c["reason"]:
            expected_failures[c["reason"]] = expected_failures.get(c["reason"], 0) + 1
    assert video["failed"] == expected_failures
    assert video["frames_written"] == len(good) * (FRAMES + 1)
    # Only the failure-rate check fails (9 of 83 rows are broken clips); the run went on past each.
    assert [k for k, ok in stats["checks"].items() if not ok] == ["failure_rate_below_0.5%"]
    failures = {json.loads(line)["id"]: json.loads(line) for line in (videos / "Step_3" / "failures.jsonl").open()}
    for name, c in clips.items():
        if c["reason"]:
            assert failures[f"hatemm_{name}"]["reason"] == c["reason"], name
            assert failures[f"hatemm_{name}"]["stage"] == "image"
    assert "packed 74 / 83" in subprocess_summary(videos)
    samples = video_samples(videos / "Step_3" / "shards")
    assert sorted(samples) == sorted(f"hatemm_{n}" for n in good)
    for sample_id, members in samples.items():
        assert sorted(members) == sorted(["jpg", "json", "txt", *(f"f{i:02d}.jpg" for i in range(FRAMES))]), sample_id
        for name in ("jpg", *(f"f{i:02d}.jpg" for i in range(FRAMES))):
            with Image.open(io.BytesIO(members[name])) as frame:
                assert (frame.format, frame.mode, frame.size) == ("JPEG", "RGB", (384, 384)), (sample_id, name)
    assert sum(s["video_examples"] for s in stats["splits"].values()) == len(good)


def subprocess_summary(videos: Path) -> str:
    """The console summary of the run, as `python -m packer.report`'s stats rebuild it."""
    from packer.report.stats import summary

    return summary(json.loads((videos / "Step_3" / "stats.json").read_text()))


def moving_square_x(jpeg: bytes) -> float:
    """Where the clip's square is, as a share of the frame's width (the mean column whose middle
    pixel differs most from the background, as the bottom row shows it)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    background = rgb.getpixel((width // 2, height - 3))
    middle = [rgb.getpixel((x, height // 2)) for x in range(width)]
    columns = [x for x, pixel in enumerate(middle) if sum(abs(a - b) for a, b in zip(pixel, background)) > 150]
    return (sum(columns) / len(columns)) / width


# The rule, written down here and not computed by packer's code: frame i of N is the frame shown at
# (i + 0.5) / N of the clip, i.e. the last frame starting at or before that time; the middle frame is
# the one shown at 1/2. For clip00 (1.5 s at 8 fps): (i + 0.5) * 1.5 / 8 = 0.094, 0.281, 0.469, ...
# s, shown by frames 0, 2, 3, 5, 6, 8, 9, 11 (starting at k / 8 s); the middle, 0.75 s, by frame 6.
FRAME_TIMES = {  # name: (duration, the N frames' start times, the middle frame's)
    "clip00.mp4": (1.5, [0.0, 0.25, 0.375, 0.625, 0.75, 1.0, 1.125, 1.375], 0.75),
    "clip02.mkv": (2.5, [0.125, 0.375, 0.75, 1.0, 1.375, 1.625, 2.0, 2.25], 1.25),
    "clip06.webm": (2.5, [0.125, 0.375, 0.75, 1.0, 1.375, 1.625, 2.0, 2.25], 1.25),
    "long_gop.mp4": (12.0, [0.7, 2.2, 3.7, 5.2, 6.7, 8.2, 9.7, 11.2], 6.0),  # 10 fps, one keyframe
}


def test_frames_are_the_ones_at_their_times(videos: Path):
    """Each fNN.jpg is the frame shown at (i + 0.5) / N of the clip (the square's position says
    which frame it is), and the JSON says when; the middle frame likewise (FRAME_TIMES)."""
    samples = video_samples(videos / "Step_3" / "shards")
    for name, (duration, times, middle) in FRAME_TIMES.items():
        members = samples[f"hatemm_{name}"]
        doc = json.loads(members["json"])
        facts = doc["video"]
        fps = facts["fps"]
        count = round(facts["duration"] * fps)
        assert facts["duration"] == duration and len(times) == FRAMES, name
        assert facts["frame_times"] == times and facts["middle_time"] == middle, name
        for i, t in enumerate(facts["frame_times"]):
            index = round(t * fps)
            side = 1 / 3 * (facts["height"] / facts["width"])  # the square's side, as a share of the width
            expected = index / max(1, count - 1) * (1 - side) + side / 2
            assert abs(moving_square_x(members[f"f{i:02d}.jpg"]) - expected) < 0.04, (name, i)
        assert doc["image"] == {"orig_width": facts["width"], "orig_height": facts["height"],
                                "orig_format": f"video/{facts['codec']}"}  # fmt: skip
    assert json.loads(samples["hatemm_clip01.webm"]["json"])["video"]["width"] == 97  # odd sizes are kept


def test_a_rotated_clip_is_shown_as_ffmpeg_shows_it(videos: Path, tmp_path: Path):
    """The display matrix is applied as the ffmpeg command line applies it (its autorotate): the
    packed middle frame matches ffmpeg's own, and the frame is upright (the square moves down)."""
    import imageio_ffmpeg

    samples = video_samples(videos / "Step_3" / "shards")
    doc = json.loads(samples["hatemm_rotated.mp4"]["json"])
    assert (doc["video"]["rotation"], doc["video"]["width"], doc["video"]["height"]) == (90, 64, 96)
    clip = videos / "Step_2" / "videos" / "rotated.mp4"
    png = tmp_path / "middle.png"
    t = doc["video"]["middle_time"]
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-ss", f"{t}", "-i", str(clip), "-frames:v", "1", str(png)],
        check=True,
    )
    with Image.open(png) as theirs:
        assert theirs.size == (64, 96)
        reference = theirs.convert("RGB").resize((384, 384), Image.Resampling.BICUBIC)
    with Image.open(io.BytesIO(samples["hatemm_rotated.mp4"]["jpg"])) as ours:
        diff = [abs(a - b) for a, b in zip(ours.convert("RGB").tobytes(), reference.tobytes())]
    assert sum(diff) / len(diff) < 4.0
    # Upright: f00 has the square near one edge, f07 near the other, along the height.
    first = Image.open(io.BytesIO(samples["hatemm_rotated.mp4"]["f00.jpg"])).transpose(Image.Transpose.TRANSPOSE)
    last = Image.open(io.BytesIO(samples["hatemm_rotated.mp4"]["f07.jpg"])).transpose(Image.Transpose.TRANSPOSE)
    buffer = [io.BytesIO(), io.BytesIO()]
    first.save(buffer[0], "JPEG")
    last.save(buffer[1], "JPEG")
    assert abs(moving_square_x(buffer[0].getvalue()) - moving_square_x(buffer[1].getvalue())) > 0.5


def test_speech_joins_in_time_order_and_the_filters_are_counted(videos: Path):
    samples = video_samples(videos / "Step_3" / "shards")
    stats = json.loads((videos / "Step_3" / "stats.json").read_text())
    doc = json.loads(samples["hatemm_clip00.mp4"]["json"])
    text = samples["hatemm_clip00.mp4"]["txt"].decode()
    assert text == "[OCR] [/OCR] [ASR] First part bare second part [/ASR] [CAP] [/CAP] <lang=en>"
    assert doc["asr"] == {
        "language": "en",
        "segments": [
            {"start": 0.0, "end": 0.9, "text": "First part"},
            {"start": 0.9, "end": 1.0, "text": "bare"},
            {"start": 1.0, "end": 1.4, "text": "second part"},
        ],
        "dropped": {"silence": 1, "repetition": 1, "empty": 1},
    }
    # The manifest's language wins; without one, the ASR's; a clip with no ASR row has no block.
    assert samples["hatemm_clip01.webm"]["txt"].decode().endswith("[ASR] hallo [/ASR] [CAP] [/CAP] <lang=de>")
    assert samples["hatemm_clip02.mkv"]["txt"].decode().endswith("<lang=fr>")
    assert samples["hatemm_clip03.avi"]["txt"].decode() == "[OCR] [/OCR] [ASR] [/ASR] [CAP] [/CAP] <lang=en>"
    assert samples["hatemm_clip05.mp4"]["txt"].decode() == "[OCR] [/OCR] [CAP] [/CAP] <lang=en>"
    assert json.loads(samples["hatemm_clip05.mp4"]["json"])["asr"] is None
    asr = stats["video"]["asr"]
    assert asr["clips_with_asr_row"] == 7  # truncated.mkv's included: it has a row, and failed
    assert asr["clips_with_kept_speech"] == 5  # clip00, 01, 02, rotated, truncated.mkv
    assert asr["segments_kept"] == 3 + 1 + 1 + 1 + 1
    assert asr["segments_dropped"] == {"silence": 2, "repetition": 1, "empty": 1}
    assert asr["asr_rows_without_video_row"] == 2
    assert "ASR: 7/39 clips with an ASR row, 5 with kept speech" in subprocess_summary(videos)


def test_hatemm_labels_follow_the_taxonomy(videos: Path):
    samples = video_samples(videos / "Step_3" / "shards")
    stats = json.loads((videos / "Step_3" / "stats.json").read_text())
    hate = json.loads(samples["hatemm_clip00.mp4"]["json"])  # n = 0: Hate, "Jews, Blacks"
    assert hate["labels"] == {"abuse_hate": 1, "offensive": None, "target_type": "group",
                              "target_group": ["black", "jewish"]}  # fmt: skip
    assert hate["aux"]["hate_spans"] == [[1.0, 2.0], [65.0, 70.0]]
    assert hate["split"] in ("train", "val", "test") and hate["source_split"] is None
    other = json.loads(samples["hatemm_clip02.mkv"]["json"])  # n = 2: Hate, "Martians"
    assert other["labels"]["target_group"] == ["other"]
    not_hate = json.loads(samples["hatemm_clip01.webm"]["json"])
    assert not_hate["labels"] == {"abuse_hate": 0, "offensive": None, "target_type": "none", "target_group": []}
    assert not_hate["aux"]["hate_spans"] is None
    # Every Hate row naming Martians (n = 2, 6, ..., 38; packed or not), as the split set reads it.
    assert stats["datasets"]["hatemm"]["other_targets"] == {"martians": 10}
    mapping = stats["split_mapping"]["hatemm"]["null"]
    assert mapping["to"] == "assigned 80/10/10" and sum(mapping["packed"].values()) == 30


def test_meme_and_text_shards_are_byte_identical_without_the_clips(videos: Path):
    with_clips = videos / "Step_3" / "shards"
    without = videos / "no_clips" / "Step_3" / "shards"
    ours = sorted(p.relative_to(with_clips) for p in with_clips.glob("*/*.tar") if not p.name.startswith("video-"))
    theirs = sorted(p.relative_to(without) for p in without.glob("*/*.tar"))
    assert ours == theirs and len(ours) >= 4
    for rel in ours:
        assert (with_clips / rel).read_bytes() == (without / rel).read_bytes(), rel
        idx = Path(f"{rel}.idx")
        assert (with_clips / idx).read_bytes() == (without / idx).read_bytes(), idx
    assert not list(without.glob("*/video-*")) and not (without / ".nv-meta" / "split.video.yaml").exists()
    for split in ("train", "val", "test"):
        for index in ("index.images.json", "index.text.json"):
            if (without / split / index).exists():
                assert (with_clips / split / index).read_bytes() == (without / split / index).read_bytes()


def test_one_worker_writes_the_same_bytes_as_two(videos: Path):
    # The tests' own yardstick (conftest.digests), not packer's output_digests: a bug there cannot hide here.
    two, one = digests(videos / "Step_3"), digests(videos / "Step_3_one")
    different = sorted(k for k in two if two[k] != one.get(k) and k not in ("README.md", "report.html", "stats.json"))
    assert set(two) == set(one) and not different
    assert sum(k.endswith(".tar") and "/video-" in k for k in two) >= 2
    # stats.json differs only in the paths of the output folder, which name Step_3 and Step_3_one.
    a = json.loads((videos / "Step_3" / "stats.json").read_text())
    b = json.loads((videos / "Step_3_one" / "stats.json").read_text())
    for doc in (a, b):
        doc.pop("seconds"), doc.pop("config")
    assert a == b


def test_video_series_reads_with_webdataset_wids_and_datasets(videos: Path):
    import datasets
    import webdataset as wds
    import wids

    out = videos / "Step_3"
    stats = json.loads((out / "stats.json").read_text())
    train = out / "shards" / "train"
    index = json.loads((train / "index.video.json").read_text())
    assert sum(s["nsamples"] for s in index["shardlist"]) == stats["splits"]["train"]["video_examples"]
    urls = [str(train / s["url"]) for s in index["shardlist"]]
    # The documented line reads the video shards too: the middle frame is <key>.jpg.
    rows = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg;png", "txt", "json"))
    assert len(rows) == stats["splits"]["train"]["video_examples"]
    assert all(image.size == (384, 384) and doc["video"]["duration"] > 0 for image, _, doc in rows)
    frames = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple(*(f"f{i:02d}.jpg" for i in range(8))))
    assert len(frames) == len(rows) and all(f.size == (384, 384) for row in frames for f in row)
    indexed = wids.ShardListDataset(str(train / "index.video.json"))
    assert len(indexed) == len(rows)
    first = indexed[0]
    assert {".jpg", ".json", ".txt", ".f00.jpg", ".f07.jpg"} <= set(first)
    # index.json lists every series.
    everything = wids.ShardListDataset(str(train / "index.json"))
    split = stats["splits"]["train"]
    assert len(everything) == split["image_examples"] + split["text_examples"] + split["video_examples"]
    loaded = datasets.load_dataset(str(out), "video", split="train")
    assert len(loaded) == len(rows)
    assert all(isinstance(loaded.features[f"f{i:02d}.jpg"], datasets.Image) for i in range(8))
    sample = loaded[0]
    assert sample["f03.jpg"].size == (384, 384) and sample["json"]["video"]["frame_times"]
    # The image config still loads beside it.
    assert len(datasets.load_dataset(str(out), "images", split="train")) == split["image_examples"]


def test_a_clip_that_decodes_too_long_fails_alone(tmp_path: Path):
    clip = write_clip(tmp_path / "slow.mp4", seconds=2.0)
    settings = VideoSettings(frames=8, max_seconds=100, timeout=1e-9)
    with pytest.raises(Exception) as raised:
        encode_clip(str(clip), 384, 95, 10**8, settings)
    assert raised.value.reason == "video_timeout"
    assert encode_clip(str(clip), 384, 95, 10**8, VideoSettings()).facts["duration"] == 2.0


def test_asr_input_errors_name_the_file_line_and_field(tmp_path: Path, capsys):
    step2 = tmp_path / "Step_2"
    clip = write_clip(step2 / "a.mp4", seconds=1.0)
    labels = {"label": "Hate", "hate_snippet": "", "target": ""}
    row = {"id": "hatemm_a.mp4", "dataset": "hatemm", "split": None, "video_path": str(clip), "labels_raw": labels}
    write_jsonl(step2 / "data_manifest.jsonl", [row])
    bad = [asr_row("hatemm_a.mp4", [segment(0.0, 1.0, " fine", **GOOD)]),
           asr_row("x", [segment(0.0, "one", " start is text")])]  # fmt: skip
    write_jsonl(step2 / "asr.jsonl", bad)
    assert main(pack_args(tmp_path, "Step_3")) == 2
    err = capsys.readouterr().err
    assert "asr.jsonl: line 2: field 'asr.segments[0].end': expected a number" in err
    assert not (tmp_path / "Step_3" / "shards").exists()
    (step2 / "asr.jsonl").unlink()
    assert main(pack_args(tmp_path, "Step_3")) == 2
    assert "asr.jsonl: ASR file not found" in capsys.readouterr().err


def test_a_row_with_both_an_image_and_a_clip_fails_alone_and_a_repeated_clip_is_a_duplicate(tmp_path: Path):
    step2 = tmp_path / "Step_2"
    clip = write_clip(step2 / "a.mp4", seconds=1.0)
    image = make_jpeg(step2 / "a.jpg", size=(40, 30))
    labels = {"label": "Hate", "hate_snippet": "", "target": ""}
    rows = [{"id": f"hatemm_{i}", "dataset": "hatemm", "split": None, "video_path": str(clip), "labels_raw": labels}
            for i in range(3)]  # fmt: skip
    rows[0]["image_path"] = image
    write_jsonl(step2 / "data_manifest.jsonl", rows)
    write_jsonl(step2 / "asr.jsonl", [])
    main(pack_args(tmp_path, "Step_3"))
    failures = [json.loads(line) for line in (tmp_path / "Step_3" / "failures.jsonl").open()]
    # Two clips with the same bytes (and the same, empty, text) count as one image does: one is kept.
    assert [(f["id"], f["status"], f["reason"]) for f in failures] == [
        ("hatemm_0", "failed", "both image_path and video_path: an example is an image or a video, not both"),
        ("hatemm_2", "dropped", "duplicate"),
    ]


def test_skipping_unreferenced_frames_changes_no_byte(tmp_path: Path, monkeypatch):
    """Frames nobody refers to are not decoded on the way to a wanted frame: the frames packed are
    the same bytes as when every frame is decoded (a 12 s H.264 clip with B-frames, GOP 250)."""
    import packer.video

    clip = write_clip(tmp_path / "b.mp4", size=(96, 64), seconds=12.0, fps=10, gop=250, seed=3)
    skipped = encode_clip(str(clip), 384, 95, 10**8, VideoSettings())
    monkeypatch.setattr(packer.video, "SKIP_MARGIN", 1e9)  # nothing is early enough to skip
    every = encode_clip(str(clip), 384, 95, 10**8, VideoSettings())
    assert (skipped.middle, skipped.frames, skipped.facts) == (every.middle, every.frames, every.facts)
