"""Clip path in, frames out: the middle frame and N evenly spaced frames of a video, each prepared
like an image (384x384 RGB JPEG), decoded with PyAV (its own FFmpeg). No Polars here.

Frames are taken at (i + 0.5) / N of the duration (and the middle one at 1/2): for each, the
frame shown at that time, i.e. the last frame that starts at or before it. The decoder seeks to
the keyframe before a wanted frame and decodes forward from there, unless the frames it is
already at lead to the wanted one without passing a keyframe (the container's index says where
keyframes are; without an index, a gap of more than SEEK_GAP seconds is sought). A clip is
never decoded whole, and every step checks a deadline, so a pathological file fails
(`video_timeout`) instead of holding a worker.
"""

from __future__ import annotations

import bisect
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from PIL import Image

from .images import ImageFailure, dhash, open_regular
from .lazy import lazy_module
from .storage import StorageError, is_url

if TYPE_CHECKING:
    from .objects import Objects

av = lazy_module("av")  # PyAV loads on a clip's first use: an image-only pack never pays its import

# Without a container index, a wanted frame more than this many seconds ahead is sought, not decoded to.
SEEK_GAP = 1.0
# On the way to a wanted frame, frames that no other frame refers to (H.264's and HEVC's non-reference
# B-frames) are not decoded until this many seconds (at least 3 frame intervals) before it: the frames
# that are decoded come out the same. A frame chosen from before that window is checked by decoding
# its stretch again without skipping.
SKIP_MARGIN = 0.5
# Where the clip ends before a wanted frame by more than this (and more than two frame intervals),
# the clip is shorter than its header says: truncated.
END_SLACK = 1.0
# Counter-clockwise display rotation (PyAV's VideoFrame.rotation) -> the Pillow transpose that shows it.
ROTATE = {
    90: Image.Transpose.ROTATE_90,
    -90: Image.Transpose.ROTATE_270,
    270: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    -180: Image.Transpose.ROTATE_180,
}
READ_BUFFER = 256 << 10


@dataclass(frozen=True)
class VideoSettings:
    frames: int = 8  # --video-frames
    max_seconds: float = 4 * 3600.0  # --max-video-seconds: longer clips fail as video_too_large
    timeout: float = 120.0  # --video-timeout: seconds of decoding per clip before it fails


@dataclass(frozen=True)
class EncodedClip:
    middle: bytes  # the frame at half the duration, as <key>.jpg
    frames: tuple[bytes, ...]  # the N frames, as <key>.fNN.jpg
    facts: dict[str, Any]  # the sample JSON's `video`
    image: dict[str, Any]  # the sample JSON's `image` (the middle frame's source: the clip)
    dhash: int  # of the middle frame (the near-duplicate audit)


def frame_times(duration: float, count: int) -> list[float]:
    """The N evenly spaced times: (i + 0.5) / N of the duration."""
    return [(i + 0.5) * duration / count for i in range(count)]


def fail(reason: str, detail: str = "") -> ImageFailure:
    return ImageFailure(reason, detail)


