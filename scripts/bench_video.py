"""Frames per second of packer's frame path against the two ways people script it, side by side
on the same clips in one run:

- packer: packer.video.encode_clip (seek to the keyframe before each wanted frame, decode forward
  only as far as needed; the middle frame and --video-frames frames, each squashed to 384x384 and
  JPEG-encoded);
- ffmpeg loop: `ffmpeg -ss T -i clip -frames:v 1 out.jpg` once per wanted frame (the ffmpeg binary
  of imageio-ffmpeg; its own JPEG, no resize: the loop is given the cheaper job);
- PyAV whole decode: every frame of the clip decoded, the wanted ones kept and prepared as packer
  prepares them.

All three take the same frames (the last frame at or before each time), one clip at a time, each
on one thread (`-threads 1`, `thread_count = 1`): packer's pool decodes one clip per core, so
frames per second per core is what adds up. Each is run once on the first clip before it is timed.
Clips are made here with PyAV (and kept in --out for the next run): H.264 MP4s of a camera panning
over a textured scene (every macroblock coded, as in real footage, so decoding costs what it
costs), with a 2-second GOP (common for web video) and, to show where seeking helps least, with
x264's default GOP of 250 frames. HateMM's clips last 2.4 minutes on average.

    python scripts/bench_video.py [--clips 2] [--seconds 120] [--size 640x360] [--fps 25] [--frames 8]
                                  [--out bench-video]
"""

from __future__ import annotations

import argparse
import io
import math
import subprocess
import time
from pathlib import Path

import av
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]

from packer.video import VideoSettings, encode_clip, frame_times  # noqa: E402


def write_panning_clip(path: Path, size: tuple[int, int], seconds: float, fps: int, gop: int, seed: int) -> Path:
    """A camera panning across a blurred-noise scene twice the frame's size (x264 veryfast)."""
    width, height = size
    scene = Image.effect_noise((2 * width, 2 * height), 60 + 10 * seed).convert("RGB")
    scene = scene.filter(ImageFilter.GaussianBlur(2))
    frames = round(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for i in range(frames):
            x = round(width * (0.5 + 0.5 * math.sin(i / 90)))
            y = round(height * (0.5 + 0.5 * math.cos(i / 130)))
            frame = av.VideoFrame.from_image(scene.crop((x, y, x + width, y + height)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def wanted_times(path: Path, frames: int) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
    return sorted({*frame_times(duration, frames), duration / 2})


def run_packer(clips: list[Path], frames: int) -> int:
    settings = VideoSettings(frames=frames)
    return sum(len(encode_clip(str(c), 384, 95, 89_478_485, settings).frames) + 1 for c in clips)


def run_ffmpeg(clips: list[Path], frames: int, ffmpeg: str, scratch: Path) -> int:
    done = 0
    for clip in clips:
        for i, t in enumerate(wanted_times(clip, frames)):
            out = scratch / f"{clip.stem}_{i}.jpg"
            cmd = [ffmpeg, "-v", "error", "-y", "-threads", "1", "-ss", f"{t:.3f}", "-i", str(clip)]
            cmd += ["-threads", "1", "-frames:v", "1", str(out)]
            subprocess.run(cmd, check=True)
            done += 1
    return done


def run_full_decode(clips: list[Path], frames: int) -> int:
    done = 0
    for clip in clips:
        times = wanted_times(clip, frames)
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            chosen: dict[float, av.VideoFrame] = {}
            for frame in container.decode(stream):
                now = float(frame.pts * stream.time_base)
                for t in times:
                    if now <= t + 1e-6:
                        chosen[t] = frame
            for frame in chosen.values():
                image = frame.to_image().resize((384, 384), Image.Resampling.BICUBIC)
                image.save(io.BytesIO(), format="JPEG", quality=95)
                done += 1
    return done


def measure(name: str, fn, clips: list[Path], *args) -> float:
    fn(clips[:1], *args)  # warm: imports, codec set-up, the page cache
    start = time.perf_counter()
    count = fn(clips, *args)
    seconds = time.perf_counter() - start
    rate = count / seconds
    print(f"  {name:<20} {count:>4} frames in {seconds:7.2f} s: {rate:8.1f} frames/s")
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--size", default="640x360")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("bench-video"))
    args = p.parse_args()
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    width, height = map(int, args.size.split("x"))
    scratch = args.out / "frames"
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), ffmpeg: {ffmpeg}")
    for gop in (2 * args.fps, 250):
        clips = []
        for i in range(args.clips):
            path = args.out / f"gop{gop}_{i}.mp4"
            if not path.exists():
                write_panning_clip(path, (width, height), args.seconds, args.fps, gop, seed=i)
            clips.append(path)
        print(
            f"{args.clips} clips of {args.seconds:g} s, {width}x{height} at {args.fps} fps, GOP {gop} frames; "
            f"{args.frames} + 1 frames each"
        )
        ours = measure("packer", run_packer, clips, args.frames)
        loop = measure("ffmpeg -ss loop", run_ffmpeg, clips, args.frames, ffmpeg, scratch)
        whole = measure("PyAV whole decode", run_full_decode, clips, args.frames)
        print(f"  packer / ffmpeg loop: {ours / loop:.1f}x   packer / PyAV whole decode: {ours / whole:.1f}x")


if __name__ == "__main__":
    main()
