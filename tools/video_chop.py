"""Chop a long video into the diffusion-over-diffusion hierarchy that NUWA-XL trains on (and InfiNet learns from).

    python tools/video_chop.py VIDEO --L 16 [--fps 8] [--size 256x256] [--out DIR] [--caption TEXT]

With segments of L frames, depth m keeps the first N(m) = (L-1)^m + 1 frames (m as large as the video allows).
Level k (1..m) samples them at stride (L-1)^(m-k): its (L-1)^(k-1) segments hold L frames each, and the first
and last frame of every segment are frames of the level above (its parents); level 1 holds the L keyframes,
level m consecutive frames. This is the layout the hierarchical sampler generates and `train_infinet.py`
conditions on (parents at positions 0 and L-1).

Writes, inside DIR/<video name>/:
    level_<k>/segment_<j>.mp4   the L frames of segment j of level k
    level_<k>/segment_<j>.txt   its caption (the --caption text; edit them by hand or with a captioner)
    index.json                  L, depth, fps, size and, per segment, the source frame numbers it holds

The video is streamed: frames are decoded one at a time and go straight into the (at most two per level) open
segment files, so memory does not depend on the video's length. Everything is written into a hidden folder that
is renamed into place at the end, so an interrupted run leaves no half-finished dataset.
"""

import argparse
import json
import math
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from fractions import Fraction

import av
import cv2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pack_import import import_pack  # noqa: E402

import_pack()
from longvideo.utils.video_io import VideoWriter  # noqa: E402


MIN_FPS, MAX_FPS = 0.01, 1000.0
MAX_SIZE = 16384
MAX_SEGMENT_FRAMES = 100000


class ChopError(ValueError):
    pass


def check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise ChopError(f"--fps {fps!r} is not a frame rate: give a number from {MIN_FPS:g} to {MAX_FPS:g}, e.g. 8")
    return float(fps)


def check_size(size) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE for v in size):
        raise ChopError(f"--size {size!r} is not a frame size: give WIDTHxHEIGHT with each from 1 to {MAX_SIZE}, e.g. 256x256")
    return int(size[0]), int(size[1])


@contextmanager
def _reading(path: str):
    """Turn a decoder's complaint about `path` (empty, not a video, damaged, cut short, no video stream) into a
    ChopError naming the file."""
    try:
        yield
    except (av.FFmpegError, EOFError) as error:
        raise ChopError(f"{path}: cannot be read as a video ({error}); it may be empty, damaged or cut short") from None
    except (IndexError, ZeroDivisionError, OverflowError):
        raise ChopError(f"{path}: has no readable video stream; it may be empty, damaged or cut short") from None


def hierarchy_depth(frames: int, segment_frames: int) -> int:
    """The largest m with (L-1)^m + 1 <= frames (0 when not even one level fits)."""
    if isinstance(segment_frames, bool) or not isinstance(segment_frames, int) or not 3 <= segment_frames <= MAX_SEGMENT_FRAMES:
        raise ChopError(f"--L must be at least 3 (two parents and a frame between them) and at most {MAX_SEGMENT_FRAMES}, "
                        f"a whole number, got {segment_frames!r}")
    depth = 0
    while (segment_frames - 1) ** (depth + 1) + 1 <= frames:
        depth += 1
    return depth


def segment_frames(level: int, depth: int, segment_frames_count: int, segment: int) -> list[int]:
    """Frame numbers (in the resampled video) of one segment of `level` (1..depth)."""
    step = segment_frames_count - 1
    stride = step ** (depth - level)
    return [(segment * step + position) * stride for position in range(segment_frames_count)]


def segments_holding(frame: int, depth: int, segment_frames_count: int):
    """(level, segment, position) of every segment that holds `frame` (a frame is the last of one segment and the
    first of the next at every level whose stride divides it)."""
    step = segment_frames_count - 1
    for level in range(1, depth + 1):
        stride = step ** (depth - level)
        if frame % stride:
            continue
        q = frame // stride
        if q % step == 0 and q > 0:
            yield level, q // step - 1, step
        if q // step < step ** (level - 1):
            yield level, q // step, q % step