class Decoder:
    """One open clip: its video stream, duration and keyframes; `frame_at` decodes forward or seeks."""

    def __init__(self, container: Any, stream: Any, deadline: float, timeout: float):
        self.container = container
        self.stream = stream
        self.deadline = deadline
        self.timeout = timeout
        self.base: Fraction = stream.time_base
        self.start = stream.start_time if stream.start_time is not None else 0
        self.frames: Iterator[Any] | None = None
        self.ahead: Any = None  # decoded, after the last wanted time: the next candidate
        self.before: Any = None  # the frame chosen last
        self.keyframes = self.index()
        self.decoded = 0
        self.seeks = 0
        rate = stream.average_rate or stream.guessed_rate
        self.interval = 1 / float(rate) if rate else 0.0
        self.margin = max(SKIP_MARGIN, 3 * self.interval)
        self.skip_before = float("-inf")  # packets that start before this are decoded only if referred to
        self.skipping = True

    def index(self) -> list[float]:
        """Keyframe times (seconds from the start) from the container's index; [] without one."""
        times = [self.seconds(e.timestamp) for e in self.stream.index_entries if e.is_keyframe]
        return sorted(times)

    def seconds(self, pts: int | None) -> float:
        return float((pts - self.start) * self.base) if pts is not None else 0.0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise fail("video_timeout", f"decoding took longer than {self.timeout:g} s (--video-timeout)")

    def next_frame(self) -> Any:
        self.check_time()
        if self.frames is None:
            return None
        try:
            frame = next(self.frames, None)
        except av.FFmpegError as exc:
            raise fail("video_corrupt", f"{type(exc).__name__}: {exc}") from None
        self.decoded += frame is not None
        return frame

    def must_seek(self, t: float) -> bool:
        if self.frames is None:
            return True
        reached = self.before if self.ahead is None else self.ahead
        if reached is None:
            return False
        at = self.seconds(reached.pts)
        if at > t:
            return self.before is None or self.seconds(self.before.pts) > t
        if self.keyframes:
            # A keyframe between here and t: seeking there skips every frame before it.
            return bisect.bisect_right(self.keyframes, t) > bisect.bisect_right(self.keyframes, at)
        return t - at > SEEK_GAP

    def seek(self, t: float) -> None:
        target = self.start + int(t / self.base)
        try:
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        except av.FFmpegError:
            # Not seekable (a raw stream): decode from the start instead.
            self.container.seek(0)
        self.frames = self.decode_packets()
        self.ahead = self.before = None
        self.seeks += 1

    def decode_packets(self) -> Iterator[Any]:
        """The frames from the current position on; non-reference frames well before the wanted
        time are skipped (`skip_before`, set per wanted frame)."""
        context = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            self.check_time()
            early = packet.pts is not None and self.seconds(packet.pts) < self.skip_before
            context.skip_frame = "NONREF" if self.skipping and early else "DEFAULT"
            yield from context.decode(packet)

    def frame_at(self, t: float, duration: float) -> Any:
        """The frame shown at `t` seconds: the last one starting at or before it (the first frame
        where `t` precedes every frame)."""
        self.skip_before = t - self.margin
        if self.must_seek(t):
            self.seek(t)
        best = self.before if self.before is not None and self.seconds(self.before.pts) <= t else None
        ended = False
        while True:
            frame, self.ahead = (self.ahead, None) if self.ahead is not None else (self.next_frame(), None)
            if frame is None:
                ended = True
                break
            if frame.pts is None:
                continue
            if self.seconds(frame.pts) <= t + 1e-6:
                best = frame
                continue
            self.ahead = frame
            break
        if best is None:
            best = self.ahead
        if best is None and self.decoded == 0:
            raise fail("video_no_frames", "the video stream holds no frame FFmpeg can decode")
        if best is None:
            raise fail("video_truncated", f"no frame at {t:.3f} s of the {duration:.3f} s the clip declares")
        shown = self.seconds(best.pts)
        if self.skipping and shown < self.skip_before and t >= shown:
            # A frame skipped on the way may have been shown later than this one: decode the
            # stretch again, every frame.
            self.skipping = False
            self.seek(t)
            try:
                return self.frame_at(t, duration)
            finally:
                self.skipping = True
        if ended and t - shown > max(END_SLACK, 2 * self.interval):
            raise fail("video_truncated", f"the frames end at {shown:.3f} s of the {duration:.3f} s the clip declares")
        self.before = best
        return best


def duration_of(container: Any, stream: Any, decoder: Decoder) -> float:
    """Seconds from the first frame to the end of the last: the stream's, else the container's,
    else (no header says) the end of the last packet, found by reading the packets once."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    end = None
    for packet in container.demux(stream):
        decoder.check_time()
        if packet.pts is not None:
            stop = decoder.seconds(packet.pts) + float((packet.duration or 0) * stream.time_base)
            end = stop if end is None else max(end, stop)
    container.seek(0)
    return end or 0.0


def to_jpeg(frame: Any, size: int, quality: int, rotation: int) -> tuple[bytes, Image.Image]:
    """A decoded frame as the images are prepared: RGB, squashed to size x size (bicubic), turned
    as the clip's display matrix says, JPEG at `quality`."""
    image = frame.to_image()  # RGB at the frame's own size
    resized = image.resize((size, size), Image.Resampling.BICUBIC)
    if rotation in ROTATE:
        resized = resized.transpose(ROTATE[rotation])
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=quality)
    return out.getvalue(), resized


def encode_clip(
    path: str,
    size: int,
    quality: int,
    max_pixels: int,
    settings: VideoSettings,
    objects: Objects | None = None,
    object_size: int | None = None,
) -> EncodedClip:
    """Open a clip, take its middle frame and `settings.frames` evenly spaced frames, encode each.
    A URL is an object of `objects` (of `object_size` bytes, else asked), read by ranged requests
    where FFmpeg seeks (objects.RangedFile): never downloaded whole.

    Fails (ImageFailure) with a countable reason: video_missing, video_not_a_file, video_empty,
    video_unreadable (not a video, or a container FFmpeg cannot open, or an object the store
    refuses), video_no_stream (audio only), video_no_frames, video_too_large (frame pixels or
    duration over their bounds), video_truncated, video_corrupt, video_timeout."""
    deadline = time.monotonic() + settings.timeout
    try:
        handle, length = _open(path, objects, object_size)
    except FileNotFoundError:
        raise fail("video_missing", path) from None
    except ImageFailure as exc:
        raise fail("video_not_a_file", exc.detail) from None
    except (OSError, StorageError) as exc:
        raise fail("video_unreadable", f"{type(exc).__name__}: {exc}") from None
    with handle:
        if length == 0:
            raise fail("video_empty", f"an empty file (0 bytes): {path}")
        try:
            container = av.open(handle, buffer_size=READ_BUFFER, metadata_errors="replace")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise fail("video_unreadable", f"not a video FFmpeg can open ({why})") from None
        except (StorageError, FileNotFoundError) as exc:  # the object's bytes, refused or gone while read
            raise fail("video_unreadable", str(exc)) from None
        try:
            with container:
                return _encode(container, size, quality, max_pixels, settings, deadline)
        except (StorageError, FileNotFoundError) as exc:
            raise fail("video_unreadable", str(exc)) from None


def _open(path: str, objects: Objects | None, object_size: int | None) -> tuple[Any, int]:
    """The clip as a file PyAV reads, and its length in bytes."""
    if objects is not None and is_url(path):
        from .objects import RangedFile

        if object_size is None:
            facts = objects.head(path)
            if facts is None:
                raise FileNotFoundError(path)
            object_size = facts.st_size
        return RangedFile(objects, path, object_size), object_size
    handle = open_regular(path)
    return handle, os.fstat(handle.fileno()).st_size


def _encode(
    container: Any, size: int, quality: int, max_pixels: int, settings: VideoSettings, deadline: float
) -> EncodedClip:
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        what = "audio only" if container.streams.audio else "no stream of any kind FFmpeg decodes"
        raise fail("video_no_stream", f"no video stream ({what})")
    stream = streams[0]
    stream.codec_context.thread_count = 1  # the pool runs one clip per core
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise fail("video_too_large", f"{width}x{height} frames are over --max-image-pixels {max_pixels}")
    decoder = Decoder(container, stream, deadline, settings.timeout)
    try:
        duration = duration_of(container, stream, decoder)
    except av.FFmpegError as exc:
        raise fail("video_corrupt", f"{type(exc).__name__}: {exc}") from None
    if duration > settings.max_seconds:
        raise fail("video_too_large", f"{duration:.0f} s is over --max-video-seconds {settings.max_seconds:g}")
    times = frame_times(duration, settings.frames)
    wanted = sorted({*times, duration / 2})
    chosen: dict[float, Any] = {}
    encoded: dict[int, tuple[bytes, Image.Image]] = {}  # by frame pts: a frame wanted twice is encoded once
    rotation = None
    for t in wanted:
        frame = decoder.frame_at(t, duration)
        chosen[t] = frame
        if frame.pts not in encoded:
            if rotation is None:
                rotation = round(frame.rotation or 0)
            decoder.check_time()
            encoded[frame.pts] = to_jpeg(frame, size, quality, rotation)
    middle = chosen[duration / 2]
    shown_w, shown_h = (height, width) if rotation in (90, -90, 270) else (width, height)
    rate = stream.average_rate or stream.guessed_rate
    facts = {
        "duration": round(duration, 3),
        "fps": round(float(rate), 3) if rate else None,
        "width": shown_w,
        "height": shown_h,
        "codec": stream.codec_context.name,
        "rotation": rotation or 0,
        "middle_time": round(decoder.seconds(middle.pts), 3),
        "frame_times": [round(decoder.seconds(chosen[t].pts), 3) for t in times],
    }
    image = {"orig_width": shown_w, "orig_height": shown_h, "orig_format": f"video/{stream.codec_context.name}"}
    return EncodedClip(
        encoded[middle.pts][0],
        tuple(encoded[chosen[t].pts][0] for t in times),
        facts,
        image,
        dhash(encoded[middle.pts][1]),
    )