def resampled_frames(path: str, fps: float | None):
    """(frame number, RGB frame) of the video at `fps` (nearest source frame; None keeps the source rate), streamed."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        source_rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        ratio = Fraction(1) if fps is None else Fraction(source_rate) / Fraction(fps).limit_denominator(1000)
        wanted = 0
        for source_index, frame in enumerate(container.decode(stream)):
            image = None
            while round(wanted * ratio) == source_index:
                image = image if image is not None else frame.to_ndarray(format="rgb24")
                yield wanted, image
                wanted += 1


def _frames_named(path: str, fps: float | None):
    """resampled_frames, with decoder errors turned into a ChopError naming the file."""
    with _reading(path):
        yield from resampled_frames(path, fps)


def count_frames(path: str, fps: float | None) -> tuple[int, float]:
    """Frames the resampled video has, and its rate; counts packets (no decoding) when the header does not say."""
    with _reading(path), av.open(path) as container:
        stream = container.streams.video[0]
        source_rate = Fraction(stream.average_rate or stream.guessed_rate or 24)
        source_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if source_rate <= 0:
        raise ChopError(f"{path}: the video has no usable frame rate ({source_rate}); it may be damaged")
    if source_frames == 0:
        raise ChopError(f"{path}: the video has no frames")
    if fps is None:
        return source_frames, float(source_rate)
    ratio = source_rate / Fraction(fps).limit_denominator(1000)
    frames = 0
    while round(frames * ratio) <= source_frames - 1:
        frames += 1
    return frames, float(fps)


def chop(path: str, segment_frames_count: int, out_dir: str, fps: float | None = None,
         size: tuple[int, int] | None = None, caption: str = "", crf: int = 18) -> str:
    """Write the hierarchy of `path` into out_dir/<video name>/ and return that folder."""
    if not os.path.isfile(path):
        raise ChopError(f"video {path!r} does not exist")
    fps = None if fps is None else check_fps(fps)
    size = None if size is None else check_size(size)
    hierarchy_depth(0, segment_frames_count)  # checks L
    total, rate = count_frames(path, fps)
    depth = hierarchy_depth(total, segment_frames_count)
    if depth == 0:
        raise ChopError(f"{path}: {total} frames at {rate:g} fps are too few for one level of {segment_frames_count}-frame "
                        f"segments (needs {segment_frames_count}); lower --L or raise --fps")
    kept = (segment_frames_count - 1) ** depth + 1
    name = os.path.splitext(os.path.basename(path))[0]
    target = os.path.join(out_dir, name)
    if os.path.exists(target):
        raise ChopError(f"{target} already exists: remove it or choose another --out")
    os.makedirs(out_dir, exist_ok=True)
    partial = os.path.join(out_dir, f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for level in range(1, depth + 1):
        os.makedirs(os.path.join(partial, f"level_{level}"))

    levels = [{"level": level, "stride": (segment_frames_count - 1) ** (depth - level), "segments": []}
              for level in range(1, depth + 1)]
    writers, frame_number = {}, -1
    try:
        for frame_number, image in _frames_named(path, fps):
            if frame_number >= kept:
                break
            if size is not None:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            for level, segment, position in segments_holding(frame_number, depth, segment_frames_count):
                key = (level, segment)
                if position == 0:
                    clip = f"level_{level}/segment_{segment:05d}"
                    writers[key] = VideoWriter(os.path.join(partial, clip + ".mp4"), rate, "mp4", crf).__enter__()
                    with open(os.path.join(partial, clip + ".txt"), "w") as text:
                        text.write(caption)
                    levels[level - 1]["segments"].append({
                        "clip": clip + ".mp4", "caption": clip + ".txt",
                        "frames": segment_frames(level, depth, segment_frames_count, segment),
                    })
                writers[key].write(image[None])
                if position == segment_frames_count - 1:
                    writers.pop(key).__exit__(None, None, None)
        if writers or frame_number + 1 < kept:
            raise ChopError(f"{path}: the video ended early, after {frame_number + 1} of the {kept} frames its header "
                            "announces; it may be damaged or cut short")
        index = {"source": os.path.abspath(path), "L": segment_frames_count, "depth": depth, "fps": rate,
                 "frames": kept, "levels": levels}
        with open(os.path.join(partial, "index.json"), "w") as file:
            json.dump(index, file, indent=1)
    except BaseException as error:
        for writer in writers.values():
            writer.__exit__(type(error), error, None)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, target)
    return target


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
        return check_size((width, height))
    except (ValueError, ChopError):
        raise argparse.ArgumentTypeError(f"write the size as WIDTHxHEIGHT with each from 1 to {MAX_SIZE}, e.g. 256x256, "
                                         f"not {text!r}") from None


def _fps(text: str) -> float:
    try:
        return check_fps(float(text))
    except (ValueError, ChopError):
        raise argparse.ArgumentTypeError(f"give a frame rate from {MIN_FPS:g} to {MAX_FPS:g}, e.g. 8, not {text!r}") from None


def _segment_frames(text: str) -> int:
    try:
        value = int(text)
        hierarchy_depth(0, value)
        return value
    except (ValueError, ChopError):
        raise argparse.ArgumentTypeError(f"give a whole number of frames from 3 to {MAX_SEGMENT_FRAMES}, not {text!r}") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video")
    parser.add_argument("--L", type=_segment_frames, required=True, dest="segment_frames", help="frames per segment (NUWA-XL's L)")
    parser.add_argument("--fps", type=_fps, default=None, help="resample to this frame rate first (default: the video's)")
    parser.add_argument("--size", type=_size, default=None, help="resize frames to WIDTHxHEIGHT")
    parser.add_argument("--out", default="chopped", help="folder to write into (default ./chopped)")
    parser.add_argument("--caption", default="", help="text written into every caption file")
    args = parser.parse_args(argv)

    def stop(signum, frame):  # SIGTERM removes the half-written dataset, as Ctrl+C does
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    try:
        folder = chop(args.video, args.segment_frames, args.out, args.fps, args.size, args.caption)
    except ChopError as error:
        raise SystemExit(f"video_chop: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("video_chop: stopped; nothing was written") from None
    print(folder)


if __name__ == "__main__":
    main()
